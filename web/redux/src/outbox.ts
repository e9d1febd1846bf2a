// The outbox: local actions not yet confirmed by the server, in dispatch order, persisted.
import type { PendingEntry, SentPosition } from "./actions.js";
import { defaultLocks } from "./lease.js";
import { createTabStorage, type EnumerableStorage } from "./tabstorage.js";
import { isPendingEntry } from "./wire.js";

/**
 * OutboxStorage persists the outbox so that actions dispatched offline survive a reload.
 * load is called once, at start; save after every change with the whole outbox, in order
 * (saves never overlap: the next one waits for the previous). Errors are logged, never
 * thrown into the store.
 */
export interface OutboxStorage {
  load(): PendingEntry[] | Promise<PendingEntry[]>;
  save(entries: PendingEntry[]): void | Promise<void>;
  /**
   * close, if present, is called by the middleware's close() once the saves begun so far
   * have finished, to release what the storage holds (the default storage's Web Lock).
   * Actions dispatched after close() are still saved.
   */
  close?(): void | Promise<void>;
  /**
   * adopt, if present, takes over the outboxes that closed tabs left (the default storage,
   * with Web Locks) and resolves with their entries, now saved in this storage. Called
   * when this tab takes over the shared stream from a tab that went away.
   */
  adopt?(): Promise<PendingEntry[]>;
}

/** createMemoryStorage keeps the outbox in memory: it survives reconnects, not reloads. */
export function createMemoryStorage(initial: PendingEntry[] = []): OutboxStorage {
  let saved = initial.slice();
  return {
    load: () => saved.slice(),
    save: (entries) => {
      saved = entries.slice();
    },
  };
}

/** WebStorage is the part of the DOM Storage interface (localStorage) the outbox uses. */
export type WebStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

/**
 * createWebStorage keeps the outbox as JSON under key in a DOM Storage, e.g.
 * localStorage or sessionStorage. Two middleware instances must not share a key (two
 * tabs share localStorage): each would overwrite the other's outbox. The default storage
 * avoids that with a key per tab.
 */
export function createWebStorage(key: string, storage: WebStorage): OutboxStorage {
  return {
    load() {
      const text = storage.getItem(key);
      if (text === null) return [];
      const parsed: unknown = JSON.parse(text);
      if (!Array.isArray(parsed)) throw new TypeError(`actionsync: outbox ${JSON.stringify(key)} is not a JSON array`);
      return parsed as PendingEntry[];
    },
    save(entries) {
      if (entries.length === 0) storage.removeItem(key);
      else storage.setItem(key, JSON.stringify(entries));
    },
  };
}

/**
 * defaultStorage is, when the environment has localStorage, a tab storage (see
 * createTabStorage): localStorage under "actionsync:outbox:<channel>:<tabId>", the tab id
 * in sessionStorage, closed tabs' outboxes adopted with navigator.locks, or lease locks
 * where there is none (see defaultLocks).
 * Else memory.
 */
export function defaultStorage(channel: string, logger: Logger): OutboxStorage {
  const g = globalThis as { localStorage?: EnumerableStorage; sessionStorage?: WebStorage };
  // Reading localStorage or sessionStorage throws in some sandboxed iframes and privacy modes.
  const local = tryGet(() => g.localStorage);
  if (local === undefined) return createMemoryStorage();
  return createTabStorage(channel, {
    local,
    session: tryGet(() => g.sessionStorage),
    locks: defaultLocks(),
    logger,
  });
}

function tryGet<T>(get: () => T | undefined): T | undefined {
  try {
    return get() ?? undefined;
  } catch {
    return undefined;
  }
}

/** Outbox is the ordered list of pending local actions and their send state. */
export interface Outbox {
  /**
   * load reads the storage once and puts what it holds (minus ids already present)
   * before the entries added meanwhile; it resolves with the restored entries (later
   * calls return the same promise). Until it has run, nothing is saved (the stored outbox
   * would be overwritten).
   */
  load(): Promise<PendingEntry[]>;
  /**
   * adopt appends the entries the storage adopts from closed tabs (OutboxStorage.adopt),
   * minus ids already present, saves, and resolves with them. Before load: nothing.
   */
  adopt(): Promise<PendingEntry[]>;
  /** add appends an entry and saves. */
  add(entry: PendingEntry): void;
  /** remove drops an entry (confirmed or rejected) and saves; it returns it if present. */
  remove(id: string): PendingEntry | undefined;
  has(id: string): boolean;
  get(id: string): PendingEntry | undefined;
  /** unsent returns up to max entries, oldest first, that have not been acknowledged. */
  unsent(max: number): PendingEntry[];
  /**
   * markSent records, for each of these entries that has no position in at's epoch (never
   * sent, or only in a lost epoch), that it is first sent at at (its sentAfter), and saves.
   */
  markSent(ids: readonly string[], at: SentPosition): void;
  /** markAcked records that the server acknowledged an entry at seq (it is kept until confirmed). */
  markAcked(id: string, seq: number): void;
  /** acked returns the acknowledged entries with their seqs, in outbox order. */
  acked(): { entry: PendingEntry; seq: number }[];
  /** resendAll marks every entry unacknowledged again (after a reset). */
  resendAll(): void;
  /** entries returns the entries in order. */
  entries(): PendingEntry[];
  readonly size: number;
  /** flush resolves once every save begun so far has finished. */
  flush(): Promise<void>;
}

/** Logger is where the middleware reports what it cannot throw. */
export type Logger = Pick<Console, "warn" | "error">;

/**
 * createOutbox keeps the pending entries and persists them through storage. Entries stay
 * until the server's echo confirms them (not merely until acknowledged), so that a reset
 * (a server that lost its memory) can re-send them; re-sending is safe because the
 * server dedupes by action id.
 */
export function createOutbox(storage: OutboxStorage, logger: Logger): Outbox {
  let list: PendingEntry[] = [];
  // acked: the seq each acknowledged entry was given.
  const acked = new Map<string, number>();
  let loaded = false;
  let loading: Promise<PendingEntry[]> | undefined;
  let saving: Promise<void> = Promise.resolve();
  let dirty = false;
  let queued = false;

  function persist() {
    if (!loaded) return;
    dirty = true;
    if (queued) return;
    queued = true;
    // Chained: saves never overlap, and a burst of changes costs one save.
    saving = saving.then(async () => {
      queued = false;
      if (!dirty) return;
      dirty = false;
      try {
        await storage.save(list.slice());
      } catch (err) {
        logger.error("actionsync: could not save the outbox", err);
      }
    });
  }

  async function load(): Promise<PendingEntry[]> {
    let stored: unknown[] = [];
    try {
      stored = await storage.load();
      if (!Array.isArray(stored)) throw new TypeError("load() did not return an array");
    } catch (err) {
      logger.error("actionsync: could not load the outbox; starting empty", err);
      stored = [];
    }
    const restored: PendingEntry[] = [];
    const seen = new Set(list.map((e) => e.id));
    for (const e of stored) {
      if (!isPendingEntry(e)) {
        logger.warn("actionsync: dropping a malformed outbox entry", e);
        continue;
      }
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      restored.push(e);
    }
    const changed = list.length > 0 || restored.length !== stored.length;
    list = [...restored, ...list];
    loaded = true;
    // Write back only what differs from the store: entries added meanwhile, or dropped ones.
    if (changed) persist();
    return restored;
  }

  return {
    load() {
      loading ??= load();
      return loading;
    },
    async adopt() {
      if (!loaded || storage.adopt === undefined) return [];
      let found: unknown[];
      try {
        found = await storage.adopt();
      } catch (err) {
        logger.error("actionsync: could not adopt closed tabs' outboxes", err);
        return [];
      }
      const added = found.filter((e): e is PendingEntry => isPendingEntry(e) && !list.some((x) => x.id === e.id));
      if (added.length > 0) {
        list = [...list, ...added];
        persist();
      }
      return added;
    },
    add(entry) {
      list.push(entry);
      persist();
    },
    remove(id) {
      const i = list.findIndex((e) => e.id === id);
      if (i < 0) return undefined;
      const [entry] = list.splice(i, 1);
      acked.delete(id);
      persist();
      return entry;
    },
    has: (id) => list.some((e) => e.id === id),
    get: (id) => list.find((e) => e.id === id),
    unsent(max) {
      const out: PendingEntry[] = [];
      for (const e of list) {
        if (out.length >= max) break;
        if (!acked.has(e.id)) out.push(e);
      }
      return out;
    },
    markSent(ids, at) {
      let changed = false;
      for (const id of ids) {
        const i = list.findIndex((e) => e.id === id);
        if (i < 0 || list[i].sentAfter?.epoch === at.epoch) continue;
        // Entries are replaced, never mutated: the caller may hold the old ones.
        list[i] = { ...list[i], sentAfter: { seq: at.seq, epoch: at.epoch } };
        changed = true;
      }
      if (changed) persist();
    },
    markAcked(id, seq) {
      if (list.some((e) => e.id === id)) acked.set(id, seq);
    },
    acked() {
      const out: { entry: PendingEntry; seq: number }[] = [];
      for (const entry of list) {
        const seq = acked.get(entry.id);
        if (seq !== undefined) out.push({ entry, seq });
      }
      return out;
    },
    resendAll() {
      acked.clear();
    },
    entries: () => list.slice(),
    get size() {
      return list.length;
    },
    flush: () => saving,
  };
}
