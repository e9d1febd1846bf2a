// The default outbox storage of browsers: one localStorage key per tab, and the outboxes
// of closed tabs adopted at start.
import type { PendingEntry } from "./actions.js";
import { randomId, uuidPattern } from "./ids.js";
import type { LockManagerLike } from "./lease.js";
import type { Logger, OutboxStorage, WebStorage } from "./outbox.js";

/** tabIdKey is the sessionStorage key of the tab's id, shared by every channel. */
export const tabIdKey = "actionsync:tab";

/** outboxKey is the localStorage key of one tab's outbox for channel. */
export function outboxKey(channel: string, tabId: string): string {
  return `actionsync:outbox:${channel}:${tabId}`;
}

export type { LockManagerLike };

/** EnumerableStorage is a WebStorage whose keys can be listed (localStorage). */
export type EnumerableStorage = WebStorage & Pick<Storage, "key" | "length">;

/** TabStorageOptions says where a tab storage keeps its outboxes, its tab id and its locks. */
export interface TabStorageOptions {
  /** local holds the outboxes of every tab: localStorage. */
  local: EnumerableStorage;
  /** session holds this tab's id across reloads: sessionStorage. Default: none (a new id per instance). */
  session?: WebStorage;
  /**
   * locks tells live tabs from closed ones: navigator.locks, or lease locks where there is
   * none (see defaultLocks). Default: none (no adoption).
   */
  locks?: LockManagerLike;
  /** logger gets the outboxes that cannot be read. */
  logger: Logger;
  /**
   * ownLockWaitMs is how long load waits for the lock of this tab's own key before taking
   * a new tab id: the previous document of a reloaded tab may not have released it yet,
   * while a duplicated tab (whose sessionStorage is a copy) holds it for good. Default 500.
   */
  ownLockWaitMs?: number;
}

/** TabStorage is an OutboxStorage that holds a Web Lock until close. */
export interface TabStorage extends OutboxStorage {
  /** key is the localStorage key of this tab's outbox, known once load has resolved. */
  readonly key: string | undefined;
  /** close releases this tab's lock: its outbox may then be adopted by a tab that starts. */
  close(): void;
  /** adopt adopts the outboxes of tabs closed since load (as load does), resolving with their entries. */
  adopt(): Promise<PendingEntry[]>;
}

/**
 * createTabStorage keeps one tab's outbox for channel in localStorage under
 * "actionsync:outbox:<channel>:<tabId>", where tabId lives in sessionStorage: a reload
 * finds its outbox again, and two tabs of one browser never overwrite each other's.
 *
 * With Web Locks (locks), load takes the lock named after its key, held until close (or
 * until the page goes away), and a duplicated tab that finds its copied id held takes a
 * new one. Then it adopts the outboxes of this channel that no live tab holds (left by
 * closed tabs, and the "actionsync:outbox:<channel>" key of earlier versions): their
 * entries are appended to this tab's outbox, in their order, skipping ids already there,
 * and their keys are removed. Adopting happens before the middleware subscribes, so an
 * entry that already reached the server is confirmed by the replay, not sent again; one
 * adopted by two tabs at once is deduplicated by the server (same action id).
 *
 * Lease locks (createLeaseLocks) work as well: a tab whose lease was lost (its page froze
 * longer than the lease) may see its outbox adopted while it lives, and both send its
 * entries: the server dedupes them by id. Without locks nothing is adopted: a closed tab's
 * unsent actions stay in localStorage, unsent, and a duplicated tab shares its original's
 * key.
 */
export function createTabStorage(channel: string, o: TabStorageOptions): TabStorage {
  const waitMs = o.ownLockWaitMs ?? 500;
  let key: string | undefined;
  let release: (() => void) | undefined;
  let closed = false;
  // heldLocks: the Web Locks this tab holds its key with (undefined: none, nothing adopted).
  let heldLocks: LockManagerLike | undefined;

  function readTabId(): string | undefined {
    try {
      const id = o.session?.getItem(tabIdKey);
      return id != null && uuidPattern.test(id) ? id : undefined;
    } catch {
      return undefined; // sessionStorage can throw in sandboxed frames
    }
  }

  function writeTabId(id: string) {
    try {
      o.session?.setItem(tabIdKey, id);
    } catch {
      // Without it, a reload gets a new id; with Web Locks, the old outbox is adopted.
    }
  }

  /** claim picks this tab's id and, with Web Locks, takes the lock of its key. */
  async function claim(locks: LockManagerLike | undefined): Promise<{ id: string; locks: LockManagerLike | undefined }> {
    const stored = readTabId();
    let id = stored ?? randomId();
    if (locks !== undefined) {
      try {
        release = (await hold(locks, outboxKey(channel, id), stored !== undefined ? waitMs : 0)) ?? undefined;
        if (release === undefined) {
          // Held by another live tab with the same id: a duplicated tab. A new id is free.
          id = randomId();
          release = (await hold(locks, outboxKey(channel, id), 0)) ?? undefined;
        }
      } catch (err) {
        // e.g. a SecurityError in an opaque origin: go on without locks.
        o.logger.warn("actionsync: Web Locks failed; closed tabs' outboxes will not be adopted", err);
        locks = undefined;
      }
    }
    if (id !== stored) writeTabId(id);
    return { id, locks };
  }

  function read(k: string): unknown[] {
    const text = o.local.getItem(k);
    if (text === null) return [];
    const parsed: unknown = JSON.parse(text);
    if (!Array.isArray(parsed)) throw new TypeError(`actionsync: outbox ${JSON.stringify(k)} is not a JSON array`);
    return parsed;
  }

  function write(k: string, entries: unknown[]) {
    if (entries.length === 0) o.local.removeItem(k);
    else o.local.setItem(k, JSON.stringify(entries));
  }

  /** orphanCandidates lists the other keys of this channel's outboxes, sorted. */
  function orphanCandidates(own: string): string[] {
    const prefix = outboxKey(channel, "");
    const legacy = prefix.slice(0, -1);
    const keys: string[] = [];
    for (let i = 0; i < o.local.length; i++) {
      const k = o.local.key(i);
      if (k === null || k === own) continue;
      // The tab id pattern keeps channel "a" from taking the outboxes of channel "a:b".
      if (k === legacy || (k.startsWith(prefix) && uuidPattern.test(k.slice(prefix.length)))) keys.push(k);
    }
    return keys.sort();
  }

  async function adopt(locks: LockManagerLike, own: string, mine: unknown[]): Promise<unknown[]> {
    const seen = new Set(mine.map(entryId));
    let list = mine;
    for (const k of orphanCandidates(own)) {
      // Under its lock, so that two tabs starting together do not both take it.
      await locks.request(k, { ifAvailable: true }, (lock) => {
        if (lock === null) return; // a live tab's
        let theirs: unknown[];
        try {
          theirs = read(k);
        } catch (err) {
          o.logger.error(`actionsync: dropping the unreadable outbox ${JSON.stringify(k)}: ${o.local.getItem(k)}`, err);
          o.local.removeItem(k);
          return;
        }
        const added = theirs.filter((e) => {
          const id = entryId(e);
          if (id !== undefined && seen.has(id)) return false;
          if (id !== undefined) seen.add(id);
          return true;
        });
        // Save ours before removing theirs: a crash in between leaves duplicates, which
        // the server dedupes, rather than losing entries.
        if (added.length > 0) {
          list = [...list, ...added];
          write(own, list);
        }
        o.local.removeItem(k);
      });
    }
    return list;
  }

  return {
    get key() {
      return key;
    },
    async load() {
      const claimed = await claim(o.locks);
      key = outboxKey(channel, claimed.id);
      if (closed) {
        // Closed while claiming: let go of the lock, and adopt nothing.
        release?.();
        release = undefined;
      }
      const mine = read(key);
      heldLocks = closed ? undefined : claimed.locks;
      const list = heldLocks !== undefined ? await adopt(heldLocks, key, mine) : mine;
      return list as PendingEntry[];
    },
    async adopt() {
      if (heldLocks === undefined || key === undefined || closed) return [];
      const mine = read(key);
      const list = await adopt(heldLocks, key, mine);
      return list.slice(mine.length) as PendingEntry[];
    },
    save(entries) {
      if (key === undefined) throw new Error("actionsync: the tab storage saves only after load");
      write(key, entries);
    },
    close() {
      closed = true;
      release?.();
      release = undefined;
    },
  };
}

function entryId(e: unknown): string | undefined {
  const id = typeof e === "object" && e !== null ? (e as { id?: unknown }).id : undefined;
  return typeof id === "string" ? id : undefined;
}

/**
 * hold takes the lock name and keeps it until the returned function is called; it
 * resolves null if the lock is still held by someone else after waitMs (0: not waiting).
 */
function hold(locks: LockManagerLike, name: string, waitMs: number): Promise<(() => void) | null> {
  return new Promise((resolve, reject) => {
    const abort = waitMs > 0 ? new AbortController() : undefined;
    const timer = abort ? setTimeout(() => abort.abort(), waitMs) : undefined;
    const options = abort ? { signal: abort.signal } : { ifAvailable: true };
    locks
      .request(name, options, (lock) => {
        clearTimeout(timer);
        if (lock === null) return resolve(null);
        return new Promise<void>((done) => resolve(done));
      })
      .catch((err: unknown) => {
        clearTimeout(timer);
        if (abort?.signal.aborted) resolve(null);
        else reject(err);
      });
  });
}
