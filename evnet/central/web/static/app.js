// EV CHARGING — MONITORING PANEL: follows Central's event stream (Server-Sent
// Events) and keeps the page's state: the summary bar, the CPs (cpviews.js),
// the live charts (chart.js) and the other sections (sections.js).  Plain
// JavaScript, no build step.
//
// The summary's counts per state and the power delivered now are computed here
// from the CPs the stream sends; energy and revenue today, and Central's list of
// alerts, come from GET api/v1/summary and api/v1/alerts (and their stream events
// `summary` and `alerts`) when Central has them: a 404 there means "not available",
// and the page then shows what it can tell by itself.
"use strict";

(function (E) {
  const { $, STATES, sections: S } = E;
  const POWER_WINDOW = 600; // seconds of network power on the chart
  const state = {
    sessions: new Map(),
    messages: [],
    weather: null,
    live: false,
    power: 0,
    charging: 0,
    serverSummary: null, // GET api/v1/summary's answer (or its stream event), when Central has one
    serverAlerts: null, // likewise for api/v1/alerts
    alertsKey: "",
    selected: null,
    filterStates: new Set(),
  };
  const power = new E.Series(POWER_WINDOW + 60);
  const charges = new E.ChargeHistory(POWER_WINDOW);
  const views = new E.CpViews({ grid: $("#cps"), table: $("#cp-rows") }, afterFlush);
  const powerChart = new E.LineChart($("#power-chart"), POWER_WINDOW, [{ label: "network", unit: "kW", digits: 1, cls: "kw" }]);
  const cpChart = new E.LineChart($("#cp-chart"), POWER_WINDOW, [
    { label: "power", unit: "kW", digits: 1, cls: "kw" }, { label: "energy", unit: "kWh", digits: 3, cls: "kwh" }]);
  let source = null;
  let reconnectTimer = null;

  // -- the summary bar -------------------------------------------------------------------

  function afterFlush(cps) {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    let kw = 0;
    cps.forEach((cp) => {
      counts[cp.state] = (counts[cp.state] || 0) + 1;
      if (cp.state === "SUMINISTRANDO" && typeof cp.kw === "number") kw += cp.kw;
    });
    state.power = kw;
    state.charging = counts.SUMINISTRANDO;
    STATES.forEach((s) => E.setText(document.querySelector(`#summary .count[data-state="${s}"] .n`), String(counts[s])));
    E.setText($("#sum-cps"), String(cps.size));
    E.setText($("#sum-power"), E.num(kw, 1));
    E.setText($("#sum-charges"), String(counts.SUMINISTRANDO));
    E.setText($("#shown"), views.filter.states.size || views.filter.text ? `showing ${views.shownCount()} of ${cps.size}` : `${cps.size} CPs`);
    $("#no-cps").hidden = cps.size > 0;
    drawAlerts();
  }

  function drawToday() {
    const s = state.serverSummary;
    $("#sum-today").hidden = !s || !s.today;
    if (s && s.today) {
      E.setText($("#sum-energy"), E.num(s.today.energy_kwh, 1));
      E.setText($("#sum-revenue"), E.num(s.today.revenue_eur, 2));
      E.setText($("#sum-sessions"), String(s.today.sessions));
    }
  }

  function drawAlerts() {
    const alerts = state.serverAlerts || S.localAlerts(views.cps, state.weather);
    const count = state.serverSummary && typeof state.serverSummary.alerts === "number" && !state.serverAlerts
      ? Math.max(state.serverSummary.alerts, alerts.length) : alerts.length;
    E.setText($("#sum-alerts .n"), String(count));
    E.setData($("#sum-alerts"), "alerts", String(count));
    const key = alerts.map((a) => `${a.id}|${a.message}`).join("\n");
    if (key !== state.alertsKey) { state.alertsKey = key; S.drawAlerts(alerts); }
  }

  // -- filters, search, views ----------------------------------------------------------------

  function applyFilter() {
    views.setFilter(state.filterStates, $("#search").value);
    document.querySelectorAll("#summary .count").forEach((b) => b.setAttribute("aria-pressed", String(state.filterStates.has(b.dataset.state))));
    $("#clear-filter").hidden = !state.filterStates.size && !$("#search").value;
  }

  function setMode(mode) {
    views.setMode(mode);
    $("#cps").hidden = mode !== "grid";
    $("#cp-table").hidden = mode !== "table";
    $("#view-grid").setAttribute("aria-pressed", String(mode === "grid"));
    $("#view-table").setAttribute("aria-pressed", String(mode === "table"));
  }

  // -- the charts ----------------------------------------------------------------------------

  function select(cpId) {
    document.querySelectorAll("[data-selected]").forEach((n) => n.removeAttribute("data-selected"));
    state.selected = cpId;
    $("#cp-chart-box").hidden = !cpId;
    if (!cpId) return;
    const cp = views.cps.get(cpId);
    document.querySelectorAll(`[data-cp="${CSS.escape(cpId)}"]`).forEach((n) => { n.dataset.selected = "yes"; });
    $("#cp-chart-title").textContent = cp ? `${cp.id} — ${cp.location}` : cpId;
    drawCpChart();
  }

  function drawCpChart() {
    if (!state.selected) return;
    const h = charges.of(state.selected);
    const cp = views.cps.get(state.selected);
    $("#cp-chart-note").textContent = h ? `charge ${h.session}${cp && cp.driver_id ? ` of driver ${cp.driver_id}` : ""}` : "no charge since this page opened";
    cpChart.draw(Date.now() / 1000, h ? [h.kw, h.kwh] : [new E.Series(1), new E.Series(1)]);
  }

  function tick() {
    const now = Date.now() / 1000;
    if (state.live) power.push(now, state.power);
    powerChart.draw(now, [power]);
    drawCpChart();
  }

  // -- the stream ---------------------------------------------------------------------------

  function setConn(what, text) {
    const badge = $("#conn");
    badge.dataset.conn = what;
    badge.textContent = text;
  }

  // The optional endpoints: used when they answer, silently left out when they do not (404).
  async function probe(path, use) {
    try {
      const answer = await E.getJson(path);
      use(answer.ok ? answer.body : null);
    } catch (err) {
      use(null);
    }
  }

  function probeOptional() {
    probe(E.API.summary, (body) => { state.serverSummary = body; drawToday(); drawAlerts(); });
    probe(E.API.alerts, (body) => { state.serverAlerts = body && Array.isArray(body.alerts) ? body.alerts : null; drawAlerts(); });
  }

  let historyTimer = null;
  function historySoon() {
    if (!historyTimer) historyTimer = setTimeout(() => { historyTimer = null; S.loadHistory(); }, 1500);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    setConn("connecting", "connecting…");
    source = new EventSource(E.API.stream);
    // Every (re)connection starts with a snapshot: the whole state, so nothing missed while away.
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      views.replaceAll(snap.cps);
      state.sessions = new Map(snap.sessions.map((s) => [s.id, s]));
      state.messages = snap.messages;
      state.weather = snap.weather || null;
      state.live = true;
      S.drawWeather(state.weather);
      S.drawRequests(state.sessions);
      S.drawMessages(state.messages);
      S.loadDrivers();
      probeOptional();
      setConn("live", "live");
    });
    const onCp = (e) => {
      const { cp } = JSON.parse(e.data);
      views.put(cp);
      charges.record(cp, Date.now() / 1000);
    };
    source.addEventListener("cp", onCp);
    source.addEventListener("telemetry", onCp);
    source.addEventListener("session", (e) => {
      const { session } = JSON.parse(e.data);
      if (session.state === "closed") { state.sessions.delete(session.id); historySoon(); } else state.sessions.set(session.id, session);
      S.drawRequests(state.sessions);
      S.loadDrivers();
    });
    source.addEventListener("message", (e) => S.addMessage(JSON.parse(e.data)));
    source.addEventListener("weather", (e) => { state.weather = JSON.parse(e.data).weather; S.drawWeather(state.weather); drawAlerts(); });
    source.addEventListener("summary", (e) => { const d = JSON.parse(e.data); state.serverSummary = d.summary || d; drawToday(); drawAlerts(); });
    source.addEventListener("alerts", (e) => { const d = JSON.parse(e.data); state.serverAlerts = Array.isArray(d.alerts) ? d.alerts : null; drawAlerts(); });
    source.onerror = () => {
      // The browser retries by itself while the connection is merely lost; if it gave up
      // (Central answered with an error), start again a little later.
      state.live = false;
      setConn("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) reconnectTimer = setTimeout(connect, 3000);
    };
  }

  // -- wiring ---------------------------------------------------------------------------------

  // One listener per view (not one per CP): a button is its action, anywhere else selects the CP.
  function onCpClick(e) {
    const holder = e.target.closest("[data-cp]");
    if (!holder) return;
    const button = e.target.closest("button[data-action]");
    if (button) E.cpAction(holder.dataset.cp, button.dataset.action);
    else select(state.selected === holder.dataset.cp ? null : holder.dataset.cp);
  }
  $("#cps").addEventListener("click", onCpClick);
  $("#cp-table").addEventListener("click", onCpClick);
  $("#cp-chart-close").addEventListener("click", () => select(null));

  document.querySelectorAll("#summary .count").forEach((b) => b.addEventListener("click", () => {
    const s = b.dataset.state;
    if (state.filterStates.has(s)) state.filterStates.delete(s); else state.filterStates.add(s);
    applyFilter();
  }));
  $("#search").addEventListener("input", applyFilter);
  $("#clear-filter").addEventListener("click", () => { state.filterStates.clear(); $("#search").value = ""; applyFilter(); });
  $("#view-grid").addEventListener("click", () => setMode("grid"));
  $("#view-table").addEventListener("click", () => setMode("table"));
  $("#sum-alerts").addEventListener("click", () => $("#alerts-title").scrollIntoView());

  $("#audit-refresh").addEventListener("click", () => S.loadAudit());
  // Changes that make rows (a command, a CP logging in) bring the view up to date.
  document.addEventListener("evnet-change", () => S.loadAudit(true));
  $("#hist-form").addEventListener("submit", (e) => { e.preventDefault(); S.loadHistory(); });
  $("#hist-older").addEventListener("click", () => S.loadHistory(true));
  $("#stop-all").addEventListener("click", () => E.command(E.API.all("stop")));
  $("#resume-all").addEventListener("click", () => E.command(E.API.all("resume")));
  $("#set-token").addEventListener("click", () => { E.askToken(); S.loadAudit(true); });

  E.state = state; // for tests and the console
  E.views = views;
  setInterval(tick, 1000);
  connect();
  tick();
  S.loadAudit(true);
  S.loadHistory();
}(window.EVNET));
