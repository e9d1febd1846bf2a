import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { combineReducers, configureStore, createSlice, type Reducer } from "@reduxjs/toolkit";
import { ActionTypes, createSyncMiddleware, type SyncStatusState } from "./index.js";
import { createStatusReducer, initialStatus } from "./status.js";

describe("createStatusReducer", () => {
  const own = new WeakSet<object>();
  const reducer = createStatusReducer("ch", (a) => typeof a === "object" && a !== null && own.has(a));
  const run = (...actions: { type: string; [k: string]: unknown }[]) => actions.reduce((s, a) => reducer(s, a), reducer(undefined, { type: "@@init" }));

  it("starts_connecting", () => {
    assert.deepEqual(run(), { status: "connecting", lastSeq: 0, pending: 0, error: null, resets: 0 });
    assert.equal(run(), initialStatus);
  });
  it("applies_status_reset_rejected_and_remote_actions_of_its_channel", () => {
    const s = run(
      { type: ActionTypes.status, payload: { channel: "ch", status: "offline", error: { code: "unavailable", message: "down" } } },
      { type: ActionTypes.status, payload: { channel: "other", status: "connected" } },
      { type: "X", meta: { actionsync: { remote: true, seq: 7, id: "i", clientId: "c", channel: "ch" } } },
      { type: "X", meta: { actionsync: { remote: true, seq: 99, id: "i", clientId: "c", channel: "other" } } },
      { type: ActionTypes.reset, payload: { channel: "ch", headSeq: 3 } },
      { type: ActionTypes.rejected, payload: { channel: "ch", id: "a", code: "permission_denied", message: "no", action: { type: "A" } } },
    );
    assert.deepEqual(s, { status: "offline", lastSeq: 3, pending: 0, error: { code: "permission_denied", message: "no" }, resets: 1 });
  });
  it("counts_only_its_own_local_actions", () => {
    const mine = { type: "A", meta: { actionsync: { id: "1", local: true } } };
    own.add(mine);
    const s = run(mine, { type: "A", meta: { actionsync: { id: "2", local: true } } });
    assert.equal(s.pending, 1);
    assert.equal(reducer(s, { type: ActionTypes.confirmed, payload: { channel: "ch", id: "1", seq: 4 } }).pending, 0);
  });
  it("returns_the_same_state_for_a_status_that_changes_nothing", () => {
    const s = run();
    assert.equal(reducer(s, { type: ActionTypes.status, payload: { channel: "ch", status: "connecting" } }), s);
    assert.equal(reducer(s, { type: "unrelated" }), s);
  });
});

describe("types", () => {
  it("infers_the_root_state_through_wrapReducer", () => {
    const todos = createSlice({ name: "todos", initialState: [] as string[], reducers: { add: (s, a: { payload: string }) => [...s, a.payload] } });
    const sync = createSyncMiddleware({ baseUrl: "http://127.0.0.1:1", channel: "c", types: ["todos/add"], storage: null });
    const store = configureStore({
      reducer: sync.wrapReducer(combineReducers({ todos: todos.reducer, sync: sync.reducer })),
      middleware: (gDM) => gDM().concat(sync.middleware),
    });
    // Compile-time checks (tsc --noEmit runs over the tests): the state keeps its types.
    const todosState: string[] = store.getState().todos;
    const status: SyncStatusState = store.getState().sync;
    const wrapped: Reducer<{ n: number }> = sync.wrapReducer((s: { n: number } = { n: 0 }) => s);
    // @ts-expect-error lastSeq is a number, not a string
    const wrong: string = store.getState().sync.lastSeq;
    void [todosState, status, wrapped, wrong];
    return sync.close();
  });
});
