// One stream per browser on an insecure origin: pages opened at http://board.test:PORT
// (a name Chromium resolves to 127.0.0.1), where there are no Web Locks, as on a
// plain-HTTP deployment reached by name. Lease locks in localStorage elect the leader
// tab; see sharedstream.ts for the scenario.
import assert from "node:assert/strict";
import { after, before } from "node:test";
import type { Browser } from "playwright-core";
import { e2e, launchBrowser, type Harness } from "./harness.js";
import { eightTabsShareOneStream } from "./sharedstream.js";

const host = "board.test";

let browser: Browser | undefined;
before(async () => {
  browser = await launchBrowser([`--host-resolver-rules=MAP ${host} 127.0.0.1`]);
});
after(async () => {
  await browser?.close();
});

const test = (name: string, body: (h: Harness) => Promise<void>) =>
  e2e(name, body, () => {
    if (browser === undefined) throw new Error("no browser: launching Chromium failed (see the before hook)");
    return browser;
  });

test("eight_tabs_share_one_stream_without_web_locks", (h) =>
  eightTabsShareOneStream(h, {
    host,
    async checkPage(tab, board) {
      const env = await tab.page.evaluate(
        (key) => ({ secure: window.isSecureContext, locks: typeof navigator.locks, lease: localStorage.getItem(key) !== null }),
        `actionsync:lease:actionsync:stream:board:${board}`,
      );
      assert.deepEqual(env, { secure: false, locks: "undefined", lease: true }, "an insecure context, whose leader holds a lease");
    },
  }));
