// Shared pieces of the browser end-to-end tests: Debian's Chromium driven by
// playwright-core, real `actionsync serve` processes (web/testing/server.ts), a page
// object for the ToDo board demo, bounded polling, and failure artifacts (a screenshot
// and the console of every page, the server logs) in web/e2e/artifacts/.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { extname, join, resolve } from "node:path";
import { test, type TestContext } from "node:test";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { startServer, type KillableTestServer, type TestServer } from "../testing/server.js";

const repoRoot = resolve(import.meta.dirname, "../..");
const artifactsDir = join(import.meta.dirname, "artifacts");
const distDir = join(repoRoot, "web/demo/dist");

/** waitMs bounds every wait of the tests. */
export const waitMs = 10_000;

/** testTimeoutMs bounds a whole test. */
const testTimeoutMs = 120_000;

/**
 * chromiumPath returns the Chromium to drive: $CHROMIUM if set, else `command -v
 * chromium`, else /usr/bin/chromium. It throws, saying how to install Chromium, if
 * there is none: the browser tests fail rather than skip.
 */
export function chromiumPath(): string {
  const candidates: string[] = [];
  if (process.env.CHROMIUM) {
    candidates.push(process.env.CHROMIUM);
  } else {
    try {
      candidates.push(execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim());
    } catch {
      // not on PATH
    }
    candidates.push("/usr/bin/chromium");
  }
  const found = candidates.find((p) => p !== "" && existsSync(p));
  if (found === undefined) {
    throw new Error(
      `Chromium not found (tried ${candidates.join(", ") || "command -v chromium"}). The browser tests need it; install it with\n` +
        "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium\n" +
        "or set CHROMIUM to a Chromium binary. (playwright-core downloads no browser.)",
    );
  }
  return found;
}

/**
 * launchBrowser starts headless Chromium with the flags that work in containers and CI,
 * and extraArgs (e.g. --host-resolver-rules, to open pages at a name that is not
 * localhost: an insecure origin).
 */
export function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/**
 * until polls get every 50 ms until ok accepts its value, and returns that value; after
 * timeoutMs it throws an error naming what was awaited and the last value (or error).
 * A get that hangs (e.g. page.evaluate in a stuck page) counts against the same deadline.
 */
export async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = waitMs): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = "(nothing yet)";
  for (;;) {
    try {
      const v = await within(Math.max(deadline - Date.now(), 100), get);
      if (ok(v)) return v;
      last = v;
    } catch (e) {
      last = e instanceof Error ? `error: ${e.message.split("\n")[0]}` : e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: still not true after ${timeoutMs} ms; last got ${JSON.stringify(last)}`);
    }
    await sleep(50);
  }
}

/** stays checks that get keeps satisfying ok for forMs (a bounded negative check). */
export async function stays<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, forMs: number): Promise<void> {
  const deadline = Date.now() + forMs;
  while (Date.now() < deadline) {
    const v = await within(waitMs, get);
    if (!ok(v)) throw new Error(`${what}: got ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

/** within runs get, failing if it has not settled after ms. */
async function within<T>(ms: number, get: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([get(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** uniqueBoard returns a board name no other test uses. */
export function uniqueBoard(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** TaskView is a task as a page shows it. */
export interface TaskView {
  id: string;
  title: string;
  stageId: string;
}

/** BoardPage drives one window of the ToDo board demo through its data-testid hooks. */
export class BoardPage {
  readonly console: string[] = [];

  constructor(
    readonly page: Page,
    readonly context: BrowserContext,
  ) {
    page.on("console", (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => this.console.push(`[pageerror] ${e.message}`));
  }

  status(): Promise<string> {
    return this.page.getByTestId("connection-status").innerText();
  }

  async pending(): Promise<number> {
    return Number(await this.page.getByTestId("pending-count").innerText());
  }

  stageTitle(stageId: string): Promise<string> {
    return this.page.getByTestId(`stage-title-${stageId}`).inputValue();
  }

  /** setStageTitle types a stage title and leaves the input, which commits it. */
  async setStageTitle(stageId: string, title: string): Promise<void> {
    const input = this.page.getByTestId(`stage-title-${stageId}`);
    await input.fill(title);
    await input.blur();
  }

  /** addTask adds a task with the stage's form. */
  async addTask(stageId: string, title: string): Promise<void> {
    await this.page.getByTestId(`new-task-${stageId}`).fill(title);
    await this.page.getByTestId(`add-task-${stageId}`).click();
  }

  /** tasks lists the task elements in page order. */
  tasks(): Promise<TaskView[]> {
    return this.page.evaluate(() =>
      Array.from(document.querySelectorAll<HTMLElement>("[data-testid^='task-']"))
        .filter((el) => !/^task-(title|move|delete)-/.test(el.dataset.testid!))
        .map((el) => {
          const id = el.dataset.testid!.slice("task-".length);
          const input = el.querySelector<HTMLInputElement>(`[data-testid='task-title-${CSS.escape(id)}']`);
          return { id, title: input?.value ?? "", stageId: el.closest("section")?.dataset.testid ?? "" };
        }),
    );
  }

  /** taskId returns the id of the one task titled title; it fails if there is not exactly one. */
  async taskId(title: string): Promise<string> {
    const found = (await this.tasks()).filter((t) => t.title === title);
    if (found.length !== 1) throw new Error(`want one task titled ${JSON.stringify(title)}, got ${JSON.stringify(found)}`);
    return found[0].id;
  }

  async renameTask(taskId: string, title: string): Promise<void> {
    const input = this.page.getByTestId(`task-title-${taskId}`);
    await input.fill(title);
    await input.blur();
  }

  async moveTask(taskId: string, stageId: string): Promise<void> {
    await this.page.getByTestId(`task-move-${taskId}`).selectOption(stageId);
  }

  async deleteTask(taskId: string): Promise<void> {
    await this.page.getByTestId(`task-delete-${taskId}`).click();
  }

  resetNotice(): Promise<boolean> {
    return this.page.getByTestId("sync-reset").isVisible();
  }

  untilStatus(want: string | string[]): Promise<string> {
    const wants = typeof want === "string" ? [want] : want;
    return until(`connection status ${wants.join(" or ")}`, () => this.status(), (s) => wants.includes(s));
  }

  untilStageTitle(stageId: string, want: string): Promise<string> {
    return until(`stage ${stageId} titled ${JSON.stringify(want)}`, () => this.stageTitle(stageId), (v) => v === want);
  }
}

/** Harness is what one test uses; everything it starts ends when the test does. */
export interface Harness {
  /** server starts an actionsync server (see startServer); it stops after the test. */
  server(args?: string[], port?: number): Promise<KillableTestServer>;
  /** open opens url in a new, independent browser context (its own storage and network). */
  open(url: string): Promise<BoardPage>;
  /** openTab opens url in another tab of page's context (shared storage and network). */
  openTab(page: BoardPage, url: string): Promise<BoardPage>;
  /** staticSite serves web/demo/dist on another origin (http://localhost:PORT) and returns that origin. */
  staticSite(): Promise<string>;
  /** log reports a diagnostic line with the test's result. */
  log(message: string): void;
}

/**
 * e2e declares a test whose body gets a Harness. If the body fails, every page's
 * screenshot goes to web/e2e/artifacts/<name>-<n>.png, with its console in
 * <name>-<n>.log and the servers' logs in <name>-server-<n>.log.
 */
export function e2e(name: string, body: (h: Harness) => Promise<void>, getBrowser: () => Browser): void {
  // The timeout is a last resort: every wait inside is bounded by waitMs already.
  test(name, { timeout: testTimeoutMs }, async (t: TestContext) => {
    removeArtifacts(name);
    const pages: BoardPage[] = [];
    const servers: TestServer[] = [];
    const cleanups: (() => unknown)[] = [];
    const goto = async (page: BoardPage, url: string) => {
      pages.push(page);
      await page.page.goto(url);
      return page;
    };
    const h: Harness = {
      async server(args = [], port = 0) {
        const s = await startServer(args, port);
        servers.push(s);
        cleanups.push(() => s.stop());
        return s;
      },
      async open(url) {
        const context = await getBrowser().newContext();
        cleanups.push(() => context.close());
        context.setDefaultTimeout(waitMs);
        return goto(new BoardPage(await context.newPage(), context), url);
      },
      async openTab(of, url) {
        return goto(new BoardPage(await of.context.newPage(), of.context), url);
      },
      async staticSite() {
        const site = await serveStatic(distDir);
        cleanups.push(() => new Promise((r) => site.close(r)));
        const address = site.address();
        if (address === null || typeof address === "string") throw new Error("static site: no TCP address");
        return `http://localhost:${address.port}`;
      },
      log(message) {
        t.diagnostic(message);
      },
    };
    try {
      await body(h);
    } catch (err) {
      await saveArtifacts(name, pages, servers);
      throw err;
    } finally {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (e) {
          t.diagnostic(`cleanup: ${e}`);
        }
      }
    }
  });
}

/** removeArtifacts deletes what an earlier failed run of test name left. */
function removeArtifacts(name: string): void {
  if (!existsSync(artifactsDir)) return;
  for (const f of readdirSync(artifactsDir)) {
    if (f.startsWith(`${name}-`)) rmSync(join(artifactsDir, f), { force: true });
  }
}

async function saveArtifacts(name: string, pages: BoardPage[], servers: TestServer[]): Promise<void> {
  mkdirSync(artifactsDir, { recursive: true });
  for (const [i, p] of pages.entries()) {
    const base = join(artifactsDir, `${name}-${i + 1}`);
    try {
      await p.page.screenshot({ path: `${base}.png`, fullPage: true, timeout: 5_000 });
    } catch (e) {
      p.console.push(`[harness] screenshot failed: ${e}`);
    }
    writeFileSync(`${base}.log`, `${p.page.url()}\n${p.console.join("\n")}\n`);
  }
  for (const [i, s] of servers.entries()) {
    writeFileSync(join(artifactsDir, `${name}-server-${i + 1}.log`), s.log());
  }
  console.error(`artifacts of failed test ${name} are in ${artifactsDir}`);
}

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** serveStatic serves the files of dir (no subdirectories) on a free port of localhost. */
function serveStatic(dir: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const name = path === "/" ? "index.html" : path.slice(1);
    const type = contentTypes[extname(name)];
    if (req.method !== "GET" || name.includes("/") || type === undefined || !existsSync(join(dir, name))) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": type, "Cache-Control": "no-cache" }).end(readFileSync(join(dir, name)));
  });
  return new Promise((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(0, "localhost", () => resolvePromise(server));
  });
}
