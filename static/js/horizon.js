/* Horizon sessions: the rows are grouped on the server (one pass over all workers' sessions, cached), so
 * the page does not patch rows itself: when the sessions WebSocket reports connections opened or closed,
 * it reloads this page's table (same URL, same filter and page), at most once per REFRESH_MS, and at
 * least every IDLE_REFRESH_MS for the byte counters, and once after every (re)connect of the socket: what
 * happened before it joined (e.g. the connections a Kill closed while the page reloaded) sent no event here.
 * Ages tick here between two reloads. */
(function () {
  "use strict";
  const L = window.Live;
  const REFRESH_MS = 2000; // never more often: each reload may recompute the whole-table grouping
  const SETTLE_MS = 1200; // after an event, let the workers' session hashes and the 1 s cache catch up
  const IDLE_REFRESH_MS = 5000;
  let container = document.getElementById("horizon-table");
  if (!container) return; // the filter has an error: nothing to follow
  let timer = null;
  let last = Date.now();
  let loading = false;

  function schedule(delay) {
    if (timer !== null) return;
    const wait = Math.max(delay, REFRESH_MS - (Date.now() - last));
    timer = window.setTimeout(function () { timer = null; reload(); }, wait);
  }

  function reload() {
    if (loading) { schedule(REFRESH_MS); return; }
    loading = true;
    last = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("horizon-table");
        if (fresh) {
          container.replaceWith(fresh);
          container = fresh;
          tick();
        }
      })
      .catch(function (error) {
        const badge = document.getElementById("live-status");
        if (badge) { badge.dataset.state = "error"; badge.textContent = "refresh failed: " + error.message; }
      })
      .finally(function () { loading = false; });
  }

  function tick() {
    const t = Date.now() / 1000;
    container.querySelectorAll("tr[data-opened]").forEach(function (row) {
      if (row.dataset.opened) L.field(row, "age", L.duration(t - Number(row.dataset.opened)));
    });
    if (Date.now() - last > IDLE_REFRESH_MS) schedule(0);
  }

  window.setInterval(tick, 1000);
  L.connect("/ws/live/sessions/", function (message) {
    if (message.type === "sessions.update" && (message.opened_count || message.closed_count)) schedule(SETTLE_MS);
  }, function () { schedule(SETTLE_MS); });
})();
