// Reconnect and retry delays.

/** BackoffOptions shapes the delays between reconnects and retries. */
export interface BackoffOptions {
  /** initialMs caps the first delay. Default 250. */
  initialMs?: number;
  /** maxMs caps every delay. Default 10000. */
  maxMs?: number;
}

/** Backoff hands out the delays of successive failed attempts. */
export interface Backoff {
  /** next returns the delay before the next attempt and counts one more failure. */
  next(): number;
  /** reset starts over after a success. */
  reset(): void;
  /** attempts counts the failures since the last reset. */
  readonly attempts: number;
}

/**
 * createBackoff returns exponential backoff with full jitter: the n-th delay (from 0) is
 * uniform in [0, min(maxMs, initialMs * 2^n)). Full jitter spreads the reconnects of many
 * clients after a server restart instead of synchronising them. random defaults to
 * Math.random; throws a RangeError for non-positive or inverted bounds.
 */
export function createBackoff(options: BackoffOptions = {}, random: () => number = Math.random): Backoff {
  const initialMs = options.initialMs ?? 250;
  const maxMs = options.maxMs ?? 10_000;
  if (!(initialMs > 0) || !(maxMs >= initialMs) || !Number.isFinite(maxMs)) {
    throw new RangeError(`actionsync: backoff wants 0 < initialMs <= maxMs < Infinity, got initialMs ${initialMs}, maxMs ${maxMs}`);
  }
  let attempts = 0;
  return {
    next() {
      // Past 2^30 the cap is maxMs anyway; stop the exponent growing.
      const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempts, 30));
      attempts++;
      return Math.floor(random() * cap);
    },
    reset() {
      attempts = 0;
    },
    get attempts() {
      return attempts;
    },
  };
}

/**
 * sleep resolves after ms, or as soon as signal aborts or wake() is called (whichever is
 * first); its timer never outlives it. It resolves true if the full delay elapsed.
 */
export function sleep(ms: number, signal: AbortSignal, onWake?: (wake: () => void) => void): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    let done = false;
    const finish = (elapsed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve(elapsed);
    };
    const onAbort = () => finish(false);
    const timer = setTimeout(() => finish(true), ms);
    signal.addEventListener("abort", onAbort);
    onWake?.(() => finish(false));
  });
}
