import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createBackoff, sleep } from "./backoff.js";

describe("createBackoff", () => {
  it("doubles_the_cap_up_to_maxMs", () => {
    const b = createBackoff({ initialMs: 100, maxMs: 1000 }, () => 0.999999);
    const got = Array.from({ length: 7 }, () => b.next());
    assert.deepEqual(got, [99, 199, 399, 799, 999, 999, 999]);
    assert.equal(b.attempts, 7);
  });
  it("uses_full_jitter", () => {
    const b = createBackoff({ initialMs: 100, maxMs: 1000 }, () => 0);
    assert.equal(b.next(), 0);
    const r = createBackoff({}, () => 0.5);
    assert.deepEqual([r.next(), r.next()], [125, 250]);
  });
  it("stays_within_bounds_with_math_random", () => {
    const b = createBackoff({ initialMs: 10, maxMs: 500 });
    for (let i = 0; i < 200; i++) {
      const d = b.next();
      assert.ok(d >= 0 && d < 500, `delay ${d}`);
    }
    assert.ok(Number.isFinite(b.next()));
  });
  it("resets", () => {
    const b = createBackoff({ initialMs: 100, maxMs: 1000 }, () => 0.999999);
    b.next();
    b.next();
    b.reset();
    assert.equal(b.next(), 99);
  });
  it("refuses_bad_bounds", () => {
    assert.throws(() => createBackoff({ initialMs: 0 }), RangeError);
    assert.throws(() => createBackoff({ initialMs: 500, maxMs: 100 }), RangeError);
    assert.throws(() => createBackoff({ maxMs: Infinity }), RangeError);
  });
});

describe("sleep", () => {
  it("elapses", async () => {
    assert.equal(await sleep(5, new AbortController().signal), true);
  });
  it("ends_early_on_abort_without_leaving_a_timer", async () => {
    const ac = new AbortController();
    const p = sleep(60_000, ac.signal);
    ac.abort();
    assert.equal(await p, false);
  });
  it("ends_early_on_wake", async () => {
    let wake: (() => void) | undefined;
    const p = sleep(60_000, new AbortController().signal, (w) => (wake = w));
    wake!();
    assert.equal(await p, false);
  });
});
