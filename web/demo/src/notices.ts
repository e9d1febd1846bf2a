// Notices the board shows about syncing: the server's history was reset, or the server
// refused one of this client's actions. A createSlice of this window's own (never synced):
// they stay until the user dismisses them (or reloads, for a reset), so nothing is hidden.
import { createSlice } from "@reduxjs/toolkit";
import { ActionTypes, type RejectedPayload, type ResetPayload } from "@actionsync/redux";

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

const initialState: NoticesState = { reset: null, rejected: null };

const slice = createSlice({
  name: "demo",
  initialState,
  reducers: {
    dismissReset: (state) => (state.reset === null ? state : { ...state, reset: null }),
    dismissRejected: (state) => (state.rejected === null ? state : { ...state, rejected: null }),
  },
  extraReducers: (builder) =>
    builder
      .addCase(ActionTypes.reset, (state, action: { type: string; payload?: Partial<ResetPayload> }) => {
        const p = action.payload ?? {};
        return { ...state, reset: { channel: String(p.channel ?? ""), headSeq: Number(p.headSeq ?? 0) } };
      })
      .addCase(ActionTypes.rejected, (state, action: { type: string; payload?: Partial<RejectedPayload> }) => {
        const p = action.payload ?? {};
        return { ...state, rejected: { type: String(p.action?.type ?? "?"), code: String(p.code ?? "unknown"), message: String(p.message ?? "") } };
      }),
});

/** dismissReset and dismissRejected hide a notice: the demo's own, local actions. */
export const { dismissReset, dismissRejected } = slice.actions;

/** NoticeActionTypes are the demo's own, local action types. */
export const NoticeActionTypes = { dismissReset: dismissReset.type, dismissRejected: dismissRejected.type } as const;

/** notices is the reducer for NoticesState. */
export const notices = slice.reducer;
