/* Sticky sessions: follow the rows on this page (bytes, idle time, persistence left, closed) and, on the
 * first page of live connections, add new connections that match the filter.
 * The consumer is SessionsConsumer; it sends sessions.update and takes {"type": "watch", ...}. */
(function () {
  "use strict";
  const L = window.Live;
  const MAX_ROWS = 200;
  const connections = document.querySelector("#connections tbody");
  const persistence = document.querySelector("#persistence tbody");
  if (!connections && !persistence) return; // the filter has an error: nothing to follow
  const body = connections || persistence;
  const firstPage = connections && document.getElementById("connections").dataset.firstPage === "1";
  let opened = 0;
  let closed = 0;
  let link = null;

  function now() { return Date.now() / 1000; }

  function rows() { return Array.from(body.querySelectorAll("tr[data-client-key]")); }

  function watch() {
    if (!link) return;
    const ids = connections ? rows().filter((r) => !r.classList.contains("closed")).map((r) => r.dataset.id) : [];
    const pairs = rows().filter((r) => r.dataset.group).map((r) => [r.dataset.group, r.dataset.clientKey]);
    link.send({ type: "watch", connections: ids, persistence: pairs });
  }

  function markClosed(row) {
    if (row.classList.contains("closed")) return;
    row.classList.add("closed");
    row.title = connections ? "closed" : "expired";
  }

  function setBytes(row, session) {
    if (session.bytes_in !== undefined) L.field(row, "bytes_in", L.size(session.bytes_in));
    if (session.bytes_out !== undefined) L.field(row, "bytes_out", L.size(session.bytes_out));
    if (session.active_at) row.dataset.active = session.active_at;
  }

  function newRow(s) {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    tr.dataset.id = s.id;
    tr.dataset.vs = s.vs;
    tr.dataset.group = s.group || "";
    tr.dataset.clientKey = s.client_key;
    tr.dataset.opened = s.opened_at;
    tr.dataset.active = s.active_at || s.opened_at;
    tr.dataset.ttl = "";
    const vip = L.cell(s.vs + " ");
    const port = document.createElement("span");
    port.className = "muted";
    port.textContent = ":" + s.port + "/" + s.protocol;
    vip.append(port);
    const server = L.cell(s.server + " ");
    const address = document.createElement("span");
    address.className = "muted";
    address.textContent = s.server_address;
    server.append(address);
    const cells = [["age", ""], ["idle", ""], ["bytes_in", L.size(s.bytes_in || 0)],
      ["bytes_out", L.size(s.bytes_out || 0)], ["ttl", s.group ? "…" : "no persistence"]].map(function (pair) {
      const td = L.cell(pair[1], "num");
      td.dataset.field = pair[0];
      return td;
    });
    tr.append(L.cell(s.client, "id"), L.cell(s.client_key, "id"), vip, server, ...cells,
      L.cell(s.id.slice(0, s.id.lastIndexOf(":")), "id"));
    return tr;
  }

  function addOpened(sessions) {
    if (!firstPage || !sessions.length) return;
    const empty = body.querySelector("tr.none");
    if (empty) empty.remove();
    sessions.forEach((s) => {
      if (!body.querySelector('tr[data-id="' + L.cssEscape(s.id) + '"]')) body.prepend(newRow(s));
    });
    let all = rows();
    // Keep the table bounded: drop closed rows first, then the oldest.
    for (let i = all.length - 1; i >= 0 && all.length > MAX_ROWS; i--) {
      if (all[i].classList.contains("closed")) { all[i].remove(); all.splice(i, 1); }
    }
    while (all.length > MAX_ROWS) all.pop().remove();
  }

  function apply(m) {
    opened += m.opened_count;
    closed += m.closed_count;
    const counts = document.getElementById("live-counts");
    if (counts) counts.textContent = "Since this page loaded: " + opened + " opened, " + closed + " closed.";
    const total = document.getElementById("total-connections");
    if (total) total.textContent = Math.max(0, Number(total.textContent) + m.opened_count - m.closed_count);
    const before = rows().length;
    addOpened(m.opened);
    m.closed.forEach(function (c) {
      const row = body.querySelector('tr[data-id="' + L.cssEscape(c.id) + '"]');
      if (row) { setBytes(row, c); markClosed(row); }
    });
    Object.entries(m.rows || {}).forEach(function ([id, session]) {
      const row = body.querySelector('tr[data-id="' + L.cssEscape(id) + '"]');
      if (!row) return;
      if (session === null) markClosed(row); else setBytes(row, session);
    });
    Object.entries(m.persistence || {}).forEach(function ([key, entry]) {
      const space = key.indexOf(" ");
      const group = key.slice(0, space);
      const client = key.slice(space + 1);
      rows().filter((r) => r.dataset.group === group && r.dataset.clientKey === client).forEach(function (row) {
        row.dataset.ttl = entry ? entry.ttl : "";
        row.dataset.ttlAt = now();
        if (entry) L.field(row, "host", entry.host);
        if (!entry && persistence) markClosed(row);
        if (!entry && connections) L.field(row, "ttl", "expired");
      });
    });
    if (rows().length !== before || m.closed.length) watch();
  }

  function tick() {
    const t = now();
    rows().forEach(function (row) {
      if (row.dataset.opened) L.field(row, "age", L.duration(t - Number(row.dataset.opened)));
      if (row.dataset.active && !row.classList.contains("closed")) {
        L.field(row, "idle", L.duration(t - Number(row.dataset.active)));
      }
      if (row.dataset.ttl !== "" && row.dataset.ttl !== undefined) {
        const since = row.dataset.ttlAt ? t - Number(row.dataset.ttlAt) : 0;
        L.field(row, "ttl", L.duration(Number(row.dataset.ttl) - since));
      }
    });
  }

  rows().forEach((row) => { row.dataset.ttlAt = now(); });
  window.setInterval(tick, 1000);
  link = L.connect("/ws/live/sessions/" + window.location.search, function (message) {
    if (message.type === "sessions.update") apply(message);
  }, watch);
})();
