// React hooks for a synced store: the status slice and the pending local actions.
import { useMemo, useSyncExternalStore } from "react";
import { useSelector, useStore } from "react-redux";
import type { LocalMeta, SyncStatusState, SyncedAction } from "./actions.js";
import { emptyPresence, presenceMembers, presenceOthers, type PresenceMember } from "./presence.js";

/** SyncView is the part of a createSync (or createSyncMiddleware) instance the hooks read. */
export interface SyncView {
  /** pending returns the local synced actions not yet confirmed, a new array when it changes. */
  pending(): readonly SyncedAction<LocalMeta>[];
  /** selectStatus selects the status slice (createSync); without it, state.sync is read. */
  selectStatus?(state: never): SyncStatusState;
}

/**
 * useSyncStatus returns the status slice of sync (connection status, lastSeq, pending
 * count, last error, resets) from the store of the nearest react-redux Provider, and
 * re-renders when it changes. Safe under server-side rendering: it only reads the store.
 */
export function useSyncStatus(sync: SyncView): SyncStatusState {
  return useSelector((state: unknown) => {
    const s = sync.selectStatus ? sync.selectStatus(state as never) : (state as { sync?: SyncStatusState }).sync;
    if (s === undefined) throw new Error("actionsync: useSyncStatus found no status slice: is the Provider's store the one sync.reducer(...) built?");
    return s;
  });
}

/**
 * usePending returns sync's local actions that the server has not confirmed yet, oldest
 * first (each with `meta.actionsync.id`), and re-renders when the list changes: e.g. to
 * mark the items they touch as "not yet synced". The same array until the list changes.
 */
export function usePending(sync: SyncView): readonly SyncedAction<LocalMeta>[] {
  const store = useStore();
  return useSyncExternalStore(store.subscribe, sync.pending, sync.pending);
}

/** PresenceView is what usePresence returns. */
export interface PresenceView {
  /** members lists who is on the channel, this client included, in join order. */
  members: readonly PresenceMember[];
  /** others lists them without this client (its own member id, `self`). */
  others: readonly PresenceMember[];
  /** count is how many members the channel has, listed or not. */
  count: number;
  /** self is this client's member id ("" until the stream's first presence event). */
  self: string;
}

/**
 * usePresence returns who is on sync's channel (with the `presence` option; empty
 * without it) from the status slice, and re-renders when it changes. The arrays are the
 * same until presence changes.
 */
export function usePresence(sync: SyncView): PresenceView {
  const status = useSyncStatus(sync);
  const p = status.presence ?? emptyPresence;
  return useMemo(() => ({ members: presenceMembers(p), others: presenceOthers(p), count: p.count, self: p.self }), [p]);
}
