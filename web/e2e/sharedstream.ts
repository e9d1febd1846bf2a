// The one-stream-per-browser scenario, run by tabs.test.ts (a secure origin: Web Locks
// elect the leader tab) and insecure.test.ts (a plain-HTTP origin reached by name: lease
// locks in localStorage elect it).
import assert from "node:assert/strict";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { readHistory } from "../redux/src/testkit.js";
import { stays, uniqueBoard, until, type BoardPage, type Harness } from "./harness.js";
import { startCountingProxy } from "./proxy.js";

/** subscribe is the path of the Subscribe RPC, as the counting proxy sees it. */
export const subscribe = "/actionsync.v1.SyncService/Subscribe";
export const sorted = (xs: string[]) => [...xs].sort();

/** untilTitles waits until every page shows exactly titles (each once) with nothing pending. */
export async function untilTitles(pages: BoardPage[], titles: string[]): Promise<void> {
  const want = JSON.stringify(sorted(titles));
  for (const [i, p] of pages.entries()) {
    await until(`tab ${i} shows ${want}`, async () => JSON.stringify(sorted((await p.tasks()).map((t) => t.title))), (v) => v === want, 20_000);
    await until(`tab ${i} has nothing pending`, () => p.pending(), (n) => n === 0);
  }
}

/** SharedStreamOptions adapts the scenario to the origin it runs on. */
export interface SharedStreamOptions {
  /** host is the name the pages open the proxy at (default: its own, 127.0.0.1). */
  host?: string;
  /** checkPage is called with the first tab once it is connected. */
  checkPage?(page: BoardPage, board: string): Promise<void>;
}

/**
 * eightTabsShareOneStream runs the scenario: eight tabs of one browser on one board, over
 * HTTP/1.1 (through a counting proxy, web/e2e/proxy.ts), hold one Subscribe stream
 * between them, every tab converges, and when the leader tab closes with an action its
 * Dispatch never delivered, another tab takes over the stream and sends that action, once.
 */
export async function eightTabsShareOneStream(h: Harness, o: SharedStreamOptions = {}): Promise<void> {
  const server = await h.server();
  const proxy = await startCountingProxy(server.url);
  try {
    const board = uniqueBoard("tabs");
    const base = o.host === undefined ? proxy.url : `http://${o.host}:${new URL(proxy.url).port}`;
    const url = `${base}/?board=${board}`;
    // The first tab finds the leader lock free: it holds the stream.
    const leader = await h.open(url);
    await leader.untilStatus("connected");
    await o.checkPage?.(leader, board);
    const tabs: BoardPage[] = [leader];
    for (let i = 1; i < 8; i++) {
      const tab = await h.openTab(leader, url);
      await tab.untilStatus("connected");
      tabs.push(tab);
    }
    // Followers caught up with a short stream each, closed at ready: one stays open.
    await until("one Subscribe stream open", async () => proxy.open(subscribe), (n) => n === 1);
    await stays("one Subscribe stream open", async () => proxy.open(subscribe), (n) => n === 1, 1_000);
    h.log(`8 tabs connected with ${proxy.total(subscribe)} Subscribe requests in all, 1 open`);

    // Every tab edits; every tab converges. Eight long streams would have taken more
    // than the six connections the browser allows the proxy's origin: Dispatch stalls.
    await Promise.all(tabs.map((t, i) => t.addTask("stage-todo", `from tab ${i}`)));
    const titles = tabs.map((_, i) => `from tab ${i}`);
    await untilTitles(tabs, titles);
    assert.equal(proxy.open(subscribe), 1);

    // The leader's Dispatch never reaches the server: its action stays in its outbox.
    await leader.page.route("**/actionsync.v1.SyncService/Dispatch", (route) => route.abort());
    await leader.addTask("stage-doing", "the leader's unsent task");
    await until("the leader holds it pending", () => leader.pending(), (n) => n === 1);
    await stays("the leader's task not sent", async () => (await readHistory(server.url, `board:${board}`)).headSeq, (n) => n === 8, 500);
    const before = proxy.total(subscribe);
    const closedAt = Date.now();
    await leader.page.close();

    // Another tab takes the lock, opens the stream, adopts the closed leader's outbox and
    // sends its action; everyone gets it once.
    const rest = tabs.slice(1);
    titles.push("the leader's unsent task");
    await untilTitles(rest, titles);
    await until("the new leader's stream", async () => proxy.total(subscribe) > before && proxy.open(subscribe) === 1, (ok) => ok);
    h.log(`a new leader took over and delivered the closed leader's action ${Date.now() - closedAt} ms after it closed`);
    await rest[3].addTask("stage-done", "after the takeover");
    titles.push("after the takeover");
    await untilTitles(rest, titles);
    for (const t of rest) await t.untilStatus("connected");
    await stays("one Subscribe stream open after the takeover", async () => proxy.open(subscribe), (n) => n === 1, 1_000);

    const history = await readHistory(server.url, `board:${board}`);
    const added = history.actions.filter((a) => a.type === "ADD_TASK").map((a) => toJson(ValueSchema, a.payload!) as { title: string });
    assert.deepEqual(sorted(added.map((p) => p.title)), sorted(titles), "each task reached the server once");
  } finally {
    await proxy.close();
  }
}
