// Presence in the demo, in Chromium against a real server: avatars of who is on the board,
// the marker on a task someone else is editing, the tabs of one browser as one member, and
// a window that closes leaving after the server's grace period.
import assert from "node:assert/strict";
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

const GRACE_MS = 1500;

/** avatars lists the names on p's avatars, and which one is p's own. */
function avatars(p: BoardPage): Promise<{ names: string[]; self: string[] }> {
  return p.page.evaluate(() => {
    const els = Array.from(document.querySelectorAll<HTMLElement>("[data-testid='avatar']"));
    return { names: els.map((e) => e.dataset.name ?? ""), self: els.filter((e) => e.dataset.self === "true").map((e) => e.dataset.name ?? "") };
  });
}

/**
 * marker is the text of p's "someone is editing" marker on the task, "" if none is shown.
 * One evaluate reads it: checking visibility and then reading the text raced with the
 * marker going, and the text read then waited for an element that no longer came.
 */
const marker = (p: BoardPage, taskId: string) =>
  p.page.evaluate((id) => {
    const el = document.querySelector<HTMLElement>(`[data-testid='editing-${id}']`);
    return el !== null && el.offsetParent !== null ? el.innerText : "";
  }, taskId);

test("two_windows_see_each_other_the_task_being_edited_and_the_leave_after_grace", async (h) => {
  const server = await h.server(["--presence-grace", `${GRACE_MS}ms`]);
  const url = `${server.url}/?board=${uniqueBoard("presence")}`;
  const a = await h.open(url);
  const b = await h.open(url);
  await a.untilStatus("connected");
  await b.untilStatus("connected");

  // Each window sees both avatars, its own marked as its own.
  const seenByA = await until("A sees two avatars", () => avatars(a), (v) => v.names.length === 2 && v.self.length === 1);
  const seenByB = await until("B sees two avatars", () => avatars(b), (v) => v.names.length === 2 && v.self.length === 1);
  const [nameA, nameB] = [seenByA.self[0], seenByB.self[0]];
  assert.notEqual(nameA, nameB, "two browsers, two guests");
  assert.deepEqual([...seenByA.names].sort(), [nameA, nameB].sort());
  assert.deepEqual(seenByB.names, seenByA.names, "the same members in the same order");

  // A edits a task's title: B marks the task with A's name; A itself shows no marker.
  await a.addTask("stage-todo", "Draw the poster");
  const id = await until("the task", () => a.taskId("Draw the poster"), (v) => v !== "");
  await until("B has the task", () => b.tasks(), (ts) => ts.some((t) => t.id === id));
  await a.page.getByTestId(`task-title-${id}`).focus();
  assert.match(await until("B marks the task A edits", () => marker(b, id), (t) => t !== ""), new RegExp(`^${nameA} is editing`));
  assert.equal(await marker(a, id), "", "no marker for one's own editing");
  await a.page.getByTestId(`task-title-${id}`).fill("Draw the big poster");
  await a.page.getByTestId(`task-title-${id}`).blur();
  await until("B's marker goes when A stops editing", () => marker(b, id), (t) => t === "");
  await until("B has A's new title", () => b.tasks(), (ts) => ts.some((t) => t.title === "Draw the big poster"));

  // A second tab of B's browser shares B's stream: the browser stays one member, and
  // editing in that tab marks the task for A under B's name.
  const b2 = await h.openTab(b, url);
  await b2.untilStatus("connected");
  await until("B's second tab sees the same two", () => avatars(b2), (v) => v.names.length === 2 && v.self[0] === nameB);
  await stays("A still sees two members", async () => (await avatars(a)).names.length, (n) => n === 2, 500);
  await b2.page.getByTestId(`task-title-${id}`).focus();
  assert.match(await until("A marks the task B's second tab edits", () => marker(a, id), (t) => t !== ""), new RegExp(`^${nameB} is editing`));
  await b2.page.getByTestId(`task-title-${id}`).blur();
  await until("A's marker goes", () => marker(a, id), (t) => t === "");

  // A's window closes: B still shows A during the grace period, then A leaves.
  const closed = Date.now();
  await a.context.close();
  await stays("B shows A within the grace period", async () => (await avatars(b)).names.length, (n) => n === 2, GRACE_MS / 2);
  await until("B sees A leave", () => avatars(b), (v) => v.names.length === 1 && v.self[0] === nameB);
  const after = Date.now() - closed;
  assert.ok(after >= GRACE_MS - 100, `A left ${after} ms after closing, want the grace period ${GRACE_MS} ms or more`);
  h.log(`A left B's avatars ${after} ms after its window closed (grace ${GRACE_MS} ms)`);
});
