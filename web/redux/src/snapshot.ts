// Server snapshots: the middleware writes the confirmed state as a channel snapshot every
// few hundred actions, and a client that starts from scratch (or from a position the
// history no longer reaches) rebuilds from the snapshot instead of the whole history.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Snapshot, SyncService } from "./gen/actionsync/v1/sync_pb.js";
import type { Logger } from "./outbox.js";

/** StateCodec says what part of the confirmed state is saved, and how, under which version tag. */
export interface StateCodec {
  version: string;
  select?: (state: any) => unknown;
  serialize: (value: unknown) => string;
  deserialize: (text: string) => unknown;
}

/** SnapshotOptions turns on server snapshots (SyncMiddlewareOptions.snapshots). */
export interface SnapshotOptions {
  /**
   * every: when one of this client's own actions comes back at a seq that reaches a
   * multiple of every (500, 1000, ...), this client writes a snapshot of its confirmed
   * state. One writer per boundary: the client whose action reached it. Keep it well
   * below the server's --history-size, so that history still continues after the last
   * snapshot. Default 500; 0: never on a count.
   */
  every?: number;
  /**
   * intervalMs: also write a snapshot when this long (plus up to half as much again, at
   * random, to spread the clients) has passed since this client last wrote or received
   * one and actions were confirmed since. Default 0: none.
   */
  intervalMs?: number;
  /**
   * write: false reads snapshots (subscribes with snapshots: true) but never writes one.
   * Default true.
   */
  write?: boolean;
  /**
   * version tags the shape of the snapshot's state: a snapshot of another version is
   * treated as a reset. Default: persist.version; required without persist.
   */
  version?: string;
  /** select picks the part of the confirmed state to write. Default: persist.select; else the whole state. */
  select?: (state: any) => unknown;
  /** serialize turns it into the JSON text written as UTF-8. Default: persist.serialize, else JSON.stringify. */
  serialize?: (value: unknown) => string;
  /** deserialize reads a received snapshot's text. Default: persist.deserialize, else JSON.parse. */
  deserialize?: (text: string) => unknown;
}

/** Decoded is a received snapshot's state, or why it cannot be used. */
export type DecodedSnapshot = { value: unknown; problem?: undefined } | { value?: undefined; problem: string };

/** decodeSnapshot reads a received snapshot with codec: its version must match, its bytes be UTF-8 text that deserializes. */
export function decodeSnapshot(s: Snapshot, codec: StateCodec): DecodedSnapshot {
  if (s.version !== codec.version) return { problem: `its version is ${JSON.stringify(s.version)}, this app reads ${JSON.stringify(codec.version)}` };
  try {
    return { value: codec.deserialize(new TextDecoder("utf-8", { fatal: true }).decode(s.state)) };
  } catch (err) {
    return { problem: `it does not deserialize (${err instanceof Error ? err.message : String(err)})` };
  }
}

/** SnapshotWriter writes snapshots of one channel; created by the middleware. */
export interface SnapshotWriter {
  /**
   * due tells whether a snapshot is due after the confirmed state moved from prevSeq to
   * seq: ownReached says one of this client's actions reached a multiple of every.
   */
  due(seq: number, ownReached: boolean): boolean;
  /** reaches tells whether an action at seq, after prevSeq, reaches a multiple of every. */
  reaches(prevSeq: number, seq: number): boolean;
  /** write sends a snapshot of state (not yet selected nor serialized) at seq and epoch; one at a time. */
  write(state: unknown, seq: number, epoch: string): void;
  /** seen records a snapshot at seq received from the server (the interval starts over). */
  seen(seq: number): void;
  /** close aborts the write in flight; resolves when it has ended. */
  close(): Promise<void>;
}

/** createSnapshotWriter returns the writer of channel's snapshots. */
export function createSnapshotWriter(o: {
  client: Client<typeof SyncService>;
  channel: string;
  /** clientId returns the client id to send. */
  clientId(): string;
  codec: StateCodec;
  every: number;
  intervalMs: number;
  logger: Logger;
}): SnapshotWriter {
  const abort = new AbortController();
  let inFlight: Promise<void> | undefined;
  // lastSeq: the newest snapshot this client knows of (written, refused as not newer, or received).
  let lastSeq = 0;
  let lastAt = Date.now();
  const nextInterval = () => o.intervalMs * (1 + Math.random() / 2);
  let interval = nextInterval();

  async function put(state: string, seq: number, epoch: string) {
    try {
      await o.client.putSnapshot(
        { channel: o.channel, seq: BigInt(seq), epoch, version: o.codec.version, state: new TextEncoder().encode(state), clientId: o.clientId() },
        { signal: abort.signal },
      );
    } catch (e) {
      if (abort.signal.aborted) return;
      const err = ConnectError.from(e);
      // Another client wrote one at this seq or newer: nothing to do.
      if (err.code === Code.AlreadyExists) return;
      o.logger.warn(`actionsync: could not write a snapshot of ${o.channel} at seq ${seq} (${codeToString(err.code)}: ${err.rawMessage})`);
    }
  }

  return {
    reaches(prevSeq, seq) {
      return o.every > 0 && Math.floor(seq / o.every) > Math.floor(prevSeq / o.every);
    },
    due(seq, ownReached) {
      if (seq <= lastSeq) return false;
      return ownReached || (o.intervalMs > 0 && Date.now() - lastAt >= interval);
    },
    write(state, seq, epoch) {
      if (inFlight || abort.signal.aborted || seq <= lastSeq) return;
      let text: string;
      try {
        text = o.codec.serialize(o.codec.select ? o.codec.select(state) : state);
        if (typeof text !== "string") throw new TypeError("serialize did not return a string");
      } catch (err) {
        o.logger.error("actionsync: could not serialize the confirmed state for a snapshot", err);
        return;
      }
      lastSeq = seq;
      lastAt = Date.now();
      interval = nextInterval();
      inFlight = put(text, seq, epoch).finally(() => (inFlight = undefined));
    },
    seen(seq) {
      lastSeq = Math.max(lastSeq, seq);
      lastAt = Date.now();
    },
    async close() {
      abort.abort();
      await inFlight;
    },
  };
}
