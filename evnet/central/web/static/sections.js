// The page's other sections: weather and EV_W's health, the alerts, the on-going
// requests, the drivers, the sessions history, the application messages and the
// audit trail.  Each section draws from what it is given or reads the API itself.
"use strict";

(function (E) {
  const { $, el, when, num } = E;
  const S = {};
  const MAX_MESSAGES = 200;

  // -- weather: the alerts and EV_W's health ------------------------------------------

  S.healthText = function healthText(h) {
    if (!h || h.state === "not heard from") return "EV_W: not heard from";
    const last = h.last_heartbeat ? `last heartbeat ${when(h.last_heartbeat)}` : "";
    const failing = h.failing && h.failing.length ? ` · cannot read the weather for ${h.failing.join(", ")}` : "";
    const watched = typeof h.cities === "number" ? ` · ${h.cities} ${h.cities === 1 ? "city" : "cities"} watched` : "";
    if (h.state === "unhealthy") return `EV_W UNHEALTHY: no heartbeat for more than ${num(h.unhealthy_after, 0)} s (${last})${failing}`;
    return `EV_W: healthy · ${last}${watched}${failing}`;
  };

  S.drawWeather = function drawWeather(weather) {
    const w = weather || { alerts: [], health: null };
    const health = $("#weather-health");
    health.dataset.health = w.health ? w.health.state : "not heard from";
    health.textContent = S.healthText(w.health);
    $("#weather-alerts tbody").replaceChildren(...w.alerts.map((a) => {
      const row = el("tr");
      row.dataset.location = a.location;
      row.append(el("td", null, a.location), el("td", null, a.city), el("td", null, `${num(a.temperature, 1)} °C`),
        el("td", null, when(a.observed_at)), el("td", null, when(a.raised_at)), el("td", null, a.cps.join(", ") || "none"));
      return row;
    }));
    $("#weather-alerts").hidden = w.alerts.length === 0;
    $("#no-alerts").hidden = w.alerts.length > 0;
  };

  // -- alerts: Central's own list when it has one (GET api/v1/alerts), else what the page can tell ---

  // The alerts the page can tell by itself: weather alerts, EV_W unhealthy, a Monitor without its Engine.
  S.localAlerts = function localAlerts(cps, weather) {
    const alerts = [];
    const w = weather || { alerts: [], health: null };
    w.alerts.forEach((a) => alerts.push({ id: `weather:${a.location}`, kind: "weather", subject: a.location, since: a.raised_at,
      severity: "warning", message: `weather alert at ${a.location}: ${num(a.temperature, 1)} °C in ${a.city}` }));
    if (w.health && w.health.state === "unhealthy") {
      alerts.push({ id: "evw", kind: "evw", subject: "EV_W", since: w.health.last_heartbeat || null, severity: "critical",
        message: "EV_W is unhealthy: no heartbeat" });
    }
    cps.forEach((cp) => {
      if (cp.engine_ok === false && cp.state === "AVERIADO") {
        alerts.push({ id: `engine:${cp.id}`, kind: "engine", subject: cp.id, since: null, severity: "critical",
          message: `${cp.id}: its Monitor lost its Engine` });
      }
    });
    return alerts;
  };

  S.drawAlerts = function drawAlerts(alerts) {
    const list = $("#alerts");
    list.replaceChildren(...alerts.map((a) => {
      const item = el("li");
      item.dataset.kind = a.kind;
      item.dataset.severity = a.severity || "warning";
      item.append(el("time", null, typeof a.since === "number" ? when(a.since) : (a.since || "")), el("span", "subject", a.subject),
        document.createTextNode(a.message));
      return item;
    }));
    $("#no-alert").hidden = alerts.length > 0;
  };

  // -- on-going requests --------------------------------------------------------------

  S.drawRequests = function drawRequests(sessions) {
    $("#requests tbody").replaceChildren(...[...sessions.values()].sort((a, b) => a.started_at - b.started_at).map((s) => {
      const row = el("tr");
      row.dataset.session = s.id;
      row.append(el("td", null, E.date(s.started_at)), el("td", null, E.time(s.started_at)), el("td", null, s.driver_id), el("td", null, s.cp_id));
      return row;
    }));
  };

  // -- the drivers' accounts (GET api/v1/drivers) -------------------------------------------

  S.loadDrivers = async function loadDrivers() {
    let answer;
    try { answer = await E.getJson(E.API.drivers); } catch (e) { return; }
    if (!answer.ok) return;
    $("#drivers tbody").replaceChildren(...(answer.body.drivers || []).map((d) => {
      const row = el("tr");
      row.dataset.driver = d.driver_id;
      row.append(el("td", null, d.driver_id), el("td", null, d.status), el("td", null, d.connected ? "yes" : "no"),
        el("td", null, d.session_id || "-"));
      return row;
    }));
  };

  // -- the sessions history (GET api/v1/sessions; filters by CP and driver, older pages) -----------

  const history = { next: null, rows: [] };

  function historyQuery(before) {
    const params = new URLSearchParams({ limit: "50" });
    const cp = $("#hist-cp").value.trim();
    const driver = $("#hist-driver").value.trim();
    if (cp) params.set("cp", cp);
    if (driver) params.set("driver", driver);
    if (before) params.set("before", before);
    return { url: `${E.API.sessions}?${params}`, cp, driver };
  }

  S.loadHistory = async function loadHistory(older) {
    const q = historyQuery(older ? history.next : null);
    const note = $("#hist-note");
    let answer;
    try { answer = await E.getJson(q.url); } catch (e) { note.textContent = "Central is not reachable"; note.hidden = false; return; }
    if (!answer.ok) { note.textContent = `The sessions: ${answer.body.error || answer.status}`; note.hidden = false; return; }
    // A server that does not filter by CP or driver is filtered here too.
    const rows = (answer.body.sessions || answer.body.recent || [])
      .filter((s) => (!q.cp || s.cp_id === q.cp) && (!q.driver || s.driver_id === q.driver));
    history.rows = older ? history.rows.concat(rows) : rows;
    history.next = answer.body.next || null;
    $("#history tbody").replaceChildren(...history.rows.map((s) => {
      const row = el("tr");
      row.dataset.session = s.id;
      row.dataset.status = s.status;
      row.append(el("td", null, s.id), el("td", null, s.cp_id), el("td", null, s.driver_id), el("td", null, when(s.started_at)),
        el("td", null, when(s.ended_at)), el("td", null, num(s.kwh, 3)), el("td", null, num(s.euros, 2)),
        el("td", null, s.seconds), el("td", null, s.status), el("td", null, s.end_reason || "-"));
      return row;
    }));
    $("#hist-older").hidden = !history.next;
    note.textContent = history.rows.length ? "" : "No charge matches.";
    note.hidden = history.rows.length > 0;
  };

  // -- application messages --------------------------------------------------------------

  function messageItem(m) {
    const item = el("li");
    item.dataset.kind = m.kind;
    item.append(el("time", null, when(m.at)), document.createTextNode(m.text));
    return item;
  }

  S.drawMessages = function drawMessages(messages) {
    $("#messages").replaceChildren(...messages.slice(-MAX_MESSAGES).reverse().map(messageItem));
  };

  S.addMessage = function addMessage(m) {
    const list = $("#messages");
    list.prepend(messageItem(m));
    while (list.children.length > MAX_MESSAGES) list.lastChild.remove();
  };

  // -- the audit trail (GET api/v1/audit: the admin token, or loopback without one) ---------------

  const AUDIT_ROWS = 50;
  S.loadAudit = async function loadAudit(retried) {
    const note = $("#audit-note");
    try {
      const answer = await E.getJson(`${E.API.audit}?limit=${AUDIT_ROWS}`, true);
      if (answer.status === 401 && !retried && E.askToken()) return loadAudit(true);
      if (!answer.ok) { note.textContent = `The audit trail: ${answer.body.error || answer.status}`; note.hidden = false; return; }
      $("#audit tbody").replaceChildren(...answer.body.rows.map((r) => {
        const row = el("tr");
        row.dataset.action = r.action;
        row.dataset.outcome = r.outcome;
        row.append(el("td", null, r.at.replace("T", " ").replace("Z", "")), el("td", null, `${r.actor_kind}:${r.actor_id || "-"}`),
          el("td", null, r.address ? `${r.address}${r.port !== null ? `:${r.port}` : ""}` : "-"), el("td", null, r.action),
          el("td", "outcome", r.outcome), el("td", "detail", JSON.stringify(r.detail)));
        return row;
      }));
      note.textContent = answer.body.rows.length ? "" : "No row yet.";
      note.hidden = answer.body.rows.length > 0;
    } catch (err) {
      note.textContent = "Central is not reachable";
      note.hidden = false;
    }
  };

  E.sections = S;
}(window.EVNET));
