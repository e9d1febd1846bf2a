// The React hooks, rendered with react-dom/server: the server-side rendering case (a
// store with autoStart false, no stream) and what the hooks read.
import assert from "node:assert/strict";
import { it } from "node:test";
import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { Provider } from "react-redux";
import { configureStore, createSlice, type PayloadAction } from "@reduxjs/toolkit";
import { createSync } from "./index.js";
import { usePending, useSyncStatus } from "./react.js";

const notes = createSlice({
  name: "notes",
  initialState: [] as string[],
  reducers: { noted: (state, action: PayloadAction<string>) => void state.push(action.payload) },
});

it("hooks_render_on_the_server_without_a_stream", async () => {
  // Nothing listens at this address: a stream opened by mistake would fail and turn the
  // status "offline"; it stays "connecting".
  const sync = createSync({ baseUrl: "http://127.0.0.1:9", channel: "notes:ssr", actions: notes.actions, storage: null, connectivity: null });
  const store = configureStore({ reducer: sync.reducer({ notes: notes.reducer }), middleware: (gdm) => gdm().concat(sync.middleware) });
  store.dispatch(notes.actions.noted("drafted on the server"));
  function View() {
    const status = useSyncStatus(sync);
    const pending = usePending(sync);
    return createElement("p", null, `${status.status} ${status.pending} ${pending.map((a) => `${a.type}:${String(a.payload)}`).join(",")}`);
  }
  const html = renderToString(createElement(Provider, { store, children: createElement(View) }));
  assert.equal(html, "<p>connecting 1 notes/noted:drafted on the server</p>");
  assert.equal(sync.pending(), sync.pending(), "the same array until the list changes");
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(store.getState().sync.status, "connecting", "no stream was opened");
  await sync.close();
});
