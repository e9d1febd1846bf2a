// @actionsync/redux keeps Redux stores on several devices in sync through an actionsync
// server. This file only re-exports the public API.
export { createSync } from "./sync.js";
export type { Sync, SyncOptions, SyncReducer, WithStatus } from "./sync.js";
export { isLocal, isRemote } from "./matchers.js";
export type { ActionCreatorLike, Local, MatchedBy, Remote, SyncedActionsItem, SyncedActionsSpec } from "./matchers.js";
export type { Emit } from "./emit.js";
export { createSyncMiddleware } from "./middleware.js";
export type { SyncMiddleware } from "./middleware.js";
export type { SyncMiddlewareOptions } from "./options.js";
export { ActionTypes, isLocalAction, isRemoteAction, isReplaceAction } from "./actions.js";
export type {
  ConnectionStatus,
  LocalMeta,
  PendingEntry,
  RebasePayload,
  RejectedPayload,
  RemoteMeta,
  ReplaceAction,
  ReplacePayload,
  ReplaceSource,
  ResetPayload,
  SentPosition,
  StatusPayload,
  SyncError,
  SyncStatusState,
  SyncedAction,
} from "./actions.js";
export { createMemoryStorage, createWebStorage } from "./outbox.js";
export type { Logger, OutboxStorage, WebStorage } from "./outbox.js";
export { createMemoryStateStorage, createWebStateStorage } from "./persist.js";
export type { PersistOptions, SavedState, StateStorage } from "./persist.js";
export type { BackoffOptions } from "./backoff.js";
export type { Connectivity, ConnectivityEvent } from "./connectivity.js";
export { presenceMembers, presenceOthers } from "./presence.js";
export type { PresenceChange, PresenceMember, PresencePayload, PresenceState } from "./presence.js";
