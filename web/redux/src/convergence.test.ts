// Randomized convergence: several stores with real middleware instances against one real
// server, conflicting actions in random interleavings (a strict add the reducer throws on
// when the item is there, a local-only action that does not commute with pending adds),
// random network cuts, lost acks and reloads (from the persisted board, or from nothing:
// then from the channel's snapshot, which the stores write every few actions);
// while running every store shows its pending actions on top of the confirmed ones, and
// at quiescence every store equals every other and the channel's history replayed from
// scratch. Seeded: REDUX_TEST_SEED=<n> replays the same choices (the
// network's timing still varies from run to run).
//
// Short form (the test suite): one round of 250 steps. Long form, on demand:
// REDUX_TEST_DURATION=10m runs rounds until the duration ends, each on a channel of its
// own with a seed drawn from REDUX_TEST_SEED's generator; a failing round names its own
// seed, and REDUX_TEST_SEED=<that seed> repeats its choices as a short run:
//   REDUX_TEST_SEED=20261201 REDUX_TEST_DURATION=10m node --import tsx --test src/convergence.test.ts
import assert from "node:assert/strict";
import { after, it } from "node:test";
import type { UnknownAction } from "redux";
import { ActionTypes, createMemoryStateStorage, createMemoryStorage, type OutboxStorage, type RejectedPayload, type StateStorage } from "./index.js";
import { syncMeta } from "./actions.js";
import { board, captureLogger, createLink, expectedPending, makeStore, mulberry32, readHistory, replay, startTestServer, ui, type Ui } from "./testkit.js";

const firstSeed = process.env.REDUX_TEST_SEED ? Number(process.env.REDUX_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const durationMs = parseDuration(process.env.REDUX_TEST_DURATION ?? "0s");
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** parseDuration reads "90s", "10m", "1h" or a number of milliseconds. */
function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new Error(`REDUX_TEST_DURATION=${s}: want e.g. 90s, 10m, 1h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"]!;
  return Number(m[1]) * unit;
}

interface Client {
  link: ReturnType<typeof createLink>;
  storage: OutboxStorage;
  /** saved is the client's persisted board (select: the board only). */
  saved: StateStorage & { save(s: null): void };
  clientId: string;
  made: ReturnType<typeof makeStore>;
  clicks: number;
  reloaded: boolean;
}

/** Totals counts the long form's work over its rounds. */
type Totals = Record<string, number>;

it(`stores_converge_under_random_interleavings (seed ${firstSeed})`, async (t) => {
  t.diagnostic(`seed ${firstSeed}: rerun with REDUX_TEST_SEED=${firstSeed}`);
  console.log(`# convergence seed ${firstSeed} (REDUX_TEST_SEED=${firstSeed} to reproduce)`);
  const srv = await startTestServer();
  cleanups.push(() => srv.stop());
  const seeds = mulberry32(firstSeed);
  const totals: Totals = {};
  const end = Date.now() + durationMs;
  let rounds = 0;
  do {
    const seed = rounds === 0 ? firstSeed : Math.floor(seeds() * 2 ** 31);
    const closers: (() => Promise<unknown>)[] = [];
    try {
      await round(t, srv, seed, closers, totals);
    } catch (err) {
      if (rounds > 0) console.log(`# round ${rounds} failed: repeat it with REDUX_TEST_SEED=${seed}`);
      throw err;
    } finally {
      for (const c of closers.reverse()) await c();
    }
    rounds++;
  } while (Date.now() < end);
  if (durationMs > 0) {
    const line = `${rounds} rounds in ${Math.round(durationMs / 1000)} s: ${JSON.stringify(totals)}`;
    t.diagnostic(line);
    console.log(`# convergence long form: ${line}`);
  }
});

/** round runs one randomized round on its own channel; closers get what it opened. */
async function round(t: { diagnostic(msg: string): void }, srv: { url: string }, seed: number, closers: (() => Promise<unknown>)[], totals: Totals) {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const add = (counts: Record<string, number>) => {
    for (const [k, v] of Object.entries(counts)) totals[k] = (totals[k] ?? 0) + v;
  };

  const channel = `board:random-${seed}`;
  const logger = captureLogger();
  const localIds = new Set<string>();
  const allSeen: UnknownAction[][] = [];

  const open = (c: Omit<Client, "made" | "clicks" | "reloaded">) => {
    const made = makeStore({
      transport: c.link.transport,
      channel,
      clientId: c.clientId,
      storage: c.storage,
      logger,
      maxBatch: 1 + int(8),
      backoff: { initialMs: 5, maxMs: 80 },
      persist: { version: "conv-1", storage: c.saved, select: (s: { board: unknown }) => s.board, throttleMs: int(40) },
      // Snapshots every few actions: a store that starts from nothing starts from one.
      snapshots: { every: 5 + int(20) },
    });
    closers.push(() => made.close());
    allSeen.push(made.seen);
    return made;
  };

  const k = 3 + int(2);
  const clients: Client[] = [];
  for (let i = 0; i < k; i++) {
    const base = { link: createLink(srv.url), storage: createMemoryStorage(), saved: createMemoryStateStorage(), clientId: `client-${i}` };
    clients.push({ ...base, made: open(base), clicks: 0, reloaded: false });
  }

  const items = ["a", "b", "c", "d", "e", "f"];
  const titles = ["Todo", "Doing", "Done", "Later"];
  const randomAction = (): UnknownAction => {
    switch (int(5)) {
      case 0:
        return { type: "board/title", payload: { title: pick(titles) } };
      case 1:
        return { type: "board/add", payload: { item: pick(items) } };
      case 2:
        return { type: "board/move", payload: { item: pick(items), to: int(6) } };
      case 3:
        // Throws when the item is there: at once (dispatch throws), on the confirmed state
        // (skipped everywhere), or re-applied on top of a remote add (dropped, rejected).
        return { type: "board/strictAdd", payload: { item: pick(items) } };
      default:
        return { type: "board/remove", payload: { item: pick(items) } };
    }
  };
  const rejectedIds = (seen: UnknownAction[]) => new Set(seen.filter((a) => a.type === ActionTypes.rejected).map((a) => (a.payload as RejectedPayload).id));

  // Invariant while running: the store shows its pending local actions re-applied on top
  // of the history up to its last seq (no reset happens here: the server keeps running),
  // and its UI slice is the non-local actions it applied, with the pending ones on top.
  // Pending, as the store must see it (expectedPending): an outbox action a reloaded store
  // finds in the snapshot it started from stays pending until a resend's duplicate ack.
  const checkRebase = async () => {
    const { actions: hist, headSeq } = await readHistory(srv.url, channel);
    let checked = 0;
    for (const [i, c] of clients.entries()) {
      const state = c.made.store.getState();
      const last = state.sync.lastSeq;
      if (last > headSeq) continue; // it got newer actions than this read of the history
      const confirmedPart = hist.filter((a) => Number(a.seq) <= last);
      const stillPending = expectedPending(c.made.seen, hist, last);
      const ids = (as: readonly UnknownAction[]) => as.map((a) => `${a.type} ${syncMeta(a)!.id}`);
      assert.deepEqual(ids(c.made.sync.pending()), ids(stillPending), `seed ${seed}: store ${i} at seq ${last}: pending actions`);
      const want = stillPending.reduce((st, a) => board(st, a), replay(confirmedPart, channel));
      assert.deepEqual(state.board, want, `seed ${seed}: store ${i} at seq ${last} is not its pending actions over the confirmed ones`);
      // seen holds only what the reducers applied (not what they threw on).
      const confirmedUi = c.made.seen.filter((a) => syncMeta(a)?.local !== true).reduce<Ui>((u, a) => ui(u, a), ui(undefined, { type: "@@init" }));
      assert.deepEqual(state.ui, stillPending.reduce((u, a) => ui(u, a), confirmedUi), `seed ${seed}: store ${i}: the UI slice is not confirmed + pending`);
      assert.equal(state.sync.pending, stillPending.length, `seed ${seed}: store ${i} pending count`);
      checked++;
    }
    return checked;
  };
  let rebaseChecks = 0;

  const counts = { actions: 0, threw: 0, uiClears: 0, cuts: 0, lostAcks: 0, reloads: 0, freshReloads: 0 };
  const steps = 250;
  for (let step = 0; step < steps; step++) {
    if (step % 25 === 24) rebaseChecks += await checkRebase();
    const c = pick(clients);
    const r = rnd();
    if (r < 0.55) {
      try {
        c.made.store.dispatch(randomAction());
        counts.actions++;
      } catch (err) {
        assert.match(String(err), /is already there/, `seed ${seed}`);
        counts.threw++;
      }
    } else if (r < 0.58) {
      c.made.store.dispatch({ type: "ui/click" });
      c.clicks++;
    } else if (r < 0.6) {
      // Local only, and it does not commute with pending adds.
      c.made.store.dispatch({ type: "ui/clearAdded" });
      counts.uiClears++;
    } else if (r < 0.68) {
      if (c.link.down) c.link.heal();
      else {
        c.link.cut();
        counts.cuts++;
      }
    } else if (r < 0.71) {
      c.link.loseAcks(1 + int(2));
      counts.lostAcks++;
    } else if (r < 0.73) {
      // Reload: the store goes away with whatever it had in flight; a new one starts from
      // the same outbox storage and the persisted board (or, sometimes, without it: a new
      // browser) and replays the channel after it.
      await c.made.close();
      if (rnd() < 0.3) {
        c.saved.save(null);
        counts.freshReloads++;
      }
      c.made = open(c);
      c.reloaded = true;
      counts.reloads++;
    } else {
      await new Promise((res) => setTimeout(res, int(12)));
    }
  }
  for (const c of clients) c.link.heal();
  t.diagnostic(`seed ${seed}: k=${k} ${JSON.stringify(counts)}, ${rebaseChecks} rebase checks`);
  add({ rounds: 1, stores: k, ...counts, rebaseChecks });

  // Quiescence: nothing pending anywhere, every store at the channel's head.
  const deadline = Date.now() + 20_000;
  let head = -1;
  for (;;) {
    head = (await readHistory(srv.url, channel)).headSeq;
    const ok = clients.every((c) => {
      const s = c.made.store.getState().sync;
      return s.status === "connected" && s.pending === 0 && s.lastSeq === head;
    });
    if (ok) break;
    if (Date.now() > deadline) {
      assert.fail(`seed ${seed}: no quiescence at seq ${head}: ${JSON.stringify(clients.map((c) => c.made.store.getState().sync))}`);
    }
    await new Promise((res) => setTimeout(res, 25));
  }

  const { actions } = await readHistory(srv.url, channel);
  const expected = replay(actions, channel);
  const late = open({ link: createLink(srv.url), storage: createMemoryStorage(), saved: createMemoryStateStorage(), clientId: "late" });
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error("late store did not catch up")), 10_000);
    const check = () => {
      if (late.store.getState().sync.lastSeq === head) {
        clearTimeout(timer);
        res();
      } else setTimeout(check, 10);
    };
    check();
  });
  for (const [i, c] of clients.entries()) {
    assert.deepEqual(c.made.store.getState().board, expected, `seed ${seed}: store ${i} differs from the replayed history`);
    if (!c.reloaded) assert.equal(c.made.store.getState().ui.clicks, c.clicks, `seed ${seed}: store ${i} lost UI-only state`);
  }
  assert.deepEqual(late.store.getState().board, expected, `seed ${seed}: a late store differs`);

  // Nothing lost, nothing twice: every local action is in the history exactly once,
  // unless it was rolled back (dropped: the reducer threw on it re-applied; it may have
  // reached the server before).
  const rolledBack = new Set<string>();
  for (const seen of allSeen) {
    for (const a of seen) {
      const m = syncMeta(a);
      if (m?.local === true && typeof m.id === "string") localIds.add(m.id);
    }
    for (const id of rejectedIds(seen)) rolledBack.add(id);
  }
  const historyIds = actions.map((a) => a.id);
  assert.equal(new Set(historyIds).size, historyIds.length, `seed ${seed}: an action id appears twice in history`);
  const missing = [...localIds].filter((id) => !historyIds.includes(id) && !rolledBack.has(id));
  assert.deepEqual(missing, [], `seed ${seed}: local actions never reached the server`);
  assert.deepEqual(historyIds.filter((id) => !localIds.has(id)), [], `seed ${seed}: history has actions nobody dispatched`);
  // The reducer's throws are logged as errors: they are part of this test; nothing else is.
  assert.deepEqual(logger.errors.filter((e) => !/is already there/.test(e)), [], `seed ${seed}: errors logged`);
  const fromSnapshots = allSeen.filter((seen) => seen.some((a) => a.type === ActionTypes.replace && (a.payload as { source: string }).source === "snapshot")).length;
  t.diagnostic(`seed ${seed}: ${rolledBack.size} rolled back, ${logger.errors.length} reducer errors logged, ${fromSnapshots} stores started from a snapshot`);
  add({ historyActions: actions.length, rolledBack: rolledBack.size, fromSnapshots });
}
