// A consumer of the packed @actionsync/redux: scripts/check-package.sh copies this file
// into a fresh temporary project, installs the tarball (and RTK, connect-node, React,
// react-redux) from the registry, type-checks it with NodeNext resolution, compiles and
// runs it with Node against a real actionsync server at $ACTIONSYNC_URL. It prints one
// JSON line and exits 0 when two RTK stores converged, 1 otherwise.
import { createConnectTransport } from "@connectrpc/connect-node";
import { configureStore, createSlice, type PayloadAction } from "@reduxjs/toolkit";
import { createSync, isLocal, isRemote, type SyncStatusState } from "@actionsync/redux";
import { usePending, useSyncStatus } from "@actionsync/redux/react";

const board = createSlice({
  name: "board",
  initialState: { tasks: [] as { id: string; title: string }[] },
  reducers: {
    taskAdded(state, action: PayloadAction<{ id: string; title: string }>) {
      if (!state.tasks.some((t) => t.id === action.payload.id)) state.tasks.push(action.payload);
    },
  },
});

function makeStore(baseUrl: string) {
  const sync = createSync({
    transport: createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    channel: "board:consumer",
    actions: board.actions,
    autoStart: false, // Node: no stream until start()
  });
  const store = configureStore({
    reducer: sync.reducer({ board: board.reducer }),
    middleware: (getDefaultMiddleware) => getDefaultMiddleware().concat(sync.middleware),
  });
  sync.start();
  return { sync, store };
}

// Type checks, done by tsc over this file: the state is typed, payloads are checked.
type Store = ReturnType<typeof makeStore>["store"];
const statusOf = (s: Store): SyncStatusState["status"] => s.getState().sync.status;
const firstTitle = (s: Store): string | undefined => s.getState().board.tasks[0]?.title;
// @ts-expect-error: the payload needs a title
const wrong = () => board.actions.taskAdded({ id: "x" });
void wrong;
const remoteAdded = isRemote(board.actions.taskAdded);

async function main() {
  const url = process.env.ACTIONSYNC_URL;
  if (!url) throw new Error("ACTIONSYNC_URL is not set");
  if (typeof useSyncStatus !== "function" || typeof usePending !== "function") throw new Error("@actionsync/redux/react has no hooks");
  const a = makeStore(url);
  const b = makeStore(url);
  const deadline = Date.now() + 15_000;
  const until = async (what: string, ok: () => boolean) => {
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify([a.store.getState(), b.store.getState()])}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until("both connected", () => statusOf(a.store) === "connected" && statusOf(b.store) === "connected");
  const sent = a.store.dispatch(board.actions.taskAdded({ id: "t1", title: "installed from the tarball" }));
  if (!isLocal(sent) || remoteAdded(sent)) throw new Error("the dispatched action has no local marker");
  await until("b has the task", () => firstTitle(b.store) === "installed from the tarball");
  await until("a confirmed it", () => a.store.getState().sync.pending === 0);
  await Promise.all([a.sync.close(), b.sync.close()]);
  console.log(JSON.stringify({ ok: true, a: a.store.getState().board, b: b.store.getState().board, lastSeq: b.store.getState().sync.lastSeq }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
