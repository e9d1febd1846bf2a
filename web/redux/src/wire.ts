// Conversion between Redux actions and the actionsync.v1.Action envelope, and the
// checks that make it lossless: what a client applies optimistically must be exactly
// what every other client decodes, or the stores would not converge.
import { fromJson, toJson, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { ActionSchema, Action as WireAction } from "./gen/actionsync/v1/action_pb.js";
import type { LocalMeta, PendingEntry, RemoteMeta, SyncedAction } from "./actions.js";

/** MaxDepth is the deepest nesting of a payload or meta the server accepts (its default). */
export const MaxDepth = 100;

/** isPlainObject tells whether v is an object literal (or has a null prototype). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

// A lone surrogate cannot be encoded as UTF-8: the wire would carry U+FFFD instead.
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function fail(path: string, why: string): never {
  throw new TypeError(`actionsync: ${path} ${why}; synced actions must carry JSON data`);
}

function keyPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

// checkValue returns v, or a copy of it without the object properties whose value is
// undefined (as JSON.stringify drops them); it throws for what JSON cannot carry.
function checkValue(v: unknown, path: string, depth: number, parents: Set<object>): unknown {
  // The server counts like this: the payload itself is at depth 0, every value inside a
  // list or struct one deeper, and no value may be deeper than MaxDepth.
  if (depth > MaxDepth) fail(path, `nests deeper than ${MaxDepth} levels`);
  switch (typeof v) {
    case "string":
      if (loneSurrogate.test(v)) fail(path, "is a string with a lone UTF-16 surrogate (not encodable as UTF-8)");
      return v;
    case "boolean":
      return v;
    case "number":
      if (!Number.isFinite(v)) fail(path, `is ${v} (JSON has no NaN or Infinity)`);
      return v;
    case "bigint":
      fail(path, "is a BigInt (send a number or a string)");
    case "undefined":
      fail(path, "is undefined (JSON would turn it into null: use null)");
    case "function":
      fail(path, "is a function");
    case "symbol":
      fail(path, "is a symbol");
  }
  if (v === null) return v;
  const o = v as object;
  if (parents.has(o)) fail(path, "is a cycle (it contains itself)");
  parents.add(o);
  let out: unknown = o;
  if (Array.isArray(o)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < o.length; i++) {
      const x = checkValue(o[i], `${path}[${i}]`, depth + 1, parents);
      if (x !== o[i]) copy ??= o.slice();
      if (copy) copy[i] = x;
    }
    out = copy ?? o;
  } else if (isPlainObject(o)) {
    if (Object.getOwnPropertySymbols(o).length > 0) fail(path, "has symbol keys");
    let copy: Record<string, unknown> | undefined;
    const keys = Object.keys(o);
    keys.forEach((key, i) => {
      if (loneSurrogate.test(key)) fail(keyPath(path, key), "is a key with a lone UTF-16 surrogate");
      const value = o[key];
      const x = value === undefined ? undefined : checkValue(value, keyPath(path, key), depth + 1, parents);
      if (x !== value || value === undefined) {
        if (!copy) {
          copy = {};
          for (const k of keys.slice(0, i)) copy[k] = o[k];
        }
      }
      if (copy && x !== undefined) copy[key] = x;
    });
    out = copy ?? o;
  } else {
    const name = (o as { constructor?: { name?: string } }).constructor?.name ?? "object";
    fail(path, `is a ${name} (only plain objects, arrays, strings, finite numbers, booleans and null are JSON)`);
  }
  parents.delete(o);
  return out;
}

/**
 * toJsonData returns v as the JSON data every client will decode: v itself, or a copy
 * without the object properties whose value is undefined (JSON.stringify drops them; RTK
 * `prepare` callbacks with optional fields set them). It throws a TypeError naming the
 * path for what JSON cannot carry exactly: functions, symbols, BigInt, undefined as a
 * value or array element (JSON would turn it into null), NaN and ±Infinity, cycles,
 * class instances (Date, Map, ...), lone surrogates, or nesting deeper than
 * {@link MaxDepth}.
 */
export function toJsonData(v: unknown, path = "value"): JsonValue {
  return checkValue(v, path, 0, new Set()) as JsonValue;
}

/** Syncable is the checked content of an action to sync: its JSON payload and user meta. */
export interface Syncable {
  /** payload as every client will decode it; undefined: no payload. */
  payload: JsonValue | undefined;
  /** meta without the `actionsync` key, as every client will decode it; undefined: none. */
  meta: JsonObject | undefined;
}

/**
 * checkSyncable throws a TypeError unless action can be relayed losslessly: a plain
 * object `{type, payload?, meta?}` with a non-empty string type, a JSON payload (absent
 * or undefined means "no payload") and a plain-object JSON meta. It returns the payload
 * and meta as JSON data (see {@link toJsonData}); `meta.actionsync` is left out.
 */
export function checkSyncable(action: Record<string, unknown>): Syncable {
  const type = action.type;
  if (typeof type !== "string" || type === "") throw new TypeError("actionsync: a synced action needs a non-empty string type");
  const where = `action ${JSON.stringify(type)}`;
  for (const key of Object.keys(action)) {
    if (key !== "type" && key !== "payload" && key !== "meta" && action[key] !== undefined) {
      throw new TypeError(
        `actionsync: ${where} has a top-level key ${JSON.stringify(key)}; synced actions are {type, payload, meta} (put the data in payload)`,
      );
    }
  }
  const payload = action.payload === undefined ? undefined : toJsonData(action.payload, `${where} payload`);
  const meta = action.meta;
  if (meta === undefined || meta === null) return { payload, meta: undefined };
  if (!isPlainObject(meta)) throw new TypeError(`actionsync: ${where} meta must be a plain object`);
  const user = toJsonData(userMeta(meta) ?? {}, `${where} meta`) as JsonObject;
  return { payload, meta: Object.keys(user).length > 0 ? user : undefined };
}

/**
 * withoutMarker returns action without `meta.actionsync` (and without meta if nothing
 * else is left in it): a new object, action is not changed.
 */
export function withoutMarker<A extends Record<string, unknown>>(action: A): A {
  const { meta: _meta, ...rest } = action;
  const meta = userMeta(action.meta);
  return (meta === undefined ? rest : { ...rest, meta }) as A;
}

/** userMeta returns meta without the middleware's `actionsync` key (undefined if empty). */
export function userMeta(meta: unknown): JsonObject | undefined {
  if (!isPlainObject(meta)) return undefined;
  const { actionsync: _marker, ...rest } = meta;
  return Object.keys(rest).length > 0 ? (rest as JsonObject) : undefined;
}

/** toWire builds the envelope of a pending action (built from what checkSyncable returned). */
export function toWire(entry: PendingEntry): MessageInitShape<typeof ActionSchema> {
  const { action } = entry;
  return {
    type: action.type,
    id: entry.id,
    payload: action.payload === undefined ? undefined : fromJson(ValueSchema, action.payload as JsonValue),
    meta: userMeta(action.meta),
  };
}

/** Decoded is a remote action, or why it cannot be one. */
export type Decoded = { action: SyncedAction<RemoteMeta>; problem?: undefined } | { action?: undefined; problem: string };

/**
 * fromWire turns an envelope from the server into the Redux action dispatched into the
 * store: `{type, payload, meta: {...meta, actionsync: {remote, seq, id, clientId,
 * channel}}}` (payload omitted when the envelope has none). It reports a problem instead
 * of throwing when the envelope is malformed.
 */
export function fromWire(a: WireAction, channel: string): Decoded {
  if (a.type === "") return { problem: "has no type" };
  if (a.channel !== "" && a.channel !== channel) return { problem: `is on channel ${JSON.stringify(a.channel)}` };
  if (a.seq <= 0n) return { problem: "has no seq" };
  let payload: JsonValue | undefined;
  if (a.payload !== undefined) {
    try {
      payload = toJson(ValueSchema, a.payload);
    } catch (err) {
      return { problem: `has a bad payload (${err instanceof Error ? err.message : String(err)})` };
    }
  }
  const seq = Number(a.seq);
  if (!Number.isSafeInteger(seq)) return { problem: `has a seq beyond 2^53 (${a.seq})` };
  const marker: RemoteMeta = { remote: true, seq, id: a.id, clientId: a.clientId, channel };
  const meta = { ...(isPlainObject(a.meta) ? a.meta : {}), actionsync: marker };
  const action: SyncedAction<RemoteMeta> = payload === undefined ? { type: a.type, meta } : { type: a.type, payload, meta };
  return { action };
}

/** confirmedFromEntry turns a pending action into its confirmed form, for an ack-only confirmation. */
export function confirmedFromEntry(entry: PendingEntry, seq: number, clientId: string, channel: string): SyncedAction<RemoteMeta> {
  const { action } = entry;
  const marker: RemoteMeta = { remote: true, seq, id: entry.id, clientId, channel };
  const meta = { ...(userMeta(action.meta) ?? {}), actionsync: marker };
  return action.payload === undefined ? { type: action.type, meta } : { type: action.type, payload: action.payload, meta };
}

/** isPendingEntry checks the shape of an entry loaded from storage. */
export function isPendingEntry(v: unknown): v is PendingEntry {
  if (!isPlainObject(v) || typeof v.id !== "string" || v.id === "") return false;
  const action = v.action;
  if (!isPlainObject(action) || typeof action.type !== "string" || action.type === "") return false;
  const m = isPlainObject(action.meta) ? action.meta.actionsync : undefined;
  if (!(isPlainObject(m) && m.local === true && m.id === v.id)) return false;
  // A position that cannot be read cannot be sent: the resend could apply the action twice.
  const at = v.sentAfter;
  return at === undefined || (isPlainObject(at) && Number.isSafeInteger(at.seq) && (at.seq as number) >= 0 && typeof at.epoch === "string" && at.epoch !== "");
}

/** localMeta builds the marker of a local action. */
export function localMeta(id: string, channel: string): LocalMeta {
  return { id, local: true, channel };
}
