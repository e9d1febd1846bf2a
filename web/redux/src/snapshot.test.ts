import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { ActionTypes, createMemoryStateStorage, createMemoryStorage, type ReplacePayload } from "./index.js";
import { SnapshotSchema, SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { createSnapshotWriter, decodeSnapshot } from "./snapshot.js";
import { syncMeta, type ConfirmedPayload } from "./actions.js";
import { captureLogger, createLink, expectedPending, makeStore, readHistory, replay, startTestServer, waitFor } from "./testkit.js";
import { fromWire } from "./wire.js";

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

const snapshots = { version: "board-s1", select: (s: { board: unknown }) => s.board };
const remoteSeqs = (seen: readonly object[]) =>
  seen.map((a) => ((a as { meta?: { actionsync?: { remote?: boolean; seq?: number } } }).meta?.actionsync)).filter((m) => m?.remote).map((m) => m!.seq!);
const replaces = (seen: readonly { type: string; payload?: unknown }[]) => seen.filter((a) => a.type === ActionTypes.replace).map((a) => a.payload as ReplacePayload);

async function heldSnapshot(url: string, channel: string) {
  const plain = createClient(SyncService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  try {
    return (await plain.getSnapshot({ channel })).snapshot;
  } catch (e) {
    if (ConnectError.from(e).code === Code.NotFound) return undefined;
    throw e;
  }
}

/** untilSnapshot waits until the channel holds a snapshot at minSeq or later, and returns it. */
async function untilSnapshot(url: string, channel: string, minSeq: number) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const held = await heldSnapshot(url, channel);
    if (held && Number(held.seq) >= minSeq) return held;
    if (Date.now() > deadline) throw new Error(`no snapshot at seq >= ${minSeq} of ${channel}: ${held?.seq}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** edit makes m dispatch n board/add actions (items prefix0..) and waits until they are confirmed. */
async function edit(m: ReturnType<typeof makeStore>, n: number, prefix: string) {
  const start = m.store.getState().sync.lastSeq;
  for (let i = 0; i < n; i++) m.store.dispatch({ type: "board/add", payload: { item: `${prefix}${i}` } });
  await waitFor(`${n} edits confirmed`, () => m.store.getState().sync.pending === 0 && m.store.getState().sync.lastSeq >= start + n, 20_000);
}

describe("snapshots", () => {
  it("a_new_client_rebuilds_a_board_edited_500_times_from_the_snapshot_though_history_keeps_50", async () => {
    const srv = await server(["--history-size", "50"]);
    const channel = "board:snap-500";
    const a = store({ transport: createLink(srv.url).transport, channel, snapshots });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    await edit(a, 500, "i");
    // A wrote one when its action reached seq 500 (maybe at the end of that batch).
    const held = await untilSnapshot(srv.url, channel, 500);
    assert.equal(held.version, "board-s1");
    assert.equal(held.clientId, a.sync.clientId);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(held.state)), a.store.getState().board, "UTF-8 JSON of the selected state");
    a.store.dispatch({ type: "board/title", payload: { title: "after the snapshot" } });
    await edit(a, 9, "late");
    const head = a.store.getState().sync.lastSeq;
    assert.equal(head, 510);

    const b = store({ transport: createLink(srv.url).transport, channel, snapshots: { ...snapshots, write: false } });
    await waitFor("b caught up", () => b.store.getState().sync.status === "connected" && b.store.getState().sync.lastSeq === head);
    assert.deepEqual(b.store.getState().board, a.store.getState().board);
    assert.equal(b.store.getState().board.items.length, 509);
    assert.deepEqual(b.store.getState().sync, { status: "connected", lastSeq: head, pending: 0, error: null, resets: 0 });
    assert.deepEqual(replaces(b.seen).map((p) => [p.source, p.seq]), [["snapshot", Number(held.seq)]]);
    assert.deepEqual(remoteSeqs(b.seen), Array.from({ length: head - Number(held.seq) }, (_, i) => Number(held.seq) + 1 + i), "then only the actions after it");

    // Without snapshots the history alone cannot rebuild it: a reset, and a partial board.
    const c = store({ transport: createLink(srv.url).transport, channel });
    await waitFor("c caught up", () => c.store.getState().sync.status === "connected" && c.store.getState().sync.lastSeq === head);
    assert.equal(c.store.getState().sync.resets, 1);
    assert.notDeepEqual(c.store.getState().board, a.store.getState().board);
  });

  it("keeps_outbox_actions_the_snapshot_holds_pending_until_duplicate_acks_settle_them", async () => {
    // The interleaving of convergence seed 2133150673: A's Dispatch reaches the server but
    // its answer is lost and A reloads before the echo; the new A starts from nothing, so
    // from a snapshot that already holds the actions, and the stream after the snapshot
    // never echoes them. Nothing tells A the snapshot holds them until the server answers
    // a resend as a duplicate: until then they are pending, re-applied on top (an append
    // shows twice, an add shows in the UI slice), then settled, never applied twice.
    const srv = await server();
    const channel = "board:snap-outbox";
    const writer = store({ transport: createLink(srv.url).transport, channel, snapshots: { ...snapshots, every: 5 } });
    await edit(writer, 1, "w");
    const outbox = createMemoryStorage();
    const link1 = createLink(srv.url);
    const a1 = store({ transport: link1.transport, channel, storage: outbox, snapshots });
    await waitFor("a1 connected", () => a1.store.getState().sync.status === "connected");
    link1.hold(); // no echo reaches a1
    link1.loseAcks(1);
    a1.store.dispatch({ type: "board/add", payload: { item: "e" } });
    a1.store.dispatch({ type: "board/append", payload: { item: "mine" } });
    const ids = a1.sync.pending().map((p) => syncMeta(p)!.id!);
    // (The retry after the lost answer may be answered too: a1 still never sees the echo.)
    await waitFor("the actions reached the server, the answer lost", () => link1.acks.length >= 1);
    const seqs = link1.acks[0].map((k) => Number(k.seq));
    await a1.close();
    link1.release();
    await edit(writer, 5, "x"); // a snapshot at seq 5 or later, which holds both
    const held = await untilSnapshot(srv.url, channel, 5);
    assert.ok(Number(held.seq) >= Math.max(...seqs), `snapshot at ${held.seq}, actions at ${seqs}`);
    const { actions, headSeq } = await readHistory(srv.url, channel);
    const confirmed = replay(actions, channel);

    // The new A: every Dispatch fails without reaching the server (as when each answer is lost).
    const link2 = createLink(srv.url);
    link2.failDispatch(1_000_000, Code.Unavailable);
    const a2 = store({ transport: link2.transport, channel, storage: outbox, snapshots });
    await waitFor("a2 caught up from the snapshot and resending", () => a2.store.getState().sync.lastSeq === headSeq && link2.dispatched.length > 0);
    assert.deepEqual(replaces(a2.seen).map((p) => [p.source, p.seq]), [["snapshot", Number(held.seq)]]);
    const pendingIds = (as: readonly object[]) => as.map((p) => syncMeta(p)!.id);
    assert.deepEqual(pendingIds(a2.sync.pending()), ids, "still pending: nothing says the snapshot holds them");
    assert.deepEqual(pendingIds(expectedPending(a2.seen, actions, headSeq)), ids, "the convergence test's model agrees");
    assert.deepEqual(a2.store.getState().board, { ...confirmed, items: [...confirmed.items, "mine"] }, "re-applied on top of the snapshot");
    const addedAfterSnapshot = actions.slice(Number(held.seq)).map((x) => (fromWire(x, channel).action!.payload as { item: string }).item);
    assert.deepEqual(a2.store.getState().ui.added, [...addedAfterSnapshot, "e"], "the remote adds applied, then the pending one");

    // A resend gets through: the server answers duplicates at their seqs, and they are settled.
    link2.failDispatch(0, Code.Unavailable);
    await waitFor("settled", () => a2.store.getState().sync.pending === 0);
    assert.deepEqual(link2.acks.flat().map((k) => [k.id, Number(k.seq), k.duplicate]), ids.map((id, i) => [id, seqs[i], true]));
    assert.deepEqual(a2.store.getState().board, confirmed, "once");
    assert.deepEqual(a2.store.getState().ui.added, addedAfterSnapshot);
    assert.deepEqual(a2.seen.filter((x) => x.type === ActionTypes.confirmed).map((x) => (x.payload as ConfirmedPayload).id), ids, "settled by actionsync/confirmed");
    assert.deepEqual(expectedPending(a2.seen, actions, headSeq), []);
    assert.equal(a2.seen.filter((x) => x.type === ActionTypes.rejected).length, 0);
  });

  it("treats_a_snapshot_of_another_version_as_a_reset", async () => {
    const srv = await server(["--history-size", "50"]);
    const channel = "board:snap-version";
    const a = store({ transport: createLink(srv.url).transport, channel, snapshots: { ...snapshots, every: 20 } });
    await edit(a, 60, "i");
    const held = await untilSnapshot(srv.url, channel, 60);
    const logger = captureLogger();
    const d = store({ transport: createLink(srv.url).transport, channel, logger, snapshots: { version: "board-s2", select: snapshots.select } });
    await waitFor("d caught up", () => d.store.getState().sync.status === "connected" && d.store.getState().sync.lastSeq === 60);
    assert.equal(d.store.getState().sync.resets, 1);
    assert.deepEqual(replaces(d.seen), []);
    assert.deepEqual(d.seen.find((x) => x.type === ActionTypes.reset)?.payload, { channel, headSeq: Number(held.seq) });
    assert.match(logger.warns.join("\n"), /its version is "board-s1", this app reads "board-s2"; treating it as a reset/);
  });

  it("rebuilds_a_saved_position_the_history_no_longer_reaches_from_the_snapshot", async () => {
    const srv = await server(["--history-size", "50"]);
    const channel = "board:snap-trimmed";
    const writer = store({ transport: createLink(srv.url).transport, channel, snapshots: { ...snapshots, every: 50 } });
    await edit(writer, 5, "early");
    // E saves its board at seq 5, then goes away while 100 more edits trim the history.
    const saved = createMemoryStateStorage();
    const persist = { version: snapshots.version, select: snapshots.select, storage: saved, throttleMs: 1 };
    const e1 = store({ transport: createLink(srv.url).transport, channel, persist, snapshots: {} });
    await waitFor("saved at 5", () => saved.saved?.seq === 5);
    await e1.close();
    await edit(writer, 100, "i");
    const held = await untilSnapshot(srv.url, channel, 100);

    const e2 = store({ transport: createLink(srv.url).transport, channel, persist, snapshots: {} });
    assert.equal(e2.store.getState().sync.lastSeq, 5, "the saved board first");
    await waitFor("caught up", () => e2.store.getState().sync.status === "connected" && e2.store.getState().sync.lastSeq === 105);
    assert.deepEqual(e2.store.getState().board, writer.store.getState().board);
    assert.equal(e2.store.getState().sync.resets, 0, "a snapshot instead of a reset");
    assert.deepEqual(replaces(e2.seen).map((p) => [p.source, p.seq]), [["snapshot", Number(held.seq)]]);
    await e2.close();
    assert.equal(saved.saved?.seq, 105, "and the rebuilt board is saved");
  });

  it("never_writes_a_snapshot_from_a_stale_state", async () => {
    const srv = await server(["--history-size", "50"]);
    const channel = "board:snap-stale";
    const writer = store({ transport: createLink(srv.url).transport, channel });
    await edit(writer, 5, "early");
    const saved = createMemoryStateStorage();
    const persist = { version: snapshots.version, select: snapshots.select, storage: saved, throttleMs: 1 };
    const e1 = store({ transport: createLink(srv.url).transport, channel, persist, snapshots: { every: 10 } });
    await waitFor("saved at 5", () => saved.saved?.seq === 5);
    await e1.close();
    await edit(writer, 100, "i");

    // No snapshot held: a reset. E's state lacks actions 6..55: its own actions reach
    // three boundaries (110, 120, 130), and it writes no snapshot of that state.
    const link = createLink(srv.url);
    const e2 = store({ transport: link.transport, channel, persist, snapshots: { every: 10 } });
    await waitFor("reset", () => e2.store.getState().sync.resets === 1 && e2.store.getState().sync.status === "connected");
    await edit(e2, 25, "stale");
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(link.methods.filter((m) => m === "PutSnapshot"), []);
    assert.equal(await heldSnapshot(srv.url, channel), undefined);
    await e2.close();
    assert.equal(saved.saved, null, "the reset removed the saved state");
  });

  it("writes_nothing_but_a_warning_when_refused_and_nothing_at_all_when_another_client_won", async () => {
    const calls: number[] = [];
    let answer: ConnectError | undefined;
    const client = {
      putSnapshot: async (req: { seq: bigint }) => {
        calls.push(Number(req.seq));
        if (answer) throw answer;
        return {};
      },
    } as unknown as Client<typeof SyncService>;
    const logger = captureLogger();
    const w = createSnapshotWriter({ client, channel: "c", clientId: () => "me", codec: { version: "v", serialize: JSON.stringify, deserialize: JSON.parse }, every: 10, intervalMs: 0, logger });
    assert.equal(w.reaches(9, 10), true);
    assert.equal(w.reaches(10, 19), false);
    assert.equal(w.reaches(15, 31), true);
    answer = new ConnectError("the channel holds a snapshot at seq 12", Code.AlreadyExists);
    w.write({ a: 1 }, 10, "e");
    w.write({ a: 1 }, 11, "e"); // one at a time
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(logger.warns, []);
    assert.equal(w.due(10, true), false, "not newer than the last one");
    answer = new ConnectError("history no longer reaches seq 21", Code.FailedPrecondition);
    w.write({ a: 2 }, 20, "e");
    await new Promise((r) => setTimeout(r, 5));
    await w.close();
    assert.deepEqual(calls, [10, 20]);
    assert.match(logger.warns.join("\n"), /could not write a snapshot of c at seq 20 \(failed_precondition: history no longer reaches seq 21\)/);
  });

  it("decodes_only_its_version_of_UTF_8_JSON", () => {
    const codec = { version: "v", serialize: JSON.stringify, deserialize: JSON.parse };
    const s = (version: string, bytes: Uint8Array) => create(SnapshotSchema, { version, state: bytes, seq: 1n });
    assert.deepEqual(decodeSnapshot(s("v", new TextEncoder().encode('{"a":"é"}')), codec), { value: { a: "é" } });
    assert.match(decodeSnapshot(s("w", new Uint8Array()), codec).problem!, /its version is "w"/);
    assert.match(decodeSnapshot(s("v", new Uint8Array([0xff])), codec).problem!, /does not deserialize/);
    assert.match(decodeSnapshot(s("v", new TextEncoder().encode("{")), codec).problem!, /does not deserialize/);
  });
});
