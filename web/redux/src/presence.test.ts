// Presence as Redux state: real server processes, createSync with RTK stores over
// connect-node, and the pure reducer of presence events.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { configureStore, createSlice, type Middleware, type PayloadAction } from "@reduxjs/toolkit";
import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { Provider } from "react-redux";
import { ActionTypes, createSync, type PresenceChange, type PresenceState } from "./index.js";
import { applyPresence, emptyPresence, presenceMembers, presenceOthers } from "./presence.js";
import { usePresence } from "./react.js";
import { createStatusReducer } from "./status.js";
import { captureLogger, createLink, startTestServer, waitFor } from "./testkit.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const GRACE_MS = 300;

async function server(args: string[] = []) {
  const s = await startTestServer(["--presence-grace", `${GRACE_MS}ms`, ...args]);
  cleanups.push(() => s.stop());
  return s;
}

const tasks = createSlice({
  name: "tasks",
  initialState: { titles: [] as string[] },
  reducers: { added: (state, action: PayloadAction<string>) => void state.titles.push(action.payload) },
});

/** client builds an RTK store the README's way, with presence, over a breakable link. */
function client(url: string, channel: string, clientId: string, info: Record<string, string>) {
  const link = createLink(url);
  const logger = captureLogger();
  const sync = createSync({ transport: link.transport, channel, clientId, actions: tasks.actions, storage: null, connectivity: null, logger, autoStart: true, presence: info, backoff: { initialMs: 20, maxMs: 200 } });
  const seen: string[] = [];
  const recorder: Middleware = () => (next) => (action) => {
    seen.push((action as { type: string }).type);
    return next(action);
  };
  const store = configureStore({
    reducer: sync.reducer({ tasks: tasks.reducer }),
    middleware: (gdm) => gdm().concat(sync.middleware, recorder),
  });
  cleanups.push(() => sync.close());
  const presence = () => sync.selectPresence(store.getState())!;
  const names = () => sync.selectMembers(store.getState()).map((m) => `${m.clientId}:${String(m.info.name)}${m.info.editing ? `@${String(m.info.editing)}` : ""}`);
  const others = () => sync.selectOthers(store.getState()).map((m) => m.clientId);
  return { sync, store, link, logger, seen, presence, names, others };
}

describe("presence", () => {
  it("members_see_each_other_edit_and_leave_after_the_grace_period", async () => {
    const s = await server();
    const a = client(s.url, "board:p1", "ada", { name: "Ada" });
    const b = client(s.url, "board:p1", "bob", { name: "Bob" });
    await waitFor("both see both", () => a.presence().count === 2 && b.presence().count === 2 && a.names().length === 2 && b.names().length === 2);
    assert.deepEqual(a.names(), b.names(), "the same members in the same (join) order");
    assert.deepEqual(a.others(), ["bob"]);
    assert.deepEqual(b.others(), ["ada"]);
    assert.equal(a.presence().self, "ada");
    assert.equal(a.sync.selectMembers(a.store.getState()), a.sync.selectMembers(a.store.getState()), "the same array until presence changes");

    // Presence never enters the outbox, the pending actions or the seq.
    const dispatchesBefore = b.link.dispatched.length;
    b.sync.setPresence({ name: "Bob", editing: "t1" });
    await waitFor("a sees bob editing", () => a.names().includes("bob:Bob@t1"));
    assert.deepEqual(b.sync.pending(), []);
    assert.equal(b.store.getState().sync.pending, 0);
    assert.equal(b.store.getState().sync.lastSeq, 0);
    assert.equal(b.link.dispatched.length, dispatchesBefore, "no Dispatch for presence");
    assert.ok(b.link.methods.includes("UpdatePresence"));
    assert.ok(a.seen.includes(ActionTypes.presence));

    // A synced action still works beside presence.
    a.store.dispatch(tasks.actions.added("write"));
    await waitFor("b has the task", () => b.store.getState().tasks.titles.includes("write"));
    b.sync.setPresence({ name: "Bob" });
    await waitFor("a sees bob stop editing", () => a.names().includes("bob:Bob"));

    const closed = Date.now();
    await b.sync.close();
    await waitFor("a sees bob leave", () => a.presence().count === 1, 5_000);
    const after = Date.now() - closed;
    assert.ok(after >= GRACE_MS - 20, `bob left ${after} ms after closing, want at least the grace period ${GRACE_MS} ms`);
    assert.deepEqual(a.names(), ["ada:Ada"]);
    assert.deepEqual(a.others(), []);
  });

  it("keeps_presence_across_a_reconnect_and_sends_info_set_while_offline", async () => {
    const s = await server();
    const a = client(s.url, "board:p2", "ada", { name: "Ada" });
    const b = client(s.url, "board:p2", "bob", { name: "Bob" });
    await waitFor("both see both", () => a.presence().count === 2 && b.presence().count === 2);
    const before = b.presence();
    b.link.cut();
    await waitFor("b offline", () => b.store.getState().sync.status === "offline");
    assert.equal(b.presence(), before, "the state stays until the next stream's snapshot replaces it");
    b.sync.setPresence({ name: "Bob", editing: "t9" });
    b.link.heal();
    await waitFor("a sees the info set while offline", () => a.names().includes("bob:Bob@t9"), 5_000);
    await waitFor("b back", () => b.store.getState().sync.status === "connected");
    assert.deepEqual(b.names(), a.names());
    // The reconnect was within the grace period: a saw no leave.
    assert.equal(a.presence().count, 2);
  });

  it("set_before_the_first_snapshot_is_not_lost", async () => {
    const s = await server();
    const a = client(s.url, "board:p3", "ada", { name: "Ada" });
    const b = client(s.url, "board:p3", "bob", { name: "Bob" });
    // Right away: the stream may be subscribing with the old info at this moment.
    b.sync.setPresence({ name: "Bob", editing: "t2" });
    await waitFor("a sees b's newest info", () => a.names().includes("bob:Bob@t2"));
    b.sync.setPresence({ name: "Bob", editing: "t3" });
    b.sync.setPresence({ name: "Bob", editing: "t4" });
    await waitFor("the newest of several quick sets wins", () => a.names().includes("bob:Bob@t4"));
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(a.names().includes("bob:Bob@t4"));
  });

  it("refused_info_is_reported_once_and_bad_calls_throw", async () => {
    const s = await server(["--max-presence-info-bytes", "64"]);
    const a = client(s.url, "board:p4", "ada", { name: "Ada" });
    await waitFor("a is a member", () => a.presence().count === 1);
    a.sync.setPresence({ name: "x".repeat(100) });
    await waitFor("a warning", () => a.logger.warns.some((w) => w.includes("UpdatePresence") && w.includes("limit 64")));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(a.link.methods.filter((m) => m === "UpdatePresence").length, 1, "not retried in a loop");
    assert.deepEqual(a.names(), ["ada:Ada"]);
    assert.throws(() => a.sync.setPresence([] as never), TypeError);
    assert.throws(() => a.sync.setPresence(null as never), TypeError);

    const plain = createSync({ baseUrl: s.url, channel: "board:p4", actions: tasks.actions, storage: null, connectivity: null, autoStart: false });
    assert.throws(() => plain.setPresence({ name: "x" }), /presence option/);
    assert.throws(() => createSync({ baseUrl: s.url, channel: "c", actions: tasks.actions, presence: "Ada" as never }), TypeError);
  });
});

describe("presence state", () => {
  const m = (id: string, name = id) => ({ clientId: id, subject: "", info: { name } });
  it("applies_snapshot_join_leave_count", () => {
    const steps: [PresenceChange, string[], number][] = [
      [{ kind: "snapshot", members: [m("a"), m("b")], count: 2 }, ["a", "b"], 2],
      [{ kind: "join", member: m("c"), count: 3 }, ["a", "b", "c"], 3],
      [{ kind: "join", member: m("a", "A2"), count: 3 }, ["a", "b", "c"], 3], // replace, order kept
      [{ kind: "count", count: 7 }, ["a", "b", "c"], 7],
      [{ kind: "leave", clientId: "b", count: 6 }, ["a", "c"], 6],
      [{ kind: "leave", clientId: "unlisted", count: 5 }, ["a", "c"], 5],
      [{ kind: "snapshot", members: [m("c")], count: 1 }, ["c"], 1],
    ];
    let s: PresenceState = { ...emptyPresence, self: "a" };
    for (const [change, order, count] of steps) {
      s = applyPresence(s, change);
      assert.deepEqual(s.order, order, JSON.stringify(change));
      assert.deepEqual(Object.keys(s.members).sort(), [...order].sort());
      assert.equal(s.count, count);
    }
    const t = applyPresence(applyPresence({ ...emptyPresence, self: "a" }, steps[0][0]), steps[2][0]);
    assert.equal(t.members.a.info.name, "A2");
    assert.deepEqual(presenceOthers(t).map((x) => x.clientId), ["b"]);
    assert.deepEqual(presenceMembers(t).map((x) => x.clientId), ["a", "b"]);
  });

  it("status_slice_keeps_live_presence_on_replace", () => {
    const live: PresenceState = { ...emptyPresence, count: 1, order: ["a"], members: { a: m("a") }, self: "a" };
    const r = createStatusReducer("c", () => false, () => ({ status: "connected", error: null, resets: 0, presence: live }), true);
    let s = r(undefined, { type: "init" });
    assert.deepEqual(s.presence, emptyPresence);
    s = r(s, { type: ActionTypes.presence, payload: { channel: "c", change: { kind: "count", count: 1 }, presence: live } });
    assert.equal(s.presence, live);
    assert.equal(r(s, { type: ActionTypes.presence, payload: { channel: "other", change: { kind: "count", count: 0 }, presence: emptyPresence } }), s);
    // A state saved in another session (or a snapshot) brings its own presence: not shown.
    const replaced = r({ ...s, presence: { ...emptyPresence, count: 9 } }, { type: ActionTypes.replace, payload: { channel: "c", state: {}, seq: 3, epoch: "e", source: "storage" } });
    assert.equal(replaced.presence, live);
    const without = createStatusReducer("c", () => false)(undefined, { type: "init" });
    assert.equal("presence" in without, false, "no presence key without the option");
  });

  it("usePresence_renders_members_and_others", () => {
    const sync = createSync({ baseUrl: "http://127.0.0.1:9", channel: "c", actions: tasks.actions, storage: null, connectivity: null, autoStart: false, presence: { name: "Ada" } });
    const store = configureStore({ reducer: sync.reducer({ tasks: tasks.reducer }), middleware: (gdm) => gdm().concat(sync.middleware) });
    const presence: PresenceState = { members: { a: m("a", "Ada"), b: m("b", "Bob") }, order: ["a", "b"], count: 3, self: "a" };
    store.dispatch({ type: ActionTypes.presence, payload: { channel: "c", change: { kind: "count", count: 3 }, presence } });
    function View() {
      const p = usePresence(sync);
      return createElement("p", null, `${p.members.map((x) => x.info.name).join(",")} | ${p.others.map((x) => x.info.name).join(",")} | ${p.count} | ${p.self}`);
    }
    assert.equal(renderToString(createElement(Provider, { store, children: createElement(View) })), "<p>Ada,Bob | Bob | 3 | a</p>");
    void sync.close();
  });
});
