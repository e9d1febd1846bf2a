import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { SyncService } from "./gen/actionsync/v1/sync_pb.js";
import { createTokenSource, readClaims, refreshDelayMs, withToken, type TokenSourceOptions } from "./token.js";
import { captureLogger, waitFor } from "./testkit.js";

/** jwt builds an unsigned token with claims (the middleware never verifies tokens). */
function jwt(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

function source(getToken: () => Promise<string>, o: Partial<TokenSourceOptions> = {}) {
  const renewed: number[] = [];
  const tokens = createTokenSource({
    getToken,
    logger: captureLogger(),
    backoff: { initialMs: 10, maxMs: 20 },
    onToken: () => void renewed.push(Date.now()),
    ...o,
  });
  return { tokens, renewed };
}

describe("readClaims", () => {
  it("reads_sub_and_exp_of_a_jwt_without_verifying_it", () => {
    assert.deepEqual(readClaims(jwt({ sub: "alice", exp: 1767225600, rights: [] })), { sub: "alice", expMs: 1767225600_000 });
    assert.deepEqual(readClaims(jwt({ sub: "ünï", exp: 1.5 })), { sub: "ünï", expMs: 1500 });
    assert.deepEqual(readClaims(jwt({ sub: 7, exp: "soon" })), {});
  });

  it("reads_nothing_from_what_is_not_a_jwt", () => {
    for (const t of ["", "opaque", "a..c", "a.!!!.c", `a.${Buffer.from("not json").toString("base64url")}.c`, `a.${Buffer.from("null").toString("base64url")}.c`]) {
      assert.deepEqual(readClaims(t), {}, t);
    }
  });
});

describe("refreshDelayMs", () => {
  it("refreshes_when_a_tenth_is_left_at_most_30_s_before_expiry", () => {
    assert.equal(refreshDelayMs(600_000, 0), 570_000, "10 minutes: 30 s before");
    assert.equal(refreshDelayMs(3_600_000, 0), 3_570_000, "1 hour: 30 s before");
    assert.equal(refreshDelayMs(5_000, 0), 4_500, "5 s: half a second before");
    assert.equal(refreshDelayMs(1_000, 0), 900);
  });

  it("does_not_refresh_a_token_about_to_expire", () => {
    assert.equal(refreshDelayMs(999, 0), undefined);
    assert.equal(refreshDelayMs(0, 10), undefined, "expired");
    assert.equal(refreshDelayMs(NaN, 0), undefined);
  });
});

describe("createTokenSource", () => {
  it("shares_one_getToken_call_and_calls_it_again_after_a_refusal", async () => {
    let calls = 0;
    const { tokens, renewed } = source(async () => {
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      return jwt({ sub: "alice", n: calls });
    });
    assert.equal(tokens.clientId(), "", "not known before the first token");
    const [a, b] = await Promise.all([tokens.get(), tokens.get()]);
    assert.equal(a, b);
    assert.equal(calls, 1);
    assert.equal(await tokens.get(), a, "kept while usable");
    assert.equal(tokens.clientId(), "alice");
    tokens.refused("another token");
    assert.equal(await tokens.get(), a, "a refusal of another token changes nothing");
    tokens.refused(a);
    const c = await tokens.get();
    assert.notEqual(c, a);
    assert.equal(calls, 2);
    assert.equal(renewed.length, 1, "onToken when a token replaces another");
    tokens.close();
  });

  it("fetches_again_once_the_token_has_expired", async () => {
    let calls = 0;
    const { tokens } = source(async () => jwt({ sub: "alice", exp: (Date.now() - 1000) / 1000, n: ++calls }));
    await tokens.get();
    await tokens.get();
    assert.equal(calls, 2);
    tokens.close();
  });

  it("fails_with_unauthenticated_while_no_token_can_be_had", async () => {
    let answer: () => Promise<string> = async () => {
      throw new Error("login server down");
    };
    const { tokens } = source(() => answer());
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated && /getToken failed: login server down/.test(e.rawMessage));
    answer = async () => "";
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated && /no token/.test(e.rawMessage));
    answer = async () => jwt({ sub: "alice" });
    assert.equal(await tokens.get(), jwt({ sub: "alice" }), "the next get tries again");
    tokens.close();
  });

  it("stops_waiting_when_the_call_is_aborted", async () => {
    const { tokens } = source(() => new Promise(() => {}));
    const stop = new AbortController();
    const got = tokens.get(stop.signal);
    stop.abort();
    await assert.rejects(got, (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled);
    tokens.close();
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled, "closed");
  });

  it("derives_the_client_id_from_the_sub_and_the_device", async () => {
    for (const [claims, device, want] of [
      [{ sub: "alice" }, undefined, "alice"],
      [{ sub: "alice" }, "phone", "alice:phone"],
      [{ sub: "not a sub" }, undefined, ""],
      [{}, "phone", ""],
    ] as const) {
      const { tokens } = source(async () => jwt(claims), { device });
      await tokens.get();
      assert.equal(tokens.clientId(), want, JSON.stringify([claims, device]));
      tokens.close();
    }
  });

  it("replaces_a_token_before_it_expires_and_retries_a_failed_refresh", async () => {
    // Tokens living 1.5 s are replaced 150 ms before they expire; the first refresh fails
    // twice (retried with backoff), the next ones work.
    const issued: number[] = [];
    let failures = 2;
    const { tokens, renewed } = source(async () => {
      if (issued.length === 1 && failures-- > 0) throw new Error("try later");
      issued.push(Date.now());
      return jwt({ sub: "alice", exp: (Date.now() + 1500) / 1000, n: issued.length });
    });
    await tokens.get();
    await waitFor("two refreshes", () => renewed.length === 2, 5_000);
    tokens.close();
    const gap = issued[1] - issued[0];
    // Scheduled 1,350 ms after the first token (150 ms before it expires) plus two quick
    // retries; timers run late on a loaded machine, so only a gross delay fails here.
    assert.ok(gap >= 1300 && gap < 2500, `refreshed ${gap} ms after the first token, want about 1350 ms`);
    const calls = issued.length;
    await new Promise((r) => setTimeout(r, 1600));
    assert.equal(issued.length, calls, "no refresh after close");
  });
});

describe("withToken", () => {
  it("sends_the_token_on_every_call_and_replaces_a_refused_one", async () => {
    const headers: (string | null)[] = [];
    let refuse = true;
    const fake: Transport = {
      async unary(method, _signal, _timeoutMs, header) {
        headers.push(new Headers(header).get("Authorization"));
        if (refuse) throw new ConnectError("token expired at then", Code.Unauthenticated);
        return { stream: false, service: SyncService, method, header: new Headers(), trailer: new Headers(), message: { acks: [] } } as never;
      },
      async stream(method, _signal, _timeoutMs, header) {
        headers.push(new Headers(header).get("Authorization"));
        const message = (async function* () {
          yield {} as never;
          throw new ConnectError("token expired at then: reconnect with a fresh token and resume", Code.Unauthenticated);
        })();
        return { stream: true, service: SyncService, method, header: new Headers(), trailer: new Headers(), message } as never;
      },
    };
    let n = 0;
    const { tokens } = source(async () => `t${++n}`);
    const client = createClient(SyncService, withToken(fake, tokens));
    await assert.rejects(client.dispatch({ channel: "c", actions: [] }), /token expired/);
    refuse = false;
    await client.dispatch({ channel: "c", actions: [] });
    const got: unknown[] = [];
    await assert.rejects(
      (async () => {
        for await (const m of client.subscribe({})) got.push(m);
      })(),
      /reconnect with a fresh token/,
    );
    assert.equal(got.length, 1);
    await client.dispatch({ channel: "c", actions: [] });
    assert.deepEqual(headers, ["Bearer t1", "Bearer t2", "Bearer t2", "Bearer t3"], "a token refused by a call or a stream is replaced");
    tokens.close();
  });
});
