import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PendingEntry } from "./actions.js";
import { createMemoryStorage, createOutbox, createWebStorage, defaultStorage, type OutboxStorage } from "./outbox.js";
import { fakeWebStorage } from "./testkit.js";

const entry = (id: string): PendingEntry => ({ id, action: { type: "ADD", payload: id, meta: { actionsync: { id, local: true } } } });
const ids = (es: PendingEntry[]) => es.map((e) => e.id);

function recordingLogger() {
  const lines: string[] = [];
  return { lines, warn: (...a: unknown[]) => lines.push(`warn ${a.join(" ")}`), error: (...a: unknown[]) => lines.push(`error ${a.join(" ")}`) };
}

describe("createOutbox", () => {
  it("keeps_order_and_send_state", async () => {
    const ob = createOutbox(createMemoryStorage(), recordingLogger());
    await ob.load();
    ["a", "b", "c", "d"].forEach((id) => ob.add(entry(id)));
    assert.deepEqual(ids(ob.unsent(2)), ["a", "b"]);
    ob.markAcked("a", 7);
    ob.markAcked("b", 8);
    assert.deepEqual(ids(ob.unsent(10)), ["c", "d"]);
    assert.deepEqual(ob.acked().map((x) => [x.entry.id, x.seq]), [["a", 7], ["b", 8]]);
    assert.equal(ob.size, 4);
    assert.equal(ob.remove("a")?.id, "a");
    assert.equal(ob.remove("a"), undefined);
    assert.equal(ob.has("b"), true);
    ob.resendAll();
    assert.deepEqual(ids(ob.unsent(10)), ["b", "c", "d"]);
    assert.deepEqual(ob.acked(), []);
    ob.markAcked("zzz", 1); // unknown ids are ignored
    assert.deepEqual(ids(ob.entries()), ["b", "c", "d"]);
  });

  it("records_where_an_entry_was_first_sent_and_persists_it", async () => {
    const storage = createMemoryStorage([entry("old")]);
    const ob = createOutbox(storage, recordingLogger());
    await ob.load();
    ob.add(entry("new"));
    const before = ob.get("old")!;
    ob.markSent(["old", "new"], { seq: 4, epoch: "e1" });
    assert.deepEqual(ob.get("old")!.sentAfter, { seq: 4, epoch: "e1" });
    assert.equal(before.sentAfter, undefined, "entries are replaced, not mutated");
    // Only the first send in an epoch counts.
    ob.markSent(["old"], { seq: 9, epoch: "e1" });
    assert.deepEqual(ob.get("old")!.sentAfter, { seq: 4, epoch: "e1" });
    await ob.flush();
    assert.deepEqual((await storage.load()).map((e) => [e.id, e.sentAfter]), [["old", { seq: 4, epoch: "e1" }], ["new", { seq: 4, epoch: "e1" }]]);
    // In another epoch (the history of e1 is lost), the entry counts as never sent.
    ob.markSent(["new"], { seq: 0, epoch: "e2" });
    assert.deepEqual(ob.get("new")!.sentAfter, { seq: 0, epoch: "e2" });
    const reloaded = createOutbox(storage, recordingLogger());
    await ob.flush();
    assert.deepEqual((await reloaded.load()).map((e) => e.sentAfter), [{ seq: 4, epoch: "e1" }, { seq: 0, epoch: "e2" }]);
  });

  it("restores_stored_entries_before_new_ones", async () => {
    const storage = createMemoryStorage([entry("old1"), entry("old2")]);
    const log = recordingLogger();
    const ob = createOutbox(storage, log);
    ob.add(entry("new"));
    const restored = await ob.load();
    assert.deepEqual(ids(restored), ["old1", "old2"]);
    assert.deepEqual(ids(ob.entries()), ["old1", "old2", "new"]);
    await ob.flush();
    assert.deepEqual(ids(await storage.load()), ["old1", "old2", "new"]);
    assert.equal(await ob.load(), restored, "a second load returns the first result");
    assert.equal(ob.size, 3);
  });

  it("drops_malformed_and_duplicate_stored_entries", async () => {
    const log = recordingLogger();
    const storage: OutboxStorage = { load: () => [entry("a"), { id: "b" } as never, entry("a"), entry("c")], save: () => {} };
    const ob = createOutbox(storage, log);
    assert.deepEqual(ids(await ob.load()), ["a", "c"]);
    assert.equal(log.lines.filter((l) => l.startsWith("warn")).length, 1);
  });

  it("does_not_save_before_loading", async () => {
    const saves: string[][] = [];
    const storage: OutboxStorage = { load: async () => [entry("stored")], save: (es) => void saves.push(ids(es)) };
    const ob = createOutbox(storage, recordingLogger());
    ob.add(entry("x"));
    await ob.flush();
    assert.deepEqual(saves, []);
    await ob.load();
    await ob.flush();
    assert.deepEqual(saves, [["stored", "x"]]);
  });

  it("coalesces_saves_and_never_overlaps_them", async () => {
    const saves: string[][] = [];
    let inFlight = 0;
    const storage: OutboxStorage = {
      load: () => [],
      save: async (es) => {
        assert.equal(inFlight++, 0, "overlapping saves");
        await new Promise((r) => setTimeout(r, 5));
        saves.push(ids(es));
        inFlight--;
      },
    };
    const ob = createOutbox(storage, recordingLogger());
    await ob.load();
    await ob.flush();
    saves.length = 0;
    for (let i = 0; i < 10; i++) ob.add(entry(`e${i}`));
    ob.remove("e0");
    await ob.flush();
    ob.remove("e1");
    await ob.flush();
    assert.deepEqual(saves.at(-1), ["e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"]);
    assert.ok(saves.length <= 3, `${saves.length} saves`);
  });

  it("logs_storage_failures_instead_of_throwing", async () => {
    const log = recordingLogger();
    const ob = createOutbox({ load: () => { throw new Error("corrupt"); }, save: () => { throw new Error("quota"); } }, log);
    assert.deepEqual(await ob.load(), []);
    ob.add(entry("a"));
    await ob.flush();
    assert.equal(ob.size, 1);
    assert.deepEqual(log.lines.map((l) => l.split(" ")[0]), ["error", "error"]);
  });
});

describe("createWebStorage", () => {
  it("stores_json_under_the_key_and_removes_it_when_empty", async () => {
    const ws = fakeWebStorage();
    const s = createWebStorage("k", ws);
    assert.deepEqual(await s.load(), []);
    await s.save([entry("a")]);
    assert.deepEqual(JSON.parse(ws.m.get("k")!), [entry("a")]);
    assert.deepEqual(await s.load(), [entry("a")]);
    await s.save([]);
    assert.equal(ws.m.has("k"), false);
  });
  it("refuses_a_non_array", () => {
    const ws = fakeWebStorage();
    ws.m.set("k", "{}");
    assert.throws(() => createWebStorage("k", ws).load(), /not a JSON array/);
  });
});

describe("defaultStorage", () => {
  it("uses_a_localStorage_key_per_tab_when_there_is_localStorage", async () => {
    const g = globalThis as { localStorage?: unknown; sessionStorage?: unknown };
    const saved = ["localStorage", "sessionStorage"].map((k) => [k, Object.getOwnPropertyDescriptor(g, k)] as const);
    const local = fakeWebStorage();
    const session = fakeWebStorage();
    Object.defineProperty(g, "localStorage", { value: local, configurable: true });
    Object.defineProperty(g, "sessionStorage", { value: session, configurable: true });
    try {
      const s = defaultStorage("board:1", recordingLogger());
      await s.load();
      await s.save([entry("a")]);
      const tabId = session.m.get("actionsync:tab")!;
      assert.match(tabId, /^[0-9a-f-]{36}$/);
      assert.deepEqual([...local.m.keys()], [`actionsync:outbox:board:1:${tabId}`]);
      await s.close?.();
    } finally {
      for (const [k, d] of saved) {
        if (d) Object.defineProperty(g, k, d);
        else delete g[k as keyof typeof g];
      }
    }
  });
  it("falls_back_to_memory", async () => {
    const s = defaultStorage("c", recordingLogger());
    await s.save([entry("a")]);
    assert.deepEqual(ids(await s.load()), ["a"]);
  });
});
