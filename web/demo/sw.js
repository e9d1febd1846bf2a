// The demo's service worker: an app shell, so that a reload while offline still shows
// the board (the Redux middleware restores the last confirmed state from localStorage
// and keeps unsent edits in its outbox). It handles only GETs of the page's own files,
// network first: online, the browser always runs what the server serves now (the server
// sends no-cache and an ETag; a 304 costs no download); offline, the copy from the last
// successful load. Calls to the actionsync API are never touched.
const CACHE = "actionsync-demo-shell-v1";
const SHELL = ["./", "index.html", "app.js", "style.css", "register-sw.js"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

/** shellKey returns the cache key of a request for a shell file, or null. */
function shellKey(request) {
  if (request.method !== "GET") return null;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return null;
  const name = url.pathname.slice(scope.pathname.length);
  if (name === "" || request.mode === "navigate") return "./"; // the page, whatever its query
  return SHELL.includes(name) ? name : null;
}

self.addEventListener("fetch", (event) => {
  const key = shellKey(event.request);
  if (key === null) return; // the API, and anything else: the browser's own handling
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(event.request);
        if (response.ok) await cache.put(key, response.clone());
        return response;
      } catch (err) {
        const cached = await cache.match(key);
        if (cached) return cached;
        throw err;
      }
    })(),
  );
});
