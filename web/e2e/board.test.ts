// Browser end-to-end tests of the ToDo board demo: real `actionsync serve` processes,
// headless Chromium, independent browser contexts as the "devices". Run with
//   npm run test:e2e      (builds the demo, then node --import tsx --test web/e2e/*.test.ts)
import assert from "node:assert/strict";
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

/** openPair opens url in two independent contexts and waits until both are connected. */
async function openPair(h: Harness, url: string): Promise<[BoardPage, BoardPage]> {
  const a = await h.open(url);
  const b = await h.open(url);
  await a.untilStatus("connected");
  await b.untilStatus("connected");
  return [a, b];
}

/** titles returns the sorted task titles of tasks. */
const titles = (tasks: TaskView[]) => tasks.map((t) => t.title).sort();

/** untilTaskTitles waits until page shows exactly the tasks titled want (any order), each once. */
function untilTaskTitles(page: BoardPage, want: string[]): Promise<TaskView[]> {
  const sorted = [...want].sort();
  return until(`tasks ${JSON.stringify(sorted)}`, () => page.tasks(), (ts) => JSON.stringify(titles(ts)) === JSON.stringify(sorted));
}

/** untilSettled waits until page has nothing pending and is connected. */
async function untilSettled(page: BoardPage): Promise<void> {
  await page.untilStatus("connected");
  await until("nothing pending", () => page.pending(), (n) => n === 0);
}

test("edits_sync_between_windows", async (h) => {
  const server = await h.server();
  const [a, b] = await openPair(h, `${server.url}/?board=${uniqueBoard("sync")}`);
  assert.equal(await b.stageTitle("stage-todo"), "To do");

  await a.setStageTitle("stage-todo", "Backlog");
  await b.untilStageTitle("stage-todo", "Backlog");

  await a.addTask("stage-todo", "Write the tests");
  const [task] = await untilTaskTitles(b, ["Write the tests"]);
  assert.equal(task.stageId, "stage-todo");
  assert.equal(task.id, await a.taskId("Write the tests"), "the task id comes from the action, so both windows agree");

  await b.renameTask(task.id, "Write more tests");
  await untilTaskTitles(a, ["Write more tests"]);
  await b.moveTask(task.id, "stage-done");
  await until("task moved to stage-done in A", () => a.tasks(), (ts) => ts.length === 1 && ts[0].stageId === "stage-done");
  await a.deleteTask(task.id);
  await untilTaskTitles(b, []);

  await untilSettled(a);
  await untilSettled(b);
  assert.equal(await a.stageTitle("stage-todo"), "Backlog");
});

test("offline_edits_reach_others_once", async (h) => {
  const server = await h.server();
  const [a, b] = await openPair(h, `${server.url}/?board=${uniqueBoard("offline")}`);
  await a.addTask("stage-todo", "Before");
  await untilTaskTitles(b, ["Before"]);

  await a.context.setOffline(true);
  // The middleware hears the browser's offline event: the open stream does not fool it.
  await a.untilStatus("offline");
  await a.setStageTitle("stage-doing", "Doing offline");
  await a.addTask("stage-doing", "Offline task");
  await stays("A's status while offline", () => a.status(), (s) => s === "offline", 1_000);
  await until("A has pending actions", () => a.pending(), (n) => n > 0);
  // The offline window shows its own edits at once (optimistic).
  assert.equal(await a.stageTitle("stage-doing"), "Doing offline");
  await untilTaskTitles(a, ["Before", "Offline task"]);
  // Meanwhile the other window edits too, and sees nothing of A's edits.
  await b.addTask("stage-done", "Online task");
  await untilTaskTitles(b, ["Before", "Online task"]);
  await stays("B's doing stage while A is offline", () => b.stageTitle("stage-doing"), (v) => v === "Doing", 1_000);

  // The online event makes the middleware reconnect and send at once, whatever its
  // backoff delay had grown to (up to maxMs, 10 s) while offline.
  const online = Date.now();
  await a.context.setOffline(false);
  await a.untilStatus("connected");
  await until("A's offline edits sent", () => a.pending(), (n) => n === 0);
  const flushMs = Date.now() - online;
  assert.ok(flushMs < 3_000, `A's offline edits were sent ${flushMs} ms after the browser came back online`);
  await b.untilStageTitle("stage-doing", "Doing offline");
  const want = ["Before", "Offline task", "Online task"];
  const inB = await untilTaskTitles(b, want);
  const inA = await untilTaskTitles(a, want);
  await untilSettled(b);
  // Nothing duplicated, now or a moment later (a late replay would add a second copy).
  await stays("A's tasks", () => a.tasks().then(titles), (v) => JSON.stringify(v) === JSON.stringify(want), 1_000);
  await stays("B's tasks", () => b.tasks().then(titles), (v) => JSON.stringify(v) === JSON.stringify(want), 500);
  assert.deepEqual(
    inA.map((t) => t.id).sort(),
    inB.map((t) => t.id).sort(),
    "both windows hold the same task ids",
  );
  assert.equal(new Set(inA.map((t) => t.id)).size, want.length, "task ids are unique");
  h.log(`offline edits sent ${flushMs} ms after the browser came back online`);
});

test("offline_edits_in_two_tabs_survive_a_reload", async (h) => {
  // Two tabs of one browser share its storage and its network.
  const server = await h.server();
  const url = `${server.url}/?board=${uniqueBoard("reload")}`;
  const one = await h.open(url);
  const two = await h.openTab(one, url);
  const other = await h.open(url);
  for (const p of [one, two, other]) await p.untilStatus("connected");

  await one.context.setOffline(true);
  await one.addTask("stage-todo", "From tab one");
  await two.addTask("stage-doing", "From tab two");
  await until("tab one has a pending action", () => one.pending(), (n) => n > 0);
  await until("tab two has a pending action", () => two.pending(), (n) => n > 0);
  // Back online, and both tabs reload at once, before their Dispatch retry is due: their
  // edits must come back from the persisted outbox.
  await one.context.setOffline(false);
  await Promise.all([one.page.reload(), two.page.reload()]);

  const want = ["From tab one", "From tab two"];
  for (const p of [other, one, two]) await untilTaskTitles(p, want);
  for (const p of [one, two, other]) await untilSettled(p);
  await stays("tasks in the other browser", () => other.tasks().then(titles), (v) => JSON.stringify(v) === JSON.stringify(want), 500);
});

test("a_reload_shows_the_saved_board_at_once_even_with_the_server_down", async (h) => {
  // The page comes from another origin, so that it still loads with the server down.
  const origin = await h.staticSite();
  const api = await h.server(["--cors-origins", origin, "--demo=false"]);
  const board = uniqueBoard("saved");
  const url = `${origin}/?board=${board}&api=${encodeURIComponent(api.url)}`;
  const page = await h.open(url);
  await page.untilStatus("connected");
  await page.addTask("stage-todo", "Saved one");
  await page.addTask("stage-done", "Saved two");
  await untilSettled(page);
  // The confirmed board is saved (throttled to once a second) with its seq.
  const saved = await until(
    "the board saved at seq 2",
    () => page.page.evaluate((key) => localStorage.getItem(key), `actionsync:state:board:${board}`),
    (v) => v !== null && JSON.parse(v.slice(0, v.indexOf("\n"))).seq === 2,
  );
  assert.equal(JSON.parse(saved!.slice(0, saved!.indexOf("\n"))).version, "board-1");

  await api.stop();
  await page.page.reload();
  // Right away: the store is created with the saved board, before any network answer.
  assert.deepEqual(titles(await page.tasks()), ["Saved one", "Saved two"]);
  assert.equal(await page.page.getByTestId("last-seq").textContent(), "2");
  await page.untilStatus("offline");
  assert.deepEqual(titles(await page.tasks()), ["Saved one", "Saved two"]);
});

/** outboxKeys lists the outbox keys in the localStorage of page's browser context. */
const outboxKeys = (page: BoardPage) =>
  page.page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("actionsync:outbox:")).sort());

test("offline_edits_of_a_closed_tab_are_sent_by_another_tab", async (h) => {
  // Tab one is closed while offline; tab two of the same browser (same localStorage)
  // adopts its unsent edits and sends them: when it takes over the shared stream from the
  // closed tab (see tabs.test.ts), or at the latest when it reloads.
  const server = await h.server();
  const url = `${server.url}/?board=${uniqueBoard("closed")}`;
  const one = await h.open(url);
  const two = await h.openTab(one, url);
  const other = await h.open(url);
  for (const p of [one, two, other]) await p.untilStatus("connected");

  await one.context.setOffline(true);
  await one.untilStatus("offline");
  await one.addTask("stage-todo", "From a closed tab");
  await until("tab one has a pending action", () => one.pending(), (n) => n > 0);
  const [key] = await until("tab one's outbox saved", () => outboxKeys(one), (ks) => ks.length === 1);
  assert.match(key, /^actionsync:outbox:board:closed-[^:]+:[0-9a-f-]{36}$/, "one key per tab");
  await one.page.close();
  await one.context.setOffline(false);
  await two.page.reload();
  const want = ["From a closed tab"];
  const [inOther] = await untilTaskTitles(other, want);
  const [inTwo] = await untilTaskTitles(two, want);
  assert.equal(inTwo.id, inOther.id);
  for (const p of [two, other]) await untilSettled(p);
  await until("tab one's outbox adopted and emptied", () => outboxKeys(two), (ks) => ks.length === 0);
  await stays("tasks in the other browser", () => other.tasks().then(titles), (v) => JSON.stringify(v) === JSON.stringify(want), 500);
});

test("concurrent_title_edits_converge", async (h) => {
  const server = await h.server();
  const [a, b] = await openPair(h, `${server.url}/?board=${uniqueBoard("race")}`);
  for (const [round, stageId] of ["stage-todo", "stage-doing", "stage-done", "stage-todo"].entries()) {
    const fromA = `A ${round}`;
    const fromB = `B ${round}`;
    const inputA = a.page.getByTestId(`stage-title-${stageId}`);
    const inputB = b.page.getByTestId(`stage-title-${stageId}`);
    await Promise.all([inputA.fill(fromA), inputB.fill(fromB)]);
    // Both commit (on blur) at nearly the same time.
    await Promise.all([inputA.blur(), inputB.blur()]);
    await untilSettled(a);
    await untilSettled(b);
    const [ta, tb] = await until(
      `round ${round}: both windows show the same ${stageId} title`,
      () => Promise.all([a.stageTitle(stageId), b.stageTitle(stageId)]),
      ([x, y]) => x === y && (x === fromA || x === fromB),
    );
    assert.equal(ta, tb);
  }
});

test("server_restart_reconnects_with_reset_notice", async (h) => {
  const first = await h.server();
  const [a, b] = await openPair(h, `${first.url}/?board=${uniqueBoard("restart")}`);
  await a.setStageTitle("stage-todo", "Before restart");
  await b.untilStageTitle("stage-todo", "Before restart");
  assert.equal(await a.resetNotice(), false, "no reset notice before the restart");

  // The in-memory history is gone after a restart: the pages resume past the new head.
  await first.stop();
  await a.untilStatus(["connecting", "offline"]);
  await b.untilStatus(["connecting", "offline"]);
  await h.server([], first.port);
  const restarted = Date.now();
  await a.untilStatus("connected");
  await b.untilStatus("connected");
  h.log(`both pages reconnected ${Date.now() - restarted} ms after the restart`);
  await until("A shows the reset notice", () => a.resetNotice(), (v) => v);
  await until("B shows the reset notice", () => b.resetNotice(), (v) => v);

  // They keep syncing with the new server, and keep the board they had.
  await b.setStageTitle("stage-doing", "After restart");
  await a.untilStageTitle("stage-doing", "After restart");
  await a.addTask("stage-todo", "New server, new task");
  await untilTaskTitles(b, ["New server, new task"]);
  assert.equal(await b.stageTitle("stage-todo"), "Before restart");
  await untilSettled(a);
  await untilSettled(b);
});

test("page_on_another_origin_uses_cors", async (h) => {
  const origin = await h.staticSite();
  const api = await h.server(["--cors-origins", origin, "--demo=false"]);
  const board = uniqueBoard("cors");
  const url = `${origin}/?board=${board}&api=${encodeURIComponent(api.url)}`;
  assert.notEqual(new URL(url).origin, new URL(api.url).origin);
  const [a, b] = await openPair(h, url);
  await a.setStageTitle("stage-done", "Shipped");
  await b.untilStageTitle("stage-done", "Shipped");
  await b.addTask("stage-done", "Cross-origin task");
  await untilTaskTitles(a, ["Cross-origin task"]);

  // The same page against a server that does not allow its origin never connects.
  const closed = await h.server(["--demo=false"]);
  const c = await h.open(`${origin}/?board=${board}&api=${encodeURIComponent(closed.url)}`);
  await until("the browser blocks the API (CORS)", async () => c.console.join("\n"), (log) => log.includes("CORS policy"));
  await stays("status without CORS", () => c.status(), (s) => s !== "connected", 1_000);
});

test("rejected_action_shows_error", async (h) => {
  const server = await h.server(["--allow", "board:*=UPDATE_STAGE_TITLE,ADD_TASK,RENAME_TASK,MOVE_TASK"]);
  const [a, b] = await openPair(h, `${server.url}/?board=${uniqueBoard("rejected")}`);
  await a.addTask("stage-todo", "Cannot delete me");
  const [task] = await untilTaskTitles(b, ["Cannot delete me"]);

  await a.deleteTask(task.id);
  const error = a.page.getByTestId("sync-error");
  await until("A shows the refusal", () => error.innerText(), (text) => text.includes("DELETE_TASK"));
  const text = await error.innerText();
  assert.match(text, /permission[_ ]?denied/i, "the error names the code");
  assert.match(text, /DELETE_TASK/, "the error names the refused type");
  // The refused delete is rolled back, and never reached the other window.
  await untilTaskTitles(a, ["Cannot delete me"]);
  await untilSettled(a);
  await stays("B keeps the task", () => b.tasks().then(titles), (v) => v.length === 1, 500);
});
