// Browser end-to-end tests of the demo on a server that requires tokens: the page signs
// in with ?user=NAME&role=edit|view, getting its tokens from the server's /demo-token
// (--demo-auth). Run with
//   npm run test:e2e      (builds the demo, then node --import tsx --test web/e2e/*.test.ts)
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import type { Browser } from "playwright-core";
import { e2e, launchBrowser, stays, until, uniqueBoard, type BoardPage, type Harness, type TaskView } from "./harness.js";

let browser: Browser | undefined;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const test = (name: string, body: (h: Harness) => Promise<void>) =>
  e2e(name, body, () => {
    if (browser === undefined) throw new Error("no browser: launching Chromium failed (see the before hook)");
    return browser;
  });

const secretFile = join(mkdtempSync(join(tmpdir(), "actionsync-e2e-auth-")), "secret");
writeFileSync(secretFile, "the e2e tests' secret, at least 32 bytes long\n");

/** authServer starts a server that requires tokens and hands demo tokens out. */
const authServer = (h: Harness, args: string[] = []) => h.server(["--auth-hs256-secret-file", secretFile, "--demo-auth", "true", ...args]);

const titles = (tasks: TaskView[]) => tasks.map((t) => t.title).sort();

function untilTaskTitles(page: BoardPage, want: string[]): Promise<TaskView[]> {
  const sorted = [...want].sort();
  return until(`tasks ${JSON.stringify(sorted)}`, () => page.tasks(), (ts) => JSON.stringify(titles(ts)) === JSON.stringify(sorted));
}

const lastSeq = async (p: BoardPage) => Number(await p.page.getByTestId("last-seq").innerText());

test("a_viewer_sees_the_editors_edits_and_cannot_edit", async (h) => {
  const server = await authServer(h);
  const board = uniqueBoard("auth");
  const editor = await h.open(`${server.url}/?board=${board}&user=erin`);
  const viewer = await h.open(`${server.url}/?board=${board}&user=victor&role=view`);
  await editor.untilStatus("connected");
  await viewer.untilStatus("connected");
  assert.equal(await editor.page.getByTestId("user-name").innerText(), "erin");
  assert.equal(await viewer.page.getByTestId("user-name").innerText(), "victor");
  assert.equal(await viewer.page.getByTestId("user-role").innerText(), "(view)");
  assert.match(await viewer.page.getByTestId("read-only-notice").innerText(), /Read-only/);
  assert.equal(await editor.page.getByTestId("read-only-notice").count(), 0);

  // The editor's edits reach the viewer.
  await editor.addTask("stage-todo", "Plan the release");
  const [task] = await untilTaskTitles(viewer, ["Plan the release"]);
  await editor.setStageTitle("stage-doing", "In progress");
  await viewer.untilStageTitle("stage-doing", "In progress");
  await until("editor settled", () => editor.pending(), (n) => n === 0);
  const head = await lastSeq(editor);
  assert.equal(head, 2);

  // The viewer's edits are refused by the server, rolled back and shown as an error.
  await viewer.addTask("stage-todo", "Sneaky task");
  const error = viewer.page.getByTestId("sync-error");
  await until("the viewer shows the refusal", () => error.innerText(), (t) => t.includes("ADD_TASK"));
  assert.match(await error.innerText(), /permission_denied: .*victor.*does not allow publish/);
  await untilTaskTitles(viewer, ["Plan the release"]);
  await viewer.renameTask(task.id, "Renamed by the viewer");
  await until("the rename refused", () => error.innerText(), (t) => t.includes("RENAME_TASK"));
  await untilTaskTitles(viewer, ["Plan the release"]);
  await viewer.setStageTitle("stage-todo", "Viewer's title");
  await until("the title refused", () => error.innerText(), (t) => t.includes("UPDATE_STAGE_TITLE"));
  await viewer.untilStageTitle("stage-todo", "To do");
  await until("nothing pending in the viewer", () => viewer.pending(), (n) => n === 0);
  assert.equal(await viewer.status(), "connected", "a refusal is an answer: the viewer stays connected");

  // Nothing the viewer tried reached the editor, or the channel.
  await stays(
    "the editor's board",
    async () => ({ tasks: titles(await editor.tasks()), todo: await editor.stageTitle("stage-todo"), seq: await lastSeq(editor) }),
    (v) => JSON.stringify(v) === JSON.stringify({ tasks: ["Plan the release"], todo: "To do", seq: head }),
    1_000,
  );
  assert.equal(await lastSeq(viewer), head);
  assert.equal(await editor.page.getByTestId("sync-error").count(), 0);
});

test("a_page_without_a_token_shows_why", async (h) => {
  // Tokens required, but none handed out (no --demo-auth): the page stays offline and says why.
  const server = await h.server(["--auth-hs256-secret-file", secretFile]);
  const board = uniqueBoard("noauth");
  const anonymous = await h.open(`${server.url}/?board=${board}`);
  await until("no token: refused", () => anonymous.page.getByTestId("auth-error").innerText(), (t) => t.includes("missing bearer token"));
  assert.equal(await anonymous.status(), "offline");
  const named = await h.open(`${server.url}/?board=${board}&user=alice`);
  await until("getToken fails", () => named.page.getByTestId("auth-error").innerText(), (t) => /getToken failed: .*demo-token.*HTTP 404/.test(t));
  assert.equal(await named.status(), "offline");
});
