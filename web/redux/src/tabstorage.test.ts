import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { PendingEntry } from "./actions.js";
import { createTabStorage, outboxKey, tabIdKey, type LockManagerLike, type TabStorage, type TabStorageOptions } from "./tabstorage.js";
import { captureLogger, createLink, fakeLocks, fakeWebStorage, makeStore, readHistory, replay, startTestServer, waitFor } from "./testkit.js";

// Type test: the browser's navigator.locks is a LockManagerLike.
const _locks: LockManagerLike | undefined = undefined as unknown as Navigator["locks"] | undefined;
void _locks;

const entry = (id: string): PendingEntry => ({ id, action: { type: "ADD", payload: id, meta: { actionsync: { id, local: true } } } });
const ids = (es: unknown[]) => (es as PendingEntry[]).map((e) => e.id);

/** browser returns the storage shared by the tabs of one browser profile, and a way to open tabs. */
function browser(options: Partial<TabStorageOptions> = {}) {
  const local = fakeWebStorage();
  const locks = fakeLocks();
  const logger = captureLogger();
  const stored = (key: string | undefined) => ids(JSON.parse(local.m.get(key!) ?? "[]"));
  return {
    local,
    locks,
    logger,
    stored,
    /** tab opens a tab: a new sessionStorage, or the given one (a reload, a duplicated tab). */
    tab(session = fakeWebStorage(), channel = "board:1") {
      const storage = createTabStorage(channel, { local, session, locks, logger, ownLockWaitMs: 50, ...options });
      return { session, storage };
    },
  };
}

async function loaded(storage: TabStorage, entries?: PendingEntry[]): Promise<string[]> {
  const got = ids(await storage.load());
  if (entries) await storage.save(entries);
  return got;
}

describe("createTabStorage", () => {
  it("keeps_one_key_per_tab_and_finds_it_after_a_reload", async () => {
    const b = browser();
    const one = b.tab();
    const two = b.tab();
    await loaded(one.storage, [entry("o1")]);
    await loaded(two.storage, [entry("t1"), entry("t2")]);
    assert.notEqual(one.storage.key, two.storage.key);
    assert.equal(one.storage.key, outboxKey("board:1", one.session.m.get(tabIdKey)!));
    assert.deepEqual(b.stored(one.storage.key), ["o1"]);
    assert.deepEqual(b.stored(two.storage.key), ["t1", "t2"], "neither tab overwrites the other");

    one.storage.close(); // the page goes away...
    const reloaded = b.tab(one.session); // ...and the tab reloads: same sessionStorage
    assert.deepEqual(await loaded(reloaded.storage), ["o1"]);
    assert.equal(reloaded.storage.key, one.storage.key);
    assert.deepEqual(b.stored(two.storage.key), ["t1", "t2"], "the live tab's outbox is not adopted");
  });

  it("adopts_at_run_time_the_outboxes_of_tabs_closed_since_load", async () => {
    const b = browser();
    const me = b.tab();
    const other = b.tab();
    const third = b.tab();
    await loaded(me.storage, [entry("m1")]);
    await loaded(other.storage, [entry("o1"), entry("m1"), entry("o2")]);
    await loaded(third.storage, [entry("t1")]);
    assert.deepEqual(await me.storage.adopt(), [], "live tabs' outboxes stay theirs");
    other.storage.close(); // the leader tab closes with unsent actions
    await new Promise((r) => setTimeout(r, 0)); // its lock is released asynchronously
    assert.deepEqual(ids(await me.storage.adopt()), ["o1", "o2"], "its entries, minus ids already here");
    assert.deepEqual(b.stored(me.storage.key), ["m1", "o1", "o2"], "saved as this tab's");
    assert.equal(b.local.m.has(other.storage.key!), false, "its key is gone");
    assert.deepEqual(b.stored(third.storage.key), ["t1"]);
    me.storage.close();
    assert.deepEqual(await me.storage.adopt(), [], "nothing once closed");
  });

  it("adopts_the_outboxes_of_closed_tabs_in_order_skipping_known_ids", async () => {
    const b = browser();
    const me = b.tab();
    await loaded(me.storage, [entry("m1"), entry("x")]);
    const closedTab = b.tab();
    await loaded(closedTab.storage, [entry("c1"), entry("x"), entry("c2")]);
    const other = b.tab();
    await loaded(other.storage, [entry("d1")]);
    for (const t of [closedTab, other, me]) t.storage.close();

    const reloaded = b.tab(me.session);
    const got = await loaded(reloaded.storage);
    // Own entries first, then each closed tab's in its order (keys sorted), x only once.
    const [first, second] = [closedTab, other].sort((p, q) => (p.storage.key! < q.storage.key! ? -1 : 1));
    const adopted = (t: typeof first) => (t === closedTab ? ["c1", "c2"] : ["d1"]);
    assert.deepEqual(got, ["m1", "x", ...adopted(first), ...adopted(second)]);
    assert.deepEqual([...b.local.m.keys()], [reloaded.storage.key], "the adopted keys are removed");
    assert.deepEqual(b.stored(reloaded.storage.key), got, "and their entries saved under this tab's key");
  });

  it("leaves_live_tabs_and_other_channels_alone", async () => {
    const b = browser();
    const live = b.tab();
    await loaded(live.storage, [entry("live")]);
    const otherChannel = b.tab(undefined, "board:1:sub");
    await loaded(otherChannel.storage, [entry("sub")]);
    otherChannel.storage.close();
    b.local.setItem("actionsync:outbox:board:1:not-a-tab-id", JSON.stringify([entry("junk")]));
    b.local.setItem("unrelated", "x");

    const me = b.tab();
    assert.deepEqual(await loaded(me.storage), []);
    assert.deepEqual(b.stored(live.storage.key), ["live"]);
    assert.deepEqual(b.stored(otherChannel.storage.key), ["sub"], "channel board:1:sub is not board:1");
    assert.equal(b.local.m.size, 4);
  });

  it("adopts_the_shared_key_of_earlier_versions", async () => {
    const b = browser();
    b.local.setItem("actionsync:outbox:board:1", JSON.stringify([entry("old1"), entry("old2")]));
    const me = b.tab();
    assert.deepEqual(await loaded(me.storage), ["old1", "old2"]);
    assert.equal(b.local.m.has("actionsync:outbox:board:1"), false);
  });

  it("gives_a_duplicated_tab_a_new_id", async () => {
    const b = browser();
    const original = b.tab();
    await loaded(original.storage, [entry("orig")]);
    // A duplicated tab starts with a copy of the original's sessionStorage.
    const copy = fakeWebStorage();
    copy.setItem(tabIdKey, original.session.getItem(tabIdKey)!);
    const duplicate = b.tab(copy);
    const started = Date.now();
    assert.deepEqual(await loaded(duplicate.storage, [entry("dup")]), [], "the original's outbox stays the original's");
    assert.ok(Date.now() - started >= 40, "it waited for the lock first (a reload's old page may still hold it)");
    assert.notEqual(duplicate.storage.key, original.storage.key);
    assert.equal(duplicate.storage.key, outboxKey("board:1", copy.getItem(tabIdKey)!), "the new id is kept for its reloads");
    assert.deepEqual(b.stored(original.storage.key), ["orig"]);
    assert.deepEqual(b.stored(duplicate.storage.key), ["dup"]);
  });

  it("waits_for_its_own_lock_after_a_reload", async () => {
    const b = browser({ ownLockWaitMs: 5_000 });
    const before = b.tab();
    await loaded(before.storage, [entry("mine")]);
    const after = b.tab(before.session);
    const loading = loaded(after.storage);
    setTimeout(() => before.storage.close(), 20); // the old page lets go a moment later
    assert.deepEqual(await loading, ["mine"]);
    assert.equal(after.storage.key, before.storage.key);
  });

  it("holds_its_lock_until_close", async () => {
    const b = browser();
    const t = b.tab();
    await t.storage.load();
    assert.deepEqual([...b.locks.held], [t.storage.key]);
    t.storage.close();
    t.storage.close(); // idempotent
    await waitFor("lock released", () => b.locks.held.size === 0);
    await t.storage.save([entry("after close")]); // still saves: a later tab adopts it
    assert.deepEqual(b.stored(t.storage.key), ["after close"]);
  });

  it("adopts_nothing_without_web_locks", async () => {
    const b = browser({ locks: undefined });
    const closedTab = b.tab();
    await loaded(closedTab.storage, [entry("c1")]);
    closedTab.storage.close();
    const me = b.tab();
    assert.deepEqual(await loaded(me.storage, [entry("m1")]), []);
    assert.deepEqual(b.stored(closedTab.storage.key), ["c1"], "left where it is");
    assert.deepEqual(b.stored(me.storage.key), ["m1"]);
  });

  it("drops_an_unreadable_outbox_of_a_closed_tab_with_an_error", async () => {
    const b = browser();
    const key = outboxKey("board:1", "00000000-0000-4000-8000-000000000000");
    b.local.setItem(key, "{not json");
    const me = b.tab();
    assert.deepEqual(await loaded(me.storage), []);
    assert.equal(b.local.m.has(key), false);
    assert.equal(b.logger.errors.length, 1);
    assert.match(b.logger.errors[0], /unreadable outbox.*\{not json/);
  });

  it("goes_on_without_locks_when_web_locks_fail", async () => {
    const b = browser({ locks: { request: () => Promise.reject(new DOMException("opaque origin", "SecurityError")) } });
    const me = b.tab();
    assert.deepEqual(await loaded(me.storage, [entry("m1")]), []);
    assert.deepEqual(b.stored(me.storage.key), ["m1"]);
    assert.match(b.logger.warns.join("\n"), /Web Locks failed/);
  });
});

describe("tab storage with the middleware", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("a_tab_closed_offline_has_its_actions_sent_by_the_next_tab", async () => {
    const srv = await startTestServer();
    cleanups.push(() => srv.stop());
    const channel = "board:tabs";
    const b = browser();
    const open = (session = fakeWebStorage()) => {
      const link = createLink(srv.url);
      const storage = createTabStorage(channel, { local: b.local, session, locks: b.locks, logger: b.logger });
      const m = makeStore({ transport: link.transport, channel, storage, logger: captureLogger() });
      cleanups.push(() => m.close());
      return { ...m, link, storage, session };
    };
    const a = open();
    const c = open();
    await waitFor("both connected", () => [a, c].every((m) => m.store.getState().sync.status === "connected"));
    a.link.cut();
    c.link.cut();
    a.store.dispatch({ type: "board/add", payload: { item: "from A" } });
    c.store.dispatch({ type: "board/add", payload: { item: "from C" } });
    await a.close(); // the tab is closed while offline
    assert.deepEqual(b.stored(a.storage.key).length, 1);

    const d = open(); // a new tab, once the network is back
    await waitFor("A's action sent by D", () => d.store.getState().sync.pending === 0 && d.store.getState().sync.lastSeq === 1);
    assert.deepEqual(d.store.getState().board.items, ["from A"]);
    assert.equal(b.local.m.has(a.storage.key!), false, "A's outbox was adopted");
    assert.deepEqual(b.stored(c.storage.key).length, 1, "the live tab C keeps its own");
    c.link.heal();
    await waitFor("C's action sent", () => c.store.getState().sync.pending === 0 && c.store.getState().sync.lastSeq === 2);
    await waitFor("D sees it", () => d.store.getState().sync.lastSeq === 2);
    const { actions } = await readHistory(srv.url, channel);
    assert.deepEqual(replay(actions, channel).items, ["from A", "from C"]);
    assert.deepEqual(d.store.getState().board, replay(actions, channel));
  });
});
