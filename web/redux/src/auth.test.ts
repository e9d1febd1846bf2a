// Integration tests of authentication: real servers with --auth-hs256-secret-file, tokens
// minted by `actionsync token`, real stores with getToken.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, describe, it } from "node:test";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { UnknownAction } from "redux";
import { buildServer } from "../../testing/server.js";
import { ActionTypes, createSyncMiddleware, type RejectedPayload, type StatusPayload, type SyncError } from "./index.js";
import { captureLogger, createLink, makeStore, readHistory, replay, startTestServer, waitFor } from "./testkit.js";
import { readClaims } from "./token.js";

type Made = ReturnType<typeof makeStore>;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const secretFile = join(mkdtempSync(join(tmpdir(), "actionsync-auth-")), "secret");
writeFileSync(secretFile, "a test secret of at least 32 bytes, for HS256\n");

async function server(args: string[] = []) {
  const s = await startTestServer(["--auth-hs256-secret-file", secretFile, ...args]);
  cleanups.push(() => s.stop());
  return s;
}

let reader: Promise<string> | undefined;
/** history reads a channel's whole history with a token of its own. */
async function history(url: string, channel: string) {
  reader ??= mint("reader", { allow: "history" });
  return readHistory(url, channel, await reader);
}

/** mint runs `actionsync token`: a token for sub on board:*, valid for ttl. */
async function mint(sub: string, o: { ttl?: string; allow?: string } = {}): Promise<string> {
  const args = ["token", "--secret-file", secretFile, "--sub", sub, "--channels", "board:*", "--ttl", o.ttl ?? "1h"];
  if (o.allow) args.push("--allow", o.allow);
  const { stdout } = await promisify(execFile)(buildServer(), args);
  return stdout.trim();
}

/**
 * node is a connect-node transport to url. (A connect-web transport works too, but in Node
 * its fetch keeps connections that make the server's shutdown wait about 4 s.)
 */
const node = (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "1.1" });

function store(options: Parameters<typeof makeStore>[0]): Made {
  const m = makeStore({ logger: captureLogger(), ...options });
  cleanups.push(() => m.close());
  return m;
}

const connected = (...ms: Made[]) => () => ms.every((m) => m.store.getState().sync.status === "connected");

/** remoteSeqs lists the seqs of the channel actions a store applied, in order. */
const remoteSeqs = (m: Made) =>
  m.seen.flatMap((a) => {
    const s = (a.meta as { actionsync?: { remote?: boolean; seq?: number } } | undefined)?.actionsync;
    return s?.remote === true ? [s.seq!] : [];
  });

/** statusErrors lists the errors a store's status showed, in order. */
const statusErrors = (m: Made) =>
  m.seen.flatMap((a: UnknownAction) => {
    const p = a.payload as StatusPayload | undefined;
    return a.type === ActionTypes.status && p?.error ? [p.error] : [];
  });

/** publisher has store m dispatch an item every 50 ms until stop() is called. */
function publisher(m: Made) {
  let n = 0;
  const timer = setInterval(() => m.store.dispatch({ type: "board/append", payload: { item: `p${++n}` } }), 50);
  return { stop: () => clearInterval(timer), count: () => n };
}

/**
 * converged waits until every store has applied the channel's whole history with nothing
 * pending, checks their boards against the history replayed, and returns the head seq.
 */
async function converged(url: string, channel: string, ms: Made[]): Promise<number> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { actions, headSeq } = await history(url, channel);
    if (ms.every((m) => m.store.getState().sync.lastSeq === headSeq && m.store.getState().sync.pending === 0)) {
      const expected = replay(actions, channel);
      for (const m of ms) assert.deepEqual(m.store.getState().board, expected);
      return headSeq;
    }
    if (Date.now() > deadline) throw new Error(`not converged at seq ${headSeq}: ${JSON.stringify(ms.map((m) => m.store.getState().sync))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("authentication", () => {
  it("sends_a_token_and_takes_the_client_id_from_its_sub", async () => {
    const srv = await server();
    const channel = "board:auth-ids";
    const laptop = store({ transport: node(srv.url), channel, getToken: () => mint("alice"), device: "laptop" });
    const phone = store({ transport: node(srv.url), channel, getToken: () => mint("alice") });
    assert.equal(laptop.sync.clientId, "", "not known before the first token");
    await waitFor("connected", connected(laptop, phone));
    assert.equal(laptop.sync.clientId, "alice:laptop");
    assert.equal(phone.sync.clientId, "alice");
    laptop.store.dispatch({ type: "board/add", payload: { item: "from the laptop" } });
    phone.store.dispatch({ type: "board/add", payload: { item: "from the phone" } });
    await converged(srv.url, channel, [laptop, phone]);
    const { actions } = await history(srv.url, channel);
    assert.deepEqual(actions.map((a) => a.clientId).sort(), ["alice", "alice:laptop"], "the server stamped the client ids the middleware sent");
  });

  it("moves_the_stream_to_a_fresh_token_before_it_expires_with_no_gap", async () => {
    // Tokens of 3 s (exp in whole seconds: 2 to 3 s left when minted) are replaced when a
    // tenth of their time is left; the stream reopens with the new one and resumes.
    const srv = await server();
    const channel = "board:auth-refresh";
    const link = createLink(srv.url);
    const minted: string[] = [];
    const a = store({
      transport: link.transport,
      channel,
      getToken: async () => {
        minted.push(await mint("alice", { ttl: "3s" }));
        return minted.at(-1)!;
      },
    });
    const b = store({ transport: node(srv.url), channel, getToken: () => mint("bob") });
    await waitFor("connected", connected(a, b));
    const p = publisher(b);
    await waitFor("three tokens after the first", () => minted.length >= 4, 15_000);
    p.stop();
    const head = await converged(srv.url, channel, [a, b]);
    assert.deepEqual(remoteSeqs(a), Array.from({ length: head }, (_, i) => i + 1), "every seq once, in order");
    const subscribes = link.methods.filter((m) => m === "Subscribe").length;
    assert.ok(subscribes >= 4, `${subscribes} Subscribe calls, want one per token`);
    assert.deepEqual(statusErrors(a), [], "each token was replaced before it expired: never cut off, no error shown");
  });

  it("resumes_with_a_fresh_token_after_the_server_ends_the_stream_for_an_expired_one", async () => {
    // No token can be had until the first one has expired: the server ends the stream
    // (after a grace of 100 ms); the client gets a fresh token and resumes, with no gap.
    const srv = await server(["--auth-stream-grace", "100ms"]);
    const channel = "board:auth-expired";
    let firstExp = 0;
    const logger = captureLogger();
    const a = store({
      transport: node(srv.url),
      channel,
      logger,
      getToken: async () => {
        if (firstExp !== 0 && Date.now() < firstExp) throw new Error("the login server is down");
        const t = await mint("alice", { ttl: "2s" });
        if (firstExp === 0) firstExp = readClaims(t).expMs!;
        return t;
      },
    });
    const b = store({ transport: node(srv.url), channel, getToken: () => mint("bob") });
    await waitFor("connected", connected(a, b));
    const p = publisher(b);
    await waitFor("cut off for the expired token", () => statusErrors(a).some((e) => e.code === "unauthenticated"), 10_000);
    const cut = statusErrors(a).find((e) => e.code === "unauthenticated")!;
    assert.match(cut.message, /token expired at .*: reconnect with a fresh token and resume/);
    await waitFor("connected again", connected(a));
    await new Promise((r) => setTimeout(r, 300));
    p.stop();
    const head = await converged(srv.url, channel, [a, b]);
    assert.deepEqual(remoteSeqs(a), Array.from({ length: head }, (_, i) => i + 1), "every seq once, in order");
    assert.ok(logger.warns.some((w) => /could not refresh the token \(getToken failed: the login server is down\)/.test(w)), logger.warns.join("\n"));
  });

  it("shows_unauthenticated_while_no_token_can_be_had", async () => {
    const srv = await server();
    const channel = "board:auth-none";
    const without = store({ transport: node(srv.url), channel });
    let up = false;
    const failing = store({
      transport: node(srv.url),
      channel,
      getToken: async () => {
        if (!up) throw new Error("not logged in");
        return mint("carol");
      },
    });
    const errorOf = (m: Made): SyncError | null => m.store.getState().sync.error;
    await waitFor("both refused", () => errorOf(without)?.code === "unauthenticated" && errorOf(failing)?.code === "unauthenticated");
    assert.match(errorOf(without)!.message, /missing bearer token/);
    assert.match(errorOf(failing)!.message, /getToken failed: not logged in/);
    assert.equal(without.store.getState().sync.status, "offline");
    assert.equal(failing.store.getState().sync.status, "offline");
    failing.store.dispatch({ type: "board/add", payload: { item: "queued" } });
    // The reconnects go on with backoff: once getToken works, the store connects and sends.
    up = true;
    await waitFor("connected once a token can be had", () => failing.store.getState().sync.status === "connected" && failing.store.getState().sync.pending === 0);
    assert.equal(errorOf(failing), null);
    assert.deepEqual((await history(srv.url, channel)).actions.map((a) => a.clientId), ["carol"]);
  });

  it("rolls_back_an_edit_a_read_only_token_may_not_make", async () => {
    const srv = await server();
    const channel = "board:auth-view";
    const editor = store({ transport: node(srv.url), channel, getToken: () => mint("erin") });
    const viewer = store({ transport: node(srv.url), channel, getToken: () => mint("victor", { allow: "subscribe,history" }) });
    await waitFor("connected", connected(editor, viewer));
    editor.store.dispatch({ type: "board/add", payload: { item: "by the editor" } });
    await waitFor("the viewer sees the editor's edit", () => viewer.store.getState().board.items.includes("by the editor"));
    viewer.store.dispatch({ type: "board/add", payload: { item: "by the viewer" } });
    assert.deepEqual(viewer.store.getState().board.items, ["by the editor", "by the viewer"], "applied optimistically");
    await waitFor("rejected", () => viewer.seen.some((a) => a.type === ActionTypes.rejected));
    const rejected = viewer.seen.find((a) => a.type === ActionTypes.rejected)!.payload as RejectedPayload;
    assert.equal(rejected.code, "permission_denied");
    assert.match(rejected.message, /channel "board:auth-view": .*victor.* does not allow publish there/);
    assert.deepEqual(viewer.store.getState().board.items, ["by the editor"], "rolled back");
    assert.deepEqual(viewer.store.getState().sync.error, { code: "permission_denied", message: rejected.message });
    assert.equal(viewer.store.getState().sync.pending, 0);
    const { actions } = await history(srv.url, channel);
    assert.deepEqual(actions.map((a) => a.clientId), ["erin"], "nothing of the viewer's reached the channel");
    assert.deepEqual(editor.store.getState().board.items, ["by the editor"]);
  });

  it("checks_getToken_and_device", () => {
    const o = { baseUrl: "http://x", channel: "c", types: [] };
    assert.throws(() => createSyncMiddleware({ ...o, getToken: "t" as never }), /getToken must be a function/);
    assert.throws(() => createSyncMiddleware({ ...o, device: "phone" }), /device is for a client id from the token/);
    assert.throws(() => createSyncMiddleware({ ...o, getToken: async () => "t", clientId: "me", device: "phone" }), /device is for a client id from the token/);
    assert.throws(() => createSyncMiddleware({ ...o, getToken: async () => "t", device: "a:b" }), /device "a:b" must match/);
    assert.throws(() => createSyncMiddleware({ ...o, getToken: async () => "t", device: "sixteen-chars-xx" }), /device/);
    assert.equal(createSyncMiddleware({ ...o, getToken: async () => "t" }).clientId, "");
    assert.equal(createSyncMiddleware({ ...o, getToken: async () => "t", clientId: "me" }).clientId, "me");
  });
});
