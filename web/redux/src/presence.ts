// Presence: who is on the channel, as Redux state (state[statusKey].presence), and this
// client's own info, sent when subscribing and changed with UpdatePresence.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import type { PresenceEvent, PresenceMember as WireMember, SyncService } from "./gen/actionsync/v1/sync_pb.js";
import type { Logger } from "./outbox.js";

/** PresenceMember is one member of the channel's presence. */
export interface PresenceMember {
  /** clientId identifies the member: a client (one per browser when tabs share the stream). */
  clientId: string;
  /** subject is the member's token `sub` with authentication on; "" without. */
  subject: string;
  /** info is what the member set: the `presence` option, then `setPresence`. */
  info: JsonObject;
}

/** PresenceState is the channel's presence: `state[statusKey].presence`. Plain data. */
export interface PresenceState {
  /** members are the listed members by client id (at most the server's --max-presence-members). */
  members: Record<string, PresenceMember>;
  /** order lists the members' client ids in the order they joined. */
  order: string[];
  /** count is how many members the channel has, listed or not (0 before the first snapshot). */
  count: number;
  /** self is this client's own member id ("" until the stream says): see selectOthers. */
  self: string;
}

/** PresenceChange is one presence event of the channel, as plain data. */
export type PresenceChange =
  | { kind: "snapshot"; members: PresenceMember[]; count: number }
  | { kind: "join"; member: PresenceMember; count: number }
  | { kind: "leave"; clientId: string; count: number }
  | { kind: "count"; count: number };

/** PresencePayload is the payload of `actionsync/presence`. */
export interface PresencePayload {
  channel: string;
  /** change is the event that happened (snapshot, join, leave, count). */
  change: PresenceChange;
  /** presence is the channel's presence after it: what the status slice holds. */
  presence: PresenceState;
}

/** emptyPresence is the presence before the stream's first snapshot. */
export const emptyPresence: PresenceState = { members: {}, order: [], count: 0, self: "" };

/**
 * applyPresence returns state after change: a snapshot replaces the members (in join
 * order), a join adds or replaces one (a member already present changed its info), a
 * leave removes one; every event sets count.
 */
export function applyPresence(state: PresenceState, change: PresenceChange): PresenceState {
  switch (change.kind) {
    case "snapshot": {
      const members: Record<string, PresenceMember> = {};
      for (const m of change.members) members[m.clientId] = m;
      return { ...state, members, order: change.members.map((m) => m.clientId), count: change.count };
    }
    case "join": {
      const id = change.member.clientId;
      const order = Object.hasOwn(state.members, id) ? state.order : [...state.order, id];
      return { ...state, members: { ...state.members, [id]: change.member }, order, count: change.count };
    }
    case "leave": {
      if (!Object.hasOwn(state.members, change.clientId)) return { ...state, count: change.count };
      const { [change.clientId]: _, ...members } = state.members;
      return { ...state, members, order: state.order.filter((id) => id !== change.clientId), count: change.count };
    }
    case "count":
      return state.count === change.count ? state : { ...state, count: change.count };
  }
}

/** changeFromWire turns a PresenceEvent of the stream into a PresenceChange. */
export function changeFromWire(ev: PresenceEvent): PresenceChange {
  const count = ev.count;
  if (ev.snapshot) return { kind: "snapshot", members: ev.snapshot.members.map(memberFromWire), count };
  if (ev.join) return { kind: "join", member: memberFromWire(ev.join), count };
  if (ev.leave) return { kind: "leave", clientId: ev.leave.clientId, count };
  return { kind: "count", count };
}

function memberFromWire(m: WireMember): PresenceMember {
  return { clientId: m.clientId, subject: m.subject, info: m.info ?? {} };
}

/** snapshotOf is the change that rebuilds state from scratch (what a tab that starts following is told). */
export function snapshotOf(state: PresenceState): PresenceChange {
  return { kind: "snapshot", members: state.order.map((id) => state.members[id]), count: state.count };
}

// Selectors cache their result per PresenceState: the same array until presence changes
// (useSelector re-renders only then).
const everyoneCache = new WeakMap<PresenceState, readonly PresenceMember[]>();
const othersCache = new WeakMap<PresenceState, readonly PresenceMember[]>();

/** presenceMembers lists the listed members in join order, this client included. */
export function presenceMembers(state: PresenceState): readonly PresenceMember[] {
  let out = everyoneCache.get(state);
  if (!out) everyoneCache.set(state, (out = state.order.map((id) => state.members[id])));
  return out;
}

/** presenceOthers lists the listed members in join order, without this client (state.self). */
export function presenceOthers(state: PresenceState): readonly PresenceMember[] {
  let out = othersCache.get(state);
  if (!out) othersCache.set(state, (out = presenceMembers(state).filter((m) => m.clientId !== state.self)));
  return out;
}

/** PresenceHooks connect a subscription stream to the presence (subscriber.ts). */
export interface PresenceHooks {
  /** subscribing returns the client id and info to subscribe with, on each attempt. */
  subscribing(clientId: string): { clientId: string; info: JsonObject };
  /** onEvent takes a presence event of the stream; it returns the change applied. */
  onEvent(ev: PresenceEvent): PresenceChange;
  /** onEnd is told that the stream ended: the member's info is changed on the next one. */
  onEnd(): void;
}

/** PresenceController is the presence of one middleware instance. */
export interface PresenceController extends PresenceHooks {
  /** state is the presence now (what the status slice holds). */
  state(): PresenceState;
  /** info is this client's info now. */
  info(): JsonObject;
  /** set changes this client's info: at once if this tab holds the stream, else on the next subscribe. */
  set(info: JsonObject): void;
  /** follow applies a change another tab's stream relayed (self: that stream's member id). */
  follow(change: PresenceChange, self: string): void;
}

/** PresenceOptions wires a PresenceController. */
export interface PresenceOptions {
  client: Client<typeof SyncService>;
  channel: string;
  info: JsonObject;
  logger: Logger;
  /**
   * fixedId: the member id is always the client id this tab subscribes with (authentication:
   * the server binds it to the token). Otherwise a tab that takes over a shared stream keeps
   * the member id the tabs had (no leave and join when the leader tab changes).
   */
  fixedId: boolean;
  /** publish dispatches `actionsync/presence`. */
  publish(payload: PresencePayload): void;
}

/**
 * createPresence holds the presence state and this client's info. The stream that holds
 * the member (this tab's own, or its leader stream when tabs share) subscribes with the
 * info; a later set() sends UpdatePresence, one at a time, the newest info winning. An
 * update that finds no member (its stream ended) is dropped: the next stream subscribes
 * with the info, and a stream whose first snapshot comes after a set() it did not carry
 * sends an update then.
 */
export function createPresence(o: PresenceOptions): PresenceController {
  let state: PresenceState = emptyPresence;
  let info = o.info;
  // joined: the member the current stream holds and the info the server has for it
  // (undefined: no stream holds it, or its first snapshot has not come yet).
  let joined: { clientId: string; info: JsonObject } | undefined;
  let subscribed: { clientId: string; info: JsonObject } | undefined;
  let inflight = false;
  // failed: an info the server refused (too large, say): not sent again.
  let failed: JsonObject | undefined;

  function apply(change: PresenceChange, self: string) {
    state = applyPresence(self === state.self ? state : { ...state, self }, change);
    o.publish({ channel: o.channel, change, presence: state });
  }

  function flush() {
    if (inflight || !joined || joined.info === info || info === failed) return;
    const to = joined;
    const sending = info;
    inflight = true;
    o.client
      .updatePresence({ channel: o.channel, clientId: to.clientId, presence: { info: sending } })
      .then(
        () => {
          if (joined === to) to.info = sending;
        },
        (err: unknown) => {
          const e = ConnectError.from(err);
          // not_found: the stream ended; the next one subscribes with the newest info.
          if (e.code !== Code.NotFound) {
            o.logger.warn(`actionsync: UpdatePresence on ${o.channel} failed (${e.rawMessage})`);
            if (joined === to) failed = sending;
          }
        },
      )
      .finally(() => {
        inflight = false;
        flush();
      });
  }

  return {
    state: () => state,
    info: () => info,
    set(next) {
      info = next;
      failed = undefined;
      flush();
    },
    follow(change, self) {
      apply(change, self);
    },
    subscribing(clientId) {
      const id = o.fixedId || state.self === "" ? clientId : state.self;
      subscribed = { clientId: id, info };
      return subscribed;
    },
    onEvent(ev) {
      const change = changeFromWire(ev);
      // The stream's first snapshot comes after its join: the member exists.
      if (!joined && subscribed && change.kind === "snapshot") {
        joined = { ...subscribed };
        flush();
      }
      apply(change, subscribed?.clientId ?? state.self);
      return change;
    },
    onEnd() {
      joined = undefined;
      subscribed = undefined;
    },
  };
}
