// Integration tests of resends past the server's dedupe window (its history): a real
// server keeping 5 actions, real stores, a link that loses answers and goes down.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { ActionTypes, type RejectedPayload } from "./index.js";
import { captureLogger, channelEpoch, createLink, makeStore, startTestServer, waitFor } from "./testkit.js";

type Made = ReturnType<typeof makeStore>;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(args: string[]) {
  const s = await startTestServer(args);
  cleanups.push(() => s.stop());
  return s;
}

function store(options: Parameters<typeof makeStore>[0]): Made {
  const m = makeStore({ logger: captureLogger(), ...options });
  cleanups.push(() => m.close());
  return m;
}

const connected = (...ms: Made[]) => () => ms.every((m) => m.store.getState().sync.status === "connected");
const items = (m: Made) => m.store.getState().board.items;

/** kept reads what the 5-action history still holds (seqs 3 to 7 here). */
async function kept(baseUrl: string, channel: string) {
  const client = createClient(SyncService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const res = await client.history({ channel, afterSeq: 2n, limit: 100 });
  return { ids: res.actions.map((x) => x.id), seqs: res.actions.map((x) => Number(x.seq)), headSeq: Number(res.headSeq) };
}

/**
 * sentThenAway makes A send x and lose sight of it: A's stream is held (so x's echo
 * never reaches it), x's Dispatch reaches the server, then A's link goes down before the
 * answer (lost: true) or after it; then B publishes 6 more actions, so that the server's
 * 5-action history no longer holds x. It returns once A's link is back.
 */
async function sentThenAway(o: { lost: boolean; channel: string }) {
  const srv = await server(["--history-size", "5"]);
  const link = createLink(srv.url);
  const a = store({ transport: link.transport, channel: o.channel });
  const b = store({ transport: createLink(srv.url).transport, channel: o.channel });
  await waitFor("both connected", connected(a, b));
  link.hold();
  // The answer is lost 300 ms after the server gave it: time to take A offline first,
  // so that no retry (which the server would still dedupe) gets through.
  if (o.lost) link.loseAcks(1, 300);
  a.store.dispatch({ type: "board/append", payload: { item: "x" } });
  await waitFor("the server applied x", () => link.acks.length === 1);
  const [xAck] = link.acks[0];
  assert.equal(Number(xAck.seq), 1);
  link.cut();
  link.release();
  await waitFor("A offline", () => a.store.getState().sync.status === "offline");
  for (let i = 1; i <= 6; i++) b.store.dispatch({ type: "board/append", payload: { item: `y${i}` } });
  await waitFor("B settled", () => b.store.getState().sync.lastSeq === 7 && b.store.getState().sync.pending === 0);
  link.heal();
  return { srv, link, a, b, xId: xAck.id };
}

describe("resending past the dedupe window", () => {
  it("refuses_a_resend_whose_answer_was_lost_and_applies_the_action_once", async () => {
    const channel = "board:window-lost";
    const { srv, link, a, b, xId } = await sentThenAway({ lost: true, channel });
    // A is back: a reset (its seq 0 is older than the history), then the resend of x,
    // naming where it was first sent. The server cannot tell whether x was applied.
    await waitFor("x rejected", () => a.seen.some((x) => x.type === ActionTypes.rejected));
    const rejected = a.seen.find((x) => x.type === ActionTypes.rejected)!.payload as RejectedPayload;
    assert.equal(rejected.id, xId);
    assert.equal(rejected.code, "failed_precondition");
    assert.match(rejected.message, /dedupe window passed/);
    assert.deepEqual(rejected.action.payload, { item: "x" });
    const epoch = await channelEpoch(srv.url, channel);
    assert.deepEqual(link.sentAfter.at(-1), [0, epoch], "the resend names seq 0 of the epoch: where x was first sent");
    await waitFor("A settled", () => {
      const s = a.store.getState().sync;
      return s.status === "connected" && s.pending === 0 && s.resets === 1;
    });
    assert.deepEqual(a.store.getState().sync.error, { code: "failed_precondition", message: rejected.message });
    assert.deepEqual(items(a), [], "x rolled back (the reset skipped seqs 1-7: A's board is stale)");
    // Applied exactly once: at seq 1, which B saw; nothing after B's actions.
    const history = await kept(srv.url, channel);
    assert.deepEqual(history.seqs, [3, 4, 5, 6, 7], "nothing applied after B's actions");
    assert.ok(!history.ids.includes(xId));
    assert.deepEqual(items(b), ["x", "y1", "y2", "y3", "y4", "y5", "y6"]);
  });

  it("confirms_an_acknowledged_action_a_reset_skipped_without_sending_it_again", async () => {
    // The answer came, the echo did not: the ack says where x is, so the reset confirms
    // it rather than re-sending it (which the server could no longer dedupe).
    const channel = "board:window-acked";
    const { srv, link, a, b, xId } = await sentThenAway({ lost: false, channel });
    await waitFor("A settled", () => {
      const s = a.store.getState().sync;
      return s.status === "connected" && s.pending === 0 && s.resets === 1;
    });
    assert.deepEqual(items(a), ["x"], "confirmed by its ack");
    assert.equal(a.store.getState().sync.error, null);
    assert.deepEqual(link.dispatched, [[xId]], "never sent again");
    assert.ok(!a.seen.some((x) => x.type === ActionTypes.rejected));
    assert.deepEqual((await kept(srv.url, channel)).seqs, [3, 4, 5, 6, 7]);
    assert.deepEqual(items(b), ["x", "y1", "y2", "y3", "y4", "y5", "y6"]);
  });
});
