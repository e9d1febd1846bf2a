// The demo's Redux store: the board and the notices, kept in sync with every other
// window on the same channel by the actionsync middleware.
import { combineReducers, configureStore } from "@reduxjs/toolkit";
import { createSyncMiddleware } from "@actionsync/redux";
import { board, syncedTypes } from "./board.js";
import { notices } from "./notices.js";

/** BoardStoreOptions says which server and channel the board syncs with. */
export interface BoardStoreOptions {
  /** baseUrl is the actionsync server, e.g. http://localhost:8080. */
  readonly baseUrl: string;
  /** channel is the board's channel, e.g. board:main. */
  readonly channel: string;
}

/**
 * createBoardStore returns a store synced on options.channel, and close, which stops
 * syncing. Unsent actions are kept by the middleware's default storage: localStorage, one
 * key per tab, so a reload finds them and a closed tab's are sent by the next tab to start.
 */
export function createBoardStore(options: BoardStoreOptions) {
  const sync = createSyncMiddleware({
    baseUrl: options.baseUrl,
    channel: options.channel,
    types: syncedTypes,
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

