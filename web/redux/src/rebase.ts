// The rebase reducer: confirmed actions in server order, pending local ones on top.
import type { Action, Reducer } from "redux";
import type { PendingEntry } from "./actions.js";

interface Dropped {
  entry: PendingEntry;
  error: unknown;
}

/** Classified says what an action means to the rebase reducer. */
export type Classified =
  /** local: a local synced action, applied optimistically and kept pending. */
  | { kind: "local"; id: string }
  /** confirmed: an action with its seq, from the server (possibly a pending one coming back). */
  | { kind: "confirmed"; id: string; seq: number }
  /** rejected: the server refused pending action id; drop it. */
  | { kind: "rejected"; id: string }
  /** settled: pending action id is already in the confirmed state (restored from storage); drop it. */
  | { kind: "settled"; id: string }
  /**
   * replace: the whole confirmed state is replaced (restored from storage, or a server
   * snapshot): by state itself when RebaseOptions.replaceWholeState, else by what the
   * reducer makes of the action; the pending actions are re-applied on top.
   */
  | { kind: "replace"; state: unknown }
  /** restore: re-apply entries (loaded from storage) as pending, before the current ones. */
  | { kind: "restore"; entries: readonly PendingEntry[] }
  /**
   * rebase: re-apply the pending actions on top of the confirmed state, after a batch of
   * confirmed actions applied with the rebase deferred (see Rebase.defer).
   */
  | { kind: "rebase" }
  /** other: any other action (UI-only, status): applies to the confirmed state, under the pending actions. */
  | { kind: "other" };

/** RebaseOptions connects the rebase reducer to its middleware. */
export interface RebaseOptions {
  /** classify tells which kind of action this is (for this middleware instance). */
  classify(action: unknown): Classified;
  /**
   * confirmedMarker builds the action applied to the visible state when the oldest
   * pending action comes back confirmed: the visible state already contains that action,
   * so only bookkeeping (the status slice's pending count) must change.
   */
  confirmedMarker(id: string, seq: number): Action;
  /**
   * onDrop is told of each pending action the reducer threw on when it was re-applied
   * on top of a changed confirmed state: it is no longer pending (rolled back). It is
   * called from inside the reducer, after the rebase's state is updated: it must not
   * dispatch (report later).
   */
  onDrop?(entry: PendingEntry, error: unknown): void;
  /**
   * replaceWholeState: a `replace` action's state becomes the confirmed state (the
   * reducer then runs with the action on it, so that slices that must stay live, such
   * as the status slice, can keep their value). Otherwise the reducer alone applies the
   * action to the confirmed state (the app's reducers restore their part).
   */
  replaceWholeState?: boolean;
  /**
   * initial, if given, is called once, when the store is created: a `replace` action it
   * returns is applied at once, so the store's first state is the restored one.
   */
  initial?(): Action | undefined;
}

/** Rebase is the state of the rebase reducer, shared by every reducer it wraps. */
export interface Rebase {
  /** wrap returns reducer with convergence: see createRebase. */
  wrap<S, A extends Action, P>(reducer: Reducer<S, A, P>): Reducer<S, A, P>;
  /** pendingIds lists the pending action ids, oldest first. */
  pendingIds(): string[];
  /** pendingEntries returns the pending entries, oldest first; a new array whenever they change. */
  pendingEntries(): readonly PendingEntry[];
  /** hasPending tells whether action id is pending. */
  hasPending(id: string): boolean;
  /**
   * defer(true) starts a batch of confirmed actions: each is applied to the confirmed
   * state, but the pending actions are not re-applied after each one. Meanwhile the
   * visible state stays as it was before the batch (if there are pending actions).
   * defer(false) ends the batch and returns true if the visible state must be rebuilt:
   * then dispatch an action classified `rebase` (any action that re-applies the pending
   * actions, a non-synced one included, rebuilds it too). So replaying n actions under p
   * pending ones costs n + p reducer calls instead of n·p.
   */
  defer(on: boolean): boolean;
  /** confirmedState returns the confirmed state (undefined before the store's init). */
  confirmedState(): unknown;
}

/**
 * createRebase keeps, for one store, the confirmed state (every confirmed action applied
 * in seq order) and the pending local actions; the state the store shows is the pending
 * actions re-applied on top of the confirmed state. When an action with a seq arrives it
 * is applied to the confirmed state, dropped from the pending ones if it is one of them,
 * and the visible state is recomputed. So every store that has seen the same seqs and has
 * nothing pending holds the same state, whatever order the actions were dispatched in.
 *
 * Other actions (UI-only, status) apply to the confirmed state, under the pending ones:
 * the visible state is always the pending actions re-applied on top of the confirmed
 * one. The wrapped reducer must be pure and deterministic: it runs again over the
 * pending actions each time the confirmed state moves under them. A pending action it
 * throws on then is dropped (onDrop): the confirmed actions always apply. One it throws
 * on at once (a local action, or a confirmed one on the confirmed state) makes the
 * dispatch throw and changes nothing. The state lives in this closure, one per store:
 * time-travel tools that set the store's state from outside are not supported.
 */
export function createRebase(options: RebaseOptions): Rebase {
  let initialised = false;
  let confirmed: unknown;
  let pending: readonly PendingEntry[] = [];
  // deferring: in a batch (defer(true)); stale: the visible state is an approximation.
  let deferring = false;
  let stale = false;

  function wrap<S, A extends Action, P>(reducer: Reducer<S, A, P>): Reducer<S, A, P> {
    // rebased re-applies entries on top of base. A pending action that no longer applies
    // (the reducer throws on it on top of newer confirmed actions) is dropped rather than
    // losing the confirmed ones: it is left out of kept and reported once the closure
    // is updated (see commit).
    const rebased = (base: S, entries: readonly PendingEntry[]): { state: S; kept: readonly PendingEntry[]; dropped: Dropped[] } => {
      let state = base;
      let kept: PendingEntry[] | undefined;
      const dropped: Dropped[] = [];
      entries.forEach((e, i) => {
        try {
          state = reducer(state, e.action as unknown as A);
          kept?.push(e);
        } catch (error) {
          kept ??= entries.slice(0, i);
          dropped.push({ entry: e, error });
        }
      });
      return { state, kept: kept ?? entries, dropped };
    };
    const replaced = (base: S, action: A, state: unknown): S => (options.replaceWholeState ? reducer(state as S, action) : reducer(base, action));
    // commit updates the closure once the user's reducer has returned, then reports drops.
    const commit = (nextConfirmed: unknown, r: { state: S; kept: readonly PendingEntry[]; dropped: Dropped[] }, rebuilt = true): S => {
      confirmed = nextConfirmed;
      pending = r.kept;
      if (rebuilt) stale = false;
      for (const d of r.dropped) options.onDrop?.(d.entry, d.error);
      return r.state;
    };

    return (state: S | P | undefined, action: A): S => {
      // The first call (Redux's init action) or a parent reducer that resets the state to
      // undefined: the confirmed state starts over from it.
      if (!initialised || state === undefined) {
        let base = reducer(state, action);
        const first = initialised ? undefined : options.initial?.();
        if (first !== undefined) {
          const c = options.classify(first);
          if (c.kind === "replace") base = replaced(base, first as A, c.state);
        }
        initialised = true;
        return commit(base, rebased(base, pending));
      }
      const visible = state as S;
      const c = options.classify(action);
      // Nothing below assigns to the closure before the user's reducer has returned: if it
      // throws, the store and this closure both keep their previous state.
      switch (c.kind) {
        case "local": {
          const next = reducer(visible, action);
          pending = [...pending.filter((e) => e.id !== c.id), { id: c.id, action: action as never }];
          return next;
        }
        case "confirmed": {
          const nextConfirmed = reducer(confirmed as S, action);
          const i = pending.findIndex((e) => e.id === c.id);
          const rest = i < 0 ? pending : pending.filter((_, j) => j !== i);
          // The oldest pending action came back with nothing before it: the visible state
          // already is confirmed + pending, only the bookkeeping moves. This keeps a flush of
          // n queued actions O(n) instead of O(n^2).
          if (i === 0 && rest.length > 0 && !stale) {
            return commit(nextConfirmed, { state: reducer(visible, options.confirmedMarker(c.id, c.seq) as A), kept: rest, dropped: [] });
          }
          if (deferring && rest.length > 0) {
            // In a batch: the pending actions are re-applied once, at its end. Until then
            // the visible state stays as it was before the batch (behind, but a state
            // the store did show: no pending action vanishes and comes back).
            stale = true;
            return commit(nextConfirmed, { state: visible, kept: rest, dropped: [] }, false);
          }
          return commit(nextConfirmed, rebased(nextConfirmed, rest));
        }
        case "rejected":
        case "settled": {
          const nextConfirmed = reducer(confirmed as S, action);
          return commit(nextConfirmed, rebased(nextConfirmed, pending.filter((e) => e.id !== c.id)));
        }
        case "restore": {
          const nextConfirmed = reducer(confirmed as S, action);
          const known = new Set(pending.map((e) => e.id));
          return commit(nextConfirmed, rebased(nextConfirmed, [...c.entries.filter((e) => !known.has(e.id)), ...pending]));
        }
        case "replace": {
          const nextConfirmed = replaced(confirmed as S, action, c.state);
          return commit(nextConfirmed, rebased(nextConfirmed, pending));
        }
        case "rebase":
          return commit(confirmed, rebased(confirmed as S, pending));
        case "other": {
          // Applied under the pending actions, not on top of them: an action that does not
          // commute with them (a local-only "clear" of a list a pending action adds to)
          // would otherwise show a state the next rebase undoes. The cost: the pending
          // actions are re-applied once per such action.
          const nextConfirmed = reducer(confirmed as S, action);
          return commit(nextConfirmed, rebased(nextConfirmed, pending));
        }
      }
    };
  }

  return {
    wrap,
    pendingIds: () => pending.map((e) => e.id),
    pendingEntries: () => pending,
    hasPending(id) {
      // Usually the newest entry: look from the end.
      for (let i = pending.length - 1; i >= 0; i--) if (pending[i].id === id) return true;
      return false;
    },
    confirmedState: () => confirmed,
    defer(on) {
      deferring = on;
      return !on && stale;
    },
  };
}
