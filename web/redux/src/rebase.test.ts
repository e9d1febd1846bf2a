import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { combineReducers, type Reducer, type UnknownAction } from "redux";
import { ActionTypes, syncMeta, type PendingEntry } from "./actions.js";
import { createRebase, type Classified } from "./rebase.js";
import { createStatusReducer } from "./status.js";

const channel = "ch";

const items: Reducer<string[]> = (state = [], a: UnknownAction) => {
  if (a.type === "ADD") return [...state, a.payload as string];
  if (a.type === "STRICT_ADD") {
    if (state.includes(a.payload as string)) throw new Error(`${a.payload} is already there`);
    return [...state, a.payload as string];
  }
  if (a.type === "REMOVE") return state.filter((x) => x !== a.payload);
  if (a.type === "UI_CLEAR") return [];
  return state;
};
const title: Reducer<string> = (state = "", a: UnknownAction) => (a.type === "TITLE" ? (a.payload as string) : state);
const ui: Reducer<number> = (state = 0, a: UnknownAction) => (a.type === "UI" ? state + 1 : state);

function setup() {
  const classify = (a: unknown): Classified => {
    const action = a as UnknownAction;
    const m = syncMeta(action);
    if (action.type === ActionTypes.rejected) return { kind: "rejected", id: (action.payload as { id: string }).id };
    if (action.type === ActionTypes.restore) return { kind: "restore", entries: (action.payload as { entries: PendingEntry[] }).entries };
    if (action.type === ActionTypes.rebase) return { kind: "rebase" };
    if (m?.remote) return { kind: "confirmed", id: m.id!, seq: m.seq! };
    if (m?.local) return { kind: "local", id: m.id! };
    return { kind: "other" };
  };
  const drops: [string, string][] = [];
  const rebase = createRebase({
    classify,
    confirmedMarker: (id, seq) => ({ type: ActionTypes.confirmed, payload: { channel, id, seq } }),
    onDrop: (entry, err) => drops.push([entry.id, (err as Error).message]),
  });
  const root = combineReducers({ items, title, ui, sync: createStatusReducer(channel, (a) => syncMeta(a)?.local === true) });
  const reducer = rebase.wrap(root);
  let state = reducer(undefined, { type: "@@INIT" });
  return {
    rebase,
    drops,
    apply(a: UnknownAction) {
      state = reducer(state, a);
      return state;
    },
    get state() {
      return state;
    },
  };
}

const local = (type: string, payload: unknown, id: string) => ({ type, payload, meta: { actionsync: { id, local: true } } });
const remote = (type: string, payload: unknown, id: string, seq: number) => ({
  type,
  payload,
  meta: { actionsync: { remote: true, seq, id, clientId: "x", channel } },
});

describe("createRebase", () => {
  it("applies_local_actions_optimistically_and_confirms_them", () => {
    const s = setup();
    s.apply(local("ADD", "a", "1"));
    s.apply(local("ADD", "b", "2"));
    assert.deepEqual(s.state.items, ["a", "b"]);
    assert.equal(s.state.sync.pending, 2);
    const before = s.state.items;
    s.apply(remote("ADD", "a", "1", 1));
    // The oldest pending action confirmed in order: the visible items do not change identity.
    assert.equal(s.state.items, before);
    assert.equal(s.state.sync.pending, 1);
    assert.equal(s.state.sync.lastSeq, 1);
    s.apply(remote("ADD", "b", "2", 2));
    assert.deepEqual(s.state.items, ["a", "b"]);
    assert.deepEqual(s.state.sync, { status: "connecting", lastSeq: 2, pending: 0, error: null, resets: 0 });
    assert.deepEqual(s.rebase.pendingIds(), []);
  });

  it("rebases_pending_actions_over_remote_ones", () => {
    const s = setup();
    s.apply(local("ADD", "mine", "m1"));
    s.apply(remote("ADD", "theirs", "t1", 1));
    assert.deepEqual(s.state.items, ["theirs", "mine"]);
    assert.equal(s.state.sync.pending, 1);
    s.apply(remote("ADD", "mine", "m1", 2));
    assert.deepEqual(s.state.items, ["theirs", "mine"]);
    assert.equal(s.state.sync.pending, 0);
  });

  it("ends_in_server_order_for_conflicting_writes", () => {
    for (const [order, want] of [
      [["mine", "theirs"], "theirs"],
      [["theirs", "mine"], "mine"],
    ] as const) {
      const s = setup();
      s.apply(local("TITLE", "mine", "m"));
      assert.equal(s.state.title, "mine");
      order.forEach((who, i) => s.apply(remote("TITLE", who, who === "mine" ? "m" : "t", i + 1)));
      assert.equal(s.state.title, want, `order ${order.join(",")}`);
      assert.equal(s.state.sync.pending, 0);
    }
  });

  it("keeps_the_pending_action_on_top_until_it_is_confirmed", () => {
    const s = setup();
    s.apply(local("TITLE", "mine", "m"));
    s.apply(remote("TITLE", "theirs", "t", 1));
    // Not yet confirmed: the user keeps seeing their own edit.
    assert.equal(s.state.title, "mine");
  });

  it("rolls_back_a_rejected_action", () => {
    const s = setup();
    s.apply(local("ADD", "a", "1"));
    s.apply(local("ADD", "bad", "2"));
    s.apply(local("ADD", "c", "3"));
    s.apply({ type: ActionTypes.rejected, payload: { id: "2", channel, code: "permission_denied", message: "no", action: {} } });
    assert.deepEqual(s.state.items, ["a", "c"]);
    assert.equal(s.state.sync.pending, 2);
    assert.deepEqual(s.state.sync.error, { code: "permission_denied", message: "no" });
    assert.deepEqual(s.rebase.pendingIds(), ["1", "3"]);
  });

  it("restores_entries_before_newer_pending_ones", () => {
    const s = setup();
    s.apply(local("ADD", "new", "n"));
    const entries = [{ id: "o1", action: local("ADD", "old1", "o1") }, { id: "n", action: local("ADD", "new", "n") }];
    s.apply({ type: ActionTypes.restore, payload: { channel, entries } });
    assert.deepEqual(s.state.items, ["old1", "new"]);
    assert.equal(s.state.sync.pending, 2);
    assert.deepEqual(s.rebase.pendingIds(), ["o1", "n"]);
  });

  it("applies_other_actions_to_confirmed_and_visible_state", () => {
    const s = setup();
    s.apply(local("ADD", "a", "1"));
    s.apply({ type: "UI" });
    assert.equal(s.state.ui, 1);
    s.apply(remote("ADD", "z", "9", 1)); // recomputes from the confirmed state
    assert.equal(s.state.ui, 1);
    assert.deepEqual(s.state.items, ["z", "a"]);
  });

  it("keeps_visible_equal_to_confirmed_plus_pending_for_a_conflicting_local_only_action", () => {
    // UI_CLEAR is not synced and does not commute with the pending ADD: it applies under
    // the pending actions, so the store never shows a state that a later rebase undoes.
    const s = setup();
    s.apply(remote("ADD", "old", "o", 1));
    s.apply(local("ADD", "mine", "m"));
    s.apply({ type: "UI_CLEAR" });
    assert.deepEqual(s.state.items, ["mine"], "confirmed (cleared) + pending");
    s.apply(remote("ADD", "theirs", "t", 2));
    assert.deepEqual(s.state.items, ["theirs", "mine"], "no jump at the next rebase");
    s.apply(remote("ADD", "mine", "m", 3));
    assert.deepEqual(s.state.items, ["theirs", "mine"]);
    assert.equal(s.state.sync.pending, 0);
  });

  it("re_applies_pending_actions_once_per_deferred_batch", () => {
    let calls = 0;
    const rebase = createRebase({
      classify: (a) => (syncMeta(a)?.remote ? { kind: "confirmed", id: syncMeta(a)!.id!, seq: syncMeta(a)!.seq! } : syncMeta(a)?.local ? { kind: "local", id: syncMeta(a)!.id! } : (a as UnknownAction).type === ActionTypes.rebase ? { kind: "rebase" } : { kind: "other" }),
      confirmedMarker: () => ({ type: "noop" }),
    });
    const reducer = rebase.wrap((state: string[] = [], a: UnknownAction) => (calls++, a.type === "ADD" ? [...state, a.payload as string] : state));
    let state = reducer(undefined, { type: "@@INIT" });
    for (let i = 0; i < 3; i++) state = reducer(state, local("ADD", `mine${i}`, `m${i}`));
    calls = 0;
    rebase.defer(true);
    const before = state;
    for (let seq = 1; seq <= 100; seq++) state = reducer(state, remote("ADD", `t${seq}`, `t${seq}`, seq));
    assert.equal(state, before, "the visible state waits for the end of the batch");
    state = reducer(state, remote("ADD", "mine0", "m0", 101)); // ours, confirmed in the batch
    assert.equal(rebase.defer(false), true, "a rebase is due");
    state = reducer(state, { type: ActionTypes.rebase, payload: { channel } });
    assert.deepEqual(state.slice(-3), ["mine0", "mine1", "mine2"]);
    assert.equal(state.length, 103);
    assert.equal(calls, 101 + 2, "each confirmed action once, the 2 pending ones once");
    assert.deepEqual(rebase.pendingIds(), ["m1", "m2"]);

    // Without pending actions there is nothing to defer.
    state = reducer(state, remote("ADD", "mine1", "m1", 102));
    state = reducer(state, remote("ADD", "mine2", "m2", 103));
    rebase.defer(true);
    state = reducer(state, remote("ADD", "z", "z", 104));
    assert.equal(rebase.defer(false), false);
    assert.equal(state.at(-1), "z");
  });

  it("confirms_a_pending_action_that_is_not_the_oldest", () => {
    const s = setup();
    s.apply(local("ADD", "a", "1"));
    s.apply(local("ADD", "b", "2"));
    s.apply(remote("ADD", "b", "2", 1));
    assert.deepEqual(s.state.items, ["b", "a"]);
    assert.deepEqual(s.rebase.pendingIds(), ["1"]);
    assert.equal(s.state.sync.pending, 1);
  });

  it("drops_a_pending_action_that_throws_on_top_of_a_remote_one", () => {
    const s = setup();
    s.apply(local("STRICT_ADD", "x", "mine"));
    s.apply(local("ADD", "later", "mine2"));
    assert.deepEqual(s.state.items, ["x", "later"]);
    // Someone else added x first: re-applied on top, the pending strict add throws.
    s.apply(remote("ADD", "x", "theirs", 1));
    assert.deepEqual(s.state.items, ["x", "later"], "the remote action is applied, the throwing pending one dropped");
    assert.deepEqual(s.rebase.pendingIds(), ["mine2"]);
    assert.deepEqual(s.drops, [["mine", "x is already there"]]);
    assert.equal(s.state.sync.pending, 1);
    assert.equal(s.state.sync.lastSeq, 1);
    s.apply(remote("ADD", "y", "theirs2", 2));
    assert.deepEqual(s.state.items, ["x", "y", "later"], "later remote actions keep applying");
    assert.equal(s.state.sync.lastSeq, 2);
  });

  it("keeps_its_state_when_the_reducer_throws", () => {
    const rebase = createRebase({
      classify: (a) => (syncMeta(a)?.remote ? { kind: "confirmed", id: syncMeta(a)!.id!, seq: 1 } : syncMeta(a)?.local ? { kind: "local", id: syncMeta(a)!.id! } : { kind: "other" }),
      confirmedMarker: () => ({ type: "noop" }),
    });
    const reducer = rebase.wrap((state: string[] = [], a: UnknownAction) => {
      if (a.payload === "boom") throw new Error("boom");
      return a.type === "ADD" ? [...state, a.payload as string] : state;
    });
    let state = reducer(undefined, { type: "@@INIT" });
    state = reducer(state, local("ADD", "a", "1"));
    assert.throws(() => reducer(state, remote("ADD", "boom", "x", 1)));
    assert.throws(() => reducer(state, local("ADD", "boom", "2")));
    assert.deepEqual(rebase.pendingIds(), ["1"]);
    state = reducer(state, remote("ADD", "a", "1", 2));
    assert.deepEqual(state, ["a"]);
    assert.deepEqual(rebase.pendingIds(), []);
  });

  it("starts_over_when_a_parent_reducer_passes_undefined", () => {
    const s = setup();
    s.apply(remote("ADD", "a", "1", 1));
    const reducerState = s.apply({ type: "UI" });
    assert.deepEqual(reducerState.items, ["a"]);
    const rebase = createRebase({ classify: () => ({ kind: "other" }), confirmedMarker: () => ({ type: "noop" }) });
    const r = rebase.wrap(items);
    const st = r(["x"], { type: "UI" });
    assert.deepEqual(st, ["x"]);
    assert.deepEqual(r(undefined, { type: "LOGOUT" }), []);
  });
});
