// One stream per browser on a secure origin (http://127.0.0.1 is one): a leader tab
// elected with Web Locks relays the stream; see sharedstream.ts for the scenario.
import { after, before } from "node:test";
import type { Browser } from "playwright-core";
import { e2e, launchBrowser, type Harness } from "./harness.js";
import { eightTabsShareOneStream } from "./sharedstream.js";

let browser: Browser | undefined;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const test = (name: string, body: (h: Harness) => Promise<void>) =>
  e2e(name, body, () => {
    if (browser === undefined) throw new Error("no browser: launching Chromium failed (see the before hook)");
    return browser;
  });

test("eight_tabs_share_one_stream_and_a_new_leader_takes_over", (h) =>
  eightTabsShareOneStream(h, {
    async checkPage(tab) {
      const locks = await tab.page.evaluate(() => typeof navigator.locks?.request === "function");
      if (!locks) throw new Error("want Web Locks on 127.0.0.1 (a secure context)");
    },
  }));
