// One stream per browser on an insecure origin: pages opened at http://board.test:PORT
// (a name Chromium resolves to 127.0.0.1), where there are no Web Locks, as on a
// plain-HTTP deployment reached by name. Lease locks in localStorage elect the leader
// tab; see sharedstream.ts for the scenario. A second test takes the leader's lease from
// under it: it steps down, and another tab takes over once that lease expires.
import assert from "node:assert/strict";
import { after, before } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Browser } from "playwright-core";
import { readHistory } from "../redux/src/testkit.js";
import { e2e, launchBrowser, stays, uniqueBoard, until, type Harness } from "./harness.js";
import { startCountingProxy } from "./proxy.js";
import { eightTabsShareOneStream, sorted, subscribe, untilTitles } from "./sharedstream.js";

const host = "board.test";

let browser: Browser | undefined;
before(async () => {
  browser = await launchBrowser([`--host-resolver-rules=MAP ${host} 127.0.0.1`]);
});
after(async () => {
  await browser?.close();
});

const test = (name: string, body: (h: Harness) => Promise<void>) =>
  e2e(name, body, () => {
    if (browser === undefined) throw new Error("no browser: launching Chromium failed (see the before hook)");
    return browser;
  });

test("eight_tabs_share_one_stream_without_web_locks", (h) =>
  eightTabsShareOneStream(h, {
    host,
    async checkPage(tab, board) {
      const env = await tab.page.evaluate(
        (key) => ({ secure: window.isSecureContext, locks: typeof navigator.locks, lease: localStorage.getItem(key) !== null }),
        `actionsync:lease:actionsync:stream:board:${board}`,
      );
      assert.deepEqual(env, { secure: false, locks: "undefined", lease: true }, "an insecure context, whose leader holds a lease");
    },
  }));

test("a_leader_whose_lease_was_taken_steps_down_and_another_takes_over", async (h) => {
  const server = await h.server();
  const proxy = await startCountingProxy(server.url);
  try {
    const board = uniqueBoard("lease");
    const url = `http://${host}:${new URL(proxy.url).port}/?board=${board}`;
    const tabs = [await h.open(url)];
    await tabs[0].untilStatus("connected");
    for (let i = 1; i < 3; i++) {
      tabs.push(await h.openTab(tabs[0], url));
      await tabs[i].untilStatus("connected");
    }
    await until("one Subscribe stream open", async () => proxy.open(subscribe), (n) => n === 1);
    await tabs[0].addTask("stage-todo", "before");
    const titles = ["before"];
    await untilTitles(tabs, titles);

    // Another holder's lease appears, as when a frozen leader thaws after a takeover or two
    // tabs took the lease at once; this holder never renews, as if it had crashed at once.
    const before = proxy.total(subscribe);
    const takenAt = Date.now();
    await tabs[2].page.evaluate(
      (key) => localStorage.setItem(key, JSON.stringify({ holder: "someone-else", expiresAt: Date.now() + 3_000 })),
      `actionsync:lease:actionsync:stream:board:${board}`,
    );
    // The leader's next renewal finds it: it steps down and closes its stream.
    await until("the leader stepped down", async () => proxy.open(subscribe), (n) => n === 0);
    h.log(`the leader stepped down ${Date.now() - takenAt} ms after its lease was taken`);
    // An edit meanwhile reaches the server (each tab sends its own Dispatch) and, once a
    // tab leads again, every tab.
    await tabs[1].addTask("stage-doing", "while nobody leads");
    titles.push("while nobody leads");
    await until("a new leader's stream", async () => proxy.total(subscribe) > before && proxy.open(subscribe) === 1, (ok) => ok);
    h.log(`a tab took over ${Date.now() - takenAt} ms after the lease was taken (bound: 3 s lease + 1 s + 500 ms probe + 100 ms)`);
    await untilTitles(tabs, titles);
    await tabs[0].addTask("stage-done", "after");
    titles.push("after");
    await untilTitles(tabs, titles);
    for (const t of tabs) await t.untilStatus("connected");
    await stays("one Subscribe stream open", async () => proxy.open(subscribe), (n) => n === 1, 2_000);

    const history = await readHistory(server.url, `board:${board}`);
    const added = history.actions.filter((a) => a.type === "ADD_TASK").map((a) => (toJson(ValueSchema, a.payload!) as { title: string }).title);
    assert.deepEqual(sorted(added), sorted(titles), "each task reached the server once");
  } finally {
    await proxy.close();
  }
});
