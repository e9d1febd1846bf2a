// Helpers for this package's tests: real servers, stores, a breakable network link.
// Not part of the public API (index.ts does not export it).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { combineReducers, configureStore, type Middleware, type UnknownAction } from "@reduxjs/toolkit";
import { spawn } from "node:child_process";
import { buildServer, type TestServer } from "../../testing/server.js";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import type { Action as WireAction } from "./gen/actionsync/v1/action_pb.js";
import { createSyncMiddleware } from "./middleware.js";
import type { SyncMiddlewareOptions } from "./options.js";
import { ActionTypes, isReplaceAction, syncMeta, type ConfirmedPayload, type RejectedPayload, type ReplacePayload, type RestorePayload } from "./actions.js";
import { fromWire } from "./wire.js";

/**
 * startTestServer runs `actionsync serve --addr 127.0.0.1:<port>` (port 0: a free one)
 * with args and resolves once it listens; stop() sends SIGTERM and resolves with the exit
 * code. It uses buildServer from web/testing/server.ts but not its startServer, which
 * (as of 621adec) never resolves: it passes `--log-level warn`, which hides the
 * "actionsync listening" line it waits for, and with a later `--log-level info` every
 * further log line re-runs its match and removes the exit listener, so stop() hangs.
 */
export function startTestServer(args: string[] = [], port = 0): Promise<TestServer> {
  const child = spawn(buildServer(), ["serve", "--addr", `127.0.0.1:${port}`, "--log-level", "info", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  let log = "";
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`actionsync did not start within 20 s:\n${log}`));
    }, 20_000);
    void exited.then((code) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`actionsync exited with ${code} before listening:\n${log}`));
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      log += chunk;
      const m = started ? null : /msg="actionsync listening".* url=(http:\/\/\S+)/.exec(log);
      if (!m) return;
      started = true;
      clearTimeout(timer);
      resolve({
        url: m[1],
        port: Number(new URL(m[1]).port),
        log: () => log,
        stop: () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          return exited;
        },
      });
    });
  });
}

/** waitFor polls cond every 10 ms until it holds, or throws after timeoutMs naming what. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** captureLogger records warnings and errors instead of printing them. */
export function captureLogger() {
  const warns: string[] = [];
  const errors: string[] = [];
  const text = (args: unknown[]) => args.map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  return { warns, errors, warn: (...a: unknown[]) => void warns.push(text(a)), error: (...a: unknown[]) => void errors.push(text(a)) };
}

/**
 * createLink returns a connect-node transport to baseUrl that a test can break: cut()
 * aborts every call in flight and fails new ones with Unavailable until heal();
 * loseAcks(n) lets the next n Dispatch calls reach the server but fails them on the way
 * back (the server applied them; the client must retry with the same ids); hold()
 * delays stream messages until release(); failDispatch(n, code) answers the next n
 * Dispatch calls with a Connect error of that code without reaching the server.
 */
export function createLink(baseUrl: string) {
  let down = false;
  let cut = new AbortController();
  let acksToLose = 0;
  let lostAckDelayMs = 0;
  let failures: { left: number; code: Code; message?: string; headers?: HeadersInit; when?: (ids: string[]) => boolean } = { left: 0, code: Code.Unknown };
  const dispatched: string[][] = [];
  const sentAfter: [number, string][] = [];
  const methods: string[] = [];
  const acks: { id: string; seq: bigint; duplicate: boolean }[][] = [];
  // While held, stream messages wait (the subscription lags behind Dispatch).
  let gate: Promise<void> = Promise.resolve();
  let release = () => {};
  const interceptor: Interceptor = (next) => async (req) => {
    if (down) throw new ConnectError("test link is down", Code.Unavailable);
    const mine = cut.signal;
    const isDispatch = req.method.name === "Dispatch";
    methods.push(req.method.name);
    const ids = isDispatch ? (req.message as unknown as { actions: { id: string; type: string }[] }).actions : [];
    if (isDispatch && !req.stream) {
      dispatched.push(ids.map((a) => a.id));
      const m = req.message as unknown as { sentAfterSeq: bigint; sentEpoch: string };
      sentAfter.push([Number(m.sentAfterSeq), m.sentEpoch]);
    }
    if (isDispatch && failures.left > 0 && (failures.when?.(ids.map((a) => a.type)) ?? true)) {
      failures.left--;
      throw new ConnectError(failures.message ?? "test link refused the call", failures.code, failures.headers);
    }
    try {
      const signal = AbortSignal.any([req.signal, mine]);
      const res = await next({ ...req, signal });
      if (res.stream) {
        const inner = res.message;
        // A held stream still ends when its call is aborted (close() must not hang).
        const aborted = new Promise<void>((r) => (signal.aborted ? r() : signal.addEventListener("abort", () => r(), { once: true })));
        const message = (async function* () {
          try {
            for await (const m of inner) {
              await Promise.race([gate, aborted]);
              if (mine.aborted) throw new ConnectError("test link cut", Code.Unavailable);
              if (signal.aborted) throw new ConnectError("the call was aborted", Code.Canceled);
              yield m;
            }
          } catch (e) {
            if (mine.aborted) throw new ConnectError("test link cut", Code.Unavailable);
            throw e;
          }
        })();
        return { ...res, message } as typeof res;
      }
      if (isDispatch) acks.push((res.message as unknown as { acks: { id: string; seq: bigint; duplicate: boolean }[] }).acks);
      if (isDispatch && acksToLose > 0) {
        acksToLose--;
        if (lostAckDelayMs > 0) await new Promise((r) => setTimeout(r, lostAckDelayMs));
        throw new ConnectError("test link lost the ack", Code.Unavailable);
      }
      return res;
    } catch (e) {
      if (mine.aborted) throw new ConnectError("test link cut", Code.Unavailable);
      throw e;
    }
  };
  return {
    transport: createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [interceptor] }),
    /** dispatched lists the action ids of every Dispatch call, in order. */
    dispatched,
    /** sentAfter lists the sent_after_seq and sent_epoch of every Dispatch call, in order. */
    sentAfter,
    /** methods lists the method of every call (Subscribe, Dispatch, PutSnapshot, ...), in order. */
    methods,
    /** acks lists the acks of every answered Dispatch call (lost ones too), in order. */
    acks,
    /** hold makes the streams' messages wait until release(). */
    hold() {
      gate = new Promise((r) => (release = r));
    },
    release() {
      release();
    },
    cut() {
      down = true;
      cut.abort();
      cut = new AbortController();
    },
    heal() {
      down = false;
    },
    get down() {
      return down;
    },
    /**
     * failDispatch answers the next n Dispatch calls (those whose action types pass when,
     * if given) with code; they never reach the server. headers become the error's metadata.
     */
    failDispatch(n: number, code: Code, o: { message?: string; headers?: HeadersInit; when?: (types: string[]) => boolean } = {}) {
      failures = { left: n, code, ...o };
    },
    /** loseAcks fails the next n answered Dispatch calls, afterMs later (so the echo can come first). */
    loseAcks(n: number, afterMs = 0) {
      acksToLose = n;
      lostAckDelayMs = afterMs;
    },
  };
}

/** Board is the test app's synced state: a title and an ordered list of items. */
export interface Board {
  title: string;
  items: string[];
}

/** boardTypes are the synced action types of the test app. */
export const boardTypes = ["board/title", "board/add", "board/strictAdd", "board/append", "board/move", "board/remove", "ALLOWED", "NOPE"] as const;

/**
 * board is the test app's reducer. Its actions conflict on purpose: the last title wins,
 * moves depend on the current order, adds of an existing item are ignored, a strict add
 * of an existing item throws, and an append appends even an item already there (applied
 * twice, it shows twice). It is pure and deterministic, as wrapReducer requires
 * (throwing is deterministic too: every client throws on the same action in the same state).
 */
export function board(state: Board = { title: "", items: [] }, action: UnknownAction): Board {
  // The persisted board, with persist.select: (s) => s.board. (Without select the
  // replacing state is the whole root state, which wrapReducer puts in place itself.)
  if (isReplaceAction(action)) {
    const b = action.payload.state as Partial<Board> | null;
    return typeof b?.title === "string" && Array.isArray(b.items) ? (b as Board) : state;
  }
  const p = action.payload as Record<string, unknown> | undefined;
  switch (action.type) {
    case "board/title":
      return { ...state, title: String(p?.title) };
    case "board/add":
    case "ALLOWED":
    case "NOPE": {
      const item = String(p?.item);
      return state.items.includes(item) ? state : { ...state, items: [...state.items, item] };
    }
    case "board/strictAdd": {
      const item = String(p?.item);
      if (state.items.includes(item)) throw new Error(`board: ${item} is already there`);
      return { ...state, items: [...state.items, item] };
    }
    case "board/append":
      return { ...state, items: [...state.items, String(p?.item)] };
    case "board/move": {
      const from = state.items.indexOf(String(p?.item));
      if (from < 0) return state;
      const items = state.items.slice();
      items.splice(from, 1);
      items.splice(Math.max(0, Math.min(items.length, Number(p?.to))), 0, String(p?.item));
      return { ...state, items };
    }
    case "board/remove":
      return { ...state, items: state.items.filter((i) => i !== p?.item) };
    default:
      return state;
  }
}

/** ui is a UI-only (never synced) slice. */
export function ui(state: Ui = { clicks: 0, added: [] }, action: UnknownAction): Ui {
  switch (action.type) {
    case "ui/click":
      return { ...state, clicks: state.clicks + 1 };
    case "ui/clearAdded":
      return state.added.length === 0 ? state : { ...state, added: [] };
    case "board/add":
      return { ...state, added: [...state.added, String((action.payload as { item?: unknown } | undefined)?.item)] };
    default:
      return state;
  }
}

/**
 * Ui is the UI-only slice: clicks, and the items of the board/add actions seen since the
 * last ui/clearAdded (a local action that does not commute with pending adds).
 */
export interface Ui {
  clicks: number;
  added: string[];
}

/**
 * makeStore builds an RTK store the documented way and records, in seen, every action
 * the reducers applied (through a middleware placed after the sync middleware; an action
 * a reducer threw on is not recorded).
 */
export function makeStore(options: Partial<SyncMiddlewareOptions> & Pick<SyncMiddlewareOptions, "channel">) {
  const sync = createSyncMiddleware({ types: boardTypes, storage: null, backoff: { initialMs: 20, maxMs: 200 }, ...options });
  const seen: UnknownAction[] = [];
  const recorder: Middleware = () => (next) => (action) => {
    const result = next(action);
    seen.push(action as UnknownAction);
    return result;
  };
  const store = configureStore({
    reducer: sync.wrapReducer(combineReducers({ board, ui, sync: sync.reducer })),
    middleware: (gDM) => gDM().concat(sync.middleware, recorder),
  });
  return { store, sync, seen, close: () => sync.close() };
}

/** readHistory fetches a channel's whole history with a plain client (sending token, if given, as a bearer token). */
export async function readHistory(baseUrl: string, channel: string, token?: string): Promise<{ actions: WireAction[]; headSeq: number }> {
  const client = createClient(SyncService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const headers = token === undefined ? undefined : { Authorization: `Bearer ${token}` };
  const actions: WireAction[] = [];
  let after = 0n;
  for (;;) {
    const res = await client.history({ channel, afterSeq: after, limit: 1000 }, { headers });
    actions.push(...res.actions);
    if (res.actions.length === 0 || res.actions.at(-1)!.seq >= res.headSeq) return { actions, headSeq: Number(res.headSeq) };
    after = res.actions.at(-1)!.seq;
  }
}

/** channelEpoch returns the channel's epoch, as the server's ready tells it. */
export async function channelEpoch(baseUrl: string, channel: string): Promise<string> {
  const client = createClient(SyncService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const stop = new AbortController();
  try {
    for await (const res of client.subscribe({ positions: [{ channel, live: true }] }, { signal: stop.signal })) {
      if (res.ready) return res.ready.epoch;
    }
  } finally {
    stop.abort();
  }
  throw new Error("the stream ended before ready");
}

/**
 * replay applies a history from scratch through the board reducer, decoding like the
 * middleware; an action the reducer throws on is skipped, as the middleware skips it.
 */
export function replay(actions: WireAction[], channel: string): Board {
  return actions.reduce((s, a) => {
    const d = fromWire(a, channel);
    if (!d.action) throw new Error(`history seq ${a.seq}: ${d.problem}`);
    try {
      return board(s, d.action);
    } catch {
      return s;
    }
  }, board(undefined, { type: "@@init" }));
}

/**
 * expectedPending is the randomized tests' model of the local actions a store still holds
 * pending at lastSeq, oldest first, from seen (what its reducers applied, as makeStore
 * records it) and the channel's history: the local synced actions it dispatched, with
 * those restored from the outbox (actionsync/restore) before them, minus the rolled back
 * ones (actionsync/rejected) and the confirmed ones.
 *
 * An action in the history at or before lastSeq is confirmed if the store saw its echo or
 * it being settled (actionsync/confirmed, after a duplicate ack), or if its seq is after
 * the store's last jump (the seq of the snapshot it started from, actionsync/replace):
 * the stream replayed it. One at or before a jump is in the confirmed state, but the
 * stream never echoes it and the store cannot tell: it stays pending, re-applied on top,
 * until the server answers a resend as a duplicate (README: *Server snapshots*). Resets
 * are not modelled: the callers run a server that keeps its history.
 */
export function expectedPending(seen: readonly UnknownAction[], history: readonly WireAction[], lastSeq: number): UnknownAction[] {
  const seqOf = new Map(history.filter((a) => Number(a.seq) <= lastSeq).map((a) => [a.id, Number(a.seq)]));
  const pending: UnknownAction[] = [];
  const known = new Set<string>();
  const rejected = new Set<string>();
  let jump = 0;
  for (const a of seen) {
    const m = syncMeta(a);
    if (a.type === ActionTypes.restore) pending.unshift(...(a.payload as RestorePayload).entries.map((e) => e.action as UnknownAction));
    else if (a.type === ActionTypes.rejected) rejected.add((a.payload as RejectedPayload).id);
    else if (a.type === ActionTypes.confirmed) known.add((a.payload as ConfirmedPayload).id);
    else if (a.type === ActionTypes.replace) jump = Math.max(jump, (a.payload as ReplacePayload).seq);
    else if (m?.remote === true && typeof m.id === "string") known.add(m.id);
    else if (m?.local === true) pending.push(a);
  }
  return pending.filter((a) => {
    const id = syncMeta(a)!.id!;
    const seq = seqOf.get(id);
    const confirmed = seq !== undefined && (seq > jump || known.has(id));
    return !confirmed && !rejected.has(id);
  });
}

/** mulberry32 is a small seeded PRNG for reproducible randomized tests. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** fakeWebStorage is an in-memory DOM Storage (localStorage, sessionStorage); m is its content. */
export function fakeWebStorage() {
  const m = new Map<string, string>();
  return {
    m,
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    key: (i: number) => [...m.keys()][i] ?? null,
    get length() {
      return m.size;
    },
  };
}

/**
 * fakeLocks is an in-memory Web Locks manager (exclusive locks, as navigator.locks
 * grants them): ifAvailable gets null while the lock is held; otherwise the request waits
 * in line, and rejects with an AbortError if its signal aborts first. held lists the
 * locks held now.
 */
export function fakeLocks() {
  const held = new Set<string>();
  const queues = new Map<string, (() => void)[]>();
  return {
    held,
    async request<T>(name: string, options: { ifAvailable?: boolean; signal?: AbortSignal }, callback: (lock: unknown) => T): Promise<Awaited<T>> {
      if (held.has(name)) {
        if (options.ifAvailable) return await callback(null);
        await new Promise<void>((resolve, reject) => {
          const queue = queues.get(name) ?? [];
          queues.set(name, queue);
          const granted = () => {
            options.signal?.removeEventListener("abort", aborted);
            resolve();
          };
          const aborted = () => {
            queue.splice(queue.indexOf(granted), 1);
            reject(new DOMException("the request was aborted", "AbortError"));
          };
          queue.push(granted);
          options.signal?.addEventListener("abort", aborted);
        });
      }
      held.add(name);
      try {
        return await callback({ name, mode: "exclusive" });
      } finally {
        // Hand the lock to the next in line, if any.
        const next = queues.get(name)?.shift();
        if (next) next();
        else held.delete(name);
      }
    },
  };
}
