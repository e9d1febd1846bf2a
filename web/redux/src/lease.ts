// Locks for pages without Web Locks: navigator.locks exists only in secure contexts
// (https:, localhost), so a plain-HTTP deployment reached by name (http://board.example)
// has none. Lease locks give the tabs the part of it they use, over localStorage (a lease
// per lock: its holder and when it expires) and a BroadcastChannel (to ask a holder whose
// lease looks expired whether it is still there).
import { randomId } from "./ids.js";

/** LockManagerLike is the part of the Web Locks API (navigator.locks) actionsync uses. */
export interface LockManagerLike {
  request<T>(name: string, options: { ifAvailable?: boolean; signal?: AbortSignal }, callback: (lock: unknown) => T): Promise<unknown>;
}

/**
 * Lease is the lock a lease lock's callback gets. Unlike a Web Lock it can be lost: its
 * signal aborts when another tab took the lease (this one's renewals stopped for longer
 * than ttlMs: the page was frozen, or two tabs took it at once). A Web Lock has no signal.
 */
export interface Lease {
  readonly name: string;
  readonly signal: AbortSignal;
}

/** LeaseClock is time for lease locks: Date.now and timers by default; tests pass a fake. */
export interface LeaseClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

/** LeaseChannel is the part of BroadcastChannel lease locks use. */
export interface LeaseChannel {
  postMessage(message: unknown): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  close(): void;
}

/** LeaseOptions is what lease locks need from the page, and their timing. */
export interface LeaseOptions {
  /** storage holds the leases: localStorage, shared by the tabs of the origin. */
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  /** events delivers the page's "storage", "pagehide" and "pageshow" events: window. */
  events: {
    addEventListener(type: string, listener: (event: { key?: string | null; newValue?: string | null }) => void): void;
    removeEventListener(type: string, listener: (event: { key?: string | null; newValue?: string | null }) => void): void;
  };
  /** open opens a BroadcastChannel. */
  open(name: string): LeaseChannel;
  /** clock: default Date.now and the global timers. */
  clock?: LeaseClock;
  /** ttlMs is how long a lease lasts unless renewed. Default 3000. */
  ttlMs?: number;
  /** renewMs is how often a holder renews, and a waiter looks again. Default 1000. */
  renewMs?: number;
  /** probeMs is how long a tab waits for the holder of an expired lease to renew it before taking it. Default 500. */
  probeMs?: number;
  /** settleMs is how long a tab that wrote a lease waits for other tabs' writes before it reads it back. Default 100. */
  settleMs?: number;
}

/** leaseKey is the localStorage key of the lease of the lock name. */
export function leaseKey(name: string): string {
  return `actionsync:lease:${name}`;
}

/** leaseChannel is the BroadcastChannel on which tabs probe the holders of expired leases. */
const leaseChannel = "actionsync:leases";

/** LeaseRecord is what a lease key holds, as JSON. */
interface LeaseRecord {
  holder: string;
  expiresAt: number;
}

const realClock: LeaseClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as ReturnType<typeof setTimeout>),
};

/**
 * createLeaseLocks returns locks that behave like navigator.locks for actionsync's
 * requests (exclusive; ifAvailable, or waiting until the signal aborts, which rejects with
 * its reason; held until the callback's promise settles), built on leases in storage:
 *
 * - A lease is {holder, expiresAt} under leaseKey(name). A tab takes a lease that is
 *   missing or expired, waits settleMs, and holds it if the lease still names it (of two
 *   tabs writing at once, the last write wins in every tab). Before taking an expired
 *   lease it posts a probe and waits probeMs: a live holder whose timers were throttled (a
 *   background tab's may run once a minute) renews at once, since messages are not
 *   throttled.
 * - The holder renews every renewMs (for ttlMs). If a renewal finds the lease taken by
 *   another tab, the Lease's signal aborts: the holder must stop acting as one. So two
 *   holders at once last at most renewMs after their writes settled.
 * - A holder removes its lease when the callback settles and when the page goes away
 *   (pagehide): the removal's storage event wakes the waiting tabs at once. A page that
 *   dies without pagehide (a crash) or stops running (frozen) is replaced after its lease
 *   expires: within ttlMs + renewMs + probeMs + settleMs (4.6 s by default) of its last
 *   renewal, by a waiting tab whose timers run.
 */
export function createLeaseLocks(o: LeaseOptions): LockManagerLike {
  const self = randomId();
  const clock = o.clock ?? realClock;
  const ttlMs = o.ttlMs ?? 3000;
  const renewMs = o.renewMs ?? 1000;
  const probeMs = o.probeMs ?? 500;
  const settleMs = o.settleMs ?? 100;
  const sleep = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));

  function read(key: string): LeaseRecord | undefined {
    try {
      const r = JSON.parse(o.storage.getItem(key) ?? "null") as LeaseRecord | null;
      return typeof r?.holder === "string" && typeof r.expiresAt === "number" ? r : undefined;
    } catch {
      return undefined; // not a lease: taken as missing
    }
  }
  /** othersLive: the lease is another tab's and has not expired. */
  const othersLive = (r: LeaseRecord | undefined) => r !== undefined && r.holder !== self && r.expiresAt > clock.now();
  const write = (key: string) => o.storage.setItem(key, JSON.stringify({ holder: self, expiresAt: clock.now() + ttlMs }));
  const removeOwn = (key: string) => {
    if (read(key)?.holder === self) o.storage.removeItem(key);
  };

  /**
   * watchPage tracks whether the page is showing: between pagehide and pageshow (going away, or
   * in the back/forward cache) a tab neither takes nor renews a lease.
   */
  function watchPage(onHide: () => void, onShow: () => void) {
    const state = { hidden: false };
    const hide = () => {
      state.hidden = true;
      onHide();
    };
    const show = () => {
      state.hidden = false;
      onShow();
    };
    o.events.addEventListener("pagehide", hide);
    o.events.addEventListener("pageshow", show);
    return {
      state,
      stop() {
        o.events.removeEventListener("pagehide", hide);
        o.events.removeEventListener("pageshow", show);
      },
    };
  }

  /** tryTake makes one attempt at the lease of name: true if this tab holds it. */
  async function tryTake(name: string, bc: LeaseChannel, hidden: () => boolean): Promise<boolean> {
    const key = leaseKey(name);
    const r = read(key);
    if (othersLive(r)) return false;
    if (r !== undefined && r.holder !== self) {
      bc.postMessage({ probe: name });
      await sleep(probeMs);
      if (othersLive(read(key))) return false;
    }
    if (hidden()) return false;
    write(key);
    await sleep(settleMs);
    return read(key)?.holder === self;
  }

  /** wait resolves once this tab holds the lease of name; it rejects once signal aborts. */
  function wait(name: string, bc: LeaseChannel, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const key = leaseKey(name);
      let busy = false;
      let timer: unknown;
      const page = watchPage(
        () => clock.clearTimeout(timer),
        () => void attempt(),
      );
      const finish = (err?: unknown) => {
        clock.clearTimeout(timer);
        page.stop();
        o.events.removeEventListener("storage", onStorage);
        signal?.removeEventListener("abort", onAbort);
        if (err === undefined) resolve();
        else reject(err);
      };
      const attempt = async () => {
        if (busy || page.state.hidden) return;
        busy = true;
        clock.clearTimeout(timer);
        const took = await tryTake(name, bc, () => page.state.hidden).catch(() => false);
        busy = false;
        if (signal?.aborted) {
          if (took) removeOwn(key);
        } else if (took) {
          finish();
        } else if (!page.state.hidden) {
          timer = clock.setTimeout(() => void attempt(), renewMs);
        }
      };
      // A lease removed (its holder let go, or the page went away): try at once.
      const onStorage = (e: { key?: string | null; newValue?: string | null }) => {
        if ((e.key === key || e.key === null) && e.newValue == null) void attempt();
      };
      const onAbort = () => finish(signal?.reason);
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      o.events.addEventListener("storage", onStorage);
      void attempt();
    });
  }

  /** hold renews the lease of name while callback runs, and removes it when it settles. */
  async function hold<T>(name: string, bc: LeaseChannel, callback: (lock: Lease) => T): Promise<Awaited<T>> {
    const key = leaseKey(name);
    const lost = new AbortController();
    let timer: unknown;
    const renew = () => {
      if (lost.signal.aborted || page.state.hidden) return;
      if (othersLive(read(key))) {
        clock.clearTimeout(timer);
        lost.abort(new Error(`actionsync: lease ${name} taken by another tab`));
        return;
      }
      write(key);
    };
    const tick = () => {
      renew();
      if (!lost.signal.aborted) timer = clock.setTimeout(tick, renewMs);
    };
    const page = watchPage(
      // Going away: let the waiting tabs in now rather than when the lease expires.
      () => removeOwn(key),
      renew,
    );
    bc.onmessage = (e) => {
      const m = e.data as { probe?: unknown } | null;
      if (m?.probe === name) renew();
    };
    timer = clock.setTimeout(tick, renewMs);
    try {
      return await callback({ name, signal: lost.signal });
    } finally {
      clock.clearTimeout(timer);
      page.stop();
      if (!lost.signal.aborted) removeOwn(key);
    }
  }

  return {
    async request(name, options, callback) {
      const bc = o.open(leaseChannel);
      try {
        if (options.ifAvailable) {
          if (!(await tryTake(name, bc, () => false))) return await callback(null);
        } else {
          await wait(name, bc, options.signal);
        }
        return await hold(name, bc, callback);
      } finally {
        bc.close();
      }
    },
  };
}

/**
 * defaultLocks returns the page's navigator.locks, or where it has none (an insecure
 * origin) but has localStorage and BroadcastChannel, lease locks over them; else (Node, a
 * sandboxed frame) undefined.
 */
export function defaultLocks(): LockManagerLike | undefined {
  const g = globalThis as {
    document?: unknown;
    navigator?: { locks?: LockManagerLike };
    BroadcastChannel?: new (name: string) => LeaseChannel;
    localStorage?: Storage;
    addEventListener?: LeaseOptions["events"]["addEventListener"];
    removeEventListener?: LeaseOptions["events"]["removeEventListener"];
  };
  const locks = g.navigator?.locks;
  if (typeof locks?.request === "function") return locks;
  const BC = g.BroadcastChannel;
  let storage: Storage | undefined;
  try {
    storage = g.localStorage ?? undefined;
  } catch {
    // Reading localStorage throws in some sandboxed iframes and privacy modes.
  }
  if (typeof g.document !== "object" || typeof BC !== "function" || storage === undefined || typeof g.addEventListener !== "function") return undefined;
  return createLeaseLocks({ storage, events: g as LeaseOptions["events"], open: (name) => new BC(name) });
}
