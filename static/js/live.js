/* Shared by the live dashboards: the WebSocket with reconnects, the status badge, number formatting.
 * Plain browser JavaScript, no build step. The formatting matches monitoring/live/present.py. */
(function () {
  "use strict";

  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_NOT_FOUND = 4404;

  function setStatus(state, text) {
    const badge = document.getElementById("live-status");
    if (!badge) return;
    badge.dataset.state = state;
    badge.textContent = text;
  }

  /* Open ws(s)://<this host><path>; call onMessage(data) for each JSON message; reconnect with backoff.
   * onOpen(socket) runs after every (re)connect, e.g. to tell the server which rows are shown. */
  function connect(path, onMessage, onOpen) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url = scheme + "//" + window.location.host + path;
    let delay = 1000;
    let socket = null;

    function open() {
      setStatus("connecting", "connecting…");
      socket = new WebSocket(url);
      socket.addEventListener("open", function () {
        delay = 1000;
        setStatus("live", "live");
        if (onOpen) onOpen(socket);
      });
      socket.addEventListener("message", function (event) {
        let data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (data.type === "error") { setStatus("error", data.message); return; }
        if (document.getElementById("live-status").dataset.state !== "live") setStatus("live", "live");
        onMessage(data);
      });
      socket.addEventListener("close", function (event) {
        if (event.code === CLOSE_UNAUTHENTICATED) {
          setStatus("expired", "not live: your login has expired, reload the page to log in again");
          return;
        }
        if (event.code === CLOSE_NOT_FOUND) {
          setStatus("gone", "not live: this object no longer exists");
          return;
        }
        setStatus("reconnecting", "connection lost, retrying in " + Math.round(delay / 1000) + " s");
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      });
    }
    open();
    return {
      send: function (message) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
      },
    };
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 120) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function size(n) {
    if (n === null || n === undefined) return "—";
    let value = Number(n);
    const units = ["B", "kB", "MB", "GB", "TB"];
    for (let i = 0; i < units.length; i++) {
      if (value < 1000 || i === units.length - 1) {
        return i === 0 ? Math.floor(value) + " B" : value.toFixed(1) + " " + units[i];
      }
      value /= 1000;
    }
    return "";
  }

  function rate(n) { return n === null || n === undefined ? "—" : size(n) + "/s"; }

  /* Set the text of the [data-field=name] element inside root, if there is one. */
  function field(root, name, text) {
    const el = root.querySelector('[data-field="' + name + '"]');
    if (el && el.textContent !== String(text)) el.textContent = text;
    return el;
  }

  function pill(state, extraClass) {
    const span = document.createElement("span");
    span.className = "pill " + (extraClass || "");
    span.textContent = state;
    return span;
  }

  const STATE_CLASS = { up: "ok", drain: "warn", down: "off", disabled: "off" };

  /* The health cell as templates/live/_server_health.html draws it. */
  function healthPill(health) {
    if (health.stale) {
      return pill(health.health ? "stale: " + health.health : "no check yet", "state-stale");
    }
    const state = health.health || "up";
    const span = pill(state, STATE_CLASS[state] || "");
    if (health.error) span.title = health.error;
    return span;
  }

  function cssEscape(text) {
    return window.CSS && CSS.escape ? CSS.escape(text) : String(text).replace(/["\\]/g, "\\$&");
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  window.Live = { connect, duration, size, rate, field, pill, healthPill, cssEscape, cell, STATE_CLASS };
})();
