// The actions the middleware dispatches and the markers it puts on synced actions.
import type { UnknownAction } from "redux";
import type { PresencePayload, PresenceState } from "./presence.js";

/**
 * ActionTypes lists every action type the middleware dispatches. All of them start with
 * `actionsync/`; an action of such a type is never synced, and one arriving from the
 * server is ignored (nobody can forge them through a channel).
 */
export const ActionTypes = {
  /** status reports a connection change: payload {@link StatusPayload}. */
  status: "actionsync/status",
  /**
   * reset says the server could not resume the channel where this client was: its history
   * no longer reaches back that far, or it lost it (an in-memory server restarted). The
   * store's state for the channel is stale; the stream goes on after `headSeq`. Payload
   * {@link ResetPayload}.
   */
  reset: "actionsync/reset",
  /**
   * rejected says the server refused a local action (e.g. `permission_denied` from an
   * allow-list): it was removed from the pending actions and the state recomputed without
   * it. Payload {@link RejectedPayload}.
   */
  rejected: "actionsync/rejected",
  /**
   * confirmed is internal: the rebase reducer applies it to the visible state when a
   * client's oldest pending action comes back confirmed. It is never dispatched through
   * the store.
   */
  confirmed: "actionsync/confirmed",
  /**
   * restore re-applies the actions loaded from the outbox storage at start as pending.
   * Payload {@link RestorePayload}.
   */
  restore: "actionsync/restore",
  /**
   * rebase re-applies the pending local actions on top of the confirmed state once, after
   * a batch of remote actions (a page of the history replayed at start) was applied
   * without re-applying them after each one. Payload {@link RebasePayload}.
   */
  rebase: "actionsync/rebase",
  /**
   * replace replaces the whole confirmed state: restored from storage at start (the
   * `persist` option) or, later, from a server snapshot. By default wrapReducer replaces
   * the confirmed state with `payload.state` (the status slice stays live); with
   * `persist.select`, your reducers restore their part from it. The pending actions are
   * re-applied on top. Payload {@link ReplacePayload}.
   */
  replace: "actionsync/replace",
  /**
   * presence reports a change in the channel's presence (with the `presence` option): the
   * status slice's `presence` becomes `payload.presence`. Never synced, never pending.
   * Payload {@link PresencePayload}.
   */
  presence: "actionsync/presence",
} as const;

/** TypePrefix starts every action type in {@link ActionTypes}. */
export const TypePrefix = "actionsync/";

/** ConnectionStatus is the state of the subscription to the server. */
export type ConnectionStatus = "connecting" | "connected" | "offline";

/** SyncError is a Connect error as plain data: `code` is its name, e.g. "permission_denied". */
export interface SyncError {
  code: string;
  message: string;
}

/** SyncStatusState is the status slice (`sync.reducer`); plain, serialisable data. */
export interface SyncStatusState {
  /** status: "connected" once the subscription has replayed the history and is live. */
  status: ConnectionStatus;
  /** lastSeq is the seq of the last action applied from the channel (0: none). */
  lastSeq: number;
  /** pending counts local actions not yet confirmed by the server (nor rejected). */
  pending: number;
  /** error is the last connection failure or rejection, null once connected again. */
  error: SyncError | null;
  /** resets counts the `actionsync/reset` signals received. */
  resets: number;
  /**
   * presence is who is on the channel, with the `presence` option (absent without it):
   * members by client id, their join order, the count, and this client's own member id.
   */
  presence?: PresenceState;
}

/** LocalMeta marks a local synced action: `meta.actionsync`. */
export interface LocalMeta {
  /** id is the action id sent to the server (a UUID). */
  id: string;
  local: true;
  /**
   * channel the action is sent to. Absent in actions persisted by versions before it was
   * added (their outbox entries are still restored).
   */
  channel?: string;
}

/** RemoteMeta marks an action that came from the server: `meta.actionsync`. */
export interface RemoteMeta {
  remote: true;
  /** seq is the action's position in the channel. */
  seq: number;
  /** id is the action id its sender chose. */
  id: string;
  /** clientId is the sender's client id, as stamped by the server. */
  clientId: string;
  /** channel the action was published on. */
  channel: string;
}

/** SyncedAction is an action with its `meta.actionsync` marker. */
export interface SyncedAction<M = LocalMeta | RemoteMeta> extends UnknownAction {
  type: string;
  payload?: unknown;
  meta: { [key: string]: unknown; actionsync: M };
}

/** PendingEntry is one local action waiting for the server's confirmation (the outbox). */
export interface PendingEntry {
  /** id is the action id (equal to `action.meta.actionsync.id`). */
  id: string;
  /** action is the local action as it was applied: JSON data. */
  action: SyncedAction<LocalMeta>;
  /**
   * sentAfter is the channel position this client had applied when it first sent the
   * action in the channel's current epoch (absent: never sent). Every later send of the
   * action names it (the Dispatch request's sent_after_seq and sent_epoch), so that the
   * server refuses the resend ("dedupe window passed") rather than apply the action twice
   * once its history no longer reaches back there. A position of another epoch (a server
   * that lost its history) counts as never sent: see the README's *Delivery*.
   */
  sentAfter?: SentPosition;
}

/** SentPosition is a channel position: everything up to seq, in epoch, was applied. */
export interface SentPosition {
  seq: number;
  epoch: string;
}

/** StatusPayload is the payload of `actionsync/status`; absent fields keep their value. */
export interface StatusPayload {
  channel: string;
  status?: ConnectionStatus;
  error?: SyncError | null;
  lastSeq?: number;
}

/** ResetPayload is the payload of `actionsync/reset`. */
export interface ResetPayload {
  channel: string;
  /** headSeq is the channel's head when the server reset the subscription. */
  headSeq: number;
}

/** RejectedPayload is the payload of `actionsync/rejected`. */
export interface RejectedPayload {
  /** action is the refused local action, as it was dispatched (with its marker). */
  action: SyncedAction<LocalMeta>;
  /** code is the Connect code name, e.g. "permission_denied", "invalid_argument". */
  code: string;
  /** message is the server's explanation, naming the field and the limit. */
  message: string;
  /** id is the refused action's id. */
  id: string;
  channel: string;
}

/** ConfirmedPayload is the payload of the internal `actionsync/confirmed`. */
export interface ConfirmedPayload {
  channel: string;
  id: string;
  seq: number;
}

/** RebasePayload is the payload of `actionsync/rebase`. */
export interface RebasePayload {
  channel: string;
}

/** ReplaceSource says where a replacing state comes from. */
export type ReplaceSource = "storage" | "snapshot";

/** ReplacePayload is the payload of `actionsync/replace`. */
export interface ReplacePayload<S = unknown> {
  channel: string;
  /** state is the confirmed state (or, with persist.select, the selected part of it). */
  state: S;
  /** seq is the seq of the last channel action state contains. */
  seq: number;
  /** epoch is the channel epoch seq belongs to. */
  epoch: string;
  /** source: "storage" (the persisted state, at start) or "snapshot" (from the server). */
  source: ReplaceSource;
}

/** ReplaceAction is an `actionsync/replace` action. */
export interface ReplaceAction<S = unknown> extends UnknownAction {
  type: typeof ActionTypes.replace;
  payload: ReplacePayload<S>;
}

/**
 * isReplaceAction tells whether action is an `actionsync/replace` (of channel, if
 * given): a type guard, usable as an RTK matcher (`builder.addMatcher(isReplaceAction, ...)`).
 */
export function isReplaceAction<S = unknown>(action: unknown, channel?: string): action is ReplaceAction<S> {
  if (typeof action !== "object" || action === null) return false;
  const a = action as { type?: unknown; payload?: { channel?: unknown } };
  return a.type === ActionTypes.replace && typeof a.payload === "object" && a.payload !== null && (channel === undefined || a.payload.channel === channel);
}

/** RestorePayload is the payload of `actionsync/restore`. */
export interface RestorePayload {
  channel: string;
  entries: PendingEntry[];
}

/** syncMeta returns `action.meta.actionsync` when it is an object. */
export function syncMeta(action: unknown): Partial<LocalMeta & RemoteMeta> | undefined {
  if (typeof action !== "object" || action === null) return undefined;
  const meta = (action as { meta?: unknown }).meta;
  if (typeof meta !== "object" || meta === null) return undefined;
  const m = (meta as { actionsync?: unknown }).actionsync;
  return typeof m === "object" && m !== null ? (m as Partial<LocalMeta & RemoteMeta>) : undefined;
}

/** isRemoteAction tells whether an action came from the server (of any channel). */
export function isRemoteAction(action: unknown): action is SyncedAction<RemoteMeta> {
  return syncMeta(action)?.remote === true;
}

/** isLocalAction tells whether an action is a local synced action. */
export function isLocalAction(action: unknown): action is SyncedAction<LocalMeta> {
  return syncMeta(action)?.local === true;
}
