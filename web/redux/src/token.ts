// Bearer tokens: fetched with the app's getToken, sent on every call, fetched again
// before they expire and when the server refuses them.
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createBackoff, type BackoffOptions } from "./backoff.js";
import type { Logger } from "./outbox.js";

/** maxRefreshLeadMs is the most time before a token's expiry that the next one is fetched. */
export const maxRefreshLeadMs = 30_000;

/** minTokenLifeMs: a token with less time left than this when fetched is not refreshed ahead. */
export const minTokenLifeMs = 1_000;

/** tokenTimeoutMs bounds one getToken call: one that takes longer fails. */
export const tokenTimeoutMs = 30_000;

/** devicePattern is what the server accepts after "sub:" in a client id. */
export const devicePattern = /^[A-Za-z0-9_.-]{1,15}$/;

const subPattern = /^[A-Za-z0-9_.-]{1,48}$/;

/** TokenClaims are the claims the middleware reads from a token. */
export interface TokenClaims {
  /** sub is the token's subject, if it is a string. */
  sub?: string;
  /** expMs is the token's exp in milliseconds since the epoch, if it is a number. */
  expMs?: number;
}

/**
 * readClaims decodes the payload of a JWT (header.payload.signature, base64url JSON)
 * without verifying it: the server does. It returns {} for a token it cannot read (an
 * opaque token): such a token is refreshed only when the server refuses it.
 */
export function readClaims(token: string): TokenClaims {
  const part = token.split(".")[1];
  if (part === undefined || part === "") return {};
  try {
    const b64 = part.replaceAll("-", "+").replaceAll("_", "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    if (typeof claims !== "object" || claims === null) return {};
    const { sub, exp } = claims as { sub?: unknown; exp?: unknown };
    const out: TokenClaims = {};
    if (typeof sub === "string") out.sub = sub;
    if (typeof exp === "number" && Number.isFinite(exp)) out.expMs = exp * 1000;
    return out;
  } catch {
    return {};
  }
}

/**
 * refreshDelayMs returns how long after fetchedAtMs to fetch the token that replaces one
 * expiring at expMs: when 10% of the time it had left is left, and at most 30 s before
 * expiry (so a 10-minute token is replaced 30 s before it expires, a 5-second one half a
 * second before). Undefined when it had less than {@link minTokenLifeMs} left: the
 * server's refusal, with the callers' backoff, decides when to fetch again, so a getToken
 * that keeps handing out expired tokens is not called in a tight loop.
 */
export function refreshDelayMs(expMs: number, fetchedAtMs: number): number | undefined {
  const left = expMs - fetchedAtMs;
  if (!(left >= minTokenLifeMs)) return undefined;
  return left - Math.min(maxRefreshLeadMs, left / 10);
}

/** TokenSourceOptions wires a token source to the middleware. */
export interface TokenSourceOptions {
  /** getToken is the app's: it resolves with a bearer token (a JWT). */
  getToken: () => Promise<string>;
  /** device, if given, makes the client id "sub:device". */
  device?: string;
  logger: Logger;
  /** backoff paces the retries of a refresh that failed. */
  backoff: BackoffOptions;
  /**
   * onToken is called when a token replaces another one (not with the first): open
   * streams may then move to it.
   */
  onToken(): void;
}

/** TokenSource holds the current token of one middleware instance. */
export interface TokenSource {
  /**
   * get resolves with the current token: it calls getToken when there is none, when it
   * has expired, or when the server refused it. Concurrent calls share one getToken call.
   * It rejects with a ConnectError: `unauthenticated` when getToken fails (throws, takes
   * longer than {@link tokenTimeoutMs}, resolves with something else than a non-empty
   * string), `canceled` when signal aborts or the source is closed.
   */
  get(signal?: AbortSignal): Promise<string>;
  /** refused records that the server answered `unauthenticated` to a call made with token: the next get calls getToken. */
  refused(token: string): void;
  /**
   * clientId is the client id the current token allows: its sub, or "sub:device" with a
   * device; "" before the first token, or when the token's sub cannot be read (the server
   * then uses the token's sub).
   */
  clientId(): string;
  /** close stops the refresh timer; get rejects from then on. */
  close(): void;
}

/**
 * createTokenSource keeps the token the middleware sends. A token whose exp it can read
 * (the JWT payload, unverified) is replaced before it expires (see {@link refreshDelayMs}),
 * and onToken lets the streams move to the new one; a refresh that fails is retried with
 * backoff until the token expires. A token the server refused is replaced on the next get.
 */
export function createTokenSource(o: TokenSourceOptions): TokenSource {
  const backoff = createBackoff(o.backoff);
  let current: { token: string; claims: TokenClaims; refused: boolean } | undefined;
  let fetching: Promise<string> | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // fetchTimeout bounds the getToken call in flight; close() clears it, so that a hanging
  // getToken does not keep a Node process alive.
  let fetchTimeout: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  let warnedSub = false;

  const usable = () => current !== undefined && !current.refused && !(current.claims.expMs !== undefined && current.claims.expMs <= Date.now());

  function fetchToken(): Promise<string> {
    fetching ??= (async () => {
      let token: unknown;
      try {
        token = await Promise.race([
          o.getToken(),
          new Promise((_, reject) => {
            if (!closed) fetchTimeout = setTimeout(() => reject(new Error(`no token within ${tokenTimeoutMs} ms`)), tokenTimeoutMs);
          }),
        ]);
      } catch (err) {
        throw new ConnectError(`getToken failed: ${err instanceof Error ? err.message : String(err)}`, Code.Unauthenticated);
      } finally {
        clearTimeout(fetchTimeout);
        fetchTimeout = undefined;
        fetching = undefined;
      }
      if (typeof token !== "string" || token === "") throw new ConnectError("getToken resolved with no token: want a non-empty string", Code.Unauthenticated);
      const replaced = current !== undefined && current.token !== token;
      current = { token, claims: readClaims(token), refused: false };
      if (o.device !== undefined && current.claims.sub === undefined && !warnedSub) {
        warnedSub = true;
        o.logger.warn("actionsync: the token's sub cannot be read, so the device option cannot be applied: the server uses the token's sub as the client id");
      }
      schedule(Date.now());
      if (replaced && !closed) o.onToken();
      return token;
    })();
    return fetching;
  }

  /** schedule arms the refresh of the current token, fetched at fetchedAt. */
  function schedule(fetchedAt: number) {
    clearTimeout(timer);
    timer = undefined;
    const exp = current?.claims.expMs;
    const delay = exp === undefined ? undefined : refreshDelayMs(exp, fetchedAt);
    if (closed || delay === undefined) return;
    // setTimeout fires at once for delays past 2^31-1 ms (24.8 days).
    timer = setTimeout(refresh, Math.min(delay, 2 ** 31 - 1));
  }

  function refresh() {
    timer = undefined;
    if (closed) return;
    fetchToken().then(
      () => backoff.reset(),
      (err: unknown) => {
        if (closed) return;
        const delay = backoff.next();
        const exp = current?.claims.expMs;
        if (exp !== undefined && Date.now() + delay < exp) {
          o.logger.warn(`actionsync: could not refresh the token (${ConnectError.from(err).rawMessage}); retrying in ${delay} ms`);
          timer = setTimeout(refresh, delay);
        } else {
          // The server ends the streams when the token expires; the reconnects try again.
          o.logger.warn(`actionsync: could not refresh the token (${ConnectError.from(err).rawMessage}) before it expires`);
        }
      },
    );
  }

  return {
    get(signal) {
      if (closed || signal?.aborted) return Promise.reject(new ConnectError("the call was canceled", Code.Canceled));
      const got = usable() ? Promise.resolve(current!.token) : fetchToken();
      if (signal === undefined) return got;
      // getToken cannot be aborted: the caller stops waiting, the fetch goes on for the next.
      return new Promise((resolve, reject) => {
        const onAbort = () => reject(new ConnectError("the call was canceled", Code.Canceled));
        signal.addEventListener("abort", onAbort, { once: true });
        got.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
      });
    },
    refused(token) {
      if (current?.token === token) current.refused = true;
    },
    clientId() {
      const sub = current?.claims.sub;
      if (sub === undefined || !subPattern.test(sub)) return "";
      return o.device === undefined ? sub : `${sub}:${o.device}`;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      timer = undefined;
      clearTimeout(fetchTimeout);
      fetchTimeout = undefined;
    },
  };
}

/**
 * withToken returns a transport that sends `Authorization: Bearer <token>` on every call
 * of transport, the token from tokens.get, and tells tokens when the server refused it
 * (`unauthenticated`, also when a stream ends with it: an expired token). It wraps the
 * transport rather than being one of its interceptors so that it works with any
 * transport the app passes, whatever interceptors that one has.
 */
export function withToken(transport: Transport, tokens: TokenSource): Transport {
  const noteRefusal = (err: unknown, token: string) => {
    if (err instanceof ConnectError && err.code === Code.Unauthenticated) tokens.refused(token);
  };
  const authorized = (header: HeadersInit | undefined, token: string) => {
    const h = new Headers(header);
    h.set("Authorization", `Bearer ${token}`);
    return h;
  };
  return {
    async unary(method, signal, timeoutMs, header, input, contextValues) {
      const token = await tokens.get(signal);
      try {
        return await transport.unary(method, signal, timeoutMs, authorized(header, token), input, contextValues);
      } catch (err) {
        noteRefusal(err, token);
        throw err;
      }
    },
    async stream(method, signal, timeoutMs, header, input, contextValues) {
      const token = await tokens.get(signal);
      let res: Awaited<ReturnType<typeof transport.stream<typeof method.input, typeof method.output>>>;
      try {
        res = await transport.stream(method, signal, timeoutMs, authorized(header, token), input, contextValues);
      } catch (err) {
        noteRefusal(err, token);
        throw err;
      }
      const inner = res.message;
      const message = (async function* () {
        try {
          yield* inner;
        } catch (err) {
          noteRefusal(err, token);
          throw err;
        }
      })();
      return { ...res, message };
    },
  };
}
