// The options of createSyncMiddleware: their documentation, defaults and checks.
import type { Transport } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { UnknownAction } from "redux";
import type { BackoffOptions } from "./backoff.js";
import { defaultConnectivity, type Connectivity } from "./connectivity.js";
import { randomId } from "./ids.js";
import { createMemoryStorage, defaultStorage, type Logger, type OutboxStorage, type WebStorage } from "./outbox.js";
import { createWebStateStorage, stateKey, type PersistOptions, type StateStorage } from "./persist.js";
import type { SnapshotOptions, StateCodec } from "./snapshot.js";
import { devicePattern } from "./token.js";
import { defaultShareEnv, type ShareEnv } from "./share.js";

/** SyncMiddlewareOptions configures one middleware instance: one store, one channel. */
export interface SyncMiddlewareOptions {
  /**
   * baseUrl is the server's URL, e.g. "https://sync.example.com". Used to build a
   * connect-web transport (createConnectTransport from @connectrpc/connect-web) when
   * transport is not given. One of baseUrl and transport is required.
   */
  baseUrl?: string;
  /**
   * transport is any @connectrpc/connect Transport, e.g. from @connectrpc/connect-node
   * `createConnectTransport({ baseUrl, httpVersion: "1.1" })`. Default: a connect-web
   * transport for baseUrl.
   */
  transport?: Transport;
  /** channel to sync, e.g. "board:42". Required; the server checks its name. */
  channel: string;
  /**
   * types lists the action types to sync. An action is synced when its type is listed or
   * predicate returns true; at least one of types and predicate is required. Default: none.
   * Remote actions of other types are ignored (with a warning).
   */
  types?: readonly string[];
  /**
   * predicate tells whether to sync an action (local ones, and remote ones before they are
   * dispatched). Default: none. Types starting with "actionsync/" are never synced.
   */
  predicate?: (action: UnknownAction) => boolean;
  /**
   * clientId identifies this client to the server, which stamps it on every action it
   * sends: 1..64 characters of [A-Za-z0-9_.:-]. With authentication on, the server
   * accepts only the token's sub or "sub:device". Default: with getToken, the current
   * token's sub, or "sub:device" with device (known once the first token is at hand);
   * else a random UUID per instance. The middleware tells its own actions by their action
   * ids, never by client id: any client id works for confirming them.
   */
  clientId?: string;
  /**
   * getToken resolves with a bearer token (a JWT) that the server accepts; it is sent as
   * `Authorization: Bearer <token>` on every call (Subscribe, Dispatch, PutSnapshot). It
   * is called at start, again before the token expires (when 10% of its lifetime is left,
   * at most 30 s before its `exp`, read from the JWT without verifying it; the stream then
   * reopens with the new token and resumes after the last seq, with no gap), and when the
   * server answers `unauthenticated` (on the next attempt, after the usual backoff). While
   * it fails (throws, takes over 30 s), calls fail with `unauthenticated` and the status
   * shows it. Default: none (no Authorization header).
   */
  getToken?: () => Promise<string>;
  /**
   * device names this device when the client id comes from the token: the client id is
   * then "sub:device", so one user's devices can be told apart. 1..15 characters of
   * [A-Za-z0-9_.-]; only with getToken and without clientId. Default: none (the client
   * id is the sub).
   */
  device?: string;
  /**
   * storage persists the outbox (unconfirmed local actions) across reloads. Default, when
   * globalThis.localStorage exists: localStorage under "actionsync:outbox:<channel>:<tabId>",
   * one key per tab (tabId is kept in sessionStorage, so a reload finds its outbox again);
   * with Web Locks (navigator.locks; on insecure origins, lease locks in localStorage),
   * each tab holds its key's lock until close() and, at start, adopts the outboxes of the
   * same channel left by closed tabs. Without locks nothing is adopted. Without
   * localStorage (Node): memory. null: memory.
   */
  storage?: OutboxStorage | null;
  /**
   * autoStart: open the subscription and send the outbox as soon as the middleware is in
   * a store. false: nothing happens until `start()` (server-side rendering: a store built
   * on the server must not open a stream). Default true.
   */
  autoStart?: boolean;
  /**
   * shareStream: the tabs of one browser (one origin) that follow this channel share one
   * Subscribe stream: the tab holding a lock (a Web Lock; on insecure origins, which have
   * no Web Locks, a lease in localStorage) holds the stream and relays it to the
   * others over a BroadcastChannel; when it closes, another tab takes over (see the
   * README's *One stream per browser*). Browsers allow about six HTTP/1.1 connections per
   * host: without sharing, a seventh tab on a plain-HTTP deployment stalls. Each tab keeps
   * its own outbox and sends its own Dispatch requests. Default: true in a page with
   * BroadcastChannel and navigator.locks or localStorage, when getToken is not given (tabs signed in as different
   * users must not read through each other's stream); else false (a stream per tab).
   */
  shareStream?: boolean;
  /**
   * backoff shapes the delays between reconnects and Dispatch retries: exponential with
   * full jitter. Default { initialMs: 250, maxMs: 10000 }.
   */
  backoff?: BackoffOptions;
  /** maxBatch is the most actions sent in one Dispatch. Default 100 (the server's default limit). */
  maxBatch?: number;
  /** logger receives warnings (ignored remote actions, lost connection) and errors. Default console. */
  logger?: Logger;
  /**
   * idleTimeoutMs: a subscription silent for that long (no action, no heartbeat) is
   * considered dead and reopened. Keep it above the server's --heartbeat (15 s by default).
   * Default 45000; 0: never.
   */
  idleTimeoutMs?: number;
  /** dispatchTimeoutMs bounds one Dispatch call, then it is retried. Default 30000; 0: none. */
  dispatchTimeoutMs?: number;
  /**
   * connectivity tells the middleware that the device went offline or came back online.
   * On "offline" the status becomes offline and the stream is reopened (a stream can stay
   * open on a dead network); on "online" the backoff is reset and the subscription and
   * the Dispatch retry waiting for their delay go at once. If onLine is false at start,
   * the status is offline from the start. Default: globalThis (with navigator.onLine)
   * when it has addEventListener and navigator.onLine, i.e. in browsers and web workers;
   * else none. null: none.
   */
  connectivity?: Connectivity | null;
  /**
   * persist saves the confirmed state with its seq and epoch (throttled, and on close), and
   * restores it at start through `actionsync/replace`: a reload shows the last known state
   * at once, even offline, and resumes after its seq instead of replaying the whole
   * history. A saved state of another `version` is discarded; after a reset the saved
   * state is removed (the state is stale). Default: none (nothing persisted). See
   * PersistOptions for the storage (localStorage in browsers by default), select,
   * serialize and deserialize.
   */
  persist?: PersistOptions | null;
  /**
   * snapshots subscribes with snapshots: true, so that starting from scratch (or from a
   * position the history no longer reaches) rebuilds from the channel's snapshot and the
   * actions after it (applied through `actionsync/replace`, source "snapshot"; a snapshot
   * of another version is treated as a reset), and writes snapshots of the confirmed
   * state as UTF-8 JSON every few hundred actions. The version, select, serialize and
   * deserialize are persist's unless given here. Default: none.
   */
  snapshots?: SnapshotOptions | null;
  /**
   * presence makes this client a member of the channel's presence with this info (a small
   * JSON object, e.g. `{ name: "Ada", color: "#e91e63" }`; the server's limit is 256 bytes
   * by default) and keeps who is on the channel in the status slice's `presence`. Change
   * the info with `setPresence`. When tabs share the stream (shareStream), the browser is
   * one member: see the README's *Presence*. Default: none (no presence).
   */
  presence?: JsonObject | null;
}

const clientIdPattern = /^[A-Za-z0-9_.:-]{1,64}$/;

/** CheckedOptions are the options with their defaults, checked. */
export interface CheckedOptions {
  transport: Transport;
  channel: string;
  /** clientId is undefined when it comes from the token (getToken without clientId). */
  clientId: string | undefined;
  getToken: (() => Promise<string>) | undefined;
  device: string | undefined;
  types: ReadonlySet<string>;
  predicate?: (action: UnknownAction) => boolean;
  storage: OutboxStorage;
  autoStart: boolean;
  /** share is where the tabs share the stream; undefined: a stream of its own. */
  share: ShareEnv | undefined;
  backoff: BackoffOptions;
  maxBatch: number;
  logger: Logger;
  idleTimeoutMs: number;
  dispatchTimeoutMs: number;
  connectivity: Connectivity | undefined;
  persist: (PersistOptions & { storage: StateStorage }) | undefined;
  /** codec is the state's version, select and serialization, shared by persist and snapshots. */
  codec: StateCodec | undefined;
  snapshots: { every: number; intervalMs: number; write: boolean } | undefined;
  /** presence is the initial presence info; undefined: no presence. */
  presence: JsonObject | undefined;
}

/** checkOptions fills in the defaults and throws a TypeError or RangeError naming a bad option. */
export function checkOptions(options: SyncMiddlewareOptions): CheckedOptions {
  const { channel } = options;
  if (typeof channel !== "string" || channel === "") throw new TypeError("actionsync: channel is required");
  if (options.types === undefined && options.predicate === undefined) {
    throw new TypeError("actionsync: give types or predicate: which actions to sync");
  }
  if (options.types !== undefined && !(Array.isArray(options.types) && options.types.every((t) => typeof t === "string"))) {
    throw new TypeError("actionsync: types must be an array of strings");
  }
  if (options.predicate !== undefined && typeof options.predicate !== "function") throw new TypeError("actionsync: predicate must be a function");
  const { getToken, device } = options;
  if (getToken !== undefined && typeof getToken !== "function") throw new TypeError("actionsync: getToken must be a function returning a promise of a token");
  if (device !== undefined) {
    if (getToken === undefined || options.clientId !== undefined) throw new TypeError("actionsync: device is for a client id from the token: give it with getToken and without clientId");
    if (typeof device !== "string" || !devicePattern.test(device)) throw new TypeError(`actionsync: device ${JSON.stringify(device)} must match ${devicePattern.source}`);
  }
  // With getToken and no clientId, the client id comes from each token (TokenSource.clientId).
  const clientId = options.clientId ?? (getToken === undefined ? randomId() : undefined);
  if (clientId !== undefined && !clientIdPattern.test(clientId)) {
    throw new TypeError(`actionsync: clientId ${JSON.stringify(clientId)} must match ${clientIdPattern.source}`);
  }
  let transport = options.transport;
  if (transport === undefined) {
    if (typeof options.baseUrl !== "string" || options.baseUrl === "") throw new TypeError("actionsync: give baseUrl or transport");
    transport = createConnectTransport({ baseUrl: options.baseUrl });
  }
  const maxBatch = options.maxBatch ?? 100;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`actionsync: maxBatch must be a positive integer, got ${maxBatch}`);
  const backoff = { initialMs: options.backoff?.initialMs ?? 250, maxMs: options.backoff?.maxMs ?? 10_000 };
  if (!(backoff.initialMs > 0) || !(backoff.maxMs >= backoff.initialMs) || !Number.isFinite(backoff.maxMs)) {
    throw new RangeError(`actionsync: backoff wants 0 < initialMs <= maxMs < Infinity, got ${JSON.stringify(backoff)}`);
  }
  const idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
  const dispatchTimeoutMs = options.dispatchTimeoutMs ?? 30_000;
  if (!(idleTimeoutMs >= 0) || !(dispatchTimeoutMs >= 0)) throw new RangeError("actionsync: timeouts must be >= 0");
  const { connectivity } = options;
  if (connectivity != null && (typeof connectivity.addEventListener !== "function" || typeof connectivity.removeEventListener !== "function")) {
    throw new TypeError("actionsync: connectivity must have addEventListener and removeEventListener");
  }
  const logger = options.logger ?? console;
  const presence = options.presence ?? undefined;
  if (presence !== undefined) checkPresenceInfo(presence);
  return {
    presence,
    transport,
    channel,
    clientId,
    getToken,
    device,
    types: new Set(options.types ?? []),
    predicate: options.predicate,
    storage: options.storage === undefined ? defaultStorage(channel, logger) : options.storage === null ? createMemoryStorage() : options.storage,
    autoStart: options.autoStart ?? true,
    // shareStream where the browser has what it takes; by default only without tokens.
    share: (options.shareStream ?? getToken === undefined) ? defaultShareEnv() : undefined,
    backoff,
    maxBatch,
    logger,
    idleTimeoutMs,
    dispatchTimeoutMs,
    connectivity: connectivity === undefined ? defaultConnectivity() : (connectivity ?? undefined),
    ...checkState(options.persist, options.snapshots, channel),
  };
}

function checkState(
  persist: PersistOptions | null | undefined,
  snapshots: SnapshotOptions | null | undefined,
  channel: string,
): Pick<CheckedOptions, "persist" | "codec" | "snapshots"> {
  if (persist == null && snapshots == null) return { persist: undefined, codec: undefined, snapshots: undefined };
  // persist and snapshots save the same state: one version, select and serialization.
  const pick = <K extends "version" | "select" | "serialize" | "deserialize">(k: K) => {
    const a = persist?.[k];
    const b = snapshots?.[k];
    if (a !== undefined && b !== undefined && a !== b) throw new TypeError(`actionsync: persist.${k} and snapshots.${k} differ; give it once`);
    return (b ?? a) as PersistOptions[K];
  };
  const version = pick("version");
  if (typeof version !== "string" || version === "") {
    throw new TypeError(`actionsync: ${persist != null ? "persist" : "snapshots"}.version is required: a tag of your state's shape`);
  }
  const codec: StateCodec = { version, select: pick("select"), serialize: pick("serialize") ?? JSON.stringify, deserialize: pick("deserialize") ?? JSON.parse };
  let checkedSnapshots: CheckedOptions["snapshots"];
  if (snapshots != null) {
    const every = snapshots.every ?? 500;
    const intervalMs = snapshots.intervalMs ?? 0;
    if (!Number.isInteger(every) || every < 0) throw new RangeError(`actionsync: snapshots.every must be an integer >= 0, got ${every}`);
    if (!(intervalMs >= 0) || !Number.isFinite(intervalMs)) throw new RangeError(`actionsync: snapshots.intervalMs must be >= 0, got ${intervalMs}`);
    checkedSnapshots = { every, intervalMs, write: snapshots.write ?? true };
  }
  return { persist: checkPersist(persist, codec, channel), codec, snapshots: checkedSnapshots };
}

function checkPersist(persist: PersistOptions | null | undefined, codec: StateCodec, channel: string): CheckedOptions["persist"] {
  if (persist == null) return undefined;
  if (persist.throttleMs !== undefined && !(persist.throttleMs >= 0)) throw new RangeError("actionsync: persist.throttleMs must be >= 0");
  let storage = persist.storage;
  if (storage === undefined) {
    let local: WebStorage | undefined;
    try {
      local = (globalThis as { localStorage?: WebStorage }).localStorage ?? undefined;
    } catch {
      // Reading localStorage throws in some sandboxed iframes and privacy modes.
    }
    if (local === undefined) return undefined;
    storage = createWebStateStorage(persist.key ?? stateKey(channel), local);
  }
  return { ...persist, ...codec, storage };
}

/** checkPresenceInfo throws a TypeError unless info is a plain JSON object. */
export function checkPresenceInfo(info: unknown): asserts info is JsonObject {
  if (typeof info !== "object" || info === null || Array.isArray(info) || Object.getPrototypeOf(info) !== Object.prototype) {
    throw new TypeError("actionsync: presence info must be a plain object, e.g. { name: \"Ada\" }");
  }
}
