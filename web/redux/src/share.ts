// One Subscribe stream per browser: the tabs of one origin that follow the same channel
// elect a leader with a Web Lock (a lease lock where there are no Web Locks); the leader holds the stream and relays what it receives
// over a BroadcastChannel; the others follow the relay. Each tab keeps its own outbox and
// sends its own (short, unary) Dispatch requests.
import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Action as WireAction } from "./gen/actionsync/v1/action_pb.js";
import { defaultLocks, type Lease, type LockManagerLike } from "./lease.js";
import { snapshotOf, type PresenceChange, type PresenceController } from "./presence.js";
import { startSubscriber, type Subscriber, type SubscriberOptions } from "./subscriber.js";

/**
 * LeaderLocks is what the election uses: navigator.locks, or lease locks (whose lock is a
 * Lease, which can be lost).
 */
export type LeaderLocks = LockManagerLike;

/** BroadcastChannelLike is the part of BroadcastChannel the relay uses. */
export interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  close(): void;
}

/** ShareEnv is what sharing needs from the browser: locks and BroadcastChannel. */
export interface ShareEnv {
  locks: LeaderLocks;
  open(name: string): BroadcastChannelLike;
}

/**
 * defaultShareEnv returns a browser page's locks (defaultLocks: Web Locks, or on insecure
 * origins lease locks over localStorage) and BroadcastChannel, or undefined outside a page
 * or where they are missing (old browsers, sandboxed frames): each tab then holds its own
 * stream.
 */
export function defaultShareEnv(): ShareEnv | undefined {
  const g = globalThis as { document?: unknown; BroadcastChannel?: new (name: string) => BroadcastChannelLike };
  // Pages only: Node (20 has BroadcastChannel, later versions navigator.locks) runs each
  // store on its own stream.
  if (typeof g.document !== "object") return undefined;
  const locks = defaultLocks();
  const BC = g.BroadcastChannel;
  if (locks === undefined || typeof BC !== "function") return undefined;
  return { locks, open: (name) => new BC(name) };
}

/** Relayed is what the leader posts on the BroadcastChannel. */
type Relayed =
  /** actions: a batch the leader's stream delivered (epoch: the leader's, "" if unknown). */
  | { t: "actions"; epoch: string; actions: WireAction[] }
  /** live: the leader's stream is live (replayed up to headSeq) in epoch. */
  | { t: "live"; headSeq: number; epoch: string }
  /** down: the leader's stream failed; it is reconnecting. */
  | { t: "down"; code: Code; message: string }
  /** jump: the leader's stream jumped (a reset or a snapshot): followers resume on their own. */
  | { t: "jump"; epoch: string }
  /** hello: a new follower asks the leader for its state. */
  | { t: "hello" }
  /** presence: a presence event of the leader's stream, whose member is self (the browser's). */
  | { t: "presence"; change: PresenceChange; self: string }
  /** info: a tab set the browser's presence info (the leader sends it with UpdatePresence). */
  | { t: "info"; info: JsonObject };

/** SharedSubscriberOptions are a subscriber's options plus where to share the stream. */
export interface SharedSubscriberOptions extends SubscriberOptions {
  share: ShareEnv;
  /**
   * presence, if set: the browser is one member, held by the leader's stream, which relays
   * its presence events; every tab's set() reaches the others (info), and the leader's
   * stream sends it.
   */
  presence?: PresenceController;
  /**
   * onLeader is called when this tab becomes the leader, before its stream opens: e.g. to
   * adopt the outbox of a leader tab that closed.
   */
  onLeader?(): void | Promise<void>;
}

/** leaderLockName is the Web Lock the tabs following channel compete for. */
export function leaderLockName(channel: string): string {
  return `actionsync:stream:${channel}`;
}

/**
 * startSharedSubscriber follows the channel like startSubscriber, holding one Subscribe
 * stream per browser instead of one per tab:
 *
 * - The tab holding the lock leaderLockName(channel) is the leader: it runs
 *   startSubscriber and posts every batch, and its stream's state, on a BroadcastChannel
 *   of the same name. The lock is released by close() or when the page goes away; the next
 *   tab in line then becomes the leader and opens its own stream, resuming from its own
 *   position: nothing is missed.
 * - Every other tab is a follower. It catches up with a Subscribe stream of its own that
 *   it closes as soon as the replay is done (ready), then applies the relayed batches
 *   after its last seq. A relayed batch that starts past the next seq (it missed some: it
 *   joined late, or the leader changed) or in another epoch, and a leader's jump, start
 *   another catch-up. A follower is ready once caught up with a live leader; it is down
 *   while its catch-up fails or the leader's stream is down.
 *
 * So N tabs hold one long-lived stream; each holds a short one while it catches up. A tab
 * whose device goes offline (reconnect) follows nothing and, if it leads, steps down for
 * another tab, until it is back online (retryNow): then it catches up again.
 */
export function startSharedSubscriber(o: SharedSubscriberOptions): Subscriber {
  const name = leaderLockName(o.channel);
  const bc = o.share.open(name);
  const closing = new AbortController();
  let leader: Subscriber | undefined;
  let catchUp: Subscriber | undefined;
  let catchingUp: Promise<void> | undefined;
  // What the follower knows of the leader, and the batches relayed during a catch-up.
  let leaderLive: { headSeq: number; epoch: string } | undefined;
  let buffered: { epoch: string; actions: WireAction[] }[] = [];
  // The leader's last state message, answered to a hello.
  let leaderState: Relayed | undefined;
  // detached: this tab's device went offline (reconnect): it follows no relay and holds no
  // stream until retryNow (back online).
  let detached = false;
  // endTerm ends this tab's term as the leader (its lock is released).
  let endTerm: (() => void) | undefined;

  const post = (m: Relayed) => {
    if (closing.signal.aborted) return;
    try {
      bc.postMessage(m);
    } catch {
      // A closed channel (the page is going away): the followers elect another leader.
    }
  };

  bc.onmessage = (event) => {
    const m = event.data as Relayed;
    if (typeof m !== "object" || m === null || closing.signal.aborted) return;
    // Presence info is the browser's, whoever leads: every tab keeps the newest.
    if (m.t === "info") {
      o.presence?.set(m.info);
      return;
    }
    if (leader) {
      if (m.t === "hello" && leaderState) post(leaderState);
      if (m.t === "hello" && o.presence) {
        post({ t: "presence", change: snapshotOf(o.presence.state()), self: o.presence.state().self });
        post({ t: "info", info: o.presence.info() });
      }
      return;
    }
    if (!detached) follow(m);
  };

  /** follow handles a message of the leader, in a follower. */
  function follow(m: Relayed) {
    switch (m.t) {
      case "actions":
        if (catchingUp) buffered.push(m);
        else applyRelayed(m.epoch, m.actions);
        return;
      case "live":
        leaderLive = { headSeq: m.headSeq, epoch: m.epoch };
        if (!sameEpoch(m.epoch)) startCatchUp();
        else if (!catchingUp) o.onReady(m.headSeq, m.epoch);
        return;
      case "down":
        leaderLive = undefined;
        if (!catchingUp) o.onDown(new ConnectError(`the tab holding the stream: ${m.message}`, m.code), 0);
        return;
      case "jump":
        if (!sameEpoch(m.epoch)) startCatchUp();
        return;
      case "presence":
        o.presence?.follow(m.change, m.self);
        return;
    }
  }

  /** sameEpoch: epoch is this tab's, or one of them is not known yet. */
  function sameEpoch(epoch: string): boolean {
    const mine = o.position().epoch;
    return epoch === "" || mine === "" || epoch === mine;
  }

  /** applyRelayed applies the actions of a relayed batch after this tab's last seq, or catches up on a gap. */
  function applyRelayed(epoch: string, actions: WireAction[]) {
    if (!sameEpoch(epoch)) {
      startCatchUp();
      return;
    }
    const after = o.position().afterSeq;
    const fresh = actions.filter((a) => Number(a.seq) > after);
    if (fresh.length === 0) return;
    if (Number(fresh[0].seq) !== after + 1) {
      startCatchUp();
      return;
    }
    o.onActions(fresh);
  }

  /**
   * startCatchUp opens a Subscribe stream from this tab's position and closes it once it
   * is live (ready): the replay, a reset or a snapshot reach the middleware as from its own
   * stream. Relayed batches wait meanwhile and are applied after it.
   */
  function startCatchUp() {
    if (catchingUp || leader || closing.signal.aborted || detached) return;
    let done!: () => void;
    catchingUp = new Promise<void>((r) => (done = r));
    const sub = startSubscriber({
      ...o,
      // The leader's stream holds the browser's member; a catch-up is no member.
      presence: undefined,
      onReady(headSeq, epoch) {
        void sub.close().then(() => {
          if (catchUp === sub) catchUp = undefined;
          catchingUp = undefined;
          done();
          const waiting = buffered;
          buffered = [];
          for (const b of waiting) applyRelayed(b.epoch, b.actions);
          if (catchingUp || leader || closing.signal.aborted) return;
          if (leaderLive) o.onReady(Math.max(headSeq, leaderLive.headSeq), epoch);
        });
      },
    });
    catchUp = sub;
  }

  /** lead makes this tab the leader: its own stream, relayed to the followers. */
  async function lead(): Promise<void> {
    // The catch-up stream, if any, ends first: the leader's stream resumes from the
    // position it reached.
    const c = catchUp;
    catchUp = undefined;
    await c?.close();
    catchingUp = undefined;
    buffered = [];
    if (closing.signal.aborted) return;
    // Elected while offline (every tab of the device is): lead anyway, the stream retries
    // until the device is back, and relays nothing meanwhile.
    detached = false;
    try {
      await o.onLeader?.();
    } catch {
      // Adopting an outbox is best effort: the stream must open anyway.
    }
    if (closing.signal.aborted) return;
    const presence = o.presence;
    leader = startSubscriber({
      ...o,
      presence: presence && {
        subscribing: (clientId) => presence.subscribing(clientId),
        onEvent(ev) {
          const change = presence.onEvent(ev);
          post({ t: "presence", change, self: presence.state().self });
          return change;
        },
        onEnd: () => presence.onEnd(),
      },
      onActions(actions) {
        o.onActions(actions);
        post({ t: "actions", epoch: o.position().epoch, actions });
      },
      onReset(headSeq, epoch) {
        o.onReset(headSeq, epoch);
        post({ t: "jump", epoch });
      },
      onSnapshot(snapshot) {
        o.onSnapshot(snapshot);
        post({ t: "jump", epoch: snapshot.epoch });
      },
      onReady(headSeq, epoch) {
        o.onReady(headSeq, epoch);
        post((leaderState = { t: "live", headSeq, epoch }));
      },
      onDown(err, delayMs) {
        o.onDown(err, delayMs);
        post((leaderState = { t: "down", code: err.code, message: err.rawMessage }));
      },
    });
  }

  /**
   * elected runs one term as the leader: until close, until this tab steps down, or until
   * its lease is lost (lease locks only: two tabs took it at once, or this page was frozen
   * and another tab took over): it then steps down and follows the other leader.
   */
  const elected = async (lock: unknown) => {
    if (lock === null || closing.signal.aborted) return false;
    const term = new Promise<void>((r) => (endTerm = r));
    const lost = (lock as Partial<Lease>).signal;
    await lead();
    const ended = await Promise.race([term, aborted(closing.signal), ...(lost ? [aborted(lost).then(() => "lost")] : [])]);
    if (ended === "lost" && !closing.signal.aborted) {
      void stepDown().then(() => {
        post({ t: "hello" });
        startCatchUp();
      });
    }
    return true;
  };
  /** queue waits in line for the lock (the request outlives the caller). */
  const queue = () =>
    void o.share.locks.request(name, { signal: closing.signal }, elected).catch(() => {
      // Aborted by close().
    });
  // The first tab finds the lock free and leads at once; the others follow and queue.
  const election = o.share.locks
    .request(name, { ifAvailable: true }, (lock) => {
      if (lock !== null) return elected(lock);
      post({ t: "hello" });
      startCatchUp();
      queue();
      return false;
    })
    .catch(() => {
      // The lock could not be requested (the document is going away): nothing to share.
    });

  /**
   * stepDown ends this tab's term (its device went offline: the stream belongs with a tab
   * that can reach the server) and queues for the lock again.
   */
  async function stepDown() {
    const l = leader;
    leader = undefined;
    leaderState = undefined;
    endTerm?.();
    endTerm = undefined;
    await l?.close();
    if (!closing.signal.aborted) queue();
  }

  return {
    reconnect(err) {
      // The device went offline: follow nothing, hold nothing, until back online.
      detached = true;
      leaderLive = undefined;
      const c = catchUp;
      catchUp = undefined;
      catchingUp = undefined;
      buffered = [];
      void c?.close();
      if (leader) void stepDown();
      o.onDown(err, 0);
    },
    retryNow() {
      if (leader) {
        leader.retryNow();
        return;
      }
      if (detached) {
        detached = false;
        post({ t: "hello" });
      }
      if (catchUp) catchUp.retryNow();
      else startCatchUp();
    },
    renew() {
      leader?.renew();
      catchUp?.renew();
    },
    setPresence(info) {
      o.presence?.set(info);
      post({ t: "info", info });
    },
    async close() {
      closing.abort();
      bc.onmessage = null;
      await Promise.all([leader?.close(), catchUp?.close()]);
      await election;
      bc.close();
    },
  };
}

/** aborted resolves once signal aborts. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((r) => (signal.aborted ? r() : signal.addEventListener("abort", () => r(), { once: true })));
}
