// Typed synced actions: RTK action creators as the list of synced types, and the
// isRemote / isLocal matchers for reducers (addMatcher) and listenerMiddleware.
import type { LocalMeta, RemoteMeta } from "./actions.js";
import { syncMeta } from "./actions.js";

/**
 * ActionCreatorLike is what RTK's `createAction` and slice action creators are: a
 * function with the action `type` and a `match` type guard.
 */
export interface ActionCreatorLike<A = unknown> {
  readonly type: string;
  match(action: unknown): action is A;
}

/**
 * SyncedActionsSpec lists the synced action types: type strings, action creators
 * (`createAction`, `slice.actions.addTask`) or records of them (`slice.actions`), alone or
 * in an array.
 */
export type SyncedActionsSpec = SyncedActionsItem | readonly SyncedActionsItem[];

/** SyncedActionsItem is one entry of {@link SyncedActionsSpec}. */
export type SyncedActionsItem = string | ActionCreatorLike | { readonly [name: string]: ActionCreatorLike };

/**
 * typesOf returns the action types a {@link SyncedActionsSpec} names, in order, without
 * duplicates. It throws a TypeError naming an entry that is neither a string, an action
 * creator nor a record of action creators.
 */
export function typesOf(spec: SyncedActionsSpec): string[] {
  const out = new Set<string>();
  const items: readonly unknown[] = Array.isArray(spec) ? spec : [spec];
  const add = (item: unknown, where: string) => {
    if (typeof item === "string") out.add(item);
    else if (isActionCreator(item)) out.add(item.type);
    else throw new TypeError(`actionsync: actions${where} is not an action type, an action creator (createAction, slice.actions.x) or a record of them`);
  };
  items.forEach((item, i) => {
    const where = Array.isArray(spec) ? `[${i}]` : "";
    if (typeof item === "object" && item !== null && !isActionCreator(item)) {
      for (const [name, creator] of Object.entries(item)) add(creator, `${where}.${name}`);
    } else add(item, where);
  });
  return [...out];
}

function isActionCreator(v: unknown): v is ActionCreatorLike {
  return (typeof v === "function" || (typeof v === "object" && v !== null)) && typeof (v as { type?: unknown }).type === "string" && typeof (v as { match?: unknown }).match === "function";
}

/** Remote is an action that came from the server (its own echo included), with its marker. */
export type Remote<A> = A & { meta: { actionsync: RemoteMeta } };

/** Local is a local synced action (dispatched here, sent to the server), with its marker. */
export type Local<A> = A & { meta: { actionsync: LocalMeta } };

/** MatchedBy is the action type an action creator's `match` guards. */
export type MatchedBy<C> = C extends { match(action: unknown): action is infer A } ? A : never;

/**
 * isRemote tells whether an action came from the server through a channel (anyone's,
 * this client's own echo included). Given an action creator instead of an action, it
 * returns a typed matcher for that creator's remote actions, e.g.
 * `builder.addMatcher(isRemote(addTask), (state, action) => ...)` or
 * `listener.startListening({ matcher: isRemote(addTask), effect })`.
 */
export function isRemote<C extends ActionCreatorLike>(creator: C): (action: unknown) => action is Remote<MatchedBy<C>>;
export function isRemote(action: unknown): action is Remote<{ type: string; payload?: unknown }>;
export function isRemote(x: unknown): boolean | ((action: unknown) => boolean) {
  if (typeof x === "function" && isActionCreator(x)) return (action: unknown) => x.match(action) && syncMeta(action)?.remote === true;
  return syncMeta(x)?.remote === true;
}

/**
 * isLocal tells whether an action is a local synced action: dispatched in this store and
 * sent to the server (applied optimistically, confirmed when it comes back). Given an
 * action creator, it returns a typed matcher, as {@link isRemote} does.
 */
export function isLocal<C extends ActionCreatorLike>(creator: C): (action: unknown) => action is Local<MatchedBy<C>>;
export function isLocal(action: unknown): action is Local<{ type: string; payload?: unknown }>;
export function isLocal(x: unknown): boolean | ((action: unknown) => boolean) {
  if (typeof x === "function" && isActionCreator(x)) return (action: unknown) => x.match(action) && syncMeta(action)?.local === true;
  return syncMeta(x)?.local === true;
}
