import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import type { UnknownAction } from "redux";
import { ActionTypes, type StatusPayload } from "./actions.js";
import { defaultConnectivity, type Connectivity } from "./connectivity.js";
import { captureLogger, createLink, makeStore, startTestServer, waitFor } from "./testkit.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server() {
  const s = await startTestServer();
  cleanups.push(() => s.stop());
  return s;
}

function store(options: Parameters<typeof makeStore>[0]) {
  const m = makeStore({ logger: captureLogger(), ...options });
  cleanups.push(() => m.close());
  return m;
}

/** fakeDevice is a Connectivity a test drives: goOffline and goOnline fire the events. */
function fakeDevice(onLine = true) {
  const target = new EventTarget();
  let listeners = 0;
  const device = {
    onLine,
    get listeners() {
      return listeners;
    },
    addEventListener(type: "online" | "offline", l: () => void) {
      listeners++;
      target.addEventListener(type, l);
    },
    removeEventListener(type: "online" | "offline", l: () => void) {
      listeners--;
      target.removeEventListener(type, l);
    },
    goOffline() {
      device.onLine = false;
      target.dispatchEvent(new Event("offline"));
    },
    goOnline() {
      device.onLine = true;
      target.dispatchEvent(new Event("online"));
    },
  };
  return device satisfies Connectivity;
}

/**
 * withLongDelays makes every backoff delay 99% of its cap while body runs: the backoff
 * draws its delays from Math.random (full jitter), and a lucky short draw would let a
 * test pass without the behaviour it checks.
 */
async function withLongDelays(body: () => Promise<void>) {
  const random = Math.random;
  Math.random = () => 0.99;
  try {
    await body();
  } finally {
    Math.random = random;
  }
}

const statuses = (seen: UnknownAction[]) =>
  seen.filter((a) => a.type === ActionTypes.status && (a.payload as StatusPayload).status !== undefined).map((a) => (a.payload as StatusPayload).status);

describe("connectivity", () => {
  it("online_flushes_the_outbox_at_once_despite_a_long_backoff", () =>
    withLongDelays(async () => {
      const srv = await server();
      const link = createLink(srv.url);
      const device = fakeDevice();
      const logger = captureLogger();
      const a = store({ transport: link.transport, channel: "board:online", connectivity: device, logger, backoff: { initialMs: 30_000, maxMs: 30_000 } });
      await waitFor("connected", () => a.store.getState().sync.status === "connected");

      link.cut();
      device.goOffline();
      // At once, not when the stream or a Dispatch notices.
      assert.deepEqual(a.store.getState().sync, {
        status: "offline",
        lastSeq: 0,
        pending: 0,
        error: { code: "unavailable", message: "the device went offline" },
        resets: 0,
      });
      a.store.dispatch({ type: "board/add", payload: { item: "o1" } });
      a.store.dispatch({ type: "board/add", payload: { item: "o2" } });
      await waitFor("the subscriber waiting for its backoff", () => logger.warns.some((w) => w.includes("reconnecting in")));
      const delay = Number(/reconnecting in (\d+) ms/.exec(logger.warns.join("\n"))![1]);
      assert.ok(delay >= 29_000, `backoff delay ${delay} ms`);
      assert.match(logger.warns.join("\n"), /unavailable: the device went offline/);

      link.heal();
      const online = Date.now();
      device.goOnline();
      await waitFor("outbox flushed", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 2, 5_000);
      const flushMs = Date.now() - online;
      assert.ok(flushMs < 2_000, `flushed ${flushMs} ms after the online event, want well under the ${delay} ms backoff`);
      assert.deepEqual(a.store.getState().sync, { status: "connected", lastSeq: 2, pending: 0, error: null, resets: 0 });
      assert.deepEqual(a.store.getState().board.items, ["o1", "o2"]);
    }));

  it("online_wakes_a_dispatch_retry_waiting_for_its_backoff", () =>
    withLongDelays(async () => {
      // The stream stays live (as on a network that drops only some requests); only the
      // Dispatch retry waits for its backoff.
      const srv = await server();
      const link = createLink(srv.url);
      const device = fakeDevice();
      const a = store({ transport: link.transport, channel: "board:retry", connectivity: device, backoff: { initialMs: 30_000, maxMs: 30_000 } });
      cleanups.push(async () => link.release());
      await waitFor("connected", () => a.store.getState().sync.status === "connected");
      link.hold(); // no echo: only a Dispatch that succeeds can confirm the link
      link.loseAcks(1);
      a.store.dispatch({ type: "board/add", payload: { item: "x" } });
      await waitFor("the first Dispatch failed", () => a.store.getState().sync.status === "offline");
      assert.equal(a.store.getState().sync.error?.code, "unavailable");
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(link.dispatched.length, 1, "the retry waits for its backoff");

      device.goOnline();
      await waitFor("retried", () => link.dispatched.length === 2, 2_000);
      await waitFor("connected again", () => a.store.getState().sync.status === "connected", 2_000);
      assert.equal(a.store.getState().sync.error, null);
      link.release();
      await waitFor("confirmed", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 1);
    }));

  it("starts_offline_when_the_device_is_offline", async () => {
    const srv = await server();
    const device = fakeDevice(false);
    const a = store({ transport: createLink(srv.url).transport, channel: "board:start", connectivity: device });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    assert.deepEqual(statuses(a.seen), ["offline", "connected"], "offline at start; connected once the stream is live anyway");
  });

  it("keeps_stores_independent_and_close_removes_the_listeners", async () => {
    const srv = await server();
    const device = fakeDevice(); // one window, two stores
    const linkA = createLink(srv.url);
    const a = store({ transport: linkA.transport, channel: "board:ind-a", connectivity: device });
    const b = store({ transport: createLink(srv.url).transport, channel: "board:ind-b", connectivity: device });
    await waitFor("both connected", () => [a, b].every((m) => m.store.getState().sync.status === "connected"));
    assert.equal(device.listeners, 4);

    device.goOffline();
    assert.equal(a.store.getState().sync.status, "offline");
    assert.equal(b.store.getState().sync.status, "offline");
    await a.close();
    assert.equal(device.listeners, 2, "close removed a's two listeners");
    device.goOnline();
    await waitFor("b connected again", () => b.store.getState().sync.status === "connected");
    assert.equal(a.store.getState().sync.status, "offline", "a stays closed");
    await b.close();
    assert.equal(device.listeners, 0);
  });

  it("ignores_offline_events_without_connectivity", async () => {
    // connectivity: null (and Node's default): only failures change the status.
    const srv = await server();
    const a = store({ transport: createLink(srv.url).transport, channel: "board:null", connectivity: null });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    assert.deepEqual(statuses(a.seen), ["connected"]);
  });
});

describe("a Dispatch that cannot reach the server", () => {
  it("sets_the_status_offline_until_a_dispatch_succeeds", async () => {
    const srv = await server();
    const link = createLink(srv.url);
    const logger = captureLogger();
    const a = store({ transport: link.transport, channel: "board:dispatch-down", connectivity: null, logger });
    cleanups.push(async () => link.release());
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    // The stream stays open and silent (as in Chromium's offline mode): only Dispatch fails.
    link.hold();
    link.loseAcks(2);
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await waitFor("three Dispatch calls", () => link.acks.length === 3);
    await waitFor("connected again", () => a.store.getState().sync.status === "connected");
    assert.deepEqual(statuses(a.seen), ["connected", "offline", "connected"]);
    assert.equal(a.store.getState().sync.error, null);
    const failures = logger.warns.filter((w) => w.includes("Dispatch to board:dispatch-down failed"));
    assert.equal(failures.length, 2, logger.warns.join("\n"));
    link.release();
    await waitFor("confirmed", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 1);
  });

  it("returns_to_connected_when_the_echo_shows_it_got_through", () =>
    withLongDelays(async () => {
      // The answer was lost but the action reached the server: its echo confirms it, and
      // nothing is left to retry, so no Dispatch will succeed to say the link works.
      const srv = await server();
      const link = createLink(srv.url);
      const a = store({ transport: link.transport, channel: "board:echo", connectivity: null, backoff: { initialMs: 30_000, maxMs: 30_000 } });
      cleanups.push(async () => link.release());
      await waitFor("connected", () => a.store.getState().sync.status === "connected");
      link.hold(); // the echo comes after the failure
      link.loseAcks(1);
      a.store.dispatch({ type: "board/add", payload: { item: "x" } });
      await waitFor("offline", () => a.store.getState().sync.status === "offline");
      link.release();
      await waitFor("confirmed by its echo", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 1);
      assert.deepEqual(statuses(a.seen), ["connected", "offline", "connected"]);
      assert.equal(link.dispatched.length, 1, "not retried");
    }));

  it("stays_connected_when_the_echo_comes_before_the_failure", () =>
    withLongDelays(async () => {
      const srv = await server();
      const link = createLink(srv.url);
      const a = store({ transport: link.transport, channel: "board:echo-first", connectivity: null, backoff: { initialMs: 30_000, maxMs: 30_000 } });
      await waitFor("connected", () => a.store.getState().sync.status === "connected");
      link.loseAcks(1, 200); // the echo comes first, the lost answer 200 ms later
      a.store.dispatch({ type: "board/add", payload: { item: "x" } });
      await waitFor("confirmed by its echo", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 1);
      await waitFor("the lost answer", () => link.acks.length === 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(statuses(a.seen), ["connected"]);
      assert.equal(a.store.getState().sync.status, "connected");
    }));

  it("does_not_call_an_answer_from_the_server_offline", async () => {
    const srv = await server(); // refuses nothing, but a batch above the limit is refused
    const a = store({ transport: createLink(srv.url).transport, channel: "board:refused", connectivity: null });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    a.store.dispatch({ type: "board/add", payload: { item: "x".repeat(70_000) } });
    await waitFor("refused", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.error !== null);
    assert.deepEqual(statuses(a.seen), ["connected"]);
  });
});

describe("a Dispatch the server answers with an error it retries", () => {
  it("shows_the_error_while_connected_until_a_dispatch_succeeds", async () => {
    // An expired token: the server answers unauthenticated until the app's interceptor
    // has a new one. The link works, so the status stays connected; the error is shown.
    const srv = await server();
    const link = createLink(srv.url);
    const a = store({ transport: link.transport, channel: "board:token", connectivity: null, backoff: { initialMs: 40, maxMs: 40 } });
    await waitFor("connected", () => a.store.getState().sync.status === "connected");
    link.failDispatch(2, Code.Unauthenticated, { message: "token expired" });
    // The retries can be quick (full jitter): record every status the store shows.
    const shown: unknown[] = [];
    a.store.subscribe(() => {
      const sync = a.store.getState().sync;
      if (shown.at(-1) !== sync) shown.push(sync);
    });
    a.store.dispatch({ type: "board/add", payload: { item: "x" } });
    await waitFor("sent", () => a.store.getState().sync.pending === 0 && a.store.getState().sync.lastSeq === 1);
    assert.deepEqual(
      shown.find((x) => (x as { error: unknown }).error !== null),
      { status: "connected", lastSeq: 0, pending: 1, error: { code: "unauthenticated", message: "token expired" }, resets: 0 },
    );
    assert.equal(a.store.getState().sync.error, null, "cleared once a Dispatch got through");
    assert.deepEqual(statuses(a.seen), ["connected"]);
    assert.equal(link.dispatched.length, 3);
  });
});

describe("defaultConnectivity", () => {
  it("is_none_in_node", () => {
    assert.equal(defaultConnectivity(), undefined);
  });

  it("is_globalThis_with_navigator_onLine_in_a_browser", () => {
    const g = globalThis as { addEventListener?: unknown; removeEventListener?: unknown; navigator?: unknown };
    const keys = ["addEventListener", "removeEventListener", "navigator"] as const;
    const saved = keys.map((k) => [k, Object.getOwnPropertyDescriptor(g, k)] as const);
    const target = new EventTarget();
    const navigator = { onLine: true };
    Object.defineProperty(g, "addEventListener", { value: target.addEventListener.bind(target), configurable: true });
    Object.defineProperty(g, "removeEventListener", { value: target.removeEventListener.bind(target), configurable: true });
    Object.defineProperty(g, "navigator", { value: navigator, configurable: true });
    try {
      const c = defaultConnectivity()!;
      assert.ok(c);
      const heard: string[] = [];
      const l = () => heard.push("offline");
      c.addEventListener("offline", l);
      target.dispatchEvent(new Event("offline"));
      c.removeEventListener("offline", l);
      target.dispatchEvent(new Event("offline"));
      assert.deepEqual(heard, ["offline"]);
      assert.equal(c.onLine, true);
      navigator.onLine = false;
      assert.equal(c.onLine, false, "read when asked");
    } finally {
      for (const [k, d] of saved) {
        if (d) Object.defineProperty(g, k, d);
        else delete g[k];
      }
    }
  });
});
