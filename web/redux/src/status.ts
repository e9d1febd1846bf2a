// The status slice: connection status, last seq, pending count, last error, resets.
import type { Reducer, UnknownAction } from "redux";
import {
  ActionTypes,
  syncMeta,
  type ConfirmedPayload,
  type RejectedPayload,
  type ReplacePayload,
  type ResetPayload,
  type StatusPayload,
  type SyncStatusState,
} from "./actions.js";
import { emptyPresence, type PresencePayload } from "./presence.js";

/** initialStatus is the status slice before the first connection attempt. */
export const initialStatus: SyncStatusState = { status: "connecting", lastSeq: 0, pending: 0, error: null, resets: 0 };

/** LiveStatus is the part of the status slice a replaced state must not bring back. */
export type LiveStatus = Pick<SyncStatusState, "status" | "error" | "resets" | "presence">;

/**
 * createStatusReducer returns the reducer of one middleware instance's status slice.
 * isOwnLocal tells whether an action is one of this instance's local synced actions;
 * live returns the connection's current status, error and resets count.
 *
 * On `actionsync/replace` the slice is rebuilt from live and the payload's seq: the
 * replacing state may hold a status slice saved in another session (connected, an old
 * error, its resets count), which must not show.
 *
 * pending is counted, not set: +1 per local action, -1 per confirmedMarker. The rebase
 * reducer never applies local actions to its confirmed state, so there the count stays 0,
 * and re-applying the pending actions on top of it yields exactly their number.
 */
export function createStatusReducer(
  channel: string,
  isOwnLocal: (action: unknown) => boolean,
  live: () => LiveStatus = () => initialStatus,
  presence = false,
): Reducer<SyncStatusState> {
  // With presence, the slice has it from the start (empty until the stream's snapshot).
  const initial = presence ? { ...initialStatus, presence: emptyPresence } : initialStatus;
  return (state = initial, action: UnknownAction): SyncStatusState => {
    switch (action.type) {
      case ActionTypes.presence: {
        const p = action.payload as PresencePayload;
        if (!presence || p?.channel !== channel || p.presence === state.presence) return state;
        return { ...state, presence: p.presence };
      }
      case ActionTypes.status: {
        const p = action.payload as StatusPayload;
        if (p?.channel !== channel) return state;
        const next = { ...state };
        if (p.status !== undefined) next.status = p.status;
        if (p.error !== undefined) next.error = p.error;
        if (p.lastSeq !== undefined) next.lastSeq = p.lastSeq;
        return shallowEqual(next, state) ? state : next;
      }
      case ActionTypes.reset: {
        const p = action.payload as ResetPayload;
        if (p?.channel !== channel) return state;
        return { ...state, lastSeq: p.headSeq, resets: state.resets + 1 };
      }
      case ActionTypes.rejected: {
        const p = action.payload as RejectedPayload;
        if (p?.channel !== channel) return state;
        return { ...state, error: { code: p.code, message: p.message } };
      }
      case ActionTypes.replace: {
        const p = action.payload as ReplacePayload;
        if (p?.channel !== channel) return state;
        // The confirmed state holds no pending action: the rebase re-applies them on top.
        const { status, error, resets, presence: who } = live();
        const next: SyncStatusState = { status, error, resets, lastSeq: p.seq, pending: 0 };
        // Presence is live too: a replaced state (another session's, a snapshot) never brings its own.
        if (presence) next.presence = who ?? emptyPresence;
        return shallowEqual(next, state) ? state : next;
      }
      case ActionTypes.confirmed: {
        const p = action.payload as ConfirmedPayload;
        if (p?.channel !== channel) return state;
        return { ...state, pending: Math.max(0, state.pending - 1), lastSeq: Math.max(state.lastSeq, p.seq) };
      }
    }
    const m = syncMeta(action);
    if (m?.remote === true && m.channel === channel && typeof m.seq === "number") {
      return m.seq > state.lastSeq ? { ...state, lastSeq: m.seq } : state;
    }
    if (m?.local === true && isOwnLocal(action)) return { ...state, pending: state.pending + 1 };
    return state;
  };
}

function shallowEqual(a: SyncStatusState, b: SyncStatusState): boolean {
  return (
    a.status === b.status &&
    a.lastSeq === b.lastSeq &&
    a.pending === b.pending &&
    a.resets === b.resets &&
    a.presence === b.presence &&
    (a.error === b.error || (a.error?.code === b.error?.code && a.error?.message === b.error?.message))
  );
}
