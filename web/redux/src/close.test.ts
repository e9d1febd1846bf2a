import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { it } from "node:test";
import { startTestServer } from "./testkit.js";

it("close_leaves_nothing_running_so_the_process_exits", async () => {
  const srv = await startTestServer();
  const gone = await startTestServer();
  const deadUrl = gone.url;
  await gone.stop();
  try {
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./testdata/close-child.ts", import.meta.url))], {
      env: { ...process.env, ACTIONSYNC_URL: srv.url, ACTIONSYNC_DEAD_URL: deadUrl },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`the child did not exit within 15 s (something outlived close()); stdout: ${out} stderr: ${err}`));
      }, 15_000);
      child.on("exit", (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const exitedAt = Date.now();
    assert.equal(code, 0, `stderr: ${err}`);
    const report = JSON.parse(out.trim().split("\n").at(-1)!) as { closed: number; boards: string[][]; errors: string[] };
    assert.deepEqual(report.boards, [["n", "w"], ["n", "w"]]);
    assert.deepEqual(report.errors, []);
    assert.ok(exitedAt - report.closed < 2_000, `exited ${exitedAt - report.closed} ms after close()`);
  } finally {
    await srv.stop();
  }
});
