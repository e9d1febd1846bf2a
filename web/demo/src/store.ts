// The demo's Redux store: the board and the notices, kept in sync with every other
// window on the same channel by the actionsync middleware.
import { combineReducers, configureStore } from "@reduxjs/toolkit";
import { createSyncMiddleware, createWebStorage, type OutboxStorage } from "@actionsync/redux";
import { board, syncedTypes } from "./board.js";
import { notices } from "./notices.js";

/** BoardStoreOptions says which server and channel the board syncs with. */
export interface BoardStoreOptions {
  /** baseUrl is the actionsync server, e.g. http://localhost:8080. */
  readonly baseUrl: string;
  /** channel is the board's channel, e.g. board:main. */
  readonly channel: string;
}

/** createBoardStore returns a store synced on options.channel, and close, which stops syncing. */
export function createBoardStore(options: BoardStoreOptions) {
  const sync = createSyncMiddleware({
    baseUrl: options.baseUrl,
    channel: options.channel,
    types: syncedTypes,
    storage: tabStorage(options.channel),
  });
  const store = configureStore({
    reducer: sync.wrapReducer(combineReducers({ board, notices, sync: sync.reducer })),
    middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware),
  });
  return { store, close: () => sync.close() };
}

export type BoardStore = ReturnType<typeof createBoardStore>["store"];
export type RootState = ReturnType<BoardStore["getState"]>;
export type AppDispatch = BoardStore["dispatch"];

/**
 * tabStorage keeps this tab's unsent actions in sessionStorage, which survives a reload
 * but belongs to one tab. The middleware's default, localStorage under a key made from
 * the channel, is shared by every tab of the browser: two tabs on one board would
 * overwrite each other's unsent actions. The cost: closing a tab while offline drops its
 * unsent edits. Without sessionStorage (some sandboxed frames), the middleware's default.
 */
function tabStorage(channel: string): OutboxStorage | undefined {
  try {
    return createWebStorage(`actionsync:outbox:${channel}`, window.sessionStorage);
  } catch {
    return undefined;
  }
}
