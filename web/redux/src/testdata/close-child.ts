// Child process of close.test.ts: syncs three stores (connect-node to a live server,
// connect-web to the same server, connect-web to a dead port), closes them, and then
// does nothing. The parent checks that the process exits by itself: close() must leave
// no stream, socket or timer behind.
import { createConnectTransport } from "@connectrpc/connect-node";
import { captureLogger, makeStore, waitFor } from "../testkit.js";

const live = process.env.ACTIONSYNC_URL!;
const dead = process.env.ACTIONSYNC_DEAD_URL!;
const logger = captureLogger();
const channel = "board:close";
const node = makeStore({ transport: createConnectTransport({ baseUrl: live, httpVersion: "1.1" }), channel, logger });
const web = makeStore({ baseUrl: live, channel, logger });
const offline = makeStore({ baseUrl: dead, channel, logger });

await waitFor("both live stores connected", () => [node, web].every((m) => m.store.getState().sync.status === "connected"));
await waitFor("the offline store retrying", () => offline.store.getState().sync.status === "offline");
node.store.dispatch({ type: "board/add", payload: { item: "n" } });
web.store.dispatch({ type: "board/add", payload: { item: "w" } });
offline.store.dispatch({ type: "board/add", payload: { item: "o" } });
await waitFor("both confirmed", () => [node, web].every((m) => m.store.getState().sync.pending === 0 && m.store.getState().sync.lastSeq === 2));
await Promise.all([node.close(), web.close(), offline.close()]);
console.log(JSON.stringify({ closed: Date.now(), boards: [node, web].map((m) => m.store.getState().board.items.slice().sort()), errors: logger.errors }));
