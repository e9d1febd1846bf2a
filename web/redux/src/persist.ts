// The persisted confirmed state: saved with its seq and epoch, loaded at start so that a
// reload shows the last known state at once and resumes after its seq.
import type { Logger, WebStorage } from "./outbox.js";

/**
 * SavedState is what a StateStorage keeps: the confirmed state (serialized), the seq of
 * the last channel action it contains, the channel epoch that seq belongs to, and the
 * app's version tag of the state's shape.
 */
export interface SavedState {
  /** version is the app's tag of the state's shape (PersistOptions.version). */
  version: string;
  /** seq is the seq of the last channel action applied to state. */
  seq: number;
  /** epoch is the channel epoch seq belongs to (from the server's ready or reset). */
  epoch: string;
  /** state is the serialized confirmed state (PersistOptions.serialize). */
  state: string;
}

/**
 * StateStorage keeps one SavedState. load is called once, at start: when it returns a
 * value (not a promise), the state is in the store from its creation (the first render
 * shows it). save(null) removes it. Saves never overlap (the next waits for the previous).
 * Errors are logged, never thrown into the store.
 */
export interface StateStorage {
  load(): SavedState | null | Promise<SavedState | null>;
  save(saved: SavedState | null): void | Promise<void>;
}

/**
 * PersistOptions turns on the persisted confirmed state (SyncMiddlewareOptions.persist).
 */
export interface PersistOptions {
  /**
   * version tags the shape of the saved state, e.g. "board-2". A saved state with another
   * version is discarded (and the history replayed from the start): change it whenever a
   * saved state would no longer fit your reducers. Required.
   */
  version: string;
  /**
   * storage keeps the saved state. Default: localStorage under key when
   * globalThis.localStorage exists (browsers; shared by the tabs of the browser, each
   * saving the same converged state at its own seq); else none, and nothing is persisted.
   * createWebStateStorage and createMemoryStateStorage are exported.
   */
  storage?: StateStorage;
  /** key is the default storage's localStorage key. Default "actionsync:state:<channel>". */
  key?: string;
  /**
   * select picks the part of the confirmed state to save, e.g. `(s) => s.board`. Then
   * your reducers restore it: they get `actionsync/replace` with that part as
   * `payload.state` (see isReplaceAction). Default: none; the whole confirmed state is
   * saved and wrapReducer replaces it (the status slice stays live).
   */
  select?: (state: any) => unknown;
  /** serialize turns the saved value into a string. Default JSON.stringify. */
  serialize?: (value: unknown) => string;
  /** deserialize turns a saved string back into the value. Default JSON.parse. */
  deserialize?: (text: string) => unknown;
  /** throttleMs: the state is saved at most this often (and on close()). Default 1000. */
  throttleMs?: number;
}

/** stateKey is the default localStorage key of channel's saved state. */
export function stateKey(channel: string): string {
  return `actionsync:state:${channel}`;
}

/**
 * createWebStateStorage keeps the saved state under key in a DOM Storage (localStorage):
 * a first line of JSON `{"version", "seq", "epoch"}`, then the state's text as is (not
 * escaped into a JSON string). A value that does not parse is returned as null.
 */
export function createWebStateStorage(key: string, storage: WebStorage): StateStorage {
  return {
    load() {
      const text = storage.getItem(key);
      if (text === null) return null;
      const nl = text.indexOf("\n");
      const head: unknown = nl < 0 ? null : JSON.parse(text.slice(0, nl));
      if (!isHead(head)) throw new TypeError(`actionsync: the saved state under ${JSON.stringify(key)} has no valid header`);
      return { version: head.version, seq: head.seq, epoch: head.epoch, state: text.slice(nl + 1) };
    },
    save(saved) {
      if (saved === null) storage.removeItem(key);
      else storage.setItem(key, `${JSON.stringify({ version: saved.version, seq: saved.seq, epoch: saved.epoch })}\n${saved.state}`);
    },
  };
}

/** createMemoryStateStorage keeps the saved state in memory (tests, or one process's reloads). */
export function createMemoryStateStorage(initial: SavedState | null = null): StateStorage & { readonly saved: SavedState | null } {
  let saved = initial;
  return {
    load: () => saved,
    save: (s) => {
      saved = s;
    },
    get saved() {
      return saved;
    },
  };
}

function isHead(v: unknown): v is { version: string; seq: number; epoch: string } {
  if (typeof v !== "object" || v === null) return false;
  const h = v as Record<string, unknown>;
  return typeof h.version === "string" && typeof h.epoch === "string" && Number.isSafeInteger(h.seq) && (h.seq as number) >= 0;
}

/** Restored is a saved state that fits: its value deserialized. */
export interface Restored {
  value: unknown;
  seq: number;
  epoch: string;
}

/**
 * Persistence saves the confirmed state of one middleware instance, throttled, and loads
 * it at start. Created by the middleware; not part of the public API.
 */
export interface Persistence {
  /**
   * load reads the storage: a Restored when it holds a state of this version that
   * deserializes, else null (a state of another version, or one that does not load, is
   * removed). A promise when the storage's load is asynchronous.
   */
  load(): Restored | null | Promise<Restored | null>;
  /** changed says the confirmed state moved: a save is due within throttleMs. */
  changed(): void;
  /**
   * forget removes the saved state and saves nothing more in this session (after a
   * reset: the store's state is stale, and a reload must not bring it back).
   */
  forget(): void;
  /** revive saves again after forget (the state was rebuilt from a server snapshot). */
  revive(): void;
  /** close saves what changed since the last save; resolves when the saves are done. */
  close(): Promise<void>;
}

/** PersistenceSource is what a save reads: the confirmed state and its position. */
export interface PersistenceSource {
  /** confirmed returns the confirmed state (the whole root state). */
  confirmed(): unknown;
  /** position returns the seq of the last action in the confirmed state and its epoch ("": not known yet). */
  position(): { seq: number; epoch: string };
}

/** createPersistence wires options to a source of confirmed states; options.storage must be set. */
export function createPersistence(
  options: PersistOptions & { storage: StateStorage },
  source: PersistenceSource,
  logger: Logger,
): Persistence {
  const { storage, version } = options;
  const serialize = options.serialize ?? JSON.stringify;
  const deserialize = options.deserialize ?? JSON.parse;
  const throttleMs = options.throttleMs ?? 1000;
  let saving: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let dirty = false;
  let forgotten = false;
  let closed = false;
  let savedSeq = -1;
  let savedEpoch = "";

  function enqueue(saved: SavedState | null) {
    saving = saving.then(async () => {
      try {
        await storage.save(saved);
      } catch (err) {
        logger.error("actionsync: could not save the confirmed state", err);
      }
    });
  }

  function save() {
    timer = undefined;
    if (!dirty || forgotten) return;
    const { seq, epoch } = source.position();
    // Without its epoch a seq means nothing to the server: wait for the first ready.
    if (epoch === "" || (seq === savedSeq && epoch === savedEpoch)) return;
    dirty = false;
    let text: string;
    try {
      const confirmed = source.confirmed();
      text = serialize(options.select ? options.select(confirmed) : confirmed);
      if (typeof text !== "string") throw new TypeError("serialize did not return a string");
    } catch (err) {
      logger.error("actionsync: could not serialize the confirmed state", err);
      return;
    }
    savedSeq = seq;
    savedEpoch = epoch;
    enqueue({ version, seq, epoch, state: text });
  }

  function check(saved: unknown): Restored | null {
    if (saved === null || saved === undefined) return null;
    const s = saved as SavedState;
    if (s.version !== version) {
      logger.warn(`actionsync: discarding the saved state of version ${JSON.stringify(s.version)} (this app saves ${JSON.stringify(version)})`);
      enqueue(null);
      return null;
    }
    if (!Number.isSafeInteger(s.seq) || s.seq < 0 || typeof s.epoch !== "string" || typeof s.state !== "string") {
      logger.error("actionsync: discarding a malformed saved state", s);
      enqueue(null);
      return null;
    }
    try {
      const value = deserialize(s.state);
      savedSeq = s.seq;
      savedEpoch = s.epoch;
      return { value, seq: s.seq, epoch: s.epoch };
    } catch (err) {
      logger.error("actionsync: discarding a saved state that does not deserialize", err);
      enqueue(null);
      return null;
    }
  }

  function failed(err: unknown): null {
    logger.error("actionsync: could not load the saved state; replaying the history", err);
    return null;
  }

  return {
    load() {
      let loaded: ReturnType<StateStorage["load"]>;
      try {
        loaded = storage.load();
      } catch (err) {
        return failed(err);
      }
      if (typeof (loaded as Promise<unknown> | null)?.then === "function") return (loaded as Promise<SavedState | null>).then(check, failed);
      return check(loaded);
    },
    changed() {
      if (forgotten || closed) return;
      dirty = true;
      timer ??= setTimeout(save, throttleMs);
    },
    forget() {
      if (forgotten) return;
      forgotten = true;
      clearTimeout(timer);
      timer = undefined;
      enqueue(null);
    },
    revive() {
      forgotten = false;
    },
    close() {
      if (!closed) {
        closed = true;
        clearTimeout(timer);
        save();
      }
      return saving;
    },
  };
}
