import assert from "node:assert/strict";
import { test } from "node:test";
import { createLeaseLocks, leaseKey, type Lease, type LeaseChannel, type LeaseClock, type LeaseOptions, type LockManagerLike } from "./lease.js";

// Type test: the browser's navigator.locks is a LockManagerLike.
const _locks: LockManagerLike | undefined = undefined as unknown as Navigator["locks"] | undefined;
void _locks;

const flush = () => new Promise<void>((r) => setImmediate(r));

/**
 * Browser is a deterministic model of one browser's tabs: a fake clock; localStorage whose
 * writes reach the other tabs (their copy and a storage event) lagMs later, the last write
 * winning everywhere as in Chromium; BroadcastChannels delivering 1 ms later. A tab can be
 * throttled (its timers do not fire, its events do), frozen (nothing runs until thawed),
 * killed (nothing ever runs again) or closed (pagehide, then killed).
 */
class Browser {
  now = 0;
  private seq = 0;
  private timers: { at: number; seq: number; tab: Tab; fn: () => void; timer: boolean }[] = [];
  readonly tabs: Tab[] = [];
  /** stored is what every tab sees once writes have propagated. */
  readonly stored = new Map<string, string>();
  constructor(readonly lagMs = 0) {}

  tab(options: Partial<LeaseOptions> = {}): Tab {
    const t = new Tab(this, options);
    this.tabs.push(t);
    return t;
  }

  /** at runs fn in tab after ms (timer: subject to throttling). */
  at(tab: Tab, ms: number, fn: () => void, timer = false): number {
    const entry = { at: this.now + ms, seq: ++this.seq, tab, fn, timer };
    this.timers.push(entry);
    return entry.seq;
  }

  cancel(seq: unknown): void {
    this.timers = this.timers.filter((t) => t.seq !== seq);
  }

  /** advance moves the clock by ms, running what is due in order. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      await flush();
      const due = this.timers
        .filter((t) => t.at <= end && !t.tab.dead && !t.tab.frozen && !(t.timer && t.tab.throttled))
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.now = Math.max(this.now, due.at);
      due.fn();
    }
    this.now = end;
    await flush();
  }

  /** write stores key in tab's copy now, and in everyone's lagMs later (then the others get a storage event). */
  write(from: Tab, key: string, value: string | null): void {
    from.set(key, value);
    const apply = () => {
      if (value === null) this.stored.delete(key);
      else this.stored.set(key, value);
      for (const t of this.tabs) {
        if (t.dead) continue;
        t.set(key, value);
        if (t !== from) this.at(t, 0, () => t.dispatch("storage", { key, newValue: value }));
      }
    };
    if (this.lagMs === 0) apply();
    else this.at(from, this.lagMs, apply);
  }

  post(from: FakeChannel, data: unknown): void {
    for (const t of this.tabs) {
      for (const c of t.channels) {
        if (c !== from && c.name === from.name) this.at(t, 1, () => c.onmessage?.({ data }));
      }
    }
  }
}

class FakeChannel implements LeaseChannel {
  onmessage: ((event: { data: unknown }) => void) | null = null;
  constructor(
    private readonly tab: Tab,
    readonly name: string,
  ) {}
  postMessage(data: unknown) {
    this.tab.browser.post(this, data);
  }
  close() {
    this.tab.channels.delete(this);
  }
}

type Listener = (event: { key?: string | null; newValue?: string | null }) => void;

class Tab {
  dead = false;
  frozen = false;
  throttled = false;
  readonly channels = new Set<FakeChannel>();
  private readonly data: Map<string, string>;
  private readonly listeners = new Map<string, Set<Listener>>();
  readonly locks: LockManagerLike;

  constructor(
    readonly browser: Browser,
    options: Partial<LeaseOptions>,
  ) {
    this.data = new Map(browser.stored);
    const clock: LeaseClock = {
      now: () => browser.now,
      setTimeout: (fn, ms) => browser.at(this, ms, fn, true),
      clearTimeout: (t) => browser.cancel(t),
    };
    this.locks = createLeaseLocks({
      storage: {
        getItem: (k) => this.data.get(k) ?? null,
        setItem: (k, v) => browser.write(this, k, v),
        removeItem: (k) => browser.write(this, k, null),
      },
      events: {
        addEventListener: (type, l) => this.listeners.set(type, (this.listeners.get(type) ?? new Set()).add(l)),
        removeEventListener: (type, l) => this.listeners.get(type)?.delete(l),
      },
      open: (name) => {
        const c = new FakeChannel(this, name);
        this.channels.add(c);
        return c;
      },
      clock,
      ...options,
    });
  }

  set(key: string, value: string | null) {
    if (value === null) this.data.delete(key);
    else this.data.set(key, value);
  }

  dispatch(type: string, event: { key?: string | null; newValue?: string | null } = {}) {
    for (const l of [...(this.listeners.get(type) ?? [])]) l(event);
  }

  /** close is the tab going away: pagehide, then nothing more. */
  close() {
    this.dispatch("pagehide");
    this.dead = true;
  }

  /** hold requests name, waiting, and holds it until release. */
  hold(name: string, signal?: AbortSignal): Holder {
    const h: Holder = { lease: undefined, released: false, release: () => {}, done: undefined as unknown as Promise<unknown> };
    h.done = this.locks.request(name, { signal }, (lock) => {
      h.lease = lock as Lease;
      return new Promise<void>((r) => {
        h.release = () => {
          h.released = true;
          r();
        };
      });
    });
    h.done.catch(() => {});
    return h;
  }
}

interface Holder {
  /** lease is set once the lock is held. */
  lease: Lease | undefined;
  released: boolean;
  release(): void;
  done: Promise<unknown>;
}

/** holding lists the holders that hold, have not released and have not lost their lease. */
const holding = (hs: Holder[]) => hs.filter((h) => h.lease !== undefined && !h.released && !h.lease.signal.aborted);

test("one_tab_holds_and_the_next_takes_over_when_it_releases", async () => {
  const b = new Browser();
  const hs = [b.tab().hold("L"), b.tab().hold("L"), b.tab().hold("L")];
  await b.advance(5_000);
  const [first] = holding(hs);
  assert.equal(holding(hs).length, 1, "one holder");
  first.release();
  await b.advance(200);
  assert.equal(holding(hs.filter((h) => h !== first)).length, 1, "the next holds within 200 ms (woken by the storage event)");
  await b.advance(10_000);
  assert.equal(holding(hs).length, 1);
});

test("ifAvailable_gets_null_while_held_and_the_lease_when_free", async () => {
  const b = new Browser();
  const a = b.tab();
  const other = b.tab();
  const h = a.hold("L");
  await b.advance(200);
  assert.ok(h.lease);
  let got: unknown = "unset";
  void other.locks.request("L", { ifAvailable: true }, (lock) => (got = lock));
  await b.advance(200);
  assert.equal(got, null);
  h.release();
  await b.advance(10);
  void other.locks.request("L", { ifAvailable: true }, (lock) => (got = lock));
  await b.advance(200);
  assert.equal((got as unknown as Lease | null)?.name, "L");
});

test("abort_rejects_a_waiting_request_with_the_signal's_reason", async () => {
  const b = new Browser();
  const held = b.tab().hold("L");
  await b.advance(200);
  const abort = new AbortController();
  const waiting = b.tab().hold("L", abort.signal);
  await b.advance(2_000);
  abort.abort(new Error("stop"));
  await assert.rejects(waiting.done, /stop/);
  held.release();
  await b.advance(5_000);
  assert.equal(waiting.lease, undefined, "an aborted request never holds");
});

test("a_closed_holder_is_replaced_at_once", async () => {
  const b = new Browser();
  const leader = b.tab();
  const hs = [leader.hold("L"), b.tab().hold("L")];
  await b.advance(200);
  assert.ok(hs[0].lease);
  leader.close();
  await b.advance(200);
  assert.ok(hs[1].lease, "pagehide removed the lease: the other tab took it");
});

test("a_crashed_holder_is_replaced_within_the_bound", async () => {
  const b = new Browser();
  const leader = b.tab();
  const hs = [leader.hold("L"), b.tab().hold("L")];
  await b.advance(200);
  leader.dead = true; // no pagehide
  const t0 = b.now;
  // The last renewal was at most renewMs ago; the lease lasts ttlMs.
  await b.advance(3_000 - 1_000);
  assert.equal(hs[1].lease, undefined, "not before the lease expired");
  await b.advance(1_000 + 3_000 + 1_000 + 500 + 100);
  assert.ok(hs[1].lease, `taken over by ${b.now - t0} ms`);
});

test("a_throttled_holder_keeps_its_lease_by_answering_probes", async () => {
  const b = new Browser();
  const leader = b.tab();
  const hs = [leader.hold("L"), b.tab().hold("L")];
  await b.advance(200);
  leader.throttled = true; // a background tab: its timers stall, its messages run
  await b.advance(60_000);
  assert.equal(hs[1].lease, undefined, "no takeover");
  assert.equal(holding(hs).length, 1);
  assert.equal(holding(hs)[0], hs[0]);
});

test("a_frozen_holder_is_replaced_and_steps_down_when_it_thaws", async () => {
  const b = new Browser();
  const leader = b.tab();
  const hs = [leader.hold("L"), b.tab().hold("L")];
  await b.advance(200);
  leader.frozen = true;
  await b.advance(10_000);
  assert.ok(hs[1].lease, "taken over");
  leader.frozen = false;
  await b.advance(1_000);
  assert.ok(hs[0].lease?.signal.aborted, "the thawed holder learns it lost its lease");
  assert.deepEqual(holding(hs), [hs[1]]);
  // Releasing a lost lease leaves the new holder's in place.
  hs[0].release();
  await b.advance(5_000);
  assert.deepEqual(holding(hs), [hs[1]]);
});

test("two_tabs_that_took_the_lease_at_once_converge_to_one", async () => {
  // Writes take longer to propagate than a tab waits before reading back: both believe
  // they hold it.
  const b = new Browser(300);
  const hs = [b.tab().hold("L"), b.tab().hold("L")];
  await b.advance(200);
  assert.equal(holding(hs).length, 2, "split brain");
  await b.advance(1_000 + 300);
  assert.equal(holding(hs).length, 1, "converged within renewMs + the propagation delay");
  const winner = holding(hs)[0];
  await b.advance(20_000);
  assert.deepEqual(holding(hs), [winner], "and it stays so");
});

test("a_lease_is_removed_when_released", async () => {
  const b = new Browser();
  const a = b.tab();
  const h = a.hold("L");
  await b.advance(200);
  assert.ok(b.stored.get(leaseKey("L")));
  h.release();
  await b.advance(10);
  assert.equal(b.stored.get(leaseKey("L")), undefined);
});
