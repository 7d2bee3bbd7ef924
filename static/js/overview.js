/* Overview: live numbers and charts per VIP, server states, workers, health events.
 * The consumer (monitoring/live/consumers.py OverviewConsumer) sends overview.update messages. */
(function () {
  "use strict";
  const L = window.Live;
  const HISTORY = 300; // points kept per chart (about five minutes)
  const charts = {};

  function makeChart(el) {
    const data = [[], [], []];
    const opts = {
      width: Math.max(el.clientWidth, 280),
      height: 170,
      scales: { x: { time: true }, conns: { range: (u, min, max) => [0, Math.max(1, max)] },
                bytes: { range: (u, min, max) => [0, Math.max(1000, max)] } },
      series: [
        {},
        { label: "new connections/s", scale: "conns", stroke: "#1f6fb2", width: 2,
          value: (u, v) => (v === null ? "—" : v.toFixed(1)) },
        { label: "bytes/s", scale: "bytes", stroke: "#1e7d3a", width: 2, value: (u, v) => L.rate(v) },
      ],
      axes: [
        {},
        { scale: "conns", size: 45 },
        { scale: "bytes", side: 1, size: 70, grid: { show: false }, values: (u, vals) => vals.map((v) => L.size(v)) },
      ],
    };
    return { plot: new window.uPlot(opts, data, el), data: data, el: el };
  }

  document.querySelectorAll("[data-chart]").forEach(function (el) {
    if (window.uPlot) charts[el.dataset.chart] = makeChart(el);
  });
  window.addEventListener("resize", function () {
    Object.values(charts).forEach((c) => c.plot.setSize({ width: Math.max(c.el.clientWidth, 280), height: 170 }));
  });

  function vipCards() { return document.querySelectorAll("section.vip[data-vs]"); }

  function applyStats(at, stats) {
    let total = 0;
    vipCards().forEach(function (card) {
      const name = card.dataset.vs;
      const s = stats.services[name] || { active: 0, conn_rate: 0, bytes_in_rate: 0, bytes_out_rate: 0 };
      total += s.active;
      L.field(card, "active", s.active);
      card.querySelectorAll("tr[data-server]").forEach(function (row) {
        const server = stats.servers[row.dataset.server];
        L.field(row, "sessions", server ? server.active : 0);
      });
      if (!stats.rates_ready) return; // a rate needs two batches of each worker
      L.field(card, "conn_rate", s.conn_rate.toFixed(1));
      L.field(card, "bytes_in_rate", L.rate(s.bytes_in_rate));
      L.field(card, "bytes_out_rate", L.rate(s.bytes_out_rate));
      const chart = charts[name];
      if (chart) {
        chart.data[0].push(at);
        chart.data[1].push(s.conn_rate);
        chart.data[2].push(s.bytes_in_rate + s.bytes_out_rate);
        if (chart.data[0].length > HISTORY) chart.data.forEach((series) => series.shift());
        chart.plot.setData(chart.data);
      }
    });
    const totalEl = document.getElementById("total-active");
    if (totalEl) totalEl.textContent = total;
  }

  function applyState(state) {
    const version = document.getElementById("running-version");
    if (version) version.textContent = state.version ? "version " + state.version : "none published";
    vipCards().forEach(function (card) {
      const listening = (state.listening[card.dataset.vs] || []).length;
      const pill = card.querySelector('[data-field="listening"]');
      if (pill) {
        pill.textContent = "listening on " + listening + "/" + state.workers.length + " workers";
        pill.className = "pill " + (listening ? "ok" : "warn");
      }
      const sticky = state.sticky[card.dataset.vs] || {};
      card.querySelectorAll("tr[data-server]").forEach(function (row) {
        const server = state.servers[row.dataset.server];
        if (!server) return;
        const admin = row.querySelector('[data-field="admin"]');
        admin.replaceChildren(L.pill(server.admin, "state-" + server.admin));
        row.querySelector('[data-field="health"]').replaceChildren(L.healthPill(server));
        const stickyCell = row.querySelector('[data-field="sticky"]');
        if (stickyCell.textContent !== "—") stickyCell.textContent = sticky[row.dataset.server] || 0;
      });
    });
    renderWorkers(state);
  }

  function renderWorkers(state) {
    const body = document.querySelector("#workers tbody");
    const count = document.getElementById("worker-count");
    if (count) count.textContent = state.workers.length;
    const rows = state.workers.map(function (w) {
      const tr = document.createElement("tr");
      tr.dataset.worker = w.id;
      if (w.behind) tr.classList.add("behind");
      if (w.late) tr.classList.add("late");
      tr.append(L.cell(w.id), L.cell(w.host));
      const version = L.cell(w.version === null ? "none" : String(w.version));
      if (w.behind) {
        const flag = document.createElement("span");
        flag.className = "flag";
        flag.textContent = " old version: running is " + state.version;
        version.append(flag);
      }
      tr.append(version);
      const age = L.cell(w.age_s.toFixed(1) + " s ago", "num");
      if (w.late) age.insertAdjacentHTML("beforeend", ' <span class="flag">late</span>');
      tr.append(age, L.cell(String(w.active), "num"), L.cell(String(w.listeners), "num"));
      tr.append(L.cell(w.redis ? "ok" : "unreachable"));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = L.cell("No proxy worker has sent a heartbeat in the last 10 seconds.", "empty");
      td.colSpan = 7;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function applyEvents(events) {
    const list = document.getElementById("events");
    if (!list) return;
    const placeholder = list.querySelector(".empty");
    if (placeholder) placeholder.remove();
    const order = ["up", "drain", "down", "disabled"];
    events.forEach(function (e) {
      const li = document.createElement("li");
      li.className = order.indexOf(e.to) > order.indexOf(e.from) ? "event-worse" : "event-better";
      li.textContent = new Date(e.at).toLocaleTimeString() + " " + e.server + ": " + e.from + " → " + e.to +
        " (" + e.reason + ")";
      list.prepend(li);
    });
    while (list.children.length > 20) list.lastElementChild.remove();
  }

  L.connect("/ws/live/overview/", function (message) {
    if (message.type !== "overview.update") return;
    if (message.stats) applyStats(message.at, message.stats);
    if (message.state) applyState(message.state);
    if (message.events) applyEvents(message.events);
  });
})();
