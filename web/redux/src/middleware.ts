// createSyncMiddleware: the factory that ties the store to one channel of the server.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Middleware, Reducer, UnknownAction } from "redux";
import {
  ActionTypes,
  TypePrefix,
  syncMeta,
  type ConfirmedPayload,
  type ConnectionStatus,
  type LocalMeta,
  type PendingEntry,
  type RebasePayload,
  type RejectedPayload,
  type ReplacePayload,
  type ReplaceSource,
  type ResetPayload,
  type RestorePayload,
  type StatusPayload,
  type SyncError,
  type SyncStatusState,
  type SyncedAction,
} from "./actions.js";
import { initialConnection, sends, statusOf, transition, type Connection, type ConnectionEvent } from "./connection.js";
import { watchConnectivity } from "./connectivity.js";
import type { Action as WireAction } from "./gen/actionsync/v1/action_pb.js";
import { SyncService, type Ack, type Snapshot } from "./gen/actionsync/v1/sync_pb.js";
import { createOutbox } from "./outbox.js";
import { checkOptions, checkPresenceInfo, type SyncMiddlewareOptions } from "./options.js";
import { createPresence, type PresenceController, type PresenceState } from "./presence.js";
import type { JsonObject } from "@bufbuild/protobuf";
import { createPersistence, type Persistence, type Restored } from "./persist.js";
import { createRebase, type Classified } from "./rebase.js";
import { randomId } from "./ids.js";
import { createSender, isNetworkFailure } from "./sender.js";
import { createSnapshotWriter, decodeSnapshot } from "./snapshot.js";
import { createTokenSource, withToken } from "./token.js";
import { createStatusReducer } from "./status.js";
import { startSubscriber, type Subscriber, type SubscriberOptions } from "./subscriber.js";
import { startSharedSubscriber } from "./share.js";
import { checkSyncable, confirmedFromEntry, fromWire, isPlainObject, localMeta, withoutMarker } from "./wire.js";

/** SyncMiddleware is what createSyncMiddleware returns. */
export interface SyncMiddleware {
  /** middleware goes into the store (last, after thunk and the dev checks). */
  middleware: Middleware;
  /**
   * wrapReducer wraps the root reducer with convergence: the store shows the confirmed
   * actions in server order with the pending local ones re-applied on top. Required for
   * the stores to converge. The reducer must be pure and deterministic: it is re-run over
   * the pending actions whenever a remote action lands before them.
   */
  wrapReducer<R extends Reducer<any, any, any>>(reducer: R): R;
  /** reducer is the status slice's reducer; mount it anywhere, e.g. at state.sync. */
  reducer: Reducer<SyncStatusState>;
  /**
   * close ends the subscription, the Dispatch in flight and every timer, and sets the
   * status to offline; it resolves once they have stopped and the outbox is saved. Local
   * synced actions dispatched after close are still applied and kept in the outbox.
   */
  close(): Promise<void>;
  /**
   * start opens the subscription and starts sending the outbox, once the middleware is in
   * a store. Only needed with `autoStart: false` (server-side rendering, tests); calling
   * it again, or after autoStart did, does nothing. Throws if the middleware is in no store yet.
   */
  start(): void;
  /**
   * pending returns the local synced actions not confirmed yet (nor rejected), oldest
   * first. The array is replaced, never changed, when the list changes (usable as a
   * `useSyncExternalStore` snapshot); empty without wrapReducer.
   */
  pending(): readonly SyncedAction<LocalMeta>[];
  /**
   * setPresence replaces this client's presence info (with the `presence` option; throws
   * a TypeError without it): every member sees a join with it. Sent at once while the
   * stream is live (UpdatePresence), else with the next subscribe.
   */
  setPresence(info: JsonObject): void;
  /** presence returns the channel's presence now (the status slice's), undefined without the option. */
  presence(): PresenceState | undefined;
  /** channel is the channel this instance syncs. */
  readonly channel: string;
  /**
   * clientId is the client id this instance sends: the clientId option, or with getToken
   * the current token's sub (or "sub:device"), "" until the first token is at hand.
   */
  readonly clientId: string;
}

/**
 * createSyncMiddleware returns the middleware, the rebase reducer wrapper and the status
 * reducer that keep one store in sync with one channel of an actionsync server:
 *
 * - a local action whose type is synced is applied at once (optimistically) as a new
 *   action with `meta.actionsync = {id, local: true}`, queued in the outbox and sent with
 *   Dispatch, batched, one request in flight, retried with the same ids;
 * - the channel is followed with Subscribe from the last seq applied; every action comes
 *   back, the client's own ones too, with `meta.actionsync = {remote: true, seq, id,
 *   clientId, channel}`, and is dispatched into the store; remote actions are never sent;
 * - wrapReducer rebases the pending local actions on top of the confirmed ones;
 * - reconnects with backoff and jitter, surfaces resets, rolls back refused actions;
 * - follows the device's offline and online events (connectivity): offline at once,
 *   retrying at once when back online;
 * - with persist, saves the confirmed state and restores it at start (actionsync/replace).
 * - with getToken, sends a bearer token on every call, replaces it before it expires
 *   (moving the stream to the new one) and when the server refuses it (token.ts).
 *
 * The connection's status is a state machine (connection.ts); this closure is the wiring
 * between it, the subscriber, the sender, the outbox, the persisted state and the store.
 *
 * Each call has its own state (no module globals): use one instance per store.
 */
export function createSyncMiddleware(options: SyncMiddlewareOptions): SyncMiddleware {
  const o = checkOptions(options);
  const { channel, logger } = o;
  // With getToken, every call carries the current token; a new token moves the stream to it.
  const tokens = o.getToken
    ? createTokenSource({ getToken: o.getToken, device: o.device, logger, backoff: o.backoff, onToken: () => subscriber?.renew() })
    : undefined;
  const client = createClient(SyncService, tokens ? withToken(o.transport, tokens) : o.transport);
  /** clientIdNow is the client id: the option's, or the current token's (sub or sub:device; "" before the first token). */
  const clientIdNow = () => o.clientId ?? tokens?.clientId() ?? "";
  /** clientIdFor resolves with the client id to send, once a token is at hand when it comes from the token. */
  async function clientIdFor(signal: AbortSignal): Promise<string> {
    if (o.clientId === undefined && tokens) await tokens.get(signal);
    return clientIdNow();
  }
  const outbox = createOutbox(o.storage, logger);
  // Actions this instance created: the rebase and status reducers count only these as
  // pending local actions (another instance's, on the same store, are not ours).
  const own = new WeakSet<object>();
  // Actions this instance dispatched into the store itself (remote, status, rejected, ...):
  // its middleware passes them on untouched.
  const fromMe = new WeakSet<object>();
  // Ids confirmed by their ack because their echo was skipped by a reset; if the echo
  // comes after all, it must not be applied twice.
  const ackConfirmed = new Set<string>();
  // Seq ranges [from, to] the subscription skipped in resets (of the current epoch): an
  // action acknowledged there was never applied; one acknowledged at another seq before
  // lastSeq already is in the confirmed state (restored from storage).
  let skipped: [number, number][] = [];
  let resets = 0;
  // staleState: a reset skipped actions the confirmed state lacks (until a snapshot
  // replaces it): it must not be written as a snapshot.
  let staleState = false;
  // snapshotDue: one of our actions reached a snapshot boundary in the batch being applied.
  let snapshotDue = false;

  let api: { dispatch(action: UnknownAction): unknown } | undefined;
  let started = false;
  let closing: Promise<void> | undefined;
  let subscriber: Subscriber | undefined;
  let rebaseUsed = false;
  // lastSeq: the last seq received (where to resume); stateSeq: what the status slice shows.
  let lastSeq = 0;
  let stateSeq = 0;
  // epoch: the channel epoch lastSeq belongs to ("": not known yet).
  let epoch = "";
  // conn is the connection state machine (connection.ts); shown is what the status slice
  // was last told.
  let conn: Connection = initialConnection;
  const shown: { status: ConnectionStatus; error: SyncError | null } = { status: statusOf(conn.phase), error: conn.error };
  let unwatch: (() => void) | undefined;

  const isOwnLocal = (action: unknown) => typeof action === "object" && action !== null && own.has(action) && syncMeta(action)?.local === true;

  // Pending actions the reducer threw on when re-applied: reported (rejected) right after
  // the dispatch that dropped them, before anything can send them.
  let drops: { entry: PendingEntry; error: unknown }[] = [];
  const persistence: Persistence | undefined = o.persist
    ? createPersistence(o.persist, { confirmed: () => rebase.confirmedState(), position: () => ({ seq: lastSeq, epoch }) }, logger)
    : undefined;
  // A saved state whose storage loads synchronously is applied when the store is created
  // (wrapReducer's initial): the first render shows it.
  let restoring: Restored | null | Promise<Restored | null> = persistence?.load() ?? null;
  const rebase = createRebase({
    classify,
    replaceWholeState: o.codec?.select === undefined,
    initial() {
      if (restoring === null || restoring instanceof Promise) return undefined;
      const action = replaceAction(restoring, "storage");
      restoring = null;
      return action;
    },
    confirmedMarker: (id, seq) => ({ type: ActionTypes.confirmed, payload: { channel, id, seq } satisfies ConfirmedPayload }),
    onDrop(entry, error) {
      drops.push({ entry, error });
      // A drop in a reducer call that did not come through this middleware (the store's
      // init) is reported a microtask later.
      if (drops.length === 1) queueMicrotask(reportDrops);
    },
  });
  // Presence actions are neither synced nor pending: dispatched like the status.
  const presence: PresenceController | undefined = o.presence
    ? createPresence({
        client,
        channel,
        info: o.presence,
        logger,
        fixedId: tokens !== undefined,
        publish: (payload) => void dispatchSafely({ type: ActionTypes.presence, payload }),
      })
    : undefined;
  const reducer = createStatusReducer(
    channel,
    isOwnLocal,
    () => ({ status: shown.status, error: shown.error, resets, presence: presence?.state() }),
    presence !== undefined,
  );

  /** replaceAction builds the actionsync/replace of a restored state; lastSeq and epoch move to it. */
  function replaceAction(r: Restored, source: ReplaceSource): UnknownAction {
    lastSeq = stateSeq = r.seq;
    epoch = r.epoch;
    const payload: ReplacePayload = { channel, state: r.value, seq: r.seq, epoch: r.epoch, source };
    return { type: ActionTypes.replace, payload };
  }

  const snapshots =
    o.snapshots && o.codec
      ? createSnapshotWriter({ client, channel, clientId: clientIdNow, codec: o.codec, every: o.snapshots.every, intervalMs: o.snapshots.intervalMs, logger })
      : undefined;

  /** writeSnapshot writes the confirmed state as the channel's snapshot, if one is due. */
  function writeSnapshot() {
    const due = snapshotDue;
    snapshotDue = false;
    if (!snapshots || !o.snapshots?.write || staleState || epoch === "" || !snapshots.due(lastSeq, due)) return;
    snapshots.write(rebase.confirmedState(), lastSeq, epoch);
  }

  const sender = createSender({
    client,
    channel,
    clientId: clientIdFor,
    outbox,
    maxBatch: o.maxBatch,
    backoff: o.backoff,
    timeoutMs: o.dispatchTimeoutMs,
    position: () => ({ seq: lastSeq, epoch }),
    onAcks,
    onRejected,
    onRetry(err, delayMs, batch) {
      logger.warn(`actionsync: Dispatch to ${channel} failed (${describe(err)}); retrying in ${delayMs} ms`);
      if (!isNetworkFailure(err.code)) {
        // An answer from the server (an expired token, overload): the link works, the
        // status shows the error.
        on({ type: "dispatchTrouble", error: syncError(err) });
      } else if (batch.every((e) => outbox.has(e.id))) {
        // The stream can look live on a dead network (until its idle timeout): a Dispatch
        // that cannot reach the server says the client is offline. Unless the stream has
        // already echoed part of the batch: then the request got through (a batch is all
        // or nothing) and only its answer was lost.
        on({ type: "dispatchUnreachable", error: syncError(err) });
      }
    },
  });

  const closed = () => conn.phase === "closed";

  /**
   * on moves the connection state machine with event, then applies what changed: the
   * sender runs while the subscription is live, and the status slice follows.
   */
  function on(event: ConnectionEvent) {
    const prev = conn;
    conn = transition(conn, event);
    if (conn === prev) return;
    if (sends(conn.phase) !== sends(prev.phase)) sender.setLive(sends(conn.phase));
    publishStatus();
  }

  /** publishStatus dispatches actionsync/status with what the status slice does not show yet. */
  function publishStatus() {
    const payload: StatusPayload = { channel };
    const status = statusOf(conn.phase);
    if (status !== shown.status) payload.status = shown.status = status;
    if (!sameError(conn.error, shown.error)) payload.error = shown.error = conn.error;
    if (stateSeq !== lastSeq) payload.lastSeq = stateSeq = lastSeq;
    if (Object.keys(payload).length > 1) dispatchSafely({ type: ActionTypes.status, payload });
  }

  function classify(action: unknown): Classified {
    if (!isPlainObject(action)) return { kind: "other" };
    const payload = action.payload as { channel?: unknown } | undefined;
    if (action.type === ActionTypes.rejected && payload?.channel === channel) {
      return { kind: "rejected", id: (payload as RejectedPayload).id };
    }
    if (action.type === ActionTypes.restore && payload?.channel === channel) {
      return { kind: "restore", entries: (payload as RestorePayload).entries };
    }
    if (action.type === ActionTypes.rebase && payload?.channel === channel) return { kind: "rebase" };
    if (action.type === ActionTypes.replace && payload?.channel === channel) return { kind: "replace", state: (payload as ReplacePayload).state };
    if (action.type === ActionTypes.confirmed && payload?.channel === channel && fromMe.has(action)) {
      return { kind: "settled", id: (payload as ConfirmedPayload).id };
    }
    const m = syncMeta(action);
    if (m?.remote === true && m.channel === channel && typeof m.id === "string" && typeof m.seq === "number") {
      return { kind: "confirmed", id: m.id, seq: m.seq };
    }
    if (m?.local === true && typeof m.id === "string" && own.has(action)) return { kind: "local", id: m.id };
    return { kind: "other" };
  }

  function dispatchSafely(action: UnknownAction): boolean {
    if (!api) return false;
    fromMe.add(action);
    try {
      api.dispatch(action);
      return true;
    } catch (err) {
      logger.error(`actionsync: dispatching ${action.type} threw`, err);
      return false;
    }
  }

  /**
   * onActions applies a batch of the channel's actions (up to 1,024: a page of the
   * replay at start, or what arrived together live). The pending actions are re-applied
   * once after the batch, not after each action (Rebase.defer).
   */
  function onActions(batch: WireAction[]) {
    rebase.defer(true);
    try {
      for (const a of batch) applyRemote(a);
    } finally {
      if (rebase.defer(false)) dispatchSafely({ type: ActionTypes.rebase, payload: { channel } satisfies RebasePayload });
    }
    if (stateSeq !== lastSeq) publishStatus();
    persistence?.changed();
    writeSnapshot();
  }

  function applyRemote(a: WireAction) {
    const seq = Number(a.seq);
    if (!(seq > lastSeq)) {
      logger.warn(`actionsync: ignoring action seq ${a.seq} on ${channel}: not after ${lastSeq}`);
      return;
    }
    const prevSeq = lastSeq;
    lastSeq = seq;
    if (a.id !== "" && ackConfirmed.delete(a.id)) return;
    const decoded = fromWire(a, channel);
    if (decoded.problem !== undefined) {
      logger.warn(`actionsync: ignoring remote action seq ${seq} on ${channel}: it ${decoded.problem}`, a.type);
      return;
    }
    const action = decoded.action;
    const mine = a.id !== "" && outbox.has(a.id);
    if (!mine && !acceptsRemote(action)) {
      logger.warn(`actionsync: ignoring remote action seq ${seq} on ${channel}: type ${JSON.stringify(a.type)} is not synced`);
      return;
    }
    const entry = mine ? outbox.remove(a.id) : undefined;
    // The echo of our own action: a Dispatch whose answer was lost did reach the server.
    if (entry) on({ type: "linkWorks" });
    // One writer per snapshot boundary: the client whose action reached it.
    if (entry && snapshots?.reaches(prevSeq, seq)) snapshotDue = true;
    if (dispatchSafely(action)) {
      stateSeq = Math.max(stateSeq, seq);
    } else if (entry && rebase.hasPending(entry.id)) {
      // The reducer threw on the confirmed action (it is skipped, as on every client):
      // drop it from the pending ones too, or it would stay pending for ever.
      reject(entry, "internal", "the reducer threw on the confirmed action", "dropped");
    }
  }

  function acceptsRemote(action: SyncedAction): boolean {
    if (action.type.startsWith(TypePrefix)) return false;
    if (o.types.has(action.type)) return true;
    try {
      return o.predicate?.(action) === true;
    } catch (err) {
      logger.error("actionsync: predicate threw", err);
      return false;
    }
  }

  function onAcks(batch: PendingEntry[], acks: Ack[]) {
    on({ type: "linkWorks" });
    acks.forEach((ack, i) => {
      const entry = batch[i];
      if (ack.id !== "" && ack.id !== entry.id) {
        logger.warn(`actionsync: ack ${i} names id ${ack.id}, sent ${entry.id}`);
        return;
      }
      const seq = Number(ack.seq);
      outbox.markAcked(entry.id, seq);
      // An ack at or before the last seq applied whose echo has not come: it will never
      // be echoed (the server still had the id, so it answered a duplicate).
      if (seq <= lastSeq && outbox.has(entry.id)) confirmByAck(entry, seq);
    });
  }

  /**
   * confirmByAck confirms a pending action acknowledged at seq, at or before the last seq
   * applied, whose echo will never come. Either a reset skipped it: the ack confirms it,
   * and it is applied; or it is in the confirmed state already (restored from storage,
   * saved after its echo while the outbox still had it; an outbox adopted from a closed
   * tab; a snapshot): it is settled, not applied twice.
   */
  function confirmByAck(entry: PendingEntry, seq: number) {
    outbox.remove(entry.id);
    ackConfirmed.add(entry.id);
    if (ackConfirmed.size > 1000) ackConfirmed.delete(ackConfirmed.values().next().value!);
    if (skipped.some(([from, to]) => seq >= from && seq <= to)) dispatchSafely(confirmedFromEntry(entry, seq, clientIdNow(), channel));
    else dispatchSafely({ type: ActionTypes.confirmed, payload: { channel, id: entry.id, seq } satisfies ConfirmedPayload });
  }

  /**
   * afterJump settles the outbox after the stream jumped to seq (a reset or a snapshot).
   * In the same epoch nothing acknowledged was lost: an action acknowledged up to seq is
   * confirmed by its ack (confirmByAck), one acknowledged after seq will be echoed by the
   * stream; re-sending them could not be deduplicated once history has moved on. In
   * another epoch the server lost its history, acknowledged actions included: every
   * pending action is sent again (counted as never sent in the new epoch, see
   * Outbox.markSent).
   */
  function afterJump(seq: number, sameEpoch: boolean) {
    if (!sameEpoch) {
      outbox.resendAll();
      return;
    }
    const acked = outbox.acked().sort((a, b) => a.seq - b.seq);
    for (const { entry, seq: at } of acked) if (at <= seq) confirmByAck(entry, at);
  }

  /** reportDrops rolls back (outbox, status, actionsync/rejected) the pending actions the rebase dropped. */
  function reportDrops() {
    while (drops.length > 0) {
      const batch = drops;
      drops = [];
      for (const { entry, error } of batch) {
        const why = error instanceof Error ? error.message : String(error);
        logger.error(`actionsync: dropped ${entry.action.type} (${entry.id}) on ${channel}: the reducer threw when it was re-applied on top of newer confirmed actions`, error);
        reject(entry, "aborted", `the reducer threw when it was re-applied on top of newer confirmed actions: ${why}`, "dropped");
      }
    }
  }

  function onRejected(entry: PendingEntry, err: ConnectError) {
    logger.warn(`actionsync: the server refused ${entry.action.type} (${entry.id}) on ${channel}: ${describe(err)}`);
    reject(entry, codeToString(err.code), err.rawMessage, "refused");
  }

  /** reject rolls back a pending action: out of the outbox, actionsync/rejected, the status shows why. */
  function reject(entry: PendingEntry, code: string, message: string, by: "refused" | "dropped") {
    outbox.remove(entry.id);
    on({ type: by, error: { code, message } });
    const payload: RejectedPayload = { action: entry.action, code, message, id: entry.id, channel };
    dispatchSafely({ type: ActionTypes.rejected, payload });
  }

  function startConnection() {
    const options: SubscriberOptions = {
      client,
      channel,
      clientId: clientIdFor,
      backoff: o.backoff,
      idleTimeoutMs: o.idleTimeoutMs,
      position: () => ({ afterSeq: lastSeq, epoch }),
      onActions,
      snapshots: snapshots !== undefined,
      onReset(headSeq, resetEpoch) {
        logger.warn(`actionsync: the server reset ${channel} to seq ${headSeq} (was at ${lastSeq}); the state is stale`);
        resetTo(headSeq, resetEpoch);
      },
      onSnapshot,
      onReady(_headSeq, readyEpoch) {
        epoch = readyEpoch;
        on({ type: "streamReady" });
        persistence?.changed();
      },
      onDown(err, delayMs) {
        if (!conn.outageReported) logger.warn(`actionsync: subscription to ${channel} ended (${describe(err)}); reconnecting in ${delayMs} ms`);
        on({ type: "streamDown", error: syncError(err) });
      },
    };
    // With the tabs sharing one stream (shareStream), only the leader tab holds it.
    subscriber = o.share ? startSharedSubscriber({ ...options, presence, share: o.share, onLeader: adoptClosedTabs }) : startSubscriber({ ...options, presence });
  }

  /**
   * adoptClosedTabs restores, as pending, the outboxes of tabs closed since start (this
   * tab takes over the stream from one that went away, with the actions it had not sent).
   */
  async function adoptClosedTabs() {
    const adopted = await outbox.adopt();
    if (adopted.length === 0 || closed()) return;
    for (const e of adopted) own.add(e.action);
    const payload: RestorePayload = { channel, entries: adopted };
    dispatchSafely({ type: ActionTypes.restore, payload });
    sender.kick();
  }

  /** resetTo follows a reset: the stream goes on after headSeq, and the state is stale. */
  function resetTo(headSeq: number, resetEpoch: string) {
    const sameEpoch = resetEpoch === epoch;
    // In a new epoch (a lost history) every seq up to the head is another action.
    if (!sameEpoch) skipped = [];
    skipped.push([sameEpoch ? lastSeq + 1 : 1, headSeq]);
    lastSeq = stateSeq = headSeq;
    epoch = resetEpoch;
    resets++;
    staleState = true;
    // The saved state is stale too: a reload must not bring it back.
    persistence?.forget();
    afterJump(headSeq, sameEpoch);
    const payload: ResetPayload = { channel, headSeq };
    dispatchSafely({ type: ActionTypes.reset, payload });
  }

  /**
   * onSnapshot rebuilds the confirmed state from the channel's snapshot (actionsync/replace,
   * source "snapshot"); the stream goes on after its seq. A snapshot this app cannot read
   * (another version, bytes that do not deserialize, a reducer that throws on it) is
   * treated as a reset at its seq.
   */
  function onSnapshot(s: Snapshot) {
    const seq = Number(s.seq);
    snapshots?.seen(seq);
    const decoded = decodeSnapshot(s, o.codec!);
    if (decoded.problem !== undefined) {
      logger.warn(`actionsync: ignoring the snapshot of ${channel} at seq ${seq}: ${decoded.problem}; treating it as a reset`);
      resetTo(seq, s.epoch);
      return;
    }
    const at = { seq: lastSeq, epoch };
    if (!dispatchSafely(replaceAction({ value: decoded.value, seq, epoch: s.epoch }, "snapshot"))) {
      lastSeq = at.seq;
      epoch = at.epoch;
      resetTo(seq, s.epoch);
      return;
    }
    // Everything up to seq is in the snapshot: no reset gap is left. Our actions the
    // stream will not echo are settled by their acks (those not acknowledged yet, by the
    // duplicate acks of their resends).
    skipped = [];
    afterJump(seq, s.epoch === at.epoch);
    staleState = false;
    persistence?.revive();
    persistence?.changed();
    publishStatus();
  }

  function wentOffline() {
    if (closed()) return;
    const err = new ConnectError("the device went offline", Code.Unavailable);
    on({ type: "deviceOffline", error: syncError(err) });
    // The stream may stay open on a dead link: reopen it (it fails until back online).
    subscriber?.reconnect(err);
  }

  function wentOnline() {
    if (closed()) return;
    // Retry now rather than when the backoff delay (up to maxMs) runs out.
    subscriber?.retryNow();
    sender.retryNow();
  }

  /** begin runs start once the middleware is in a store. */
  function begin() {
    if (started) return;
    started = true;
    start().catch((err: unknown) => logger.error("actionsync: start failed", err));
  }

  // pendingView caches the pending actions of one rebase pending list (see SyncMiddleware.pending).
  let pendingView: { entries: readonly PendingEntry[]; actions: readonly SyncedAction<LocalMeta>[] } = { entries: [], actions: [] };

  async function start() {
    if (closed()) return;
    if (!rebaseUsed) {
      logger.warn("actionsync: sync.wrapReducer(rootReducer) is not in use: optimistic actions will not be rebased and stores may diverge");
    }
    if (o.connectivity) {
      unwatch = watchConnectivity(o.connectivity, { onOffline: wentOffline, onOnline: wentOnline });
      if (o.connectivity.onLine === false) on({ type: "deviceOffline", error: { code: "unavailable", message: "the device is offline" } });
    }
    if (restoring !== null) {
      // Not applied at the store's creation: loaded asynchronously, or wrapReducer is not in use.
      const r = await restoring;
      restoring = null;
      if (closed()) return;
      if (r !== null && !rebaseUsed) logger.warn("actionsync: the saved state is not restored: persist needs sync.wrapReducer(rootReducer)");
      else if (r !== null) {
        const at = { seq: lastSeq, epoch };
        if (!dispatchSafely(replaceAction(r, "storage"))) {
          // The reducer threw on the saved state: replay the history instead.
          lastSeq = stateSeq = at.seq;
          epoch = at.epoch;
        }
      }
    }
    const restored = await outbox.load();
    if (closed()) return;
    if (restored.length > 0) {
      for (const e of restored) own.add(e.action);
      const payload: RestorePayload = { channel, entries: restored };
      dispatchSafely({ type: ActionTypes.restore, payload });
    }
    startConnection();
  }

  const middleware: Middleware = (store) => {
    if (api) throw new Error("actionsync: this middleware is already in a store; call createSyncMiddleware once per store");
    api = store;
    // Dispatching is not allowed while the store is being built: start right after.
    if (o.autoStart) queueMicrotask(begin);
    return (next) => (dispatched) => {
      let action = dispatched;
      const m = syncMeta(action);
      if (m !== undefined && isPlainObject(action) && !fromMe.has(action)) {
        // Another instance's action (another channel): not ours to change.
        if (m.channel !== channel && !own.has(action)) return passOn(next, action);
        // The app dispatched one of this channel's synced actions again (the retry of a
        // rejected one, a copy of a remote one): it is a new action, with a new id. Left
        // as it is, it would be pending for ever (never sent) or applied as confirmed.
        action = withoutMarker(action);
      }
      if (!shouldSync(action)) return passOn(next, action);
      const { payload, meta } = checkSyncable(action);
      const id = randomId();
      // A new action object (the dispatched one is never mutated) carrying exactly the
      // payload and meta every other client will decode.
      const local: SyncedAction<LocalMeta> = { ...action, meta: { ...meta, actionsync: localMeta(id, channel) } };
      if (payload !== action.payload) local.payload = payload;
      own.add(local);
      const result = next(local);
      // A middleware after this one may have swallowed it; queue only what was applied.
      if (!rebaseUsed || rebase.hasPending(id)) {
        outbox.add({ id, action: local });
        sender.kick();
      }
      return result;
    };
  };

  /** passOn hands action to the next middleware, then reports what its reducers dropped. */
  function passOn(next: (action: unknown) => unknown, action: unknown): unknown {
    try {
      return next(action);
    } finally {
      reportDrops();
    }
  }

  function shouldSync(action: unknown): action is UnknownAction & { type: string } {
    if (!isPlainObject(action) || typeof action.type !== "string") return false;
    if (action.type.startsWith(TypePrefix) || syncMeta(action) !== undefined) return false;
    if (o.types.has(action.type)) return true;
    return o.predicate !== undefined && o.predicate(action as UnknownAction) === true;
  }

  return {
    middleware,
    wrapReducer<R extends Reducer<any, any, any>>(r: R): R {
      rebaseUsed = true;
      return rebase.wrap(r) as R;
    },
    reducer,
    start() {
      if (!api) throw new Error("actionsync: start() before the middleware is in a store: create the store first");
      begin();
    },
    pending() {
      const entries = rebase.pendingEntries();
      if (entries !== pendingView.entries) pendingView = { entries, actions: entries.map((e) => e.action) };
      return pendingView.actions;
    },
    close() {
      if (closing) return closing;
      on({ type: "close" });
      tokens?.close();
      unwatch?.();
      unwatch = undefined;
      const stopping = [sender.close(), subscriber?.close()];
      // A store closed before it started has not loaded its outbox yet: load it now, or
      // the actions dispatched meanwhile would never be saved.
      stopping.push(snapshots?.close());
      closing = Promise.all(stopping)
        .then(() => persistence?.close())
        .then(() => outbox.load())
        .then(() => outbox.flush())
        .then(() => o.storage.close?.())
        .catch((err: unknown) => logger.error("actionsync: closing the outbox storage failed", err));
      return closing;
    },
    setPresence(info) {
      if (!presence) throw new TypeError("actionsync: setPresence needs the presence option (e.g. presence: {})");
      checkPresenceInfo(info);
      if (subscriber?.setPresence) subscriber.setPresence(info);
      else presence.set(info);
    },
    presence: () => presence?.state(),
    channel,
    get clientId() {
      return clientIdNow();
    },
  };
}

function sameError(a: SyncError | null, b: SyncError | null): boolean {
  return a === b || (a !== null && b !== null && a.code === b.code && a.message === b.message);
}

function describe(err: ConnectError): string {
  return `${codeToString(err.code)}: ${err.rawMessage}`;
}

function syncError(err: ConnectError): SyncError {
  return { code: codeToString(err.code), message: err.rawMessage };
}
