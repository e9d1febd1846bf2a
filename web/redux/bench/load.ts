// Page-load benchmark: a store starts on a channel whose history holds 10,000 actions,
// with 50 actions of its own waiting in its outbox (restored as pending), and replays the
// history from a real server process until it is live.
//
//   node --import tsx web/redux/bench/load.ts [runs=5] [history=10000] [pending=50]
//
// It prints, per run and as the median and range over the runs:
// - reducer ms: time spent inside the store's reducer (the root reducer wrapped by
//   wrapReducer: the demo's board reducer, the status slice and the rebase logic), from
//   the store's creation until the status is connected at the head;
// - reducer calls: how many times the demo's board reducer ran in that time;
// - wall ms: the same span on the clock (the server's replay, the network, decoding and
//   the middleware included).
// The history is the demo board's actions (adds, renames, moves, deletes; at most about
// 200 tasks at a time); the pending ones rename and add tasks. Each run uses a new channel
// and a new Node process, so that its code is as cold as on a page load.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { combineReducers, configureStore, type Reducer, type UnknownAction } from "@reduxjs/toolkit";
import { addTask, board, deleteTask, moveTask, renameTask, stageIds, syncedTypes, type BoardAction } from "../../demo/src/board.js";
import { SyncService } from "../src/gen/actionsync/v1/sync_pb.js";
import { createMemoryStorage, createSyncMiddleware, type PendingEntry } from "../src/index.js";
import { startTestServer, waitFor } from "../src/testkit.js";

// The child process of one run: load.ts --run <url> <channel> <history> <pending>.
const child = process.argv[2] === "--run";
const runs = child ? 1 : Number(process.argv[2] ?? 5);
const historySize = Number(process.argv[child ? 5 : 3] ?? 10_000);
const pendingSize = Number(process.argv[child ? 6 : 4] ?? 50);

/** history returns n board actions: tasks added, renamed, moved and deleted, about 200 alive at a time. */
function history(n: number): BoardAction[] {
  const out: BoardAction[] = [];
  const alive: string[] = [];
  for (let i = 0; i < n; i++) {
    const pick = alive[(i * 7919) % Math.max(1, alive.length)];
    if (alive.length < 20 || i % 4 === 0) {
      const id = `t${i}`;
      alive.push(id);
      out.push(addTask(stageIds[i % 3], `task ${i}`, id));
    } else if (i % 4 === 1) out.push(renameTask(pick, `renamed ${i}`));
    else if (i % 4 === 2) out.push(moveTask(pick, stageIds[(i + 1) % 3]));
    else if (alive.length > 200) out.push(deleteTask(alive.shift()!));
    else out.push(renameTask(pick, `again ${i}`));
  }
  return out;
}

function pending(n: number, channel: string): PendingEntry[] {
  return Array.from({ length: n }, (_, i) => {
    const id = `pending-${i}`;
    const a = i % 2 === 0 ? renameTask(`t${9996 - 4 * i}`, `mine ${i}`) : addTask("stage-todo", `mine ${i}`, `mine-${i}`);
    return { id, action: { ...a, meta: { actionsync: { id, local: true as const, channel } } } };
  });
}

async function seed(url: string, channel: string, actions: BoardAction[]) {
  const client = createClient(SyncService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  for (let i = 0; i < actions.length; i += 100) {
    await client.dispatch({
      channel,
      clientId: "seeder",
      actions: actions.slice(i, i + 100).map((a, j) => ({ id: `h${i + j}`, type: a.type, payload: fromJson(ValueSchema, a.payload as JsonValue) })),
    });
  }
}

async function run(url: string, channel: string) {
  let reducerMs = 0;
  let boardCalls = 0;
  const countedBoard: typeof board = (s, a) => (boardCalls++, board(s, a));
  const sync = createSyncMiddleware({
    transport: createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    channel,
    types: syncedTypes,
    storage: createMemoryStorage(pending(pendingSize, channel)),
    logger: { warn() {}, error: console.error },
  });
  const wrapped = sync.wrapReducer(combineReducers({ board: countedBoard, sync: sync.reducer }));
  const timed: typeof wrapped = (s, a) => {
    const t = performance.now();
    try {
      return wrapped(s, a);
    } finally {
      reducerMs += performance.now() - t;
    }
  };
  const started = performance.now();
  const store = configureStore({
    reducer: timed as Reducer<ReturnType<typeof wrapped>, UnknownAction>,
    // RTK's development checks walk the whole state on every dispatch; a production
    // build has none. They are not the middleware's cost.
    middleware: (gDM) => gDM({ immutableCheck: false, serializableCheck: false }).concat(sync.middleware),
  });
  await waitFor("ready at the head", () => store.getState().sync.status === "connected" && store.getState().sync.lastSeq >= historySize, 120_000);
  const wallMs = performance.now() - started;
  const result = { reducerMs, boardCalls, wallMs, tasks: store.getState().board.tasks.length, pending: store.getState().sync.pending };
  await sync.close();
  return result;
}

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return `median ${m.toFixed(1)} (range ${s[0].toFixed(1)}-${s.at(-1)!.toFixed(1)})`;
}

if (child) {
  console.log(JSON.stringify(await run(process.argv[3], process.argv[4])));
  process.exit(0);
}

const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
console.log(`cpu: ${cpu}; node ${process.version}; ${runs} runs; ${historySize} history actions, ${pendingSize} pending`);
const srv = await startTestServer(["--history-size", String(Math.max(10_000, historySize))]);
try {
  const actions = history(historySize);
  const results = [];
  for (let i = 0; i < runs; i++) {
    const channel = `bench:load-${Date.now()}-${i}`;
    await seed(srv.url, channel, actions);
    const out = execFileSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--run", srv.url, channel, String(historySize), String(pendingSize)], {
      encoding: "utf8",
    });
    const r = JSON.parse(out.trim().split("\n").at(-1)!) as Awaited<ReturnType<typeof run>>;
    results.push(r);
    console.log(`run ${i + 1}: reducer ${r.reducerMs.toFixed(1)} ms, ${r.boardCalls} board reducer calls, wall ${r.wallMs.toFixed(1)} ms (${r.tasks} tasks, ${r.pending} pending)`);
  }
  console.log(`reducer ms: ${stats(results.map((r) => r.reducerMs))}`);
  console.log(`board reducer calls: ${stats(results.map((r) => r.boardCalls))}`);
  console.log(`wall ms: ${stats(results.map((r) => r.wallMs))}`);
} finally {
  await srv.stop();
}
