import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { PendingEntry } from "./actions.js";
import type { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { createMemoryStorage, createOutbox } from "./outbox.js";
import { createSender, failureKind, firstSent, isNetworkFailure, limitedRetries } from "./sender.js";
import { waitFor } from "./testkit.js";

const entry = (id: string): PendingEntry => ({ id, action: { type: "T", payload: id, meta: { actionsync: { id, local: true } } } });
const silent = { warn() {}, error() {} };

/** fakeClient answers Dispatch calls with answer(ids, callNumber) and records them. */
function fakeClient(answer: (ids: string[], call: number) => Error | undefined) {
  const calls: string[][] = [];
  // sentAfter: the sent_after_seq and sent_epoch of every call ("" epoch: none).
  const sentAfter: [number, string][] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const client = {
    async dispatch(req: { actions: { id?: string }[]; sentAfterSeq?: bigint; sentEpoch?: string }) {
      const ids = req.actions.map((a) => a.id!);
      calls.push(ids);
      sentAfter.push([Number(req.sentAfterSeq ?? 0n), req.sentEpoch ?? ""]);
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      const err = answer(ids, calls.length - 1);
      if (err) throw err;
      return { acks: ids.map((id, i) => ({ id, seq: BigInt(100 + i), duplicate: false })) };
    },
  } as unknown as Client<typeof SyncService>;
  return { client, calls, sentAfter, maxInFlight: () => maxInFlight };
}

async function setup(
  answer: (ids: string[], call: number) => Error | undefined,
  maxBatch = 3,
  backoff = { initialMs: 1, maxMs: 2 },
  position = { seq: 0, epoch: "e1" },
) {
  const outbox = createOutbox(createMemoryStorage(), silent);
  await outbox.load();
  const fake = fakeClient(answer);
  const acked: string[] = [];
  const rejected: [string, Code][] = [];
  const sender = createSender({
    client: fake.client,
    channel: "c",
    clientId: async () => "me",
    outbox,
    maxBatch,
    backoff,
    timeoutMs: 0,
    position: () => position,
    onAcks: (batch) => batch.forEach((e) => (acked.push(e.id), outbox.remove(e.id))),
    onRejected: (e, err) => (rejected.push([e.id, err.code]), outbox.remove(e.id)),
    onRetry: () => {},
  });
  return { outbox, fake, acked, rejected, sender, position };
}

describe("createSender", () => {
  it("batches_in_order_with_one_request_in_flight", async () => {
    const s = await setup(() => undefined);
    s.sender.setLive(true);
    for (const id of ["a", "b", "c", "d", "e"]) s.outbox.add(entry(id));
    s.sender.kick();
    await waitFor("all acked", () => s.acked.length === 5);
    assert.deepEqual(s.fake.calls, [["a", "b", "c"], ["d", "e"]]);
    assert.equal(s.fake.maxInFlight(), 1);
    await s.sender.close();
  });

  it("waits_until_live", async () => {
    const s = await setup(() => undefined);
    s.outbox.add(entry("a"));
    s.sender.kick();
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(s.fake.calls, []);
    s.sender.setLive(true);
    await waitFor("acked", () => s.acked.length === 1);
    await s.sender.close();
  });

  it("retries_transient_failures_with_the_same_ids", async () => {
    const s = await setup((_, call) => (call < 2 ? new ConnectError("down", Code.Unavailable) : undefined));
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.outbox.add(entry("b"));
    s.sender.kick();
    await waitFor("acked", () => s.acked.length === 2);
    assert.deepEqual(s.fake.calls, [["a", "b"], ["a", "b"], ["a", "b"]]);
    assert.deepEqual(s.rejected, []);
    await s.sender.close();
  });

  it("names_where_a_resent_batch_was_first_sent", async () => {
    const position = { seq: 4, epoch: "e1" };
    const s = await setup(
      (_, call) => {
        // The client applies more of the channel meanwhile: resends still name seq 4.
        position.seq = 9;
        return call < 2 ? new ConnectError("down", Code.Unavailable) : undefined;
      },
      3,
      undefined,
      position,
    );
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.outbox.add(entry("b"));
    s.sender.kick();
    await waitFor("acked", () => s.acked.length === 2);
    assert.deepEqual(s.fake.sentAfter, [[0, ""], [4, "e1"], [4, "e1"]], "a first send names nothing, every resend the first send's position");
    await s.sender.close();
  });

  it("names_the_earliest_first_send_of_a_batch_and_ignores_other_epochs", () => {
    const at = (id: string, seq: number, epoch: string): PendingEntry => ({ ...entry(id), sentAfter: { seq, epoch } });
    assert.equal(firstSent([entry("a"), entry("b")], "e1"), undefined);
    assert.deepEqual(firstSent([entry("a"), at("b", 7, "e1"), at("c", 3, "e1"), at("d", 1, "e0")], "e1"), { seq: 3, epoch: "e1" });
    // Sent only in a lost epoch: a first send in this one.
    assert.equal(firstSent([at("d", 1, "e0")], "e1"), undefined);
  });

  it("refuses_a_resend_past_the_dedupe_window_alone_and_goes_on", async () => {
    // The server refuses a batch naming a position its history no longer reaches: the
    // batch is re-sent one entry at a time, each naming its own first send.
    const s = await setup(
      (ids) => (ids.includes("old") ? new ConnectError("dedupe window passed", Code.FailedPrecondition) : undefined),
      3,
      undefined,
      { seq: 20, epoch: "e1" },
    );
    s.outbox.add({ ...entry("old"), sentAfter: { seq: 2, epoch: "e1" } }); // restored from storage
    s.outbox.add(entry("new"));
    s.sender.setLive(true);
    await waitFor("settled", () => s.outbox.size === 0);
    assert.deepEqual(s.fake.calls, [["old", "new"], ["old"], ["new"]]);
    // "new" was in the refused batch: it may have reached the server, so it names where.
    assert.deepEqual(s.fake.sentAfter, [[2, "e1"], [2, "e1"], [20, "e1"]]);
    assert.deepEqual(s.rejected, [["old", Code.FailedPrecondition]]);
    assert.deepEqual(s.acked, ["new"]);
    await s.sender.close();
  });

  it("isolates_a_refused_action_in_a_batch", async () => {
    const s = await setup((ids) => (ids.includes("bad") ? new ConnectError("nope", Code.PermissionDenied) : undefined));
    s.sender.setLive(true);
    for (const id of ["a", "bad", "c", "d"]) s.outbox.add(entry(id));
    s.sender.kick();
    await waitFor("settled", () => s.outbox.size === 0);
    assert.deepEqual(s.fake.calls, [["a", "bad", "c"], ["a"], ["bad"], ["c"], ["d"]]);
    assert.deepEqual(s.rejected, [["bad", Code.PermissionDenied]]);
    assert.deepEqual(s.acked, ["a", "c", "d"]);
    await s.sender.close();
  });

  for (const code of [Code.ResourceExhausted, Code.Internal]) {
    it(`rolls_back_after_a_few_retries_of_${Code[code]}`, async () => {
      // Retrying cannot fix it: after limitedRetries retries the action is refused, and
      // the outbox behind it goes on.
      const s = await setup((ids) => (ids.includes("bad") ? new ConnectError("no", code) : undefined));
      s.sender.setLive(true);
      for (const id of ["a", "bad", "c"]) s.outbox.add(entry(id));
      s.outbox.add(entry("d"));
      s.sender.kick();
      await waitFor("settled", () => s.outbox.size === 0);
      const tries = limitedRetries + 1;
      assert.deepEqual(s.fake.calls, [
        ...Array(tries).fill(["a", "bad", "c"]),
        ["a"],
        ...Array(tries).fill(["bad"]),
        ["c"],
        ["d"],
      ]);
      assert.deepEqual(s.rejected, [["bad", code]]);
      assert.deepEqual(s.acked, ["a", "c", "d"]);
      await s.sender.close();
    });
  }

  it("retries_a_rate_limited_dispatch_as_long_as_the_server_gives_a_hint", async () => {
    // The server's dispatch rate limit: resource_exhausted with Retry-After.
    const n = limitedRetries + 3;
    const s = await setup((_, call) => (call < n ? new ConnectError("slow down", Code.ResourceExhausted, { "retry-after": "0.005" }) : undefined));
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.sender.kick();
    await waitFor("acked", () => s.acked.length === 1);
    assert.equal(s.fake.calls.length, n + 1);
    assert.deepEqual(s.rejected, []);
    await s.sender.close();
  });

  it("waits_as_long_as_a_retry_after_hint_says", async () => {
    const s = await setup((_, call) => (call === 0 ? new ConnectError("busy", Code.ResourceExhausted, { "retry-after": "0.3" }) : undefined));
    const at: number[] = [];
    const dispatch = s.fake.client.dispatch.bind(s.fake.client);
    (s.fake.client as { dispatch: typeof dispatch }).dispatch = (req, o) => (at.push(Date.now()), dispatch(req, o));
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.sender.kick();
    await waitFor("acked", () => s.acked.length === 1);
    assert.ok(at[1] - at[0] >= 280, `retried after ${at[1] - at[0]} ms, want the 300 ms hint`);
    await s.sender.close();
  });

  it("retry_now_ends_the_backoff_delay", async () => {
    const s = await setup((_, call) => (call === 0 ? new ConnectError("down", Code.Unavailable) : undefined), 3, { initialMs: 60_000, maxMs: 60_000 });
    s.sender.retryNow(); // nothing waiting: a no-op
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.sender.kick();
    await waitFor("a failed call", () => s.fake.calls.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    const started = Date.now();
    s.sender.retryNow();
    await waitFor("acked", () => s.acked.length === 1, 1_000);
    assert.ok(Date.now() - started < 500);
    assert.deepEqual(s.fake.calls, [["a"], ["a"]]);
    await s.sender.close();
  });

  it("close_aborts_the_backoff", async () => {
    const s = await setup(() => new ConnectError("down", Code.Unavailable));
    s.sender.setLive(true);
    s.outbox.add(entry("a"));
    s.sender.kick();
    await waitFor("a failed call", () => s.fake.calls.length > 0);
    await s.sender.close();
    const n = s.fake.calls.length;
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.fake.calls.length, n);
  });
});

describe("failureKind", () => {
  it("separates_retries_from_refusals", () => {
    const kinds: Record<string, Code[]> = {
      unreachable: [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Canceled],
      retry: [Code.Aborted, Code.Unauthenticated],
      limited: [Code.ResourceExhausted, Code.Internal],
      refused: [Code.InvalidArgument, Code.PermissionDenied, Code.AlreadyExists, Code.FailedPrecondition, Code.OutOfRange, Code.NotFound, Code.Unimplemented, Code.DataLoss],
    };
    for (const [kind, codes] of Object.entries(kinds)) for (const c of codes) assert.equal(failureKind(c), kind, Code[c]);
  });
});

describe("isNetworkFailure", () => {
  it("tells_an_unreachable_server_from_an_answer", () => {
    for (const c of [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Canceled]) {
      assert.equal(isNetworkFailure(c), true, Code[c]);
      assert.equal(failureKind(c), "unreachable", `${Code[c]} is retried too`);
    }
    for (const c of [Code.ResourceExhausted, Code.Aborted, Code.Internal, Code.Unauthenticated, Code.InvalidArgument, Code.PermissionDenied]) {
      assert.equal(isNetworkFailure(c), false, Code[c]);
    }
  });
});
