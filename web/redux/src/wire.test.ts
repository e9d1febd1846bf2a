import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ActionSchema } from "./gen/actionsync/v1/action_pb.js";
import { checkSyncable, fromWire, toJsonData, isPendingEntry, toWire, MaxDepth } from "./wire.js";

function nest(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

describe("toJsonData", () => {
  const good: [string, unknown][] = [
    ["null", null],
    ["string", "héllo 👋"],
    ["number", -1.5e300],
    ["boolean", false],
    ["object", { a: [1, { b: null }], "odd key": "x" }],
    ["null-prototype object", Object.assign(Object.create(null), { a: 1 })],
    ["shared (not cyclic) reference", (() => { const s = { x: 1 }; return [s, s]; })()],
    [`nesting ${MaxDepth}`, nest(MaxDepth)],
  ];
  for (const [name, v] of good) {
    it(`accepts_${name.replaceAll(/\W+/g, "_")}`, () => assert.equal(toJsonData(v), v, "the same value"));
  }
  it("drops_undefined_properties_as_JSON_does", () => {
    const inner = { keep: [1, { x: 2 }] };
    const v = { a: 1, gone: undefined, deep: { note: undefined, n: 1 }, list: [{ z: undefined }], inner };
    const got = toJsonData(v);
    assert.deepEqual(got, { a: 1, deep: { n: 1 }, list: [{}], inner });
    assert.deepEqual(Object.keys(got as object), ["a", "deep", "list", "inner"], "key order kept");
    assert.equal((got as typeof v).inner, inner, "unchanged parts are shared, not copied");
    assert.deepEqual(got, JSON.parse(JSON.stringify(v)));
    assert.equal(v.gone, undefined, "the input is not mutated");
    assert.ok("gone" in v);
  });
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = { back: cyclic };
  const bad: [string, unknown, RegExp][] = [
    ["function", { f: () => 1 }, /value\.f is a function/],
    ["undefined top level", undefined, /value is undefined/],
    ["undefined element", [1, undefined], /value\[1\] is undefined \(JSON would turn it into null/],
    ["sparse array", [1, , 3], /value\[1\] is undefined/],
    ["bigint", { n: 10n }, /value\.n is a BigInt/],
    ["NaN", [NaN], /value\[0\] is NaN/],
    ["Infinity", { x: -Infinity }, /value\.x is -Infinity/],
    ["cycle", cyclic, /value\.self\.back is a cycle/],
    ["Date", { d: new Date(0) }, /value\.d is a Date/],
    ["Map", new Map(), /value is a Map/],
    ["class instance", new (class Point { x = 1 })(), /value is a Point/],
    ["symbol", Symbol("s"), /is a symbol/],
    ["symbol key", { [Symbol("k")]: 1 }, /symbol keys/],
    ["lone surrogate", "a\uD800b", /lone UTF-16 surrogate/],
    [`nesting ${MaxDepth + 1}`, nest(MaxDepth + 1), /nests deeper than 100/],
  ];
  for (const [name, v, want] of bad) {
    it(`refuses_${name.replaceAll(/\W+/g, "_")}`, () => {
      assert.throws(() => toJsonData(v), (err: unknown) => err instanceof TypeError && want.test(err.message));
    });
  }
});

describe("checkSyncable", () => {
  it("accepts_a_flux_standard_action", () => {
    checkSyncable({ type: "ADD", payload: { id: "t1" }, meta: { by: "me", actionsync: { anything: () => 1 } } });
    checkSyncable({ type: "NOTHING" });
    checkSyncable({ type: "RTK_NO_ARG", payload: undefined });
  });
  it("returns_the_payload_and_meta_as_JSON_data", () => {
    const payload = { id: "t1" };
    assert.deepEqual(checkSyncable({ type: "A", payload, meta: { actionsync: { id: "x" } } }), { payload, meta: undefined });
    assert.equal(checkSyncable({ type: "A", payload }).payload, payload);
    assert.deepEqual(checkSyncable({ type: "A", payload: { id: "t1", due: undefined }, meta: { by: "me", at: undefined } }), {
      payload: { id: "t1" },
      meta: { by: "me" },
    });
  });
  it("refuses_extra_top_level_keys", () => {
    assert.throws(() => checkSyncable({ type: "ADD", text: "x" }), /top-level key "text"/);
  });
  it("refuses_bad_meta", () => {
    assert.throws(() => checkSyncable({ type: "ADD", meta: [1] }), /meta must be a plain object/);
    assert.throws(() => checkSyncable({ type: "ADD", meta: { at: new Date() } }), /meta\.at is a Date/);
  });
  it("names_the_action_in_the_message", () => {
    assert.throws(() => checkSyncable({ type: "SET", payload: { cb: () => 0 } }), /action "SET" payload\.cb is a function/);
  });
});

describe("toWire_fromWire", () => {
  it("round_trips_type_payload_and_meta", () => {
    const action = { type: "MOVE", payload: { id: "t1", to: [1, 2.5, null, true, "s", {}] }, meta: { by: "x", actionsync: { id: "a1", local: true as const } } };
    const init = toWire({ id: "a1", action });
    const wire = create(ActionSchema, { ...init, seq: 7n, clientId: "c", channel: "ch" });
    const d = fromWire(wire, "ch");
    assert.equal(d.problem, undefined);
    assert.deepEqual(d.action, {
      type: "MOVE",
      payload: action.payload,
      meta: { by: "x", actionsync: { remote: true, seq: 7, id: "a1", clientId: "c", channel: "ch" } },
    });
  });
  it("omits_an_absent_payload", () => {
    const init = toWire({ id: "a2", action: { type: "CLEAR", meta: { actionsync: { id: "a2", local: true } } } });
    assert.equal(init.payload, undefined);
    assert.equal(init.meta, undefined);
    const d = fromWire(create(ActionSchema, { ...init, seq: 1n }), "ch");
    assert.deepEqual(d.action, { type: "CLEAR", meta: { actionsync: { remote: true, seq: 1, id: "a2", clientId: "", channel: "ch" } } });
  });
  it("keeps_a_null_payload", () => {
    const init = toWire({ id: "a3", action: { type: "N", payload: null, meta: { actionsync: { id: "a3", local: true } } } });
    assert.equal(fromWire(create(ActionSchema, { ...init, seq: 1n }), "ch").action?.payload, null);
  });
  it("reports_malformed_envelopes", () => {
    const cases: [string, Parameters<typeof create<typeof ActionSchema>>[1], RegExp][] = [
      ["no type", { seq: 1n }, /has no type/],
      ["no seq", { type: "A" }, /has no seq/],
      ["other channel", { type: "A", seq: 1n, channel: "other" }, /is on channel "other"/],
      ["value without kind", { type: "A", seq: 1n, payload: create(ValueSchema, {}) }, /bad payload/],
      ["nested value without kind", { type: "A", seq: 1n, payload: create(ValueSchema, { kind: { case: "listValue", value: { values: [create(ValueSchema, {})] } } }) }, /bad payload/],
    ];
    for (const [name, init, want] of cases) {
      const d = fromWire(create(ActionSchema, init), "ch");
      assert.equal(d.action, undefined, name);
      assert.match(d.problem ?? "", want, name);
    }
  });
  it("overrides_a_forged_marker", () => {
    const wire = create(ActionSchema, { type: "A", seq: 3n, id: "i", payload: fromJson(ValueSchema, 1), meta: { actionsync: { local: true } } });
    assert.deepEqual(fromWire(wire, "ch").action?.meta, { actionsync: { remote: true, seq: 3, id: "i", clientId: "", channel: "ch" } });
  });
});

describe("isPendingEntry", () => {
  it("checks_the_stored_shape", () => {
    assert.equal(isPendingEntry({ id: "a", action: { type: "T", meta: { actionsync: { id: "a", local: true } } } }), true);
    assert.equal(isPendingEntry({ id: "a", action: { type: "T", meta: { actionsync: { id: "b", local: true } } } }), false);
    assert.equal(isPendingEntry({ id: "a", action: { type: "T" } }), false);
    assert.equal(isPendingEntry({ id: "", action: { type: "T" } }), false);
    assert.equal(isPendingEntry("x"), false);
    const a = { type: "T", meta: { actionsync: { id: "a", local: true } } };
    assert.equal(isPendingEntry({ id: "a", action: a, sentAfter: { seq: 0, epoch: "e1" } }), true);
    assert.equal(isPendingEntry({ id: "a", action: a, sentAfter: { seq: 12, epoch: "e1" } }), true);
    for (const sentAfter of [null, {}, { seq: -1, epoch: "e1" }, { seq: 1.5, epoch: "e1" }, { seq: "1", epoch: "e1" }, { seq: 1, epoch: "" }, { seq: 1 }]) {
      assert.equal(isPendingEntry({ id: "a", action: a, sentAfter }), false, JSON.stringify(sentAfter));
    }
  });
});
