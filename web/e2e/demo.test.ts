// The demo as a first-time visitor meets it: the board picker and the link to share, the
// connection status and its error in words, the "Work offline" switch, "not yet synced"
// markers on tasks, and the reset notice with its Reload button. With UPDATE_SCREENSHOTS=1
// it also writes the README's screenshots to docs/img/ (CI leaves them alone).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before } from "node:test";
import type { Browser } from "playwright-core";
import { e2e, launchBrowser, stays, until, uniqueBoard, type BoardPage, type Harness } from "./harness.js";

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

const imgDir = resolve(import.meta.dirname, "../../docs/img");

/** screenshot saves page as docs/img/name.png when UPDATE_SCREENSHOTS=1. */
async function screenshot(page: BoardPage, name: string): Promise<void> {
  if (process.env.UPDATE_SCREENSHOTS !== "1") return;
  mkdirSync(imgDir, { recursive: true });
  await page.page.setViewportSize({ width: 1100, height: 560 });
  await page.page.screenshot({ path: join(imgDir, `${name}.png`) });
}

const visible = (p: BoardPage, testId: string) => p.page.getByTestId(testId).isVisible();

test("a_first_visit_offline_switch_unsynced_markers_and_the_board_picker", async (h) => {
  const server = await h.server();
  const board = uniqueBoard("visit");
  const a = await h.open(`${server.url}/?board=${board}`);
  const b = await h.open(`${server.url}/?board=${board}`);
  await a.untilStatus("connected");
  await b.untilStatus("connected");
  assert.equal(await a.page.getByTestId("share-link").inputValue(), `${server.url}/?board=${board}`, "the link to share is the page's");

  await a.addTask("stage-todo", "Plan the launch");
  await b.addTask("stage-doing", "Write the announcement");
  await until("both tasks in A", async () => (await a.tasks()).length, (n) => n === 2);

  // Work offline: the status says so, in words, and new edits wait, marked.
  await a.page.getByTestId("offline-toggle").check();
  await a.untilStatus("offline");
  const error = await until("the error in words", () => a.page.getByTestId("connection-error").innerText(), (t) => t.includes("offline"));
  assert.match(error, /^unavailable: /);
  await a.addTask("stage-todo", "Book the venue");
  const id = await until("the new task", () => a.taskId("Book the venue"), (v) => v !== "");
  await until("marked not yet synced", () => visible(a, `unsynced-${id}`), (v) => v);
  assert.equal(await visible(a, `unsynced-${await a.taskId("Plan the launch")}`), false, "confirmed tasks are not marked");
  await stays("B does not get it while A is offline", async () => (await b.tasks()).length, (n) => n === 2, 700);
  await screenshot(a, "demo-offline");

  // Back online: sent, the marker goes, B gets it once.
  await a.page.getByTestId("offline-toggle").uncheck();
  await a.untilStatus("connected");
  await until("the marker goes", () => visible(a, `unsynced-${id}`), (v) => !v);
  await until("B gets it", async () => (await b.tasks()).map((t) => t.title).sort().join("|"), (v) => v === "Book the venue|Plan the launch|Write the announcement");
  assert.equal(await visible(a, "connection-error"), false, "no error once connected");
  await screenshot(b, "demo-board");

  // The picker opens another board, keeping the page's other parameters.
  const other = uniqueBoard("other");
  await a.page.getByTestId("board-picker").fill(other);
  await a.page.getByTestId("board-open").click();
  await until("the other board", () => a.page.getByTestId("board-name").innerText(), (v) => v === other);
  assert.equal(new URL(a.page.url()).searchParams.get("board"), other);
  await a.untilStatus("connected");
  assert.deepEqual(await a.tasks(), [], "a new board is empty");
});

test("the_reset_notice_reloads_to_what_the_server_has", async (h) => {
  const server = await h.server();
  const board = uniqueBoard("reset");
  const a = await h.open(`${server.url}/?board=${board}`);
  await a.untilStatus("connected");
  await a.addTask("stage-todo", "Lost in the restart");
  await until("settled", () => a.pending(), (n) => n === 0);
  // An in-memory server restarting on the same port loses the board: a reset.
  await server.stop();
  const again = await h.server([], server.port);
  assert.equal(again.port, server.port);
  await until("the reset notice", () => visible(a, "sync-reset"), (v) => v, 20_000);
  assert.deepEqual((await a.tasks()).map((t) => t.title), ["Lost in the restart"], "stale until reloaded");
  await a.page.getByTestId("reset-reload").click();
  await a.untilStatus("connected");
  await until("the board as the server has it", async () => (await a.tasks()).length, (n) => n === 0);
  assert.equal(await visible(a, "sync-reset"), false);
});
