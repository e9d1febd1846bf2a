// The subscriber: follows the channel with Subscribe, reconnecting and resuming.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Action as WireAction } from "./gen/actionsync/v1/action_pb.js";
import type { Snapshot, SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { createBackoff, sleep, type BackoffOptions } from "./backoff.js";
import type { PresenceHooks } from "./presence.js";

/** SubscriberOptions wires a subscriber to its middleware. */
export interface SubscriberOptions {
  client: Client<typeof SyncService>;
  channel: string;
  /**
   * clientId resolves with the client id to subscribe with, once it is known (with a
   * client id from the token: once a token is at hand); it rejects with the ConnectError
   * the call would fail with.
   */
  clientId(signal: AbortSignal): Promise<string>;
  backoff: BackoffOptions;
  /** idleTimeoutMs: reconnect when the stream has been silent that long; 0: never. */
  idleTimeoutMs: number;
  /**
   * position is where to resume: the seq of the last action applied (0: none) and the
   * channel epoch it belongs to ("": not known), as the last onReady or onReset told.
   */
  position(): { afterSeq: number; epoch: string };
  /**
   * snapshots asks the server for the channel's snapshot instead of a replay from 0 or a
   * reset, when it holds one (onSnapshot).
   */
  snapshots: boolean;
  /** onActions is called with each batch of actions, in seq order. */
  onActions(actions: WireAction[]): void;
  /** onSnapshot is called with the channel's snapshot: the stream goes on after its seq, in its epoch. */
  onSnapshot(snapshot: Snapshot): void;
  /** onReset is called when the server cannot resume at the position: the stream goes on after headSeq, in epoch. */
  onReset(headSeq: number, epoch: string): void;
  /** onReady is called when the replay is done and the stream is live, in epoch. */
  onReady(headSeq: number, epoch: string): void;
  /** onDown is called when the stream has ended or failed (not when closed). */
  onDown(err: ConnectError, delayMs: number): void;
  /**
   * presence, if set, makes the stream a member of the channel's presence (with the client
   * id and info it gives for each attempt) and hands it the stream's presence events.
   */
  presence?: PresenceHooks;
}

/** Subscriber is a running subscription loop. */
export interface Subscriber {
  /**
   * reconnect ends the current stream, if one is open or opening, as failed with err:
   * the loop reports err with onDown and reconnects after a backoff delay. For what the
   * stream cannot see: the device went offline, and an open stream may never notice.
   */
  reconnect(err: ConnectError): void;
  /**
   * retryNow resets the backoff and ends the current delay, if any: the next attempt
   * starts at once (the device is back online).
   */
  retryNow(): void;
  /**
   * renew ends the current stream, if the server has answered it, and opens a new one at
   * once, resuming from position(), without reporting it down (onDown): the stream
   * moves to a new token before the server ends it for the old one's expiry. A stream
   * not answered yet, and the next attempt after a delay, use the newest token already.
   */
  renew(): void;
  /** close aborts the stream and any delay; resolves when the loop has ended. */
  close(): Promise<void>;
  /**
   * setPresence, on a shared stream, changes the browser's presence info in every tab
   * (the presence option's controller, see share.ts); absent on a stream of one's own.
   */
  setPresence?(info: JsonObject): void;
}

/**
 * startSubscriber follows the channel until closed: Subscribe from position() (0 at
 * first: the whole history, or a persisted state's seq and epoch), hand every message to
 * the callbacks, and on any end or failure reconnect after an exponential backoff with
 * full jitter, resuming from the last seq applied. It never uses exclude_own: the client's own actions come back with
 * their seq, which is how they are confirmed.
 */
export function startSubscriber(o: SubscriberOptions): Subscriber {
  const closing = new AbortController();
  const backoff = createBackoff(o.backoff);
  // drop ends the attempt in progress (reconnect); wake ends the delay in progress
  // (retryNow); renew ends an answered attempt to start another one at once.
  let drop: ((err: ConnectError) => void) | undefined;
  let wake: (() => void) | undefined;
  let renew: (() => void) | undefined;

  /** attempt runs one stream; it returns why it ended, or "renew" after renew(). */
  async function attempt(): Promise<ConnectError | "renew"> {
    const stream = new AbortController();
    const stop = () => stream.abort();
    closing.signal.addEventListener("abort", stop);
    let idle: ReturnType<typeof setTimeout> | undefined;
    let idleFired = false;
    let dropped: ConnectError | undefined;
    let answered = false;
    let renewed = false;
    drop = (err) => {
      dropped ??= err;
      stream.abort();
    };
    renew = () => {
      if (!answered || dropped) return;
      renewed = true;
      stream.abort();
    };
    const arm = () => {
      if (o.idleTimeoutMs <= 0) return;
      clearTimeout(idle);
      idle = setTimeout(() => {
        idleFired = true;
        stream.abort();
      }, o.idleTimeoutMs);
    };
    try {
      arm();
      // Resuming with the epoch lets the server tell a lost history (a restarted server)
      // from ours.
      let clientId = await o.clientId(stream.signal);
      const { afterSeq, epoch } = o.position();
      const member = o.presence?.subscribing(clientId);
      if (member) clientId = member.clientId;
      const responses = o.client.subscribe(
        {
          positions: [{ channel: o.channel, afterSeq: BigInt(afterSeq), epoch }],
          clientId,
          snapshots: o.snapshots,
          presence: member && { info: member.info },
        },
        { signal: stream.signal },
      );
      for await (const res of responses) {
        answered = true;
        arm();
        if (res.reset) o.onReset(Number(res.reset.headSeq), res.reset.epoch);
        if (res.snapshot) o.onSnapshot(res.snapshot);
        if (res.actions.length > 0) o.onActions(res.actions);
        if (res.ready) {
          backoff.reset();
          o.onReady(Number(res.ready.headSeq), res.ready.epoch);
        }
        if (res.presence) o.presence?.onEvent(res.presence);
      }
      if (renewed && !dropped) return "renew";
      return dropped ?? new ConnectError("the server ended the stream", Code.Unavailable);
    } catch (e) {
      if (dropped) return dropped;
      if (renewed) return "renew";
      if (idleFired) return new ConnectError(`no message for ${o.idleTimeoutMs} ms`, Code.DeadlineExceeded);
      return ConnectError.from(e);
    } finally {
      o.presence?.onEnd();
      drop = undefined;
      renew = undefined;
      clearTimeout(idle);
      closing.signal.removeEventListener("abort", stop);
      // Releases the connection whatever ended the loop (a callback may have thrown).
      stream.abort();
    }
  }

  async function loop(): Promise<void> {
    while (!closing.signal.aborted) {
      const err = await attempt();
      // Canceled after close() is the normal end, not a failure.
      if (closing.signal.aborted) return;
      if (err === "renew") continue;
      const delay = backoff.next();
      o.onDown(err, delay);
      await sleep(delay, closing.signal, (w) => (wake = w));
      wake = undefined;
    }
  }

  const done = loop();
  return {
    reconnect(err) {
      drop?.(err);
    },
    retryNow() {
      backoff.reset();
      wake?.();
    },
    renew() {
      renew?.();
    },
    async close() {
      closing.abort();
      await done;
    },
  };
}
