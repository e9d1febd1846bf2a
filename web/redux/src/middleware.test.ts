// Integration tests: real server processes, real RTK stores, connect-node transports.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { combineReducers, createStore, applyMiddleware, type UnknownAction } from "redux";
import { ActionTypes, createMemoryStorage, createSyncMiddleware, type PendingEntry, type RejectedPayload, type ResetPayload } from "./index.js";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { board, boardTypes, captureLogger, createLink, makeStore, readHistory, replay, startTestServer, waitFor } from "./testkit.js";

type Made = ReturnType<typeof makeStore>;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(args: string[] = [], port = 0) {
  const s = await startTestServer(args, port);
  cleanups.push(() => s.stop());
  return s;
}

function store(options: Parameters<typeof makeStore>[0]): Made {
  const m = makeStore({ logger: captureLogger(), ...options });
  cleanups.push(() => m.close());
  return m;
}

const settled = (m: Made, headSeq: number) => () => {
  const s = m.store.getState().sync;
  return s.status === "connected" && s.pending === 0 && s.lastSeq === headSeq;
};

async function quiesce(url: string, channel: string, stores: Made[], timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { headSeq } = await readHistory(url, channel);
    if (stores.every((m) => settled(m, headSeq)())) return headSeq;
    if (Date.now() > deadline) throw new Error(`timed out waiting for the stores to settle at seq ${headSeq}: ${JSON.stringify(stores.map((m) => m.store.getState().sync))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("createSyncMiddleware", () => {
  it("two_stores_converge", async () => {
    const srv = await server();
    const channel = "board:two";
    const linkA = createLink(srv.url);
    const a = store({ transport: linkA.transport, channel });
    const b = store({ transport: createLink(srv.url).transport, channel });
    await waitFor("both connected", () => [a, b].every((m) => m.store.getState().sync.status === "connected"));

    const original = { type: "board/title", payload: { title: "from A" } };
    const returned = a.store.dispatch(original);
    // Never mutated; a new action with the local marker went to the reducers.
    assert.deepEqual(original, { type: "board/title", payload: { title: "from A" } });
    const local = a.seen.find((x) => x.type === "board/title")!;
    assert.notEqual(local, original);
    assert.equal(returned, local);
    const localMeta = (local.meta as { actionsync: { id: string; local: boolean; channel: string } }).actionsync;
    assert.deepEqual(localMeta, { id: localMeta.id, local: true, channel });
    assert.equal(localMeta.local, true);
    assert.equal(a.store.getState().board.title, "from A", "applied optimistically");
    assert.equal(a.store.getState().sync.pending, 1);

    a.store.dispatch({ type: "board/add", payload: { item: "a1" }, meta: { by: "alice" } });
    b.store.dispatch({ type: "board/add", payload: { item: "b1" } });
    b.store.dispatch({ type: "board/title", payload: { title: "from B" } });
    a.store.dispatch({ type: "ui/click" });

    const head = await quiesce(srv.url, channel, [a, b]);
    assert.equal(head, 4);
    const { actions } = await readHistory(srv.url, channel);
    const expected = replay(actions, channel);
    assert.deepEqual(a.store.getState().board, expected);
    assert.deepEqual(b.store.getState().board, expected);
    assert.equal(a.store.getState().ui.clicks, 1);
    assert.equal(b.store.getState().ui.clicks, 0);

    // B received A's action as a remote one, with the sender's meta and identity.
    const remote = b.seen.find((x) => x.type === "board/add" && (x.payload as { item: string }).item === "a1")!;
    const sent = actions.find((x) => x.clientId === a.sync.clientId && x.type === "board/add")!;
    assert.deepEqual(remote.meta, {
      by: "alice",
      actionsync: { remote: true, seq: Number(sent.seq), id: sent.id, clientId: a.sync.clientId, channel },
    });
    // Remote actions are never sent back: A sent only its own two ids.
    assert.deepEqual(linkA.dispatched.flat().length, 2);
    assert.deepEqual(JSON.parse(JSON.stringify(a.store.getState().sync)), a.store.getState().sync, "status slice is plain data");
    assert.deepEqual(a.store.getState().sync, { status: "connected", lastSeq: 4, pending: 0, error: null, resets: 0 });
  });

  it("offline_outbox_fills_then_flushes_after_a_restart_with_a_reset", async () => {
    const first = await server();
    const channel = "board:offline";
    const storage = createMemoryStorage();
    const a = store({ transport: createLink(first.url).transport, channel, storage });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    a.store.dispatch({ type: "board/add", payload: { item: "before" } });
    await waitFor("first action confirmed", settled(a, 1));

    await first.stop();
    await waitFor("offline", () => a.store.getState().sync.status === "offline");
    assert.equal(a.store.getState().sync.error?.code, "unavailable");
    for (const item of ["o1", "o2", "o3"]) a.store.dispatch({ type: "board/add", payload: { item } });
    assert.deepEqual(a.store.getState().board.items, ["before", "o1", "o2", "o3"], "the store stays usable");
    assert.equal(a.store.getState().sync.pending, 3);
    await new Promise((r) => setTimeout(r, 300)); // a few reconnect attempts
    const stored = (await storage.load()) as PendingEntry[];
    assert.deepEqual(stored.map((e) => (e.action.payload as { item: string }).item), ["o1", "o2", "o3"]);

    // Same port, new process: its in-memory history is gone.
    const second = await server([], first.port);
    await waitFor("reset surfaced and outbox flushed", () => {
      const s = a.store.getState().sync;
      return s.resets === 1 && s.pending === 0 && s.status === "connected";
    });
    const reset = a.seen.find((x) => x.type === ActionTypes.reset)!;
    assert.deepEqual(reset.payload as ResetPayload, { channel, headSeq: 0 });
    const { actions } = await readHistory(second.url, channel);
    assert.deepEqual(actions.map((x) => (fromJsonItem(x))), ["o1", "o2", "o3"]);
    assert.deepEqual(a.store.getState().board.items, ["before", "o1", "o2", "o3"]);
    assert.equal(a.store.getState().sync.lastSeq, 3);
    await a.sync.close();
    assert.deepEqual(await storage.load(), [], "the outbox is empty once confirmed");
  });

  it("starts_offline_when_the_server_is_unreachable", async () => {
    const gone = await startTestServer();
    const port = gone.port;
    await gone.stop();
    const logger = captureLogger();
    const a = store({ baseUrl: `http://127.0.0.1:${port}`, transport: createLink(`http://127.0.0.1:${port}`).transport, channel: "board:late", logger });
    await waitFor("offline", () => a.store.getState().sync.status === "offline");
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    a.store.dispatch({ type: "board/add", payload: { item: "y" } });
    assert.deepEqual(a.store.getState().board.items, ["x", "y"]);
    assert.equal(a.store.getState().sync.pending, 2);
    assert.equal(logger.warns.filter((w) => w.includes("subscription")).length, 1, "one warning per outage");
    const srv = await server([], port);
    await waitFor("flushed", settled(a, 2));
    assert.deepEqual(replay((await readHistory(srv.url, "board:late")).actions, "board:late").items, ["x", "y"]);
  });

  it("rolls_back_a_refused_action_and_keeps_going", async () => {
    const srv = await server(["--allow", "board:*=ALLOWED"]);
    const channel = "board:allow";
    const link = createLink(srv.url);
    const a = store({ transport: link.transport, channel });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    // Dispatched in one task: they go in one batch, which the server refuses whole.
    a.store.dispatch({ type: "ALLOWED", payload: { item: "a1" } });
    a.store.dispatch({ type: "NOPE", payload: { item: "n" } });
    a.store.dispatch({ type: "ALLOWED", payload: { item: "a2" } });
    assert.deepEqual(a.store.getState().board.items, ["a1", "n", "a2"], "optimistic");
    await waitFor("settled", settled(a, 2));
    assert.deepEqual(a.store.getState().board.items, ["a1", "a2"], "rolled back");
    const rejected = a.seen.filter((x) => x.type === ActionTypes.rejected);
    assert.equal(rejected.length, 1);
    const p = rejected[0].payload as RejectedPayload;
    assert.equal(p.code, "permission_denied");
    assert.match(p.message, /"NOPE" is not allowed on channel "board:allow"/);
    assert.equal(p.action.type, "NOPE");
    assert.deepEqual(p.action.payload, { item: "n" });
    assert.deepEqual(a.store.getState().sync.error, { code: "permission_denied", message: p.message });
    const ids = link.dispatched;
    assert.equal(ids[0].length, 3, "first as one batch");
    assert.deepEqual(ids.slice(1).map((b) => b.length), [1, 1, 1], "then one at a time");
    assert.deepEqual(ids.slice(1).flat(), ids[0], "with the same ids");

    a.store.dispatch({ type: "ALLOWED", payload: { item: "a3" } });
    await waitFor("later action confirmed", settled(a, 3));
    assert.deepEqual(a.store.getState().board.items, ["a1", "a2", "a3"]);
    assert.deepEqual(replay((await readHistory(srv.url, channel)).actions, channel).items, ["a1", "a2", "a3"]);
  });

  it("drops_a_pending_action_the_reducer_throws_on_after_a_remote_one_and_keeps_the_remote_one", async () => {
    const srv = await server();
    const channel = "board:throws";
    const linkA = createLink(srv.url);
    const logger = captureLogger();
    const a = store({ transport: linkA.transport, channel, logger });
    const b = store({ transport: createLink(srv.url).transport, channel });
    await waitFor("connected", () => [a, b].every((m) => m.store.getState().sync.status === "connected"));
    // A's strict add stays pending (its Dispatch cannot get through) while B adds x first.
    linkA.failDispatch(Infinity, Code.Unavailable, { when: (types) => types.includes("board/strictAdd") });
    a.store.dispatch({ type: "board/strictAdd", payload: { item: "x" } });
    assert.deepEqual(a.store.getState().board.items, ["x"]);
    b.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await waitFor("dropped", () => a.seen.some((x) => x.type === ActionTypes.rejected));
    const p = a.seen.find((x) => x.type === ActionTypes.rejected)!.payload as RejectedPayload;
    assert.equal(p.action.type, "board/strictAdd");
    assert.equal(p.code, "aborted");
    assert.match(p.message, /the reducer threw .*: board: x is already there/);
    // (The status is offline: A's Dispatch could not get through, and nothing proved the link since.)
    const { status: _, ...sync } = a.store.getState().sync;
    assert.deepEqual(sync, { lastSeq: 1, pending: 0, error: { code: "aborted", message: p.message }, resets: 0 });
    assert.deepEqual(a.store.getState().board.items, ["x"]);
    b.store.dispatch({ type: "board/add", payload: { item: "y" } });
    a.store.dispatch({ type: "board/add", payload: { item: "z" } }); // gets through: connected again
    await quiesce(srv.url, channel, [a, b]);
    const { actions } = await readHistory(srv.url, channel);
    assert.deepEqual(a.store.getState().board, replay(actions, channel));
    assert.deepEqual(b.store.getState().board, replay(actions, channel));
    assert.deepEqual(actions.map((x) => x.type), ["board/add", "board/add", "board/add"], "the dropped action is never sent");
    assert.equal(logger.errors.length, 1, logger.errors.join("\n"));
  });

  it("rolls_back_an_action_the_server_keeps_answering_resource_exhausted_and_goes_on", async () => {
    // Retrying cannot fix it (the request is too big, the server holds too many
    // channels): after a few retries the action is rolled back, and the outbox behind it
    // is not blocked for ever.
    const srv = await server();
    const channel = "board:exhausted";
    const link = createLink(srv.url);
    const a = store({ transport: link.transport, channel, backoff: { initialMs: 5, maxMs: 20 } });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    link.failDispatch(Infinity, Code.ResourceExhausted, { message: "too much", when: (types) => types.includes("NOPE") });
    a.store.dispatch({ type: "NOPE", payload: { item: "n" } });
    a.store.dispatch({ type: "board/add", payload: { item: "after" } });
    await waitFor("settled", settled(a, 1));
    assert.deepEqual(a.store.getState().board.items, ["after"], "rolled back");
    const rejected = a.seen.filter((x) => x.type === ActionTypes.rejected).map((x) => x.payload as RejectedPayload);
    assert.deepEqual(rejected.map((p) => [p.action.type, p.code, p.message]), [["NOPE", "resource_exhausted", "too much"]]);
    assert.deepEqual(a.store.getState().sync, { status: "connected", lastSeq: 1, pending: 0, error: { code: "resource_exhausted", message: "too much" }, resets: 0 });
  });

  it("sends_a_re_dispatched_action_as_a_new_one", async () => {
    // The obvious retry of a rejected action: dispatch it again, marker and all. So is
    // dispatching a copy of it, or of a remote action.
    const srv = await server();
    const channel = "board:retry";
    const link = createLink(srv.url);
    const a = store({ transport: link.transport, channel });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    link.failDispatch(1, Code.PermissionDenied, { message: "not now" });
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await waitFor("rejected", () => a.seen.some((x) => x.type === ActionTypes.rejected));
    const refused = (a.seen.find((x) => x.type === ActionTypes.rejected)!.payload as RejectedPayload).action;
    assert.deepEqual(a.store.getState().board.items, []);

    const again = a.store.dispatch(refused) as unknown as UnknownAction;
    assert.notEqual(again, refused);
    const againId = (again.meta as { actionsync: { id: string } }).actionsync.id;
    assert.notEqual(againId, refused.meta.actionsync.id, "a new action id");
    a.store.dispatch({ ...refused, payload: { item: "copy" } });
    await waitFor("settled", settled(a, 2));
    assert.deepEqual(a.store.getState().board.items, ["x", "copy"]);

    const remote = a.seen.find((x) => x.type === "board/add" && (x.meta as { actionsync: { remote?: boolean } }).actionsync.remote)!;
    a.store.dispatch({ ...remote, payload: { item: "from a remote copy" } });
    await waitFor("settled", settled(a, 3));
    const { actions } = await readHistory(srv.url, channel);
    assert.equal(new Set(actions.map((x) => x.id)).size, 3);
    assert.ok(!actions.some((x) => x.id === refused.meta.actionsync.id));
    assert.deepEqual(a.store.getState().board, replay(actions, channel));
    assert.equal(a.store.getState().sync.pending, 0);
  });

  it("two_instances_in_one_store_leave_each_others_actions_alone", async () => {
    const srv = await server();
    const logger = captureLogger();
    const a = createSyncMiddleware({ transport: createLink(srv.url).transport, channel: "board:one", types: ["board/add"], storage: null, logger });
    const b = createSyncMiddleware({ transport: createLink(srv.url).transport, channel: "board:two", types: ["board/title"], storage: null, logger });
    cleanups.push(() => a.close(), () => b.close());
    const s = createStore(
      a.wrapReducer(b.wrapReducer(combineReducers({ board, one: a.reducer, two: b.reducer }))),
      applyMiddleware(a.middleware, b.middleware),
    );
    s.dispatch({ type: "board/add", payload: { item: "x" } });
    s.dispatch({ type: "board/title", payload: { title: "t" } });
    // Each channel gets its own instance's action, not the other's. (Only the channels
    // are checked: two nested wrapReducer do not keep each other's pending counts.)
    await waitFor("both echoed", () => s.getState().one.lastSeq === 1 && s.getState().two.lastSeq === 1);
    assert.deepEqual((await readHistory(srv.url, "board:one")).actions.map((x) => x.type), ["board/add"]);
    assert.deepEqual((await readHistory(srv.url, "board:two")).actions.map((x) => x.type), ["board/title"]);
    assert.deepEqual(s.getState().board, { title: "t", items: ["x"] });
    assert.deepEqual(logger.errors, []);
  });

  it("resends_with_the_same_ids_and_the_server_dedupes", async () => {
    const srv = await server();
    const channel = "board:dedupe";
    const link = createLink(srv.url);
    const a = store({ transport: link.transport, channel });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    // The subscription lags, so the echo cannot confirm the actions before the retries.
    link.hold();
    link.loseAcks(2);
    a.store.dispatch({ type: "board/add", payload: { item: "once" } });
    a.store.dispatch({ type: "board/move", payload: { item: "once", to: 0 } });
    await waitFor("three Dispatch calls", () => link.acks.length === 3);
    link.release();
    await waitFor("settled", settled(a, 2));
    assert.equal(link.dispatched.length, 3, "two lost acks, then one answered");
    assert.deepEqual(link.dispatched[1], link.dispatched[0]);
    assert.deepEqual(link.dispatched[2], link.dispatched[0]);
    const epoch = link.sentAfter[1][1];
    assert.notEqual(epoch, "");
    assert.deepEqual(link.sentAfter, [[0, ""], [0, epoch], [0, epoch]], "resends name where the actions were first sent");
    assert.deepEqual(link.acks.map((b) => b.map((x) => [Number(x.seq), x.duplicate])), [
      [[1, false], [2, false]],
      [[1, true], [2, true]],
      [[1, true], [2, true]],
    ]);
    const { actions } = await readHistory(srv.url, channel);
    assert.deepEqual(actions.map((x) => x.id), link.dispatched[0], "applied once");
    assert.deepEqual(a.store.getState().board.items, ["once"]);
  });

  it("resets_after_a_restart_that_reached_its_seq_and_confirms_by_ack", async () => {
    // A server restarts and, before this client is back, another tab sharing its outbox
    // sends the queued action: the new server's head equals the client's last seq. The
    // channel epoch tells the server the client's seq belongs to the lost history, so it
    // resets (instead of resuming silently) and continues after the head, which never
    // echoes that action: its ack confirms it.
    const first = await server();
    const channel = "board:skipped";
    const storage = createMemoryStorage();
    const link = createLink(first.url);
    const a = store({ transport: link.transport, channel, storage, clientId: "tab" });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    a.store.dispatch({ type: "board/add", payload: { item: "a0" } });
    await waitFor("confirmed", settled(a, 1));
    link.cut();
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await new Promise((r) => setTimeout(r, 20)); // saves are asynchronous
    const [queued] = (await storage.load()) as PendingEntry[];
    await first.stop();
    const second = await server([], first.port);
    const otherTab = createClient(SyncService, createConnectTransport({ baseUrl: second.url, httpVersion: "1.1" }));
    await otherTab.dispatch({ channel, clientId: "tab", actions: [{ id: queued.id, type: "board/add", payload: fromJson(ValueSchema, { item: "x" }) }] });
    link.heal();
    await waitFor("settled", settled(a, 1));
    assert.deepEqual(link.acks.at(-1)!.map((x) => [x.id, Number(x.seq), x.duplicate]), [[queued.id, 1, true]]);
    assert.deepEqual(a.store.getState().board.items, ["a0", "x"]);
    assert.equal(a.store.getState().sync.resets, 1, "the lost history is surfaced as a reset");
    // If the echo comes after all (it cannot here), it is not applied twice.
    assert.deepEqual((await readHistory(second.url, channel)).actions.map((x) => x.id), [queued.id]);
  });

  it("keeps_actions_dispatched_before_an_immediate_close", async () => {
    const storage = createMemoryStorage();
    const a = makeStore({ baseUrl: "http://127.0.0.1:1", channel: "board:early", storage, logger: captureLogger() });
    a.store.dispatch({ type: "board/add", payload: { item: "early" } });
    await a.close(); // before the middleware even started
    a.store.dispatch({ type: "board/add", payload: { item: "after close" } });
    assert.deepEqual(a.store.getState().board.items, ["early", "after close"]);
    await new Promise((r) => setTimeout(r, 10));
    const stored = (await storage.load()) as PendingEntry[];
    assert.deepEqual(stored.map((e) => e.action.payload), [{ item: "early" }, { item: "after close" }]);
    assert.equal(a.store.getState().sync.status, "offline");
  });

  it("closes_its_storage_after_the_last_save", async () => {
    const calls: string[] = [];
    const storage = {
      load: () => [],
      save: async (es: PendingEntry[]) => {
        await new Promise((r) => setTimeout(r, 5));
        calls.push(`save ${es.length}`);
      },
      close: () => void calls.push("close"),
    };
    const a = makeStore({ baseUrl: "http://127.0.0.1:1", channel: "board:storage-close", storage, logger: captureLogger() });
    await new Promise((r) => setTimeout(r, 0)); // started: loaded
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await a.close();
    await a.close();
    assert.deepEqual(calls, ["save 1", "close"]);
  });

  it("restores_a_persisted_outbox_at_start", async () => {
    const srv = await server();
    const channel = "board:restore";
    const entry = (id: string, item: string): PendingEntry => ({
      id,
      action: { type: "board/add", payload: { item }, meta: { actionsync: { id, local: true } } },
    });
    // The first entry reached the server before the page was closed; its ack did not.
    const plain = createClient(SyncService, createConnectTransport({ baseUrl: srv.url, httpVersion: "1.1" }));
    await plain.dispatch({ channel, clientId: "other", actions: [{ id: "zz-other", type: "board/add", payload: fromJson(ValueSchema, { item: "theirs" }) }] });
    await plain.dispatch({ channel, clientId: "me", actions: [{ id: "p1", type: "board/add", payload: fromJson(ValueSchema, { item: "p1" }) }] });
    const storage = createMemoryStorage([entry("p1", "p1"), entry("p2", "p2")]);
    const a = store({ transport: createLink(srv.url).transport, channel, storage, clientId: "me" });
    await waitFor("restored", () => a.store.getState().board.items.includes("p2"));
    await waitFor("settled", settled(a, 3));
    const { actions } = await readHistory(srv.url, channel);
    assert.deepEqual(actions.map((x) => x.id), ["zz-other", "p1", "p2"]);
    assert.deepEqual(a.store.getState().board.items, ["theirs", "p1", "p2"]);
  });

  it("replays_the_history_without_re_applying_the_pending_actions_after_each_action", async () => {
    const srv = await server();
    const channel = "board:load";
    const plain = createClient(SyncService, createConnectTransport({ baseUrl: srv.url, httpVersion: "1.1" }));
    for (let i = 0; i < 500; i += 100) {
      const actions = Array.from({ length: 100 }, (_, j) => ({ id: `h${i + j}`, type: "board/add", payload: fromJson(ValueSchema, { item: `h${i + j}` }) }));
      await plain.dispatch({ channel, clientId: "other", actions });
    }
    const pending: PendingEntry[] = Array.from({ length: 10 }, (_, i) => ({
      id: `p${i}`,
      action: { type: "board/add", payload: { item: `p${i}` }, meta: { actionsync: { id: `p${i}`, local: true, channel } } },
    }));
    let calls = 0;
    const sync = createSyncMiddleware({ transport: createLink(srv.url).transport, channel, types: boardTypes, storage: createMemoryStorage(pending), logger: captureLogger() });
    cleanups.push(() => sync.close());
    const counted: typeof board = (s, x) => (calls++, board(s, x));
    const s = createStore(sync.wrapReducer(combineReducers({ board: counted, sync: sync.reducer })), applyMiddleware(sync.middleware));
    let replayed = -1;
    s.subscribe(() => {
      if (replayed < 0 && s.getState().sync.lastSeq === 500) replayed = calls;
    });
    await waitFor("settled", () => s.getState().sync.lastSeq === 510 && s.getState().sync.pending === 0);
    assert.deepEqual(s.getState().board.items, [...Array.from({ length: 500 }, (_, i) => `h${i}`), ...pending.map((e) => (e.action.payload as { item: string }).item)]);
    // Each replayed action once, and the 10 pending ones once per page of the replay (not
    // once per replayed action: 5,500 calls).
    assert.ok(replayed > 0 && replayed < 800, `${replayed} reducer calls to replay 500 actions under 10 pending ones`);
  });

  it("ignores_malformed_and_unknown_remote_actions", async () => {
    const srv = await server();
    const channel = "board:junk";
    const plain = createClient(SyncService, createConnectTransport({ baseUrl: srv.url, httpVersion: "1.1" }));
    await plain.dispatch({
      channel,
      actions: [
        { id: "j1", type: "not/synced", payload: fromJson(ValueSchema, 1) },
        { id: "j2", type: ActionTypes.reset, payload: fromJson(ValueSchema, { channel, headSeq: 0 }) },
        { id: "j3", type: ActionTypes.rejected, payload: fromJson(ValueSchema, { channel, id: "x" }) },
        { id: "j4", type: "board/add", payload: fromJson(ValueSchema, { item: "ok" }) },
      ],
    });
    const logger = captureLogger();
    const a = store({ transport: createLink(srv.url).transport, channel, logger });
    await waitFor("settled", settled(a, 4));
    assert.deepEqual(a.store.getState().board.items, ["ok"]);
    assert.equal(a.store.getState().sync.resets, 0);
    assert.equal(logger.warns.filter((w) => w.includes("is not synced")).length, 3, logger.warns.join("\n"));
    assert.equal(a.seen.filter((x) => x.type === "not/synced").length, 0);
  });

  it("throws_a_TypeError_for_a_non_json_payload_and_applies_nothing", async () => {
    const srv = await server();
    const a = store({ transport: createLink(srv.url).transport, channel: "board:json" });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const bad: [unknown, RegExp][] = [
      [{ item: "f", fn: () => 1 }, /payload\.fn is a function/],
      [{ item: 10n }, /payload\.item is a BigInt/],
      [{ item: NaN }, /payload\.item is NaN/],
      [cyclic, /payload\.self is a cycle/],
      [[undefined], /payload\[0\] is undefined/],
    ];
    const before = a.store.getState();
    for (const [payload, want] of bad) {
      assert.throws(() => a.store.dispatch({ type: "board/add", payload }), (err: unknown) => err instanceof TypeError && want.test(err.message));
    }
    assert.throws(() => a.store.dispatch({ type: "board/add", item: "x" } as UnknownAction), /top-level key "item"/);
    assert.equal(a.store.getState(), before, "nothing applied");
    // RTK action creators without an argument set payload: undefined; that is fine.
    a.store.dispatch({ type: "board/title", payload: undefined });
    await waitFor("settled", settled(a, 1));
    assert.equal(a.store.getState().board.title, "undefined");
  });

  it("drops_undefined_payload_fields_as_JSON_does", async () => {
    // RTK prepare callbacks with optional fields set them to undefined.
    const srv = await server();
    const channel = "board:undefined";
    const a = store({ transport: createLink(srv.url).transport, channel });
    const b = store({ transport: createLink(srv.url).transport, channel });
    const dispatched = { type: "board/add", payload: { item: "x", due: undefined, more: { note: undefined, n: 1 } }, meta: { by: undefined } };
    const local = a.store.dispatch(dispatched) as unknown as UnknownAction;
    assert.deepEqual(dispatched.payload, { item: "x", due: undefined, more: { note: undefined, n: 1 } }, "not mutated");
    assert.deepEqual(local.payload, { item: "x", more: { n: 1 } }, "the local action carries what others will decode");
    assert.deepEqual(Object.keys(local.meta as object), ["actionsync"]);
    await quiesce(srv.url, channel, [a, b]);
    const remote = b.seen.find((x) => x.type === "board/add")!;
    assert.deepEqual(remote.payload, local.payload);
    assert.deepEqual(a.store.getState().board, b.store.getState().board);
  });

  it("works_with_plain_redux_and_refuses_a_second_store", async () => {
    const srv = await server();
    const sync = createSyncMiddleware({ transport: createLink(srv.url).transport, channel: "board:plain", types: boardTypes, storage: null, logger: captureLogger() });
    cleanups.push(() => sync.close());
    const s = createStore(sync.wrapReducer(combineReducers({ board, sync: sync.reducer })), applyMiddleware(sync.middleware));
    s.dispatch({ type: "board/add", payload: { item: "p" } });
    await waitFor("settled", () => s.getState().sync.pending === 0 && s.getState().sync.lastSeq === 1);
    assert.deepEqual(s.getState().board.items, ["p"]);
    assert.throws(() => createStore(combineReducers({ board }), applyMiddleware(sync.middleware)), /already in a store/);
  });

  it("checks_its_options", () => {
    assert.throws(() => createSyncMiddleware({ channel: "c", types: [] }), /baseUrl or transport/);
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "" }), /channel is required/);
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "c" }), /types or predicate/);
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [], clientId: "no spaces" }), /clientId/);
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [], maxBatch: 0 }), /maxBatch/);
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [], connectivity: {} as never }), /connectivity must have addEventListener/);
    const s = createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [] });
    assert.match(s.clientId, /^[A-Za-z0-9_-]{1,64}$/);
    assert.notEqual(s.clientId, createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [] }).clientId);
  });
});

function fromJsonItem(a: { payload?: unknown }): string {
  const v = a.payload as { kind: { case: string; value: { fields: Record<string, { kind: { value: string } }> } } };
  return v.kind.value.fields.item.kind.value;
}
