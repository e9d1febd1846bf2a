// createSync with Redux Toolkit: real server processes, RTK configureStore, createSlice,
// listenerMiddleware and thunks, connect-node transports.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createConnectTransport } from "@connectrpc/connect-node";
import { combineReducers, configureStore, createAction, createListenerMiddleware, createSlice, type PayloadAction } from "@reduxjs/toolkit";
import { createSync, isLocal, isRemote, type Emit, type SyncOptions } from "./index.js";
import { captureLogger, readHistory, startTestServer, waitFor } from "./testkit.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server() {
  const s = await startTestServer();
  cleanups.push(() => s.stop());
  return s;
}

interface Todo {
  id: string;
  title: string;
}

const todos = createSlice({
  name: "todos",
  initialState: { items: [] as Todo[], renamed: 0 },
  reducers: {
    added(state, action: PayloadAction<Todo>) {
      if (!state.items.some((t) => t.id === action.payload.id)) state.items.push(action.payload);
    },
    renamed(state, action: PayloadAction<{ id: string; title: string }>) {
      const t = state.items.find((x) => x.id === action.payload.id);
      if (t) t.title = action.payload.title;
      state.renamed++;
    },
  },
});
const cleared = createAction("todos/cleared");
const { added, renamed } = todos.actions;

/** syncOptions: a fresh client on channel of url (connect-node, memory outbox, quiet logger). */
function syncOptions(url: string, channel: string): SyncOptions {
  return {
    transport: createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    channel,
    actions: [todos.actions, cleared],
    storage: null,
    connectivity: null,
    logger: captureLogger(),
    autoStart: true,
  };
}

/** rtkStore builds an RTK store the way the README shows. */
function rtkStore(url: string, channel: string) {
  const sync = createSync(syncOptions(url, channel));
  const store = configureStore({
    reducer: sync.reducer({ todos: todos.reducer }),
    middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware),
  });
  cleanups.push(() => sync.close());
  return { sync, store };
}

// Type test: inside configureStore({ reducer: sync.reducer(...), middleware: callback }),
// next to the callback, the state is inferred (it was any with overloads), with the slice.
type IsAny<T> = 0 extends 1 & T ? true : false;
type RtkState = ReturnType<ReturnType<typeof rtkStore>["store"]["getState"]>;
const stateIsTyped: IsAny<RtkState> = false;
const statusIsThere: RtkState["sync"]["status"] = "connecting";
void stateIsTyped;
void statusIsThere;

describe("createSync", () => {
  it("two_rtk_stores_with_a_reducer_map_converge", async () => {
    const srv = await server();
    const a = rtkStore(srv.url, "todos:map");
    const b = rtkStore(srv.url, "todos:map");
    await waitFor("both connected", () => [a, b].every((m) => m.store.getState().sync.status === "connected"));
    a.store.dispatch(added({ id: "t1", title: "one" }));
    b.store.dispatch(renamed({ id: "t1", title: "uno" }));
    a.store.dispatch(cleared());
    await waitFor("a and b settled", () => [a, b].every((m) => m.store.getState().sync.pending === 0 && m.store.getState().sync.lastSeq === 3));
    assert.deepEqual(a.store.getState().todos, b.store.getState().todos);
    // Typed state: RootState has the slices and the status slice.
    const title: string = a.store.getState().todos.items[0].title;
    assert.ok(title === "one" || title === "uno");
    assert.equal(a.sync.selectStatus(a.store.getState()).status, "connected");
    assert.equal((await readHistory(srv.url, "todos:map")).headSeq, 3);
  });

  it("takes_a_root_reducer_function_and_adds_the_status_slice", async () => {
    const srv = await server();
    const warnings: unknown[] = [];
    const warn = console.error;
    console.error = (...a: unknown[]) => void warnings.push(a); // combineReducers warns on unknown keys with console.error
    try {
      const sync = createSync({ ...syncOptions(srv.url, "todos:root"), statusKey: "link" });
      cleanups.push(() => sync.close());
      const store = configureStore({
        reducer: sync.reducer(combineReducers({ todos: todos.reducer })),
        middleware: (gdm) => gdm().concat(sync.middleware),
      });
      await waitFor("connected", () => store.getState().link.status === "connected");
      const before = store.getState();
      store.dispatch({ type: "ui/nothing" });
      assert.equal(store.getState(), before, "an action nobody handles keeps the state object");
      store.dispatch(added({ id: "t1", title: "one" }));
      assert.equal(store.getState().link.pending, 1);
      await waitFor("confirmed", () => store.getState().link.pending === 0 && store.getState().link.lastSeq === 1);
      assert.deepEqual(store.getState().todos.items, [{ id: "t1", title: "one" }]);
      assert.deepEqual(Object.keys(store.getState()).sort(), ["link", "todos"]);
    } finally {
      console.error = warn;
    }
    assert.deepEqual(warnings, [], "combineReducers saw no unexpected key");
  });

  it("throws_when_the_middleware_is_in_a_store_without_its_reducer", () => {
    const sync = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    assert.throws(
      () => configureStore({ reducer: { todos: todos.reducer }, middleware: (gdm) => gdm().concat(sync.middleware) }),
      /the store's reducer is not sync\.reducer\(\.\.\.\)/,
    );
  });

  it("throws_when_a_synced_action_bypasses_the_middleware", () => {
    const sync = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    const store = configureStore({ reducer: sync.reducer({ todos: todos.reducer }) });
    assert.throws(() => store.dispatch(added({ id: "t1", title: "one" })), /reached the reducer without passing through sync\.middleware/);
    assert.deepEqual(store.getState().todos.items, [], "nothing applied");
    store.dispatch({ type: "ui/other" }); // not synced: fine
  });

  it("throws_when_the_status_key_is_taken_or_the_reducer_used_twice", () => {
    const sync = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    assert.throws(() => sync.reducer({ sync: todos.reducer }), /has a "sync" key already/);
    const other = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    other.reducer({ todos: todos.reducer });
    assert.throws(() => other.reducer({ todos: todos.reducer }), /called twice/);
    const third = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    const root = third.reducer((state: { n: number } | undefined = { n: 0 }) => state);
    assert.equal(root(undefined, { type: "x" }).n, 0);
    const numbers = createSync({ ...syncOptions("http://127.0.0.1:9", "todos:x"), autoStart: false });
    const bad = numbers.reducer((state: number | undefined = 0) => state);
    assert.throws(() => bad(undefined, { type: "x" }), /must be a plain object/);
  });

  it("autoStart_false_opens_no_stream_until_start", async () => {
    const srv = await server();
    const sync = createSync({ ...syncOptions(srv.url, "todos:ssr"), autoStart: false });
    cleanups.push(() => sync.close());
    const store = configureStore({ reducer: sync.reducer({ todos: todos.reducer }), middleware: (gdm) => gdm().concat(sync.middleware) });
    store.dispatch(added({ id: "t1", title: "rendered on the server" }));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(store.getState().sync.status, "connecting");
    assert.equal((await readHistory(srv.url, "todos:ssr")).headSeq, 0, "nothing sent before start()");
    assert.doesNotMatch(srv.log(), /Subscribe/, "no stream before start()");
    sync.start();
    sync.start(); // idempotent
    await waitFor("sent after start()", () => store.getState().sync.status === "connected" && store.getState().sync.pending === 0);
    assert.equal((await readHistory(srv.url, "todos:ssr")).headSeq, 1);
  });

  it("isRemote_and_isLocal_match_typed_actions_in_listeners_and_reducers", async () => {
    const srv = await server();
    const a = rtkStore(srv.url, "todos:listen");
    const heard: { remote: string[]; local: string[] } = { remote: [], local: [] };
    const listener = createListenerMiddleware();
    // As with RTK's isAnyOf, assign a matcher to a variable first: written inline,
    // TypeScript cannot infer the listener's action type.
    const remoteAdded = isRemote(added);
    const localAdded = isLocal(added);
    listener.startListening({
      matcher: remoteAdded,
      effect: (action) => {
        // Typed: payload is Todo, meta.actionsync is RemoteMeta.
        heard.remote.push(`${action.payload.title}@${action.meta.actionsync.seq}`);
      },
    });
    listener.startListening({ matcher: localAdded, effect: (action) => void heard.local.push(action.payload.title) });
    const sync = createSync(syncOptions(srv.url, "todos:listen"));
    cleanups.push(() => sync.close());
    const seenRemote = createSlice({
      name: "seen",
      initialState: { remoteTitles: [] as string[] },
      reducers: {},
      extraReducers: (builder) =>
        builder.addMatcher(isRemote(added), (state, action) => {
          state.remoteTitles.push(action.payload.title);
        }),
    });
    const b = configureStore({
      reducer: sync.reducer({ todos: todos.reducer, seen: seenRemote.reducer }),
      // The listener goes after sync.middleware to see local actions with their marker
      // (before it, they are not marked yet); remote actions reach it either way.
      middleware: (gdm) => gdm().concat(sync.middleware, listener.middleware),
    });
    await waitFor("both connected", () => a.store.getState().sync.status === "connected" && b.getState().sync.status === "connected");
    a.store.dispatch(added({ id: "t1", title: "from a" }));
    b.dispatch(added({ id: "t2", title: "from b" }));
    await waitFor("b heard both remote adds", () => heard.remote.length === 2);
    assert.deepEqual(heard.local, ["from b"]);
    assert.deepEqual(heard.remote.map((s) => s.split("@")[0]).sort(), ["from a", "from b"], "b's own action comes back as remote too (its confirmation)");
    assert.deepEqual([...b.getState().seen.remoteTitles].sort(), ["from a", "from b"]);
    assert.equal(isRemote({ type: "x" }), false);
    assert.equal(isLocal(b.dispatch(added({ id: "t3", title: "x" }))), true);
  });

  it("emit_shim_keeps_socket_style_thunks_working", async () => {
    const srv = await server();
    const make = () => {
      const sync = createSync(syncOptions(srv.url, "todos:emit"));
      cleanups.push(() => sync.close());
      const store = configureStore({
        reducer: sync.reducer({ todos: todos.reducer }),
        middleware: (gdm) => gdm({ thunk: { extraArgument: { emit: sync.emit } } }).concat(sync.middleware),
      });
      return { sync, store };
    };
    // A thunk as written for Socket.IO: thunk.withExtraArgument({ emit }).
    const addTodo = (title: string) => (_dispatch: unknown, _getState: unknown, { emit }: { emit: Emit }) => emit(added.type, { id: `id-${title}`, title });
    const a = make();
    const b = make();
    await waitFor("both connected", () => [a, b].every((m) => m.store.getState().sync.status === "connected"));
    a.store.dispatch(addTodo("from a's thunk"));
    assert.equal(a.store.getState().todos.items.length, 1, "applied at once in the sender's store");
    await waitFor("b got it", () => b.store.getState().todos.items.length === 1);
    assert.deepEqual(b.store.getState().todos.items, [{ id: "id-from a's thunk", title: "from a's thunk" }]);
    assert.throws(() => a.sync.emit("chat/typing", {}), /not synced/);
    assert.throws(() => (a.sync.emit as (...x: unknown[]) => unknown)(added.type, {}, () => {}), /no acknowledgement callback/);
    const early = createSync({ ...syncOptions(srv.url, "todos:emit"), autoStart: false });
    assert.throws(() => early.emit(added.type, {}), /before the store exists/);
    await waitFor("settled", () => a.store.getState().sync.pending === 0);
    assert.equal((await readHistory(srv.url, "todos:emit")).headSeq, 1, "sent once");
  });
});
