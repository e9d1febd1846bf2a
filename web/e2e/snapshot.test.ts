// Browser tests of state that outlives history: a board rebuilt from its snapshot in a new
// window, and the demo page itself reloading with its server down (its service worker).
//   node --import tsx --test web/e2e/snapshot.test.ts
import assert from "node:assert/strict";
import { after, before } from "node:test";
import type { Browser } from "playwright-core";
import { addTask, renameTask, type BoardAction } from "../demo/src/board.js";
import { createBoardStore } from "../demo/src/store.js";
import { e2e, launchBrowser, until, uniqueBoard, type Harness } from "./harness.js";

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

test("a_board_edited_510_times_opens_complete_from_its_snapshot", async (h) => {
  // History keeps 50 actions: a new window can only rebuild the board from the snapshot
  // (written at seq 500 by the client whose action landed there) and the 10 after it.
  const server = await h.server(["--history-size", "50"]);
  const board = uniqueBoard("snap");
  const writer = createBoardStore({ baseUrl: server.url, channel: `board:${board}` });
  try {
    const ids = Array.from({ length: 10 }, (_, i) => `task-${i}`);
    const edits: BoardAction[] = ids.map((id, i) => addTask("stage-todo", `Task ${i} v0`, id));
    for (let v = 1; edits.length < 510; v++) {
      for (const [i, id] of ids.entries()) {
        if (edits.length < 510) edits.push(renameTask(id, `Task ${i} v${v}`));
      }
    }
    for (const a of edits) writer.store.dispatch(a);
    await until(
      "the writer confirmed all 510 edits",
      async () => writer.store.getState().sync,
      (s) => s.lastSeq === 510 && s.pending === 0,
      60_000,
    );
    const want = Object.values(writer.store.getState().board.tasks)
      .map((t) => t.title)
      .sort();
    assert.equal(want.length, 10);
    const snap = await until(
      "the snapshot at seq 500",
      async () => {
        const res = await fetch(`${server.url}/actionsync.v1.SyncService/GetSnapshot`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ channel: `board:${board}` }),
        });
        return res.ok ? ((await res.json()) as { snapshot: { seq: string } }).snapshot : null;
      },
      (s) => s !== null,
    );
    assert.equal(snap!.seq, "500");
    h.log(`snapshot at seq ${snap!.seq}; the server keeps the last 50 actions`);

    const page = await h.open(`${server.url}/?board=${board}`);
    await page.untilStatus("connected");
    const got = await until(
      "the new window shows the whole board",
      () => page.tasks(),
      (ts) => ts.length === 10,
    );
    assert.deepEqual(got.map((t) => t.title).sort(), want);
    assert.equal(await page.page.getByTestId("last-seq").textContent(), "510");
    assert.equal(await page.resetNotice(), false, "the board was rebuilt, not reset");
  } finally {
    await writer.close();
  }
});

test("the_demo_page_reloads_with_its_server_down", async (h) => {
  // The page is the server's own (no static site): its service worker keeps the app
  // shell, and the middleware the saved board.
  const server = await h.server();
  const board = uniqueBoard("shell");
  const page = await h.open(`${server.url}/?board=${board}`);
  await page.untilStatus("connected");
  await until(
    "the service worker controls the page",
    () => page.page.evaluate(() => navigator.serviceWorker.controller !== null),
    (v) => v,
  );
  await page.addTask("stage-todo", "Kept offline");
  await page.addTask("stage-doing", "Also kept");
  await until("nothing pending", () => page.pending(), (n) => n === 0);
  await until(
    "the board saved at seq 2",
    () => page.page.evaluate((key) => localStorage.getItem(key), `actionsync:state:board:${board}`),
    (v) => v !== null && JSON.parse(v.slice(0, v.indexOf("\n"))).seq === 2,
  );

  await server.stop();
  await page.page.reload();
  // The shell came from the service worker; the board from storage, at once.
  assert.deepEqual((await page.tasks()).map((t) => t.title).sort(), ["Also kept", "Kept offline"]);
  await page.untilStatus("offline");
  assert.deepEqual((await page.tasks()).map((t) => t.title).sort(), ["Also kept", "Kept offline"]);
});
