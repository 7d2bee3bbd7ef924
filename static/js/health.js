/* Health: server states (polled by the consumer) and new events at the top of the timeline.
 * The consumer is HealthConsumer; it sends health.update. */
(function () {
  "use strict";
  const L = window.Live;
  const ORDER = ["up", "drain", "down", "disabled"];

  function applyServers(servers) {
    document.querySelectorAll("#health-servers tr[data-server]").forEach(function (row) {
      const s = servers[row.dataset.server];
      if (!s) return;
      row.querySelector('[data-field="admin"]').replaceChildren(L.pill(s.admin, "state-" + s.admin));
      row.querySelector('[data-field="health"]').replaceChildren(L.healthPill(s));
      L.field(row, "age", s.age_s === null ? "—" : L.duration(s.age_s) + " ago");
      L.field(row, "latency", s.latency_ms === null ? "—" : s.latency_ms.toFixed(1) + " ms");
      L.field(row, "error", s.error || "—");
    });
  }

  /* "2026-01-31 14:05:09" like the server-rendered rows (local time). */
  function stamp(d) {
    const two = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + two(d.getHours()) + ":" +
      two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function stateCell(state) {
    const td = document.createElement("td");
    td.append(L.pill(state, L.STATE_CLASS[state] || ""));
    return td;
  }

  function applyEvents(events) {
    const body = document.querySelector("#events tbody");
    const empty = body.querySelector("tr.none");
    if (events.length && empty) empty.remove();
    events.forEach(function (e) {
      const tr = document.createElement("tr");
      tr.className = "fresh " + (ORDER.indexOf(e.to) > ORDER.indexOf(e.from) ? "event-worse" : "event-better");
      const time = document.createElement("time");
      time.dateTime = e.at;
      time.textContent = stamp(new Date(e.at));
      const when = document.createElement("td");
      when.append(time);
      tr.append(when, L.cell(e.server), stateCell(e.from), stateCell(e.to), L.cell(e.reason),
        L.cell(e.latency_ms === null ? "—" : e.latency_ms.toFixed(1) + " ms", "num"));
      body.prepend(tr);
    });
    while (body.children.length > 200) body.lastElementChild.remove();
  }

  L.connect("/ws/live/health/", function (m) {
    if (m.type !== "health.update") return;
    if (m.servers) applyServers(m.servers);
    if (m.events.length) applyEvents(m.events);
  });
})();
