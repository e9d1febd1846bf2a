import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { combineReducers, configureStore, createSlice } from "@reduxjs/toolkit";
import { ActionTypes, createMemoryStateStorage, createMemoryStorage, createSyncMiddleware, createWebStateStorage, isReplaceAction, type PendingEntry, type SavedState, type StateStorage } from "./index.js";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { createPersistence, stateKey } from "./persist.js";
import { captureLogger, channelEpoch, createLink, fakeWebStorage, makeStore, readHistory, replay, startTestServer, waitFor } from "./testkit.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(args: string[] = []) {
  const s = await startTestServer(args);
  cleanups.push(() => s.stop());
  return s;
}

function store(options: Parameters<typeof makeStore>[0]) {
  const m = makeStore({ logger: captureLogger(), ...options });
  cleanups.push(() => m.close());
  return m;
}

const remoteSeqs = (seen: readonly object[]) =>
  seen.map((a) => ((a as { meta?: unknown }).meta as { actionsync?: { remote?: boolean; seq?: number } } | undefined)?.actionsync).filter((m) => m?.remote).map((m) => m!.seq);

async function dispatchAs(url: string, channel: string, clientId: string, actions: { id: string; type: string; payload: unknown }[]) {
  const plain = createClient(SyncService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  await plain.dispatch({ channel, clientId, actions: actions.map((a) => ({ ...a, payload: fromJson(ValueSchema, a.payload as never) })) });
}

describe("createWebStateStorage", () => {
  it("keeps_a_header_line_and_the_state_as_is", () => {
    const web = fakeWebStorage();
    const s = createWebStateStorage("k", web);
    assert.equal(s.load(), null);
    s.save({ version: "v1", seq: 7, epoch: "e", state: '{"a":"x\\ny"}' });
    assert.equal(web.m.get("k"), '{"version":"v1","seq":7,"epoch":"e"}\n{"a":"x\\ny"}');
    assert.deepEqual(s.load(), { version: "v1", seq: 7, epoch: "e", state: '{"a":"x\\ny"}' });
    s.save(null);
    assert.equal(web.m.has("k"), false);
    web.m.set("k", "not a header");
    assert.throws(() => s.load(), /no valid header/);
  });
});

describe("createPersistence", () => {
  const position = { seq: 0, epoch: "" };
  let confirmed: unknown = { n: 0 };
  const source = { confirmed: () => confirmed, position: () => position };

  it("saves_at_most_once_per_throttle_and_on_close_once_the_epoch_is_known", async () => {
    const storage = createMemoryStateStorage();
    let saves = 0;
    const counting: StateStorage = { load: storage.load, save: (s) => (saves++, storage.save(s)) };
    const p = createPersistence({ version: "v", storage: counting, throttleMs: 30 }, source, captureLogger());
    p.changed();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(saves, 0, "no epoch yet: a seq alone means nothing to the server");
    Object.assign(position, { seq: 3, epoch: "e1" });
    for (let i = 0; i < 10; i++) p.changed();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(saves, 1);
    assert.deepEqual(storage.saved, { version: "v", seq: 3, epoch: "e1", state: '{"n":0}' });
    confirmed = { n: 1 };
    position.seq = 4;
    p.changed();
    await p.close();
    assert.equal(saves, 2, "close saves what changed");
    assert.equal(storage.saved?.seq, 4);
    p.changed();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(saves, 2, "nothing after close");
  });

  it("discards_another_version_and_what_does_not_deserialize", async () => {
    for (const [saved, want] of [
      [{ version: "old", seq: 1, epoch: "e", state: "{}" }, /discarding the saved state of version "old"/],
      [{ version: "v", seq: 1, epoch: "e", state: "{nope" }, /does not deserialize/],
      [{ version: "v", seq: -1, epoch: "e", state: "{}" }, /malformed/],
    ] as [SavedState, RegExp][]) {
      const storage = createMemoryStateStorage(saved);
      const logger = captureLogger();
      const p = createPersistence({ version: "v", storage }, source, logger);
      assert.equal(p.load(), null);
      await p.close();
      assert.equal(storage.saved, null, "removed");
      assert.match([...logger.warns, ...logger.errors].join("\n"), want);
    }
    const p = createPersistence({ version: "v", storage: createMemoryStateStorage({ version: "v", seq: 2, epoch: "e", state: '{"a":1}' }) }, source, captureLogger());
    assert.deepEqual(p.load(), { value: { a: 1 }, seq: 2, epoch: "e" });
  });

  it("forget_removes_the_saved_state_and_saves_nothing_more", async () => {
    Object.assign(position, { seq: 5, epoch: "e" });
    const storage = createMemoryStateStorage({ version: "v", seq: 2, epoch: "e", state: "{}" });
    const p = createPersistence({ version: "v", storage, throttleMs: 1 }, source, captureLogger());
    p.changed();
    p.forget();
    p.changed();
    await new Promise((r) => setTimeout(r, 20));
    await p.close();
    assert.equal(storage.saved, null);
  });
});

describe("persist", () => {
  it("a_reload_shows_the_saved_state_at_once_and_resumes_after_its_seq", async () => {
    const srv = await server();
    const channel = "board:reload";
    const state = createMemoryStateStorage();
    const a = store({ transport: createLink(srv.url).transport, channel, persist: { version: "t1", storage: state } });
    for (const item of ["a", "b", "c"]) a.store.dispatch({ type: "board/add", payload: { item } });
    a.store.dispatch({ type: "ui/click" });
    await waitFor("confirmed", () => a.store.getState().sync.lastSeq === 3 && a.store.getState().sync.pending === 0);
    await a.close();
    assert.equal(state.saved?.seq, 3);
    assert.equal(state.saved?.version, "t1");
    await dispatchAs(srv.url, channel, "other", [{ id: "d", type: "board/add", payload: { item: "d" } }]);

    const b = store({ transport: createLink(srv.url).transport, channel, persist: { version: "t1", storage: state } });
    // At once, before any message from the server: the first render shows it.
    assert.deepEqual(b.store.getState().board, { title: "", items: ["a", "b", "c"] });
    assert.deepEqual(b.store.getState().ui, { clicks: 1, added: ["a", "b", "c"] }, "the whole confirmed state, UI slices included");
    assert.deepEqual(b.store.getState().sync, { status: "connecting", lastSeq: 3, pending: 0, error: null, resets: 0 }, "the saved status slice does not show");
    await waitFor("caught up", () => b.store.getState().sync.status === "connected" && b.store.getState().sync.lastSeq === 4);
    assert.deepEqual(remoteSeqs(b.seen), [4], "resumed after the saved seq");
    assert.deepEqual(b.store.getState().board, replay((await readHistory(srv.url, channel)).actions, channel));
  });

  it("shows_the_saved_state_offline", async () => {
    const gone = await startTestServer();
    await gone.stop();
    const state = createMemoryStateStorage({ version: "t1", seq: 9, epoch: "e", state: JSON.stringify({ board: { title: "kept", items: ["x"] } }) });
    const b = store({ transport: createLink(gone.url).transport, channel: "board:offline-reload", persist: { version: "t1", storage: state } });
    assert.deepEqual(b.store.getState().board, { title: "kept", items: ["x"] });
    await waitFor("offline", () => b.store.getState().sync.status === "offline");
    assert.deepEqual(b.store.getState().board, { title: "kept", items: ["x"] });
    assert.equal(b.store.getState().sync.lastSeq, 9);
  });

  it("discards_a_saved_state_of_another_version_and_replays_the_history", async () => {
    const srv = await server();
    const channel = "board:version";
    await dispatchAs(srv.url, channel, "other", [{ id: "1", type: "board/add", payload: { item: "real" } }]);
    const state = createMemoryStateStorage({ version: "t0", seq: 1, epoch: "e", state: JSON.stringify({ board: { title: "", items: ["stale shape"] } }) });
    const b = store({ transport: createLink(srv.url).transport, channel, persist: { version: "t1", storage: state, throttleMs: 10 } });
    assert.deepEqual(b.store.getState().board.items, []);
    await waitFor("replayed", () => b.store.getState().sync.status === "connected" && b.store.getState().sync.lastSeq === 1);
    assert.deepEqual(b.store.getState().board.items, ["real"]);
    await waitFor("saved again", () => state.saved?.version === "t1");
  });

  it("keeps_the_live_status_when_an_asynchronous_storage_restores_the_state", async () => {
    // The status slice inside the saved state is from another session (connected, an
    // error, 7 resets); the store is offline now, with its own error.
    const srv = await server();
    const channel = "board:async";
    const saved: SavedState = {
      version: "t1",
      seq: 0,
      epoch: "",
      state: JSON.stringify({ board: { title: "saved", items: [] }, sync: { status: "connected", lastSeq: 99, pending: 3, error: { code: "x", message: "old" }, resets: 7 } }),
    };
    const storage: StateStorage = { load: () => new Promise((r) => setTimeout(() => r(saved), 20)), save() {} };
    const device = { onLine: false, addEventListener() {}, removeEventListener() {} };
    const b = store({ transport: createLink(srv.url).transport, channel, persist: { version: "t1", storage }, connectivity: device });
    await waitFor("restored", () => b.store.getState().board.title === "saved");
    assert.deepEqual(b.store.getState().sync, { status: "offline", lastSeq: 0, pending: 0, error: { code: "unavailable", message: "the device is offline" }, resets: 0 });
    const replace = b.seen.find((x) => x.type === ActionTypes.replace)!;
    assert.deepEqual({ ...(replace.payload as object), state: undefined }, { channel, state: undefined, seq: 0, epoch: "", source: "storage" });
  });

  it("restores_through_the_apps_reducers_with_select", async () => {
    // The RTK pattern: the slice restores its part from actionsync/replace.
    const srv = await server();
    const channel = "board:select";
    const todos = createSlice({
      name: "todos",
      initialState: [] as string[],
      reducers: { add: (s, a: { payload: string }) => [...s, a.payload] },
      extraReducers: (b) => b.addMatcher(isReplaceAction<string[]>, (_, a) => (a.payload.channel === channel ? a.payload.state : _)),
    });
    const draft = createSlice({ name: "draft", initialState: "", reducers: { type: (_, a: { payload: string }) => a.payload } });
    const storage = createMemoryStateStorage();
    const make = () => {
      const sync = createSyncMiddleware({ transport: createLink(srv.url).transport, channel, types: ["todos/add"], storage: null, logger: captureLogger(), persist: { version: "todos-1", storage, select: (s: { todos: string[] }) => s.todos } });
      cleanups.push(() => sync.close());
      const s = configureStore({
        reducer: sync.wrapReducer(combineReducers({ todos: todos.reducer, draft: draft.reducer, sync: sync.reducer })),
        middleware: (gDM) => gDM().concat(sync.middleware),
      });
      return { sync, s };
    };
    const first = make();
    first.s.dispatch(todos.actions.add("one"));
    first.s.dispatch(draft.actions.type("half-typed"));
    await waitFor("confirmed", () => first.s.getState().sync.lastSeq === 1 && first.s.getState().sync.pending === 0);
    await first.sync.close();
    assert.equal(storage.saved?.state, '["one"]', "only the selected part");
    const second = make();
    assert.deepEqual(second.s.getState().todos, ["one"]);
    assert.equal(second.s.getState().draft, "", "the other slices start fresh");
    assert.equal(second.s.getState().sync.lastSeq, 1);
  });

  it("forgets_the_saved_state_after_a_reset", async () => {
    // The saved state belongs to a history the server no longer has (another epoch).
    const srv = await server();
    const channel = "board:forget";
    const storage = createMemoryStateStorage({ version: "t1", seq: 5, epoch: "lost", state: JSON.stringify({ board: { title: "", items: ["old"] } }) });
    const b = store({ transport: createLink(srv.url).transport, channel, persist: { version: "t1", storage, throttleMs: 1 } });
    await waitFor("reset", () => b.store.getState().sync.resets === 1 && b.store.getState().sync.status === "connected");
    b.store.dispatch({ type: "board/add", payload: { item: "new" } });
    await waitFor("confirmed", () => b.store.getState().sync.pending === 0 && b.store.getState().sync.lastSeq === 1);
    await b.close();
    assert.equal(storage.saved, null, "a reload replays what the server has instead of the stale state");
  });

  it("settles_an_outbox_action_already_in_the_restored_state_without_applying_it_twice", async () => {
    // The state was saved after the action's echo, but the outbox (or a closed tab's
    // outbox, adopted) still has it: the server answers its id as a duplicate at a seq
    // before the restored one, and the stream will not echo it again.
    const srv = await server();
    const channel = "board:settle";
    await dispatchAs(srv.url, channel, "me", [{ id: "p1", type: "board/append", payload: { item: "p" } }]);
    const { headSeq } = await readHistory(srv.url, channel);
    const link = createLink(srv.url);
    const epoch = await channelEpoch(srv.url, channel);
    const state = createMemoryStateStorage({ version: "t1", seq: headSeq, epoch, state: JSON.stringify({ board: { title: "", items: ["p"] } }) });
    const entry: PendingEntry = { id: "p1", action: { type: "board/append", payload: { item: "p" }, meta: { actionsync: { id: "p1", local: true, channel } } } };
    const b = store({ transport: link.transport, channel, clientId: "me", storage: createMemoryStorage([entry]), persist: { version: "t1", storage: state } });
    await waitFor("settled", () => b.store.getState().sync.status === "connected" && b.store.getState().sync.pending === 0 && link.acks.length === 1);
    assert.deepEqual(link.acks[0].map((x) => [x.id, Number(x.seq), x.duplicate]), [["p1", 1, true]]);
    assert.deepEqual(b.store.getState().board.items, ["p"], "not twice");
    assert.deepEqual(b.store.getState().board, replay((await readHistory(srv.url, channel)).actions, channel));
    assert.equal(b.seen.filter((x) => x.type === ActionTypes.rejected).length, 0);
  });

  it("checks_its_options", () => {
    assert.throws(() => createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [], persist: {} as never }), /persist.version is required/);
    // In Node there is no localStorage: without a storage nothing is persisted.
    const s = createSyncMiddleware({ baseUrl: "http://x", channel: "c", types: [], persist: { version: "1" } });
    void s.close();
    assert.equal(stateKey("board:1"), "actionsync:state:board:1");
  });
});
