// EV CHARGING — MONITORING PANEL: follows Central's /api/stream (Server-Sent
// Events) and draws the charging points, the on-going requests and the
// application messages, and the weather alerts with EV_W's health.  Plain
// JavaScript, no build step.
//
// Stop/resume/revoke POST to the API (revoking a key asks to confirm first).
// When Central runs with --admin-token-file the API answers 401: the page then
// asks for the token once (prompt) and keeps it in sessionStorage for this tab
// only; the "Token…" button changes or clears it.
"use strict";

(function () {
  const TOKEN_KEY = "evnet.adminToken";
  const MAX_MESSAGES = 200;
  const state = { cps: new Map(), sessions: new Map(), messages: [], weather: null };
  let source = null;
  let reconnectTimer = null;

  const $ = (sel) => document.querySelector(sel);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function date(seconds) { const d = new Date(seconds * 1000); return `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()}`; }
  function time(seconds) { const d = new Date(seconds * 1000); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
  function num(x, digits) { return (typeof x === "number" ? x : 0).toFixed(digits); }

  // -- charging point tiles -------------------------------------------------------

  function actionButton(cpId, action, label) {
    const button = el("button", action, label);
    button.type = "button";
    button.dataset.action = action;
    button.addEventListener("click", () => {
      if (action === "revoke" && !window.confirm(`Revoke the key of ${cpId}? It goes out of service until its Monitor logs in again.`)) return;
      command(`api/cps/${encodeURIComponent(cpId)}/${action}`);
    });
    return button;
  }

  // What a tile says of the CP's key and registration, and why it is out of service.
  function keyLine(cp) {
    const registration = cp.registration && cp.registration !== "registered" ? ` · registration ${cp.registration}` : "";
    return `Key ${cp.key || "none"}${cp.key_id ? ` (${cp.key_id})` : ""}${registration}`;
  }

  function notice(cp) {
    if (cp.key === "revoked") return `${cp.id} out of service: its key was revoked by ${cp.key_revoked_by || "the operator"}`;
    if (cp.weather_alert) return `${cp.id} out of service: weather alert at ${cp.location}${cp.stopped ? " (and stopped by the operator)" : ""}`;
    return "";
  }

  function tile(cp) {
    let node = document.querySelector(`.tile[data-cp="${CSS.escape(cp.id)}"]`);
    if (!node) {
      node = el("article", "tile");
      node.dataset.cp = cp.id;
      node.append(el("div", "id"), el("div", "location"), el("div", "price"), el("div", "state"), el("div", "charge"),
        el("div", "key"), el("div", "notice"));
      const actions = el("div", "actions");
      actions.append(actionButton(cp.id, "stop", "Stop"), actionButton(cp.id, "resume", "Resume"),
        actionButton(cp.id, "revoke", "Revoke key"));
      node.append(actions);
      const grid = $("#cps");
      const after = [...grid.querySelectorAll(".tile")].find((t) => t.dataset.cp > cp.id);
      grid.insertBefore(node, after || null);
    }
    node.dataset.state = cp.state;
    node.dataset.key = cp.key || "none";
    node.dataset.weather = cp.weather_alert ? "alert" : "none";
    node.querySelector(".id").textContent = cp.id;
    node.querySelector(".location").textContent = cp.location;
    node.querySelector(".price").textContent = `${num(cp.price, 3)} €/kWh`;
    node.querySelector(".state").textContent = cp.key === "revoked" ? "Out of service — key revoked"
      : cp.weather_alert && cp.state !== "DESCONECTADO" ? "Out of service — weather alert"
      : cp.state === "PARADO" ? "Out of Order" : cp.state;
    node.querySelector(".key").textContent = keyLine(cp);
    node.querySelector(".notice").textContent = notice(cp);
    const charge = node.querySelector(".charge");
    if (cp.driver_id) {
      charge.textContent = cp.state === "SUMINISTRANDO"
        ? `Driver ${cp.driver_id} · ${num(cp.kw, 1)} kW · ${num(cp.kwh, 3)} kWh · ${num(cp.euros, 2)} €`
        : `Driver ${cp.driver_id} · authorized`;
    } else {
      charge.textContent = "";
    }
    node.querySelector('[data-action="stop"]').disabled = cp.stopped;
    node.querySelector('[data-action="resume"]').disabled = !cp.stopped;
    node.querySelector('[data-action="revoke"]').disabled = cp.key !== "active";
    $("#no-cps").hidden = true;
  }

  function drawCps() {
    document.querySelectorAll(".tile").forEach((t) => { if (!state.cps.has(t.dataset.cp)) t.remove(); });
    [...state.cps.values()].forEach(tile);
    $("#no-cps").hidden = state.cps.size > 0;
  }

  // -- weather: the alerts and EV_W's health ------------------------------------------

  function healthText(h) {
    if (!h || h.state === "not heard from") return "EV_W: not heard from";
    const last = h.last_heartbeat ? `last heartbeat ${date(h.last_heartbeat)} ${time(h.last_heartbeat)}` : "";
    const failing = h.failing && h.failing.length ? ` · cannot read the weather for ${h.failing.join(", ")}` : "";
    const watched = typeof h.cities === "number" ? ` · ${h.cities} ${h.cities === 1 ? "city" : "cities"} watched` : "";
    if (h.state === "unhealthy") return `EV_W UNHEALTHY: no heartbeat for more than ${num(h.unhealthy_after, 0)} s (${last})${failing}`;
    return `EV_W: healthy · ${last}${watched}${failing}`;
  }

  function drawWeather() {
    const w = state.weather || { alerts: [], health: null };
    const health = $("#weather-health");
    health.dataset.health = w.health ? w.health.state : "not heard from";
    health.textContent = healthText(w.health);
    const body = $("#weather-alerts tbody");
    body.replaceChildren();
    w.alerts.forEach((a) => {
      const row = el("tr");
      row.dataset.location = a.location;
      row.append(el("td", null, a.location), el("td", null, a.city), el("td", null, `${num(a.temperature, 1)} °C`),
        el("td", null, `${date(a.observed_at)} ${time(a.observed_at)}`),
        el("td", null, `${date(a.raised_at)} ${time(a.raised_at)}`), el("td", null, a.cps.join(", ") || "none"));
      body.append(row);
    });
    $("#weather-alerts").hidden = w.alerts.length === 0;
    $("#no-alerts").hidden = w.alerts.length > 0;
  }

  // -- on-going requests and messages ------------------------------------------------

  function drawSessions() {
    const body = $("#requests tbody");
    body.replaceChildren();
    [...state.sessions.values()].sort((a, b) => a.started_at - b.started_at).forEach((s) => {
      const row = el("tr");
      row.dataset.session = s.id;
      row.append(el("td", null, date(s.started_at)), el("td", null, time(s.started_at)),
        el("td", null, s.driver_id), el("td", null, s.cp_id));
      body.append(row);
    });
  }

  // The drivers' accounts (GET /api/drivers), read again with each snapshot and charge.
  async function drawDrivers() {
    let answer;
    try { answer = await (await fetch("/api/drivers")).json(); } catch (e) { return; }
    const body = $("#drivers tbody");
    body.replaceChildren(...(answer.drivers || []).map((d) => {
      const row = el("tr");
      row.append(el("td", null, d.driver_id), el("td", null, d.status), el("td", null, d.connected ? "yes" : "no"),
        el("td", null, d.session_id || "-"));
      return row;
    }));
  }

  function messageItem(m) {
    const item = el("li");
    item.dataset.kind = m.kind;
    const at = el("time", null, `${date(m.at)} ${time(m.at)}`);
    item.append(at, document.createTextNode(m.text));
    return item;
  }

  function drawMessages() {
    $("#messages").replaceChildren(...state.messages.slice().reverse().map(messageItem));
  }

  function addMessage(m) {
    state.messages.push(m);
    if (state.messages.length > MAX_MESSAGES) state.messages.shift();
    const list = $("#messages");
    list.prepend(messageItem(m));
    while (list.children.length > MAX_MESSAGES) list.lastChild.remove();
  }

  // -- the stream ---------------------------------------------------------------------

  function setConn(what, text) {
    const badge = $("#conn");
    badge.dataset.conn = what;
    badge.textContent = text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    setConn("connecting", "connecting…");
    source = new EventSource("api/stream");
    // Every (re)connection starts with a snapshot: the whole state, so nothing missed while away.
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      state.cps = new Map(snap.cps.map((cp) => [cp.id, cp]));
      state.sessions = new Map(snap.sessions.map((s) => [s.id, s]));
      state.messages = snap.messages.slice(-MAX_MESSAGES);
      state.weather = snap.weather || null;
      drawCps();
      drawWeather();
      drawSessions();
      drawDrivers();
      drawMessages();
      setConn("live", "live");
    });
    const onCp = (e) => { const { cp } = JSON.parse(e.data); state.cps.set(cp.id, cp); tile(cp); };
    source.addEventListener("cp", onCp);
    source.addEventListener("telemetry", onCp);
    source.addEventListener("session", (e) => {
      const { session } = JSON.parse(e.data);
      if (session.state === "closed") state.sessions.delete(session.id);
      else state.sessions.set(session.id, session);
      drawSessions();
      drawDrivers();
    });
    source.addEventListener("message", (e) => addMessage(JSON.parse(e.data)));
    source.addEventListener("weather", (e) => { state.weather = JSON.parse(e.data).weather; drawWeather(); });
    source.onerror = () => {
      // The browser retries by itself while the connection is merely lost; if it gave up
      // (Central answered with an error), start again a little later.
      setConn("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) reconnectTimer = setTimeout(connect, 3000);
    };
  }

  // -- commands -----------------------------------------------------------------------

  let toastTimer = null;
  function toast(text) {
    const node = $("#toast");
    node.textContent = text;
    node.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => node.classList.remove("show"), 3500);
  }

  function askToken() {
    const given = window.prompt("Admin token for stop/resume/revoke (kept in this tab only; empty to clear):",
      sessionStorage.getItem(TOKEN_KEY) || "");
    if (given === null) return false;
    if (given.trim()) sessionStorage.setItem(TOKEN_KEY, given.trim());
    else sessionStorage.removeItem(TOKEN_KEY);
    return Boolean(given.trim());
  }

  async function command(path, retried) {
    const headers = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let answer;
    try {
      const response = await fetch(path, { method: "POST", headers, body: "{}" });
      answer = await response.json().catch(() => ({ error: response.statusText }));
      if (response.status === 401 && !retried && askToken()) return command(path, true);
      if (!response.ok) { toast(`Refused: ${answer.error || response.status}`); return; }
    } catch (err) {
      toast("Central is not reachable");
      return;
    }
    document.dispatchEvent(new Event("evnet-change"));
    if (answer.message) toast(answer.message);
    else if (answer.results) toast(answer.results.length ? answer.results.map((r) => r.message).join("; ") : "nothing to do");
  }

  // -- the audit trail (GET api/v1/audit: the admin token, or loopback without one) ---------------

  const AUDIT_ROWS = 50;
  async function loadAudit(retried) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const note = $("#audit-note");
    try {
      const response = await fetch(`api/v1/audit?limit=${AUDIT_ROWS}`, { headers });
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (response.status === 401 && !retried && askToken()) return loadAudit(true);
      if (!response.ok) { note.textContent = `The audit trail: ${answer.error || response.status}`; note.hidden = false; return; }
      const body = $("#audit tbody");
      body.replaceChildren(...answer.rows.map((r) => {
        const row = el("tr");
        row.dataset.action = r.action;
        row.dataset.outcome = r.outcome;
        row.append(el("td", null, r.at.replace("T", " ").replace("Z", "")), el("td", null, `${r.actor_kind}:${r.actor_id || "-"}`),
          el("td", null, r.address ? `${r.address}${r.port !== null ? `:${r.port}` : ""}` : "-"), el("td", null, r.action),
          el("td", "outcome", r.outcome), el("td", "detail", JSON.stringify(r.detail)));
        return row;
      }));
      note.textContent = answer.rows.length ? "" : "No row yet.";
      note.hidden = answer.rows.length > 0;
    } catch (err) {
      note.textContent = "Central is not reachable";
      note.hidden = false;
    }
  }

  $("#audit-refresh").addEventListener("click", () => loadAudit());
  // Changes that make rows (a command, a CP logging in) bring the view up to date.
  document.addEventListener("evnet-change", () => loadAudit(true));
  $("#stop-all").addEventListener("click", () => command("api/cps/stop"));
  $("#resume-all").addEventListener("click", () => command("api/cps/resume"));
  $("#set-token").addEventListener("click", () => { askToken(); loadAudit(true); });
  connect();
  loadAudit(true);
}());
