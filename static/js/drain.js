/* Drain page: the verdict ("safe to take down"), the counts and the connections still open, live.
 * The consumer is DrainConsumer; it sends drain.update when anything changed. */
(function () {
  "use strict";
  const L = window.Live;
  const pk = document.currentScript.dataset.serverPk;
  const verdict = document.getElementById("verdict");

  function renderRemaining(connections) {
    const body = document.querySelector("#remaining tbody");
    const t = Date.now() / 1000;
    const rows = connections.map(function (s) {
      const tr = document.createElement("tr");
      tr.append(L.cell(s.client), L.cell(s.vs), L.cell(L.duration(t - s.opened_at), "num"),
        L.cell(L.duration(s.active_at ? t - s.active_at : null), "num"), L.cell(L.size(s.bytes_in || 0), "num"),
        L.cell(L.size(s.bytes_out || 0), "num"), L.cell(s.id.slice(0, s.id.lastIndexOf(":"))));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = L.cell("Nothing is connected to this server.", "empty");
      td.colSpan = 7;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  L.connect("/ws/live/drain/" + encodeURIComponent(pk) + "/", function (m) {
    if (m.type !== "drain.update") return;
    verdict.className = "verdict verdict-" + m.level;
    verdict.dataset.level = m.level;
    L.field(verdict, "headline", m.headline);
    L.field(verdict, "detail", m.detail);
    L.field(document, "sessions", m.sessions);
    L.field(document, "sticky", m.sticky);
    L.field(document, "admin", m.admin);
    L.field(document, "workers", m.workers);
    document.querySelectorAll("#drain-actions button[name=state]").forEach(function (button) {
      button.disabled = button.value === m.admin;
    });
    renderRemaining(m.connections);
  });
})();
