// createSync: the Redux Toolkit entry point. It returns the two pieces configureStore
// takes (a reducer and a middleware), wired to each other and checked.
import type { Action, Middleware, Reducer, ReducersMapObject, StateFromReducersMapObject, ActionFromReducersMapObject, PreloadedStateShapeFromReducersMapObject, UnknownAction } from "redux";
import { TypePrefix, syncMeta, type LocalMeta, type SyncStatusState, type SyncedAction } from "./actions.js";
import { createEmit, type Emit } from "./emit.js";
import { typesOf, type SyncedActionsSpec } from "./matchers.js";
import { createSyncMiddleware } from "./middleware.js";
import type { SyncMiddlewareOptions } from "./options.js";
import { withStatusSlice } from "./statusslice.js";
import { emptyPresence, presenceMembers, presenceOthers, type PresenceMember, type PresenceState } from "./presence.js";
import type { JsonObject } from "@bufbuild/protobuf";
import { isPlainObject } from "./wire.js";

/** SyncOptions configures createSync: the options of createSyncMiddleware, plus these. */
export interface SyncOptions<K extends string = "sync"> extends Omit<SyncMiddlewareOptions, "autoStart"> {
  /**
   * actions lists the synced actions: RTK action creators (`createAction`,
   * `slice.actions.addTask`), records of them (`slice.actions`) or type strings, alone or
   * in an array. Added to `types`; give actions, types or predicate.
   */
  actions?: SyncedActionsSpec;
  /**
   * statusKey is where the status slice goes in the store's state. Default "sync"
   * (`state.sync`).
   */
  statusKey?: K;
  /**
   * autoStart opens the stream as soon as the store is created. Default: true in a browser
   * (where `document` exists) or a web worker, false elsewhere (server-side rendering,
   * Node): call `start()` there. A store rendered on a server never opens a stream.
   */
  autoStart?: boolean;
}

/** WithStatus is a state S with the status slice at key K. */
export type WithStatus<S, K extends string> = S & { [P in K]: SyncStatusState };

/**
 * SyncReducer wraps the app's reducers; see {@link Sync.reducer}. One generic signature
 * (not overloads), so that the state is inferred inside configureStore({ reducer, middleware })
 * next to a middleware callback.
 */
export type SyncReducer<K extends string> = <R extends Reducer<any, any, any> | ReducersMapObject<any, any, any>>(app: R) => SyncedReducer<R, K>;

/** SyncedReducer is what sync.reducer(R) returns: R's state with the status slice at K. */
export type SyncedReducer<R, K extends string> =
  R extends Reducer<infer S, infer A, infer P>
    ? Reducer<WithStatus<S, K>, A, P>
    : Reducer<WithStatus<StateFromReducersMapObject<R>, K>, ActionFromReducersMapObject<R>, Partial<PreloadedStateShapeFromReducersMapObject<R>>>;

/** Sync is what createSync returns: the pieces for configureStore, and the instance's controls. */
export interface Sync<K extends string = "sync"> {
  /**
   * reducer wraps the app's reducers for configureStore's `reducer`: a map of slice
   * reducers (`{ board: boardSlice.reducer }`) or a root reducer function. The result adds
   * the status slice at `state[statusKey]` and rebases pending local actions on top of
   * the confirmed ones (convergence). Call it once: one store per createSync. Throws a
   * TypeError when statusKey is taken or the root state is not an object.
   */
  reducer: SyncReducer<K>;
  /**
   * middleware goes into configureStore's `middleware`:
   * `(getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware)`. Building a
   * store whose reducer is not `sync.reducer(...)` throws; a synced action that reaches the
   * reducer without passing through this middleware (a store without it, or a middleware
   * after it that hands synced actions to `next`) makes `dispatch` throw, naming the fix.
   */
  middleware: Middleware;
  /** start opens the stream when autoStart is false (see {@link SyncOptions.autoStart}); idempotent. */
  start(): void;
  /** close ends the stream, the Dispatch in flight and every timer; see SyncMiddleware.close. */
  close(): Promise<void>;
  /**
   * pending returns the local synced actions not yet confirmed by the server, oldest
   * first; a new array each time the list changes. The React hook usePending reads it.
   */
  pending(): readonly SyncedAction<LocalMeta>[];
  /** selectStatus is the selector of the status slice: `useSelector(sync.selectStatus)`. */
  selectStatus(state: { [P in K]: SyncStatusState }): SyncStatusState;
  /**
   * emit(type, payload) dispatches `{ type, payload }` into this store: the Socket.IO
   * `emit` shape, for thunks written against a socket (`getDefaultMiddleware({ thunk: {
   * extraArgument: { emit: sync.emit } } })`). See {@link Emit}.
   */
  emit: Emit;
  /**
   * setPresence replaces this client's presence info (needs the `presence` option):
   * `sync.setPresence({ name, color, editing: taskId })`. See SyncMiddleware.setPresence.
   */
  setPresence(info: JsonObject): void;
  /**
   * selectPresence selects the channel's presence (`state[statusKey].presence`), or
   * undefined without the `presence` option.
   */
  selectPresence(state: { [P in K]: SyncStatusState }): PresenceState | undefined;
  /** selectMembers lists who is on the channel, this client included, in join order; the same array until it changes. */
  selectMembers(state: { [P in K]: SyncStatusState }): readonly PresenceMember[];
  /** selectOthers lists who is on the channel except this client (its own member), in join order. */
  selectOthers(state: { [P in K]: SyncStatusState }): readonly PresenceMember[];
  /** statusKey is where the status slice is: `state[statusKey]`. */
  readonly statusKey: K;
  /** channel is the channel this instance syncs. */
  readonly channel: string;
  /** clientId is the client id this instance sends (see SyncMiddleware.clientId). */
  readonly clientId: string;
}

/**
 * createSync keeps one Redux Toolkit store in sync with one channel of an actionsync
 * server. It is createSyncMiddleware with the wiring done and checked:
 *
 * ```ts
 * const sync = createSync({ baseUrl, channel: "board:42", actions: boardSlice.actions });
 * const store = configureStore({
 *   reducer: sync.reducer({ board: boardSlice.reducer }),
 *   middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware),
 * });
 * store.getState().sync.status; // "connecting" | "connected" | "offline"
 * ```
 *
 * Each call keeps its state in its own closure; one store per call. Mis-wiring throws
 * (see {@link Sync.middleware}) instead of diverging quietly.
 */
export function createSync<K extends string = "sync">(options: SyncOptions<K>): Sync<K> {
  const { actions, statusKey, autoStart, ...rest } = options;
  const key = (statusKey ?? "sync") as K;
  if (typeof key !== "string" || key === "") throw new TypeError("actionsync: statusKey must be a non-empty string");
  const types = [...(rest.types ?? []), ...(actions === undefined ? [] : typesOf(actions))];
  const inner = createSyncMiddleware({
    ...rest,
    types: rest.types === undefined && actions === undefined ? undefined : types,
    autoStart: autoStart ?? inBrowser(),
  });
  const synced = new Set(types);
  const { predicate } = rest;
  const isSyncedType = (action: UnknownAction) => synced.has(action.type) || predicate?.(action) === true;

  let reducerMade = false;
  let reducerRan = false;
  let dispatch: ((action: UnknownAction) => unknown) | undefined;

  const reducer = ((app: Reducer | ReducersMapObject) => {
    if (reducerMade) throw new Error("actionsync: sync.reducer(...) was called twice: one store per createSync");
    reducerMade = true;
    const wrapped = inner.wrapReducer(withStatusSlice(app, key, inner.reducer));
    return (state: unknown, action: UnknownAction) => {
      reducerRan = true;
      if (isUnsent(action)) {
        throw new Error(
          `actionsync: ${JSON.stringify(action.type)} is a synced action but reached the reducer without passing through sync.middleware, so it would never be sent: ` +
            "add it with configureStore({ middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware) }), and don't put a middleware after it that hands synced actions to next()",
        );
      }
      return wrapped(state, action);
    };
  }) as SyncReducer<K>;

  /** isUnsent: a synced action without the middleware's marker (local or remote). */
  function isUnsent(action: UnknownAction): boolean {
    if (!isPlainObject(action) || typeof action.type !== "string" || action.type.startsWith(TypePrefix)) return false;
    return syncMeta(action) === undefined && isSyncedType(action);
  }

  const middleware: Middleware = (api) => {
    if (!reducerRan) {
      throw new Error(
        "actionsync: the store's reducer is not sync.reducer(...): configureStore({ reducer: sync.reducer({ ...your slices }), middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware) })",
      );
    }
    dispatch = api.dispatch;
    return inner.middleware(api);
  };

  return {
    reducer,
    middleware,
    start: () => inner.start(),
    close: () => inner.close(),
    pending: () => inner.pending(),
    selectStatus: (state) => state[key],
    setPresence: (info) => inner.setPresence(info),
    selectPresence: (state) => state[key].presence,
    selectMembers: (state) => presenceMembers(state[key].presence ?? emptyPresence),
    selectOthers: (state) => presenceOthers(state[key].presence ?? emptyPresence),
    emit: createEmit(() => dispatch, (type) => isSyncedType({ type })),
    statusKey: key,
    channel: inner.channel,
    get clientId() {
      return inner.clientId;
    },
  };
}

/** inBrowser tells whether this runs in a browser page or a web worker (not in Node, not server-side rendering). */
function inBrowser(): boolean {
  const g = globalThis as { document?: unknown; WorkerGlobalScope?: unknown };
  return typeof g.document === "object" || typeof g.WorkerGlobalScope === "function";
}
