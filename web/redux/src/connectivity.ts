// Connectivity: the device's online and offline events, which the middleware acts on.

/** ConnectivityEvent is the name of an event a Connectivity fires. */
export type ConnectivityEvent = "online" | "offline";

/**
 * Connectivity is where the middleware hears that the device went offline or came back
 * online: in a browser, the window (or a worker's self) with navigator.onLine. `window`
 * and any EventTarget fit (onLine is optional). The middleware adds one listener per
 * event when it starts and removes both in close(); it never dispatches events.
 */
export interface Connectivity {
  addEventListener(type: ConnectivityEvent, listener: () => void): void;
  removeEventListener(type: ConnectivityEvent, listener: () => void): void;
  /** onLine is false when the device is known to be offline (navigator.onLine); read at start. */
  readonly onLine?: boolean;
}

/**
 * defaultConnectivity returns globalThis's online and offline events with
 * navigator.onLine when globalThis has addEventListener and navigator.onLine (browsers,
 * web workers), else undefined (Node: no events, the middleware relies on its failures
 * and timeouts alone).
 */
export function defaultConnectivity(): Connectivity | undefined {
  const g = globalThis as {
    addEventListener?: unknown;
    removeEventListener?: unknown;
    navigator?: { onLine?: unknown };
  };
  if (typeof g.addEventListener !== "function" || typeof g.removeEventListener !== "function") return undefined;
  if (typeof g.navigator?.onLine !== "boolean") return undefined;
  const target = globalThis as unknown as EventTarget;
  const navigator = g.navigator as { onLine: boolean };
  return {
    addEventListener: (type, listener) => target.addEventListener(type, listener),
    removeEventListener: (type, listener) => target.removeEventListener(type, listener),
    get onLine() {
      return navigator.onLine;
    },
  };
}

/**
 * watchConnectivity calls onOffline and onOnline on the target's events until the
 * returned function is called, which removes both listeners.
 */
export function watchConnectivity(target: Connectivity, on: { onOffline(): void; onOnline(): void }): () => void {
  const offline = () => on.onOffline();
  const online = () => on.onOnline();
  target.addEventListener("offline", offline);
  target.addEventListener("online", online);
  return () => {
    target.removeEventListener("offline", offline);
    target.removeEventListener("online", online);
  };
}
