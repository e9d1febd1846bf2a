// Entry point of the demo page. Query parameters:
//   ?board=NAME  the board to show, synced on channel board:NAME (default: main)
//   ?api=URL     the actionsync server (default: the page's own origin), so the page
//                can be served from another origin (the server then needs --cors-origins)
//   ?user=NAME   sign in as NAME on a server that requires tokens: they come from the
//                server's /demo-token (actionsync serve --demo-auth true)
//   ?role=view   with ?user: a read-only user (default edit)
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Provider } from "react-redux";
import { App } from "./App.js";
import { parseUser } from "./auth.js";
import { createBoardStore } from "./store.js";

/** boardNamePattern keeps board:NAME within the server's default channel pattern. */
const boardNamePattern = /^[A-Za-z0-9_.:-]{1,122}$/;

function start(root: HTMLElement) {
  const params = new URLSearchParams(location.search);
  const boardName = params.get("board") || "main";
  const api = params.get("api") || location.origin;
  let baseUrl: string;
  try {
    const u = new URL(api, location.href);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
    baseUrl = u.href.replace(/\/+$/, "");
  } catch {
    return fail(root, `?api=${api} is not an http(s) URL.`);
  }
  if (!boardNamePattern.test(boardName)) {
    return fail(root, `?board=${boardName} is not a board name: use 1 to 122 of A-Z a-z 0-9 _ . : -`);
  }
  const user = parseUser(params);
  if (user !== null && "problem" in user) return fail(root, user.problem);
  document.title = `${boardName} · actionsync ToDo board`;
  const { store, sync, link, identity } = createBoardStore({ baseUrl, channel: `board:${boardName}`, user });
  createRoot(root).render(
    <StrictMode>
      <Provider store={store}>
        <App boardName={boardName} user={user} sync={sync} link={link} identity={identity} />
      </Provider>
    </StrictMode>,
  );
}

function fail(root: HTMLElement, message: string) {
  const p = document.createElement("p");
  p.className = "notice notice-error";
  p.setAttribute("role", "alert");
  p.dataset.testid = "config-error";
  p.textContent = message;
  root.replaceChildren(p);
}

start(document.getElementById("root")!);
