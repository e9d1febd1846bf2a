// A counting HTTP/1.1 reverse proxy for the browser tests: the page talks to the proxy,
// the proxy to a real actionsync server, and the test reads how many requests of each
// path are open (e.g. Subscribe streams) as the server's side of the wire sees them.
import { createServer, request, Agent, type Server } from "node:http";

/** CountingProxy forwards every request to its target and counts them per path. */
export interface CountingProxy {
  /** url is the proxy's base URL, e.g. http://127.0.0.1:41234. */
  readonly url: string;
  /** open returns how many requests to path are in flight now (a stream counts until it ends). */
  open(path: string): number;
  /** total returns how many requests to path were received. */
  total(path: string): number;
  /** close stops accepting and ends every open request. */
  close(): Promise<void>;
}

/**
 * startCountingProxy serves HTTP/1.1 (no HTTP/2: a browser then holds at most about six
 * connections to it) on a free port of 127.0.0.1 and forwards each request, headers,
 * body and streamed answer as they come, to target.
 */
export function startCountingProxy(target: string): Promise<CountingProxy> {
  const agent = new Agent({ keepAlive: true });
  const open = new Map<string, number>();
  const total = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    open.set(path, (open.get(path) ?? 0) + 1);
    total.set(path, (total.get(path) ?? 0) + 1);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      open.set(path, open.get(path)! - 1);
    };
    const up = request(new URL(req.url ?? "/", target), { method: req.method, headers: req.headers, agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      res.flushHeaders();
      answer.pipe(res);
    });
    up.on("error", () => res.destroy());
    res.on("close", () => {
      end();
      up.destroy();
    });
    req.pipe(up);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("proxy: no TCP address"));
      resolve({
        url: `http://127.0.0.1:${address.port}`,
        open: (path) => open.get(path) ?? 0,
        total: (path) => total.get(path) ?? 0,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            agent.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
