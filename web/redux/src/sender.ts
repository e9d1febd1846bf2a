// The sender: sends the outbox with Dispatch, one request in flight at a time.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Ack } from "./gen/actionsync/v1/sync_pb.js";
import type { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import type { PendingEntry, SentPosition } from "./actions.js";
import { createBackoff, sleep, type BackoffOptions } from "./backoff.js";
import type { Outbox } from "./outbox.js";
import { toWire } from "./wire.js";

/**
 * FailureKind says what the sender does after a failed Dispatch:
 *
 * - `unreachable`: the server was not reached (see {@link isNetworkFailure}); retried until it is;
 * - `retry`: the server did not judge the actions and a retry can succeed: `aborted`, and
 *   `unauthenticated` (refusing queued work because a token expired would lose it: with
 *   getToken, the retry goes with a fresh token); retried for ever, with backoff;
 * - `limited`: `resource_exhausted` (a request too big, a server holding too many
 *   channels) and `internal` (a server bug; also a broken answer from a server that died
 *   mid-request): retried {@link limitedRetries} times, then refused. Except when the
 *   server gives a Retry-After hint (its dispatch rate limit): then the server says a
 *   retry will do, and it is retried after the hint for as long as it gives one;
 * - `refused`: the server judged the actions and refused them (`invalid_argument`,
 *   `permission_denied`, `already_exists`, `failed_precondition`, ...): rolled back.
 *   `failed_precondition` "dedupe window passed" is one: a resend whose first send is
 *   older than the server's history (see {@link firstSent}) may or may not have been
 *   applied, and the server applied nothing of it.
 */
export type FailureKind = "unreachable" | "retry" | "limited" | "refused";

/** limitedRetries is how many times a `limited` failure is retried before the actions are refused. */
export const limitedRetries = 3;

/** maxRetryAfterMs bounds the wait a Retry-After hint can ask for. */
export const maxRetryAfterMs = 60_000;

/** failureKind classifies a failed Dispatch's code: see {@link FailureKind}. */
export function failureKind(code: Code): FailureKind {
  if (isNetworkFailure(code)) return "unreachable";
  switch (code) {
    case Code.Aborted:
    case Code.Unauthenticated:
      return "retry";
    case Code.ResourceExhausted:
    case Code.Internal:
      return "limited";
    default:
      return "refused";
  }
}

/**
 * retryAfterMs reads a Retry-After hint (seconds, as in HTTP) from the error's metadata:
 * 0 when there is none or it is not a number; at most {@link maxRetryAfterMs}.
 */
export function retryAfterMs(err: ConnectError): number {
  const v = Number(err.metadata.get("retry-after") ?? NaN);
  return Number.isFinite(v) && v > 0 ? Math.min(v * 1000, maxRetryAfterMs) : 0;
}

/**
 * isNetworkFailure tells whether a failed call means the server could not be reached or
 * did not answer in time (a dead network, the browser offline, a server down or behind a
 * failing proxy), as opposed to an answer from the server: the connection status is then
 * offline. Unknown is what fetch's "Failed to fetch" becomes in connect-web, Canceled a
 * connection aborted by something else than the middleware.
 */
export function isNetworkFailure(code: Code): boolean {
  switch (code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return true;
    default:
      return false;
  }
}

/**
 * firstSent returns where the earliest-sent entry of batch was first sent in epoch, or
 * undefined when none of them was sent in epoch (a first send: there is nothing the
 * server could apply twice). One position covers the whole batch: the server refuses it
 * unless its history reaches back past every entry's first send, and a refused batch is
 * re-sent one entry at a time, each with its own position.
 */
export function firstSent(batch: readonly PendingEntry[], epoch: string): SentPosition | undefined {
  let first: SentPosition | undefined;
  for (const e of batch) {
    const at = e.sentAfter;
    if (at !== undefined && at.epoch === epoch && (first === undefined || at.seq < first.seq)) first = at;
  }
  return first;
}

/** SenderOptions wires a sender to its outbox and its middleware. */
export interface SenderOptions {
  client: Client<typeof SyncService>;
  channel: string;
  /**
   * clientId resolves with the client id to send, once it is known (with a client id
   * from the token: once a token is at hand); it rejects with the ConnectError the call
   * would fail with.
   */
  clientId(signal: AbortSignal): Promise<string>;
  outbox: Outbox;
  maxBatch: number;
  backoff: BackoffOptions;
  /** timeoutMs bounds one Dispatch; 0: none. */
  timeoutMs: number;
  /**
   * position is the channel position applied now (the last seq received and its epoch):
   * where an entry sent for the first time is recorded as sent (Outbox.markSent).
   */
  position(): SentPosition;
  /** onAcks is called with a batch and the server's acks, in order. */
  onAcks(batch: PendingEntry[], acks: Ack[]): void;
  /** onRejected is called when the server refused entry alone (or a `limited` failure ran out of retries). */
  onRejected(entry: PendingEntry, err: ConnectError): void;
  /** onRetry is called after a failure of batch that is retried, before the delay. */
  onRetry(err: ConnectError, delayMs: number, batch: PendingEntry[]): void;
}

/** Sender drains the outbox while the subscription is live. */
export interface Sender {
  /** setLive starts (true) or pauses (false) sending; the in-flight request finishes. */
  setLive(live: boolean): void;
  /** kick sends what the outbox holds now (batched with whatever is added in this task). */
  kick(): void;
  /**
   * retryNow resets the backoff and ends the delay before a retry, if one is running: the
   * retry is sent at once if the sender is live (the device is back online).
   */
  retryNow(): void;
  /** close aborts the request in flight and any delay; resolves when the loop has ended. */
  close(): Promise<void>;
}

/**
 * createSender sends the unacknowledged outbox entries in order, up to maxBatch per
 * Dispatch, with a single request in flight so that a client's actions keep their order.
 * A failure that is retried (see {@link FailureKind}) retries the same batch (same ids:
 * the server dedupes) after a backoff delay, or the server's Retry-After hint if longer.
 * Each entry's first send in the channel's epoch is recorded in the outbox (where the
 * client was: {@link SenderOptions.position}); every later send names it
 * (sent_after_seq, sent_epoch), so the server refuses a resend it can no longer dedupe.
 * A refused batch of several actions is re-sent one action at a time to find the refused
 * one(s); the others go through. So a refusal never blocks the outbox behind it.
 *
 * It sends only while live (the subscription has replayed and is live): acks then arrive
 * after the reset, if any, that the subscription reported, so their seqs are comparable
 * with the subscription's last seq.
 */
export function createSender(o: SenderOptions): Sender {
  const abort = new AbortController();
  const backoff = createBackoff(o.backoff);
  let live = false;
  let running: Promise<void> | undefined;
  let scheduled = false;
  let wake: (() => void) | undefined;
  // isolating > 0: that many actions of a refused batch are still to be re-sent alone.
  let isolating = 0;
  // limited: how many `limited` failures the current batch has had.
  let limited = 0;

  async function loop(): Promise<void> {
    while (live && !abort.signal.aborted) {
      const select = () => o.outbox.unsent(isolating > 0 ? 1 : o.maxBatch);
      let batch = select();
      if (batch.length === 0) return;
      let acks: Ack[];
      try {
        const clientId = await o.clientId(abort.signal);
        // The outbox may have changed while the client id was awaited (an entry rolled back).
        batch = select();
        if (batch.length === 0) return;
        const at = o.position();
        const sentAfter = firstSent(batch, at.epoch);
        // Recorded, and its save begun, before the request leaves: from now on the batch
        // may reach the server.
        if (at.epoch !== "") o.outbox.markSent(batch.map((e) => e.id), at);
        const res = await o.client.dispatch(
          {
            channel: o.channel,
            clientId,
            actions: batch.map(toWire),
            sentAfterSeq: BigInt(sentAfter?.seq ?? 0),
            sentEpoch: sentAfter?.epoch ?? "",
          },
          { signal: abort.signal, timeoutMs: o.timeoutMs > 0 ? o.timeoutMs : undefined },
        );
        acks = res.acks;
      } catch (e) {
        if (abort.signal.aborted) return;
        const err = ConnectError.from(e);
        const kind = failureKind(err.code);
        const hintMs = retryAfterMs(err);
        if (kind === "unreachable" || kind === "retry" || (kind === "limited" && (hintMs > 0 || limited < limitedRetries))) {
          if (kind === "limited" && hintMs === 0) limited++;
          const delay = Math.max(backoff.next(), hintMs);
          o.onRetry(err, delay, batch);
          await sleep(delay, abort.signal, (w) => (wake = w));
          wake = undefined;
          continue;
        }
        limited = 0;
        backoff.reset();
        if (batch.length > 1) {
          // The batch is all or nothing: none of it was applied. Find the culprit(s).
          isolating = batch.length;
          continue;
        }
        if (isolating > 0) isolating--;
        o.onRejected(batch[0], err);
        continue;
      }
      backoff.reset();
      limited = 0;
      if (isolating > 0) isolating = Math.max(0, isolating - batch.length);
      if (acks.length !== batch.length) {
        // A server that answers fewer acks than actions breaks the contract; treat the
        // missing ones as not sent (they will be retried with their ids).
        acks = acks.slice(0, batch.length);
      }
      o.onAcks(batch.slice(0, acks.length), acks);
    }
  }

  function run() {
    scheduled = false;
    if (running || !live || abort.signal.aborted) return;
    running = loop().finally(() => {
      running = undefined;
      // Entries added while the last request was answered are picked up here.
      if (live && !abort.signal.aborted && o.outbox.unsent(1).length > 0) schedule();
    });
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    // A microtask later: actions dispatched in the same task go in one batch.
    queueMicrotask(run);
  }

  return {
    setLive(next) {
      live = next;
      if (live) {
        backoff.reset();
        wake?.();
        schedule();
      }
    },
    kick() {
      if (live) schedule();
    },
    retryNow() {
      backoff.reset();
      wake?.();
    },
    async close() {
      live = false;
      abort.abort();
      await running;
    },
  };
}
