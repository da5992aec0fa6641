// The charging points, as a grid of tiles or as a compact table (rows in a CSS grid,
// each skipped by the browser's rendering while off screen: content-visibility), with search and
// filters by state — fluid at thousands of CPs: one DOM node per CP and view,
// keyed by its id; an event only marks its CP dirty, and the dirty ones are
// redrawn together once per animation frame (a node's text and attributes are
// written only when they changed).  The hidden view is brought up to date when
// it is shown.
"use strict";

(function (E) {
  // -- what a CP says ---------------------------------------------------------------

  function stateText(cp) {
    if (cp.key === "revoked") return "Out of service — key revoked";
    if (cp.weather_alert && cp.state !== "DESCONECTADO") return "Out of service — weather alert";
    return cp.state === "PARADO" ? "Out of Order" : cp.state;
  }

  function chargeText(cp) {
    if (!cp.driver_id) return "";
    return cp.state === "SUMINISTRANDO"
      ? `Driver ${cp.driver_id} · ${E.num(cp.kw, 1)} kW · ${E.num(cp.kwh, 3)} kWh · ${E.num(cp.euros, 2)} €`
      : `Driver ${cp.driver_id} · authorized`;
  }

  // What a CP says of its key and registration.
  function keyLine(cp) {
    const registration = cp.registration && cp.registration !== "registered" ? ` · registration ${cp.registration}` : "";
    return `Key ${cp.key || "none"}${cp.key_id ? ` (${cp.key_id})` : ""}${registration}`;
  }

  function notice(cp) {
    if (cp.key === "revoked") return `${cp.id} out of service: its key was revoked by ${cp.key_revoked_by || "the operator"}`;
    if (cp.weather_alert) return `${cp.id} out of service: weather alert at ${cp.location}${cp.stopped ? " (and stopped by the operator)" : ""}`;
    return "";
  }

  E.cpText = { stateText, chargeText, keyLine, notice };

  function actionButtons(parent) {
    for (const [action, label] of [["stop", "Stop"], ["resume", "Resume"], ["revoke", "Revoke key"]]) {
      const button = E.el("button", action, label);
      button.type = "button";
      button.dataset.action = action;
      parent.append(button);
    }
  }

  function markNode(node, cp) {
    E.setData(node, "state", cp.state);
    E.setData(node, "key", cp.key || "none");
    E.setData(node, "weather", cp.weather_alert ? "alert" : "none");
  }

  function setButtons(node, cp) {
    const [stop, resume, revoke] = node._buttons;
    if (stop.disabled !== Boolean(cp.stopped)) stop.disabled = Boolean(cp.stopped);
    if (resume.disabled !== !cp.stopped) resume.disabled = !cp.stopped;
    if (revoke.disabled !== (cp.key !== "active")) revoke.disabled = cp.key !== "active";
  }

  // -- the two views: a tile or a row per CP --------------------------------------------

  // A CP's node: a `cellTag` child per name, then one with its action buttons (with ARIA roles in the table).
  function makeNode(cp, tag, className, cellTag, names, roles) {
    const node = E.el(tag, className);
    node.dataset.cp = cp.id;
    node._f = {};
    const cells = names.concat(["actions"]).map((name) => E.el(cellTag, name));
    if (roles) { node.setAttribute("role", "row"); cells.forEach((c) => c.setAttribute("role", "cell")); }
    names.forEach((name, i) => { node._f[name] = cells[i]; });
    node.append(...cells);
    actionButtons(cells[names.length]);
    node._buttons = [...cells[names.length].children];
    return node;
  }

  const TILE_FIELDS = ["id", "location", "price", "state", "charge", "key", "notice"];
  const tileView = {
    make: (cp) => makeNode(cp, "article", "tile", "div", TILE_FIELDS, false),
    update(node, cp) {
      markNode(node, cp);
      const f = node._f;
      E.setText(f.id, cp.id);
      E.setText(f.location, cp.location);
      E.setText(f.price, `${E.num(cp.price, 3)} €/kWh`);
      E.setText(f.state, stateText(cp));
      E.setText(f.key, keyLine(cp));
      E.setText(f.notice, notice(cp));
      E.setText(f.charge, chargeText(cp));
      setButtons(node, cp);
    },
  };

  const ROW_CELLS = ["id", "location", "state", "price", "driver", "kw", "kwh", "euros", "registration", "key"];
  const rowView = {
    make: (cp) => makeNode(cp, "div", "cp-row", "span", ROW_CELLS, true),
    update(node, cp) {
      markNode(node, cp);
      const f = node._f;
      const charging = cp.state === "SUMINISTRANDO";
      E.setText(f.id, cp.id);
      E.setText(f.location, cp.location);
      E.setText(f.state, stateText(cp));
      E.setText(f.price, E.num(cp.price, 3));
      E.setText(f.driver, cp.driver_id || "");
      E.setText(f.kw, charging ? E.num(cp.kw, 1) : "");
      E.setText(f.kwh, charging ? E.num(cp.kwh, 3) : "");
      E.setText(f.euros, charging ? E.num(cp.euros, 2) : "");
      E.setText(f.registration, cp.registration || "unknown");
      E.setText(f.key, `${cp.key || "none"}${cp.key_id ? ` (${cp.key_id})` : ""}`);
      setButtons(node, cp);
    },
  };

  // -- the CP set, its filter and its views --------------------------------------------

  class CpViews {
    // containers: {grid, table (its tbody)}; onFlush(cps) after each batch is drawn.
    constructor(containers, onFlush) {
      this.cps = new Map();
      this.views = {
        grid: { kind: tileView, parent: containers.grid, nodes: new Map(), stale: new Set() },
        table: { kind: rowView, parent: containers.table, nodes: new Map(), stale: new Set() },
      };
      this.mode = "grid";
      this.filter = { states: new Set(), text: "" };
      this.dirty = new Set();
      this.frame = 0;
      this.onFlush = onFlush;
    }

    get active() { return this.views[this.mode]; }

    // The snapshot: every CP at once (CPs no longer there are dropped).
    replaceAll(cps) {
      this.cps = new Map(cps.map((cp) => [cp.id, cp]));
      for (const view of Object.values(this.views)) {
        for (const [id, node] of view.nodes) if (!this.cps.has(id)) { node.remove(); view.nodes.delete(id); }
        if (view.order) view.order = view.order.filter((id) => view.nodes.has(id));
        this.cps.forEach((_, id) => view.stale.add(id));
      }
      this.cps.forEach((_, id) => this.dirty.add(id));
      this.schedule();
    }

    put(cp) {
      this.cps.set(cp.id, cp);
      this.dirty.add(cp.id);
      this.schedule();
    }

    schedule() {
      if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
    }

    matches(cp) {
      const f = this.filter;
      if (f.states.size && !f.states.has(cp.state)) return false;
      if (!f.text) return true;
      return cp.id.toLowerCase().includes(f.text) || String(cp.location).toLowerCase().includes(f.text);
    }

    // Draws the dirty CPs in the shown view (new ones put in id order), the others later.
    flush() {
      this.frame = 0;
      const view = this.active;
      const other = this.views[this.mode === "grid" ? "table" : "grid"];
      this.dirty.forEach((id) => { view.stale.add(id); other.stale.add(id); });
      this.dirty.clear();
      this.drawStale(view);
      if (this.onFlush) this.onFlush(this.cps);
    }

    drawStale(view) {
      const added = [];
      view.stale.forEach((id) => {
        const cp = this.cps.get(id);
        if (!cp) return;
        let node = view.nodes.get(id);
        if (!node) { node = view.kind.make(cp); view.nodes.set(id, node); added.push(id); }
        view.kind.update(node, cp);
        const hidden = !this.matches(cp);
        if (node.hidden !== hidden) node.hidden = hidden;
      });
      view.stale.clear();
      if (added.length) this.place(view, added);
    }

    // Puts new nodes in id order: all at once for many, one by one (binary search) for a few.
    place(view, added) {
      if (added.length >= 50 || !view.order) {
        view.order = [...view.nodes.keys()].sort();
        const fragment = document.createDocumentFragment();
        view.order.forEach((id) => fragment.append(view.nodes.get(id)));
        view.parent.append(fragment);
        return;
      }
      for (const id of added) {
        let lo = 0;
        let hi = view.order.length;
        while (lo < hi) { const mid = (lo + hi) >> 1; if (view.order[mid] < id) lo = mid + 1; else hi = mid; }
        const before = lo < view.order.length ? view.nodes.get(view.order[lo]) : null;
        view.order.splice(lo, 0, id);
        view.parent.insertBefore(view.nodes.get(id), before);
      }
    }

    setMode(mode) {
      if (!this.views[mode] || mode === this.mode) return;
      this.mode = mode;
      this.refilter();
    }

    setFilter(states, text) {
      this.filter = { states: new Set(states), text: (text || "").trim().toLowerCase() };
      this.refilter();
    }

    // Brings the shown view up to date and applies the filter to every one of its nodes.
    refilter() {
      const view = this.active;
      this.drawStale(view);
      view.nodes.forEach((node, id) => {
        const hidden = !this.matches(this.cps.get(id));
        if (node.hidden !== hidden) node.hidden = hidden;
      });
      if (this.onFlush) this.onFlush(this.cps);
    }

    shownCount() {
      let n = 0;
      this.cps.forEach((cp) => { if (this.matches(cp)) n += 1; });
      return n;
    }
  }

  E.CpViews = CpViews;
}(window.EVNET));
