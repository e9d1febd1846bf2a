// Notices the board shows about syncing: the server's history was reset, or the server
// refused one of this client's actions. They are local to this window (never synced)
// and stay until the user dismisses them, so a reset is surfaced, not hidden.
import { ActionTypes } from "@actionsync/redux";

/** ResetNotice is the last actionsync/reset seen. */
export interface ResetNotice {
  readonly channel: string;
  readonly headSeq: number;
}

/** RejectedNotice is the last actionsync/rejected seen: which action, and why. */
export interface RejectedNotice {
  readonly type: string;
  readonly code: string;
  readonly message: string;
}

/** NoticesState holds at most one notice of each kind. */
export interface NoticesState {
  readonly reset: ResetNotice | null;
  readonly rejected: RejectedNotice | null;
}

/** NoticeActionTypes are the demo's own, local action types. */
export const NoticeActionTypes = {
  dismissReset: "demo/dismissReset",
  dismissRejected: "demo/dismissRejected",
} as const;

export const dismissReset = () => ({ type: NoticeActionTypes.dismissReset });
export const dismissRejected = () => ({ type: NoticeActionTypes.dismissRejected });

const initialNotices: NoticesState = { reset: null, rejected: null };

/** notices is the reducer for NoticesState. */
export function notices(state: NoticesState = initialNotices, action: { type: string; payload?: unknown }): NoticesState {
  switch (action.type) {
    case ActionTypes.reset: {
      const p = (action.payload ?? {}) as { channel?: unknown; headSeq?: unknown };
      return { ...state, reset: { channel: String(p.channel ?? ""), headSeq: Number(p.headSeq ?? 0) } };
    }
    case ActionTypes.rejected: {
      const p = (action.payload ?? {}) as { action?: { type?: unknown }; code?: unknown; message?: unknown };
      return {
        ...state,
        rejected: { type: String(p.action?.type ?? "?"), code: String(p.code ?? "unknown"), message: String(p.message ?? "") },
      };
    }
    case NoticeActionTypes.dismissReset:
      return state.reset === null ? state : { ...state, reset: null };
    case NoticeActionTypes.dismissRejected:
      return state.rejected === null ? state : { ...state, rejected: null };
    default:
      return state;
  }
}
