import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SyncError } from "./actions.js";
import { initialConnection, sends, statusOf, table, transition, type Connection, type ConnectionEvent, type Phase } from "./connection.js";

const err = (code: string): SyncError => ({ code, message: `${code} happened` });
const E = {
  down: err("unavailable"),
  down2: err("deadline_exceeded"),
  device: err("device_offline"),
  unreach: err("unknown"),
  unreach2: err("canceled"),
  trouble: err("unauthenticated"),
  refused: err("permission_denied"),
  dropped: err("internal"),
};

// One state per phase, as the machine reaches it.
const from: Record<Phase, Connection> = {
  connecting: initialConnection,
  connected: { phase: "connected", error: null, errorFromDispatch: false, outageReported: false },
  unreachable: { phase: "unreachable", error: E.unreach, errorFromDispatch: true, outageReported: false },
  offline: { phase: "offline", error: E.down, errorFromDispatch: false, outageReported: true },
  closed: { phase: "closed", error: E.down, errorFromDispatch: false, outageReported: false },
};

const events: Record<ConnectionEvent["type"], ConnectionEvent> = {
  deviceOffline: { type: "deviceOffline", error: E.device },
  streamReady: { type: "streamReady" },
  streamDown: { type: "streamDown", error: E.down2 },
  dispatchUnreachable: { type: "dispatchUnreachable", error: E.unreach2 },
  linkWorks: { type: "linkWorks" },
  dispatchTrouble: { type: "dispatchTrouble", error: E.trouble },
  refused: { type: "refused", error: E.refused },
  dropped: { type: "dropped", error: E.dropped },
  close: { type: "close" },
};

// want[phase][event] = [next phase, key of the error shown (null: none)]; "=" is "the same state".
type Want = [Phase, keyof typeof E | null] | "=";
const want: Record<Phase, Record<ConnectionEvent["type"], Want>> = {
  connecting: {
    deviceOffline: ["offline", "device"],
    streamReady: ["connected", null],
    streamDown: ["offline", "down2"],
    dispatchUnreachable: "=",
    linkWorks: "=",
    dispatchTrouble: "=",
    refused: ["connecting", "refused"],
    dropped: ["connecting", "dropped"],
    close: ["closed", null],
  },
  connected: {
    deviceOffline: ["offline", "device"],
    streamReady: "=",
    streamDown: ["offline", "down2"],
    dispatchUnreachable: ["unreachable", "unreach2"],
    linkWorks: "=",
    dispatchTrouble: ["connected", "trouble"],
    refused: ["connected", "refused"],
    dropped: ["connected", "dropped"],
    close: ["closed", null],
  },
  unreachable: {
    deviceOffline: ["offline", "device"],
    streamReady: ["connected", null],
    streamDown: ["offline", "down2"],
    dispatchUnreachable: ["unreachable", "unreach2"],
    linkWorks: ["connected", null],
    dispatchTrouble: ["connected", "trouble"],
    refused: ["connected", "refused"],
    dropped: ["unreachable", "dropped"],
    close: ["closed", "unreach"],
  },
  offline: {
    deviceOffline: ["offline", "device"],
    streamReady: ["connected", null],
    streamDown: ["offline", "down2"],
    dispatchUnreachable: "=",
    linkWorks: "=",
    dispatchTrouble: "=",
    refused: ["offline", "refused"],
    dropped: ["offline", "dropped"],
    close: ["closed", "down"],
  },
  closed: {
    deviceOffline: "=",
    streamReady: "=",
    streamDown: "=",
    dispatchUnreachable: "=",
    linkWorks: "=",
    dispatchTrouble: "=",
    refused: ["closed", "refused"],
    dropped: ["closed", "dropped"],
    close: "=",
  },
};

describe("transition", () => {
  it("covers_every_phase_and_event", () => {
    assert.deepEqual(Object.keys(table).sort(), Object.keys(want).sort());
    for (const phase of Object.keys(table) as Phase[]) assert.deepEqual(Object.keys(table[phase]).sort(), Object.keys(events).sort(), phase);
  });

  for (const phase of Object.keys(want) as Phase[]) {
    for (const [type, w] of Object.entries(want[phase]) as [ConnectionEvent["type"], Want][]) {
      it(`${phase}_on_${type}`, () => {
        const before = from[phase];
        const got = transition(before, events[type]);
        if (w === "=") {
          assert.equal(got, before, `got ${JSON.stringify(got)}, want the same state`);
          return;
        }
        assert.equal(got.phase, w[0]);
        assert.deepEqual(got.error, w[1] === null ? null : E[w[1]]);
        assert.deepEqual(before, from[phase], "the old state is not mutated");
      });
    }
  }

  const run = (...es: ConnectionEvent[]) => es.reduce(transition, initialConnection);

  it("clears_a_dispatch_error_once_a_dispatch_gets_through", () => {
    const c = run(events.streamReady, events.dispatchTrouble, events.linkWorks);
    assert.deepEqual([c.phase, c.error], ["connected", null]);
  });

  it("keeps_a_refusal_until_the_stream_is_ready_again", () => {
    let c = run(events.streamReady, events.refused, events.linkWorks);
    assert.deepEqual([c.phase, c.error], ["connected", E.refused]);
    c = run(events.streamReady, events.dispatchUnreachable, events.dropped, events.linkWorks);
    assert.deepEqual([c.phase, c.error], ["connected", E.dropped], "a drop replaces the network error, which then no longer clears on its own");
    c = transition(transition(c, events.streamDown), events.streamReady);
    assert.deepEqual([c.phase, c.error], ["connected", null]);
  });

  it("reports_each_outage_once", () => {
    let c = run(events.deviceOffline);
    assert.equal(c.outageReported, false, "the device's offline event is not the stream's failure");
    c = transition(c, events.streamDown);
    assert.equal(c.outageReported, true);
    assert.equal(transition(c, events.streamDown).outageReported, true);
    c = transition(c, events.streamReady);
    assert.equal(c.outageReported, false);
  });
});

describe("statusOf_and_sends", () => {
  it("derive_the_status_and_the_sender_from_the_phase", () => {
    const got = (["connecting", "connected", "unreachable", "offline", "closed"] as Phase[]).map((p) => [p, statusOf(p), sends(p)]);
    assert.deepEqual(got, [
      ["connecting", "connecting", false],
      ["connected", "connected", true],
      ["unreachable", "offline", true],
      ["offline", "offline", false],
      ["closed", "offline", false],
    ]);
  });
});
