// The demo's Redux store: the board and the notices, kept in sync with every other
// window on the same channel by the actionsync middleware.
import { combineReducers, configureStore } from "@reduxjs/toolkit";
import { createSyncMiddleware } from "@actionsync/redux";
import { demoTokenGetter, type DemoUser } from "./auth.js";
import { board, syncedTypes } from "./board.js";
import { notices } from "./notices.js";

/** BoardStoreOptions says which server and channel the board syncs with. */
export interface BoardStoreOptions {
  /** baseUrl is the actionsync server, e.g. http://localhost:8080. */
  readonly baseUrl: string;
  /** channel is the board's channel, e.g. board:main. */
  readonly channel: string;
  /**
   * user, if given, is who the page acts as on a server that requires tokens: they come
   * from the server's /demo-token. A viewer (role view) writes no snapshots: its token
   * does not allow publishing.
   */
  readonly user?: DemoUser | null;
  /** fetch is the fetch used to get tokens (tests pass their own). Default: globalThis.fetch. */
  readonly fetch?: typeof fetch;
}

/** boardVersion tags the shape of the persisted board: change it when BoardState changes. */
export const boardVersion = "board-1";

/**
 * createBoardStore returns a store synced on options.channel, and close, which stops
 * syncing. Unsent actions are kept by the middleware's default storage: localStorage, one
 * key per tab, so a reload finds them and a closed tab's are sent by the next tab to start.
 * The confirmed board is persisted too (localStorage, "actionsync:state:<channel>"): a
 * reload shows it at once, even offline, and replays only the actions after it. Only the
 * board is saved (the notices are this window's), and the board reducer restores it,
 * from storage or from the server's snapshot of the board. With a user, every call carries
 * a token for that user from the server's /demo-token.
 */
export function createBoardStore(options: BoardStoreOptions) {
  const { user } = options;
  const sync = createSyncMiddleware({
    baseUrl: options.baseUrl,
    channel: options.channel,
    types: syncedTypes,
    persist: { version: boardVersion, select: (s: { board: unknown }) => s.board },
    // Every 500 actions, the client whose action reached the boundary writes the board as
    // the channel's snapshot: a new window starts from it instead of the whole history.
    snapshots: { write: user?.role !== "view" },
    // The client id is then the user's name (the token's sub).
    getToken: user ? demoTokenGetter(options.baseUrl, user, options.fetch) : undefined,
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

