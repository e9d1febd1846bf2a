// Randomized convergence with history trimmed during the run: the server keeps only the
// last 25 actions, so stores that reload from nothing, or come back after a long cut,
// can only rebuild from the channel's snapshot (written by the stores every few actions)
// and the actions after it. At quiescence every store equals every other, a late store,
// and the snapshot the server holds with the history after it replayed on top.
// Seeded like convergence.test.ts: REDUX_TEST_SEED=<n> replays the same choices.
import assert from "node:assert/strict";
import { after, it } from "node:test";
import type { UnknownAction } from "redux";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createMemoryStateStorage, createMemoryStorage, type OutboxStorage, type StateStorage } from "./index.js";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { board, captureLogger, createLink, makeStore, mulberry32, startTestServer, type Board } from "./testkit.js";
import { fromWire } from "./wire.js";

const seed = process.env.REDUX_TEST_SEED ? Number(process.env.REDUX_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const historySize = 25;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Client {
  link: ReturnType<typeof createLink>;
  storage: OutboxStorage;
  saved: StateStorage & { save(s: null): void };
  clientId: string;
  made: ReturnType<typeof makeStore>;
}

/** snapshotPlusHistory is the channel as a new client rebuilds it: the held snapshot and the actions after it. */
async function snapshotPlusHistory(baseUrl: string, channel: string): Promise<{ state: Board; head: number; snapSeq: number }> {
  const client = createClient(SyncService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const { snapshot } = await client.getSnapshot({ channel });
  const state = JSON.parse(new TextDecoder().decode(snapshot!.state)) as Board;
  let after = snapshot!.seq;
  let s = state;
  let head = 0n;
  for (;;) {
    const res = await client.history({ channel, afterSeq: after, limit: 1000 });
    head = res.headSeq;
    for (const a of res.actions) {
      const d = fromWire(a, channel);
      if (!d.action) throw new Error(`history seq ${a.seq}: ${d.problem}`);
      try {
        s = board(s, d.action);
      } catch {
        // skipped everywhere, as the middleware skips it
      }
      after = a.seq;
    }
    if (res.actions.length === 0 || after >= res.headSeq) break;
  }
  return { state: s, head: Number(head), snapSeq: Number(snapshot!.seq) };
}

it(`stores_converge_with_history_trimmed_under_them (seed ${seed})`, async (t) => {
  t.diagnostic(`seed ${seed}: rerun with REDUX_TEST_SEED=${seed}`);
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];

  const srv = await startTestServer(["--history-size", String(historySize)]);
  cleanups.push(() => srv.stop());
  const channel = `board:trimmed-${seed}`;
  const logger = captureLogger();

  const open = (c: Omit<Client, "made">) => {
    const made = makeStore({
      transport: c.link.transport,
      channel,
      clientId: c.clientId,
      storage: c.storage,
      logger,
      maxBatch: 1 + int(4),
      backoff: { initialMs: 5, maxMs: 80 },
      persist: { version: "conv-1", storage: c.saved, select: (s: { board: unknown }) => s.board, throttleMs: int(40) },
      snapshots: { every: 4 + int(8) },
    });
    cleanups.push(() => made.close());
    return made;
  };
  const clients: Client[] = [];
  for (let i = 0; i < 4; i++) {
    const base = { link: createLink(srv.url), storage: createMemoryStorage(), saved: createMemoryStateStorage(), clientId: `client-${i}` };
    clients.push({ ...base, made: open(base) });
  }

  const items = ["a", "b", "c", "d", "e", "f"];
  const randomAction = (): UnknownAction => {
    switch (int(4)) {
      case 0:
        return { type: "board/title", payload: { title: pick(["Todo", "Doing", "Done"]) } };
      case 1:
        return { type: "board/add", payload: { item: pick(items) } };
      case 2:
        return { type: "board/move", payload: { item: pick(items), to: int(6) } };
      default:
        return { type: "board/remove", payload: { item: pick(items) } };
    }
  };

  const counts = { actions: 0, longCuts: 0, cuts: 0, lostAcks: 0, freshReloads: 0, reloads: 0 };
  for (let step = 0; step < 220; step++) {
    const c = pick(clients);
    const r = rnd();
    if (r < 0.65) {
      c.made.store.dispatch(randomAction());
      counts.actions++;
    } else if (r < 0.73) {
      if (c.link.down) c.link.heal();
      else {
        c.link.cut();
        counts.cuts++;
        // Sometimes a long cut: the others publish more than the server keeps meanwhile.
        if (rnd() < 0.3) counts.longCuts++;
        else setTimeout(() => c.link.heal(), int(30));
      }
    } else if (r < 0.76) {
      c.link.loseAcks(1);
      counts.lostAcks++;
    } else if (r < 0.8) {
      await c.made.close();
      if (rnd() < 0.5) {
        c.saved.save(null); // a new browser: from the snapshot
        counts.freshReloads++;
      }
      c.made = open(c);
      counts.reloads++;
    } else {
      await new Promise((res) => setTimeout(res, int(10)));
    }
  }
  for (const c of clients) c.link.heal();
  t.diagnostic(`${JSON.stringify(counts)}`);

  // Quiescence: nothing pending anywhere, every store at the channel's head.
  const deadline = Date.now() + 20_000;
  let want: Awaited<ReturnType<typeof snapshotPlusHistory>>;
  for (;;) {
    want = await snapshotPlusHistory(srv.url, channel);
    const ok = clients.every((c) => {
      const s = c.made.store.getState().sync;
      return s.status === "connected" && s.pending === 0 && s.lastSeq === want.head;
    });
    if (ok) break;
    if (Date.now() > deadline) {
      assert.fail(`seed ${seed}: no quiescence at seq ${want.head}: ${JSON.stringify(clients.map((c) => c.made.store.getState().sync))}`);
    }
    await new Promise((res) => setTimeout(res, 25));
  }
  assert.ok(want.head > 3 * historySize, `seed ${seed}: only ${want.head} actions: history was never trimmed`);
  const late = open({ link: createLink(srv.url), storage: createMemoryStorage(), saved: createMemoryStateStorage(), clientId: "late" });
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error("late store did not catch up")), 10_000);
    const check = () => {
      if (late.store.getState().sync.lastSeq === want.head) {
        clearTimeout(timer);
        res();
      } else setTimeout(check, 10);
    };
    check();
  });
  for (const [i, c] of clients.entries()) {
    assert.deepEqual(c.made.store.getState().board, want.state, `seed ${seed}: store ${i} differs from snapshot ${want.snapSeq} + the history after it`);
  }
  assert.deepEqual(late.store.getState().board, want.state, `seed ${seed}: a late store differs`);
  assert.deepEqual(logger.errors, [], `seed ${seed}: errors logged`);
  t.diagnostic(`head ${want.head}, snapshot at ${want.snapSeq}, history keeps ${historySize}`);
});
