// Starts real `actionsync serve` processes for the TypeScript tests: the binary is built
// once per test process from ./cmd/actionsync, and each server listens on a free port
// (--addr 127.0.0.1:0) whose address is read from the start-up log line.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repoRoot = resolve(import.meta.dirname, "../..");
let binary: string | undefined;

/** buildServer compiles the actionsync binary once and returns its path. */
export function buildServer(): string {
  if (binary === undefined) {
    const out = join(mkdtempSync(join(tmpdir(), "actionsync-bin-")), "actionsync");
    execFileSync("go", ["build", "-o", out, "./cmd/actionsync"], { cwd: repoRoot, stdio: "inherit" });
    binary = out;
  }
  return binary;
}

/** A running server process. */
export interface TestServer {
  /** url is the base URL, e.g. http://127.0.0.1:41234. */
  readonly url: string;
  /** port is the port it listens on. */
  readonly port: number;
  /** log returns everything the server has logged so far. */
  log(): string;
  /** stop sends SIGTERM and resolves with the exit code once the process has exited. */
  stop(): Promise<number | null>;
}

/** A server process started by startServer: a TestServer that can also be killed. */
export interface KillableTestServer extends TestServer {
  /**
   * kill sends SIGKILL (no shutdown at all, as in a crash) and resolves with the signal
   * that ended the process once it has exited (null if it had exited on its own before).
   */
  kill(): Promise<NodeJS.Signals | null>;
}

/**
 * startServer runs `actionsync serve` with args (after `--addr 127.0.0.1:<port>`; port 0
 * by default, or the given one, e.g. to restart a server on the same port) and resolves
 * once it listens. Rejects after 20 s or if the process exits first.
 */
export function startServer(args: string[] = [], port = 0): Promise<KillableTestServer> {
  // The start-up line is logged at INFO: don't pass a higher --log-level.
  const child: ChildProcess = spawn(buildServer(), ["serve", "--addr", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`actionsync did not start within 20 s:\n${log}`));
    }, 20_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`actionsync exited with ${code} before listening:\n${log}`));
    });
    child.stderr!.setEncoding("utf8");
    let started = false;
    child.stderr!.on("data", (chunk: string) => {
      log += chunk;
      const m = started ? null : /actionsync listening.* url=(http:\/\/[^\s]+)/.exec(log);
      if (m) {
        started = true;
        clearTimeout(timer);
        child.removeAllListeners("exit");
        const url = m[1];
        const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
        const killedBy = new Promise<NodeJS.Signals | null>((r) => child.on("exit", (_code, signal) => r(signal)));
        resolvePromise({
          url,
          port: Number(new URL(url).port),
          log: () => log,
          stop: () => {
            if (child.exitCode === null) child.kill("SIGTERM");
            return exited;
          },
          kill: () => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
            return killedBy;
          },
        });
      }
    });
  });
}
