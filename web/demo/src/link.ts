// The demo's link to the server: a connect-web transport that an "offline" switch can cut,
// for trying offline edits without unplugging anything, and the connectivity events the
// middleware follows (the browser's, plus the switch's).
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { Connectivity } from "@actionsync/redux";

/** DemoLink is a transport with an offline switch. */
export interface DemoLink {
  readonly transport: Transport;
  /** connectivity goes to the middleware: the browser's online/offline events and the switch's. */
  readonly connectivity: Connectivity;
  /** offline tells whether the switch is on. */
  readonly offline: boolean;
  /**
   * setOffline turns the switch on (every call fails with unavailable, as on a dead
   * network, and the middleware hears "offline") or off (it hears "online").
   */
  setOffline(offline: boolean): void;
}

/** createDemoLink returns the link to the server at baseUrl, switched on (online). */
export function createDemoLink(baseUrl: string): DemoLink {
  let offline = false;
  const events = new EventTarget();
  const g = globalThis as { addEventListener?: (type: string, listener: () => void) => void; navigator?: { onLine?: boolean } };
  for (const type of ["online", "offline"]) g.addEventListener?.(type, () => events.dispatchEvent(new Event(type)));
  const transport = createConnectTransport({
    baseUrl,
    interceptors: [
      (next) => async (req) => {
        if (offline) throw new ConnectError("offline: the page's Work offline switch is on", Code.Unavailable);
        return next(req);
      },
    ],
  });
  return {
    transport,
    connectivity: {
      addEventListener: (type, listener) => events.addEventListener(type, listener as EventListener),
      removeEventListener: (type, listener) => events.removeEventListener(type, listener as EventListener),
      get onLine() {
        return !offline && g.navigator?.onLine !== false;
      },
    },
    get offline() {
      return offline;
    },
    setOffline(value) {
      if (value === offline) return;
      offline = value;
      events.dispatchEvent(new Event(value ? "offline" : "online"));
    },
  };
}
