// The connection state machine: what one middleware instance knows about its link to the
// server, and the status the store shows for it.
import type { ConnectionStatus, SyncError } from "./actions.js";

/**
 * Phase is where the connection is:
 *
 * - `connecting`: started, the subscription has not been live yet;
 * - `connected`: the subscription has replayed the channel and is live, and nothing says
 *   the link is broken; the outbox is sent;
 * - `unreachable`: the subscription looks live, but a Dispatch could not reach the server
 *   (an open stream can look live on a dead network); the Dispatch is retried;
 * - `offline`: the subscription ended or failed, or the device went offline; it is
 *   reopened with backoff and nothing is sent meanwhile;
 * - `closed`: close() was called. No event leaves it.
 */
export type Phase = "connecting" | "connected" | "unreachable" | "offline" | "closed";

/**
 * ConnectionEvent is what the wiring tells the machine:
 *
 * - `deviceOffline`: the device went offline (the `offline` event, or `onLine` false at start);
 * - `streamReady`: the subscription has replayed the channel and is live;
 * - `streamDown`: the subscription ended or failed; it will be reopened after a delay;
 * - `dispatchUnreachable`: a Dispatch failed for a network reason (unavailable, unknown,
 *   deadline_exceeded, canceled) and the stream has echoed none of its actions;
 * - `linkWorks`: the server answered a Dispatch, or echoed an action whose Dispatch seemed to fail;
 * - `dispatchTrouble`: the server answered a Dispatch with an error that is retried
 *   (`unauthenticated`, e.g. an expired token; `resource_exhausted`; `aborted`; `internal`);
 * - `refused`: the server refused an action for good; it was rolled back;
 * - `dropped`: the client dropped a pending action (the reducer threw on it); it was rolled back;
 * - `close`: close() was called.
 */
export type ConnectionEvent =
  | { type: "deviceOffline"; error: SyncError }
  | { type: "streamReady" }
  | { type: "streamDown"; error: SyncError }
  | { type: "dispatchUnreachable"; error: SyncError }
  | { type: "linkWorks" }
  | { type: "dispatchTrouble"; error: SyncError }
  | { type: "refused"; error: SyncError }
  | { type: "dropped"; error: SyncError }
  | { type: "close" };

/** Connection is the machine's state: plain data, replaced (never mutated) by {@link transition}. */
export interface Connection {
  readonly phase: Phase;
  /** error is the last failure or refusal shown in the status slice; null when none. */
  readonly error: SyncError | null;
  /**
   * errorFromDispatch: error came from a Dispatch attempt (unreachable or retried trouble)
   * and goes once a Dispatch gets through (linkWorks). Other errors stay until the
   * subscription is live again (streamReady).
   */
  readonly errorFromDispatch: boolean;
  /** outageReported: the current outage has been logged (once per outage, until streamReady). */
  readonly outageReported: boolean;
}

/** initialConnection is the state at creation. */
export const initialConnection: Connection = { phase: "connecting", error: null, errorFromDispatch: false, outageReported: false };

type Handlers = { [K in ConnectionEvent["type"]]: (c: Connection, e: Extract<ConnectionEvent, { type: K }>) => Connection };

const same = (c: Connection): Connection => c;

const goOffline = (c: Connection, e: { error: SyncError }): Connection => ({ ...c, phase: "offline", error: e.error, errorFromDispatch: false });
const ready = (): Connection => ({ phase: "connected", error: null, errorFromDispatch: false, outageReported: false });
const down = (c: Connection, e: { error: SyncError }): Connection => ({ ...goOffline(c, e), outageReported: true });
const unreachable = (c: Connection, e: { error: SyncError }): Connection => ({ ...c, phase: "unreachable", error: e.error, errorFromDispatch: true });
const linkWorks = (c: Connection): Connection =>
  c.phase === "unreachable" || c.errorFromDispatch
    ? { ...c, phase: c.phase === "unreachable" ? "connected" : c.phase, error: c.errorFromDispatch ? null : c.error, errorFromDispatch: false }
    : c;
// The server answered: the link works, and the answer is the error to show.
const trouble = (c: Connection, e: { error: SyncError }): Connection => ({ ...c, phase: "connected", error: e.error, errorFromDispatch: true });
const refused = (c: Connection, e: { error: SyncError }): Connection => ({
  ...c,
  phase: c.phase === "unreachable" ? "connected" : c.phase,
  error: e.error,
  errorFromDispatch: false,
});
const dropped = (c: Connection, e: { error: SyncError }): Connection => ({ ...c, error: e.error, errorFromDispatch: false });
const close = (c: Connection): Connection => ({ ...c, phase: "closed" });

/**
 * table holds every transition: table[phase][event] returns the next state. A phase
 * whose entry is `same` ignores the event. Errors (refused, dropped) are recorded in
 * every phase, because the status slice records every `actionsync/rejected`.
 */
export const table: { readonly [P in Phase]: Handlers } = {
  connecting: {
    deviceOffline: goOffline,
    streamReady: ready,
    streamDown: down,
    // Nothing is sent before the stream is live: a late answer of an earlier attempt says
    // less than the stream does.
    dispatchUnreachable: same,
    linkWorks,
    dispatchTrouble: same,
    refused,
    dropped,
    close,
  },
  connected: {
    deviceOffline: goOffline,
    streamReady: ready,
    streamDown: down,
    dispatchUnreachable: unreachable,
    linkWorks,
    dispatchTrouble: trouble,
    refused,
    dropped,
    close,
  },
  unreachable: {
    deviceOffline: goOffline,
    streamReady: ready,
    streamDown: down,
    dispatchUnreachable: unreachable,
    linkWorks,
    dispatchTrouble: trouble,
    refused,
    dropped,
    close,
  },
  offline: {
    deviceOffline: goOffline,
    streamReady: ready,
    // Every failed reconnect reports streamDown: the error shown is the latest.
    streamDown: down,
    // The stream's failure says more than a Dispatch that was in flight when it failed.
    dispatchUnreachable: same,
    linkWorks,
    dispatchTrouble: same,
    refused,
    dropped,
    close,
  },
  closed: {
    deviceOffline: same,
    streamReady: same,
    streamDown: same,
    dispatchUnreachable: same,
    linkWorks: same,
    dispatchTrouble: same,
    refused: dropped,
    dropped,
    close: same,
  },
};

/** transition returns the state after event; the same object when nothing changes. */
export function transition(c: Connection, event: ConnectionEvent): Connection {
  const next = (table[c.phase][event.type] as (c: Connection, e: ConnectionEvent) => Connection)(c, event);
  return equal(next, c) ? c : next;
}

/** statusOf is the status the store shows in a phase. */
export function statusOf(phase: Phase): ConnectionStatus {
  switch (phase) {
    case "connecting":
      return "connecting";
    case "connected":
      return "connected";
    default:
      return "offline";
  }
}

/** sends tells whether the outbox is sent in a phase: while the subscription is live. */
export function sends(phase: Phase): boolean {
  return phase === "connected" || phase === "unreachable";
}

function equal(a: Connection, b: Connection): boolean {
  return (
    a.phase === b.phase &&
    a.errorFromDispatch === b.errorFromDispatch &&
    a.outageReported === b.outageReported &&
    (a.error === b.error || (a.error !== null && b.error !== null && a.error.code === b.error.code && a.error.message === b.error.message))
  );
}
