// EV CHARGING — MONITORING PANEL: what every part of the page shares — the API's
// paths (one table, so that moving them under /api/v1/ is one change), DOM
// helpers, times and numbers, the admin token and the write commands.
//
// Stop/resume/revoke POST to the API.  When Central runs with --admin-token-file
// the API answers 401: the page then asks for the token once (prompt) and keeps
// it in sessionStorage for this tab only; the "Token…" button changes or clears it.
"use strict";

window.EVNET = window.EVNET || {};

(function (E) {
  const TOKEN_KEY = "evnet.adminToken";

  E.API = {
    stream: "api/v1/stream",
    cps: "api/v1/cps",
    drivers: "api/v1/drivers",
    sessions: "api/v1/sessions",
    audit: "api/v1/audit",
    summary: "api/v1/summary", // optional: a 404 means "not available here"
    alerts: "api/v1/alerts", // optional, likewise
    cp: (id, action) => `api/v1/cps/${encodeURIComponent(id)}/${action}`,
    all: (action) => `api/v1/cps/${action}`,
  };

  E.STATES = ["ACTIVADO", "SUMINISTRANDO", "PARADO", "AVERIADO", "DESCONECTADO"];

  E.$ = (sel) => document.querySelector(sel);

  E.el = function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  // Sets a node's text only when it changed (a cached copy: no DOM read, no needless layout).
  E.setText = function setText(node, text) {
    if (node._text !== text) { node._text = text; node.textContent = text; }
  };
  E.setData = function setData(node, name, value) {
    if (node.dataset[name] !== value) node.dataset[name] = value;
  };

  function pad(n) { return String(n).padStart(2, "0"); }
  E.date = (seconds) => { const d = new Date(seconds * 1000); return `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()}`; };
  E.time = (seconds) => { const d = new Date(seconds * 1000); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; };
  E.when = (seconds) => (typeof seconds === "number" ? `${E.date(seconds)} ${E.time(seconds)}` : "-");
  E.num = (x, digits) => (typeof x === "number" && Number.isFinite(x) ? x : 0).toFixed(digits);

  // -- the toast ---------------------------------------------------------------------

  let toastTimer = null;
  E.toast = function toast(text) {
    const node = E.$("#toast");
    node.textContent = text;
    node.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => node.classList.remove("show"), 3500);
  };

  // -- the admin token and authorized requests ----------------------------------------

  E.askToken = function askToken() {
    const given = window.prompt("Admin token for stop/resume/revoke (kept in this tab only; empty to clear):",
      sessionStorage.getItem(TOKEN_KEY) || "");
    if (given === null) return false;
    if (given.trim()) sessionStorage.setItem(TOKEN_KEY, given.trim());
    else sessionStorage.removeItem(TOKEN_KEY);
    return Boolean(given.trim());
  };

  E.authHeaders = function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  };

  // GET a JSON answer: {status, ok, body}; body is {} when the answer was not JSON.
  E.getJson = async function getJson(path, withToken) {
    const response = await fetch(path, { headers: withToken ? E.authHeaders() : {} });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    return { status: response.status, ok: response.ok, body };
  };

  E.command = async function command(path, retried) {
    let answer;
    try {
      const response = await fetch(path, { method: "POST", headers: E.authHeaders({ "Content-Type": "application/json" }), body: "{}" });
      answer = await response.json().catch(() => ({ error: response.statusText }));
      if (response.status === 401 && !retried && E.askToken()) return command(path, true);
      if (!response.ok) { E.toast(`Refused: ${answer.error || response.status}`); return; }
    } catch (err) {
      E.toast("Central is not reachable");
      return;
    }
    document.dispatchEvent(new Event("evnet-change"));
    if (answer.message) E.toast(answer.message);
    else if (answer.results) E.toast(answer.results.length ? answer.results.map((r) => r.message).join("; ") : "nothing to do");
  };

  E.cpAction = function cpAction(cpId, action) {
    if (action === "revoke" && !window.confirm(`Revoke the key of ${cpId}? It goes out of service until its Monitor logs in again.`)) return;
    E.command(E.API.cp(cpId, action));
  };
}(window.EVNET));
