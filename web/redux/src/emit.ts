// The Socket.IO-shaped emit(type, payload) for thunks written against a socket: a
// migration shim (MIGRATING.md).
import type { UnknownAction } from "redux";

/**
 * Emit dispatches `{ type, payload }` into the synced store, which applies it at once
 * and sends it to the channel (the store's own copy is confirmed when it comes back). It
 * returns what dispatch returned (the action with its `meta.actionsync` marker).
 *
 * Unlike a socket's emit, the sender's store applies the action too: a thunk that did
 * `dispatch(action)` and `emit(type, payload)` for the same change must now only emit.
 * Socket.IO acknowledgement callbacks are not supported: watch the status slice's
 * `pending`, or `usePending`, instead. It throws a TypeError for a type that is not
 * synced (it would stay in this store alone) and an Error before the store exists.
 */
export type Emit = (type: string, payload?: unknown) => UnknownAction;

/**
 * createEmit returns an Emit dispatching through dispatch() (undefined until the store
 * exists); isSynced tells whether a type is synced.
 */
export function createEmit(dispatch: () => ((action: UnknownAction) => unknown) | undefined, isSynced: (type: string) => boolean): Emit {
  return (type: string, payload?: unknown, ...more: unknown[]) => {
    if (typeof type !== "string" || type === "") throw new TypeError("actionsync: emit(type, payload): type must be a non-empty string");
    if (more.length > 0) {
      throw new TypeError(`actionsync: emit(${JSON.stringify(type)}, payload, ...) takes one payload and no acknowledgement callback; wrap several arguments in one payload`);
    }
    if (!isSynced(type)) {
      throw new TypeError(`actionsync: emit(${JSON.stringify(type)}): the type is not synced, so it would never leave this store; add it to createSync's actions or types`);
    }
    const d = dispatch();
    if (d === undefined) throw new Error(`actionsync: emit(${JSON.stringify(type)}) before the store exists`);
    return d(payload === undefined ? { type } : { type, payload }) as UnknownAction;
  };
}
