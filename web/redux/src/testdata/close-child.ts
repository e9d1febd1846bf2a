// Child process of close.test.ts: syncs five stores (connect-node to a live server,
// connect-web to the same server, connect-web to a dead port, one with a token to
// refresh in an hour, one whose getToken never answers), closes them, and then does
// nothing. The parent checks that the process exits by itself: close() must leave
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
// An unsigned token (the server has no auth: it ignores it) whose refresh is an hour away.
const claims = Buffer.from(JSON.stringify({ sub: "closer", exp: Math.floor(Date.now() / 1000) + 3600 })).toString("base64url");
const tokened = makeStore({ baseUrl: live, channel, logger, getToken: async () => `e30.${claims}.c2ln` });
const hanging = makeStore({ baseUrl: live, channel, logger, getToken: () => new Promise<string>(() => {}) });

await waitFor("the live stores connected", () => [node, web, tokened].every((m) => m.store.getState().sync.status === "connected"));
await waitFor("the offline store retrying", () => offline.store.getState().sync.status === "offline");
node.store.dispatch({ type: "board/add", payload: { item: "n" } });
web.store.dispatch({ type: "board/add", payload: { item: "w" } });
offline.store.dispatch({ type: "board/add", payload: { item: "o" } });
await waitFor("both confirmed", () => [node, web].every((m) => m.store.getState().sync.pending === 0 && m.store.getState().sync.lastSeq === 2));
if (hanging.store.getState().sync.status !== "connecting") throw new Error("the store without a token connected");
await Promise.all([node.close(), web.close(), offline.close(), tokened.close(), hanging.close()]);
console.log(JSON.stringify({ closed: Date.now(), boards: [node, web].map((m) => m.store.getState().board.items.slice().sort()), errors: logger.errors }));
