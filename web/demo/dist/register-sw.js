// Registers the demo's service worker (sw.js: the app shell that lets the page load
// offline). A separate file because the page's Content-Security-Policy allows no inline
// script. Browsers without service workers, or pages not served over a secure context
// (http://localhost counts as one), simply load online only.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js").catch((err) => console.warn("actionsync demo: no offline shell:", err));
}
