// The demo's Redux store: the board and the notices, kept in sync with every other
// window on the same channel by the actionsync middleware.
import { configureStore } from "@reduxjs/toolkit";
import { createSync } from "@actionsync/redux";
import { demoTokenGetter, type DemoUser } from "./auth.js";
import { board, boardActions } from "./board.js";
import { createDemoLink } from "./link.js";
import { notices } from "./notices.js";
import { identityFor } from "./presence.js";

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
 * createBoardStore returns a store synced on options.channel with createSync (the RTK
 * wiring: sync.reducer around the slices, sync.middleware last), the sync instance (for
 * the hooks of @actionsync/redux/react), the link (its offline switch), and close, which
 * stops syncing. The tabs of one browser share one stream (shareStream, by default
 * without a user). Unsent actions are kept by the middleware's default storage: localStorage, one
 * key per tab, so a reload finds them and a closed tab's are sent by the next tab to start.
 * The confirmed board is persisted too (localStorage, "actionsync:state:<channel>"): a
 * reload shows it at once, even offline, and replays only the actions after it. Only the
 * board is saved (the notices are this window's), and the board reducer restores it,
 * from storage or from the server's snapshot of the board. With a user, every call carries
 * a token for that user from the server's /demo-token.
 */
export function createBoardStore(options: BoardStoreOptions) {
  const { user } = options;
  const identity = identityFor(user?.name);
  const link = createDemoLink(options.baseUrl);
  const sync = createSync({
    transport: link.transport,
    connectivity: link.connectivity,
    channel: options.channel,
    actions: boardActions,
    persist: { version: boardVersion, select: (s: { board: unknown }) => s.board },
    // Every 500 actions, the client whose action reached the boundary writes the board as
    // the channel's snapshot: a new window starts from it instead of the whole history.
    snapshots: { write: user?.role !== "view" },
    // The client id is then the user's name (the token's sub).
    getToken: user ? demoTokenGetter(options.baseUrl, user, options.fetch) : undefined,
    // Who is on the board: avatars, and which task someone is editing (App.tsx).
    presence: { ...identity },
  });
  const store = configureStore({
    reducer: sync.reducer({ board, notices }),
    middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware),
  });
  // In a page the stream opens by itself; elsewhere (the tests' Node) here.
  sync.start();
  return { store, sync, link, identity, close: () => sync.close() };
}

export type BoardStore = ReturnType<typeof createBoardStore>["store"];
export type RootState = ReturnType<BoardStore["getState"]>;
export type AppDispatch = BoardStore["dispatch"];
export type BoardSync = ReturnType<typeof createBoardStore>["sync"];

