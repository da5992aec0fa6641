// Live line charts in plain SVG: the network's power over the last minutes, and
// the selected CP's charge (kW and kWh over time, each on its own scale).  The
// elements are made once; a redraw only rewrites the lines' points and labels.
"use strict";

(function (E) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600;
  const H = 180;
  const PLOT = { left: 52, right: 548, top: 14, bottom: 152 };

  // A time series (Unix seconds, value), the oldest points dropped beyond `cap`.
  class Series {
    constructor(cap) { this.cap = cap; this.t = []; this.v = []; }
    push(t, v) {
      this.t.push(t);
      this.v.push(v);
      if (this.t.length > this.cap + 64) { this.t.splice(0, this.t.length - this.cap); this.v.splice(0, this.v.length - this.cap); }
    }
    clear() { this.t.length = 0; this.v.length = 0; }
    get length() { return this.t.length; }
    last() { return this.v.length ? this.v[this.v.length - 1] : null; }
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value, digits) { return Number.isFinite(value) ? value.toFixed(digits) : "-"; }

  class LineChart {
    // lines: [{label, unit, digits, cls}]; the first on the left scale, a second on the right one.
    constructor(svg, windowSeconds, lines) {
      this.svg = svg;
      this.windowSeconds = windowSeconds;
      this.lines = lines;
      svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
      svg.setAttribute("role", "img");
      svg.append(svgEl("rect", { class: "frame", x: PLOT.left, y: PLOT.top, width: PLOT.right - PLOT.left, height: PLOT.bottom - PLOT.top }));
      for (const f of [0.25, 0.5, 0.75]) {
        const y = PLOT.top + (PLOT.bottom - PLOT.top) * f;
        svg.append(svgEl("line", { class: "gridline", x1: PLOT.left, x2: PLOT.right, y1: y, y2: y }));
      }
      this.xFrom = svg.appendChild(svgEl("text", { class: "axis", x: PLOT.left, y: H - 8 }, ""));
      svg.appendChild(svgEl("text", { class: "axis", x: PLOT.right, y: H - 8, "text-anchor": "end" }, "now"));
      this.empty = svg.appendChild(svgEl("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
      this.parts = lines.map((line, i) => ({
        path: svg.appendChild(svgEl("polyline", { class: `line ${line.cls}`, fill: "none", points: "" })),
        max: svg.appendChild(svgEl("text", { class: `axis ${line.cls}`, x: i ? PLOT.right + 4 : PLOT.left - 4, y: PLOT.top + 4, "text-anchor": i ? "start" : "end" }, "")),
        zero: svg.appendChild(svgEl("text", { class: `axis ${line.cls}`, x: i ? PLOT.right + 4 : PLOT.left - 4, y: PLOT.bottom, "text-anchor": i ? "start" : "end" }, "0")),
      }));
      this.legend = svg.appendChild(svgEl("text", { class: "legend", x: PLOT.left + 6, y: PLOT.top + 14 }, ""));
    }

    // Draws `series` (one per line) over the window that ends at `now` (Unix seconds).
    draw(now, series) {
      const from = now - this.windowSeconds;
      const minutes = Math.round(this.windowSeconds / 60);
      this.xFrom.textContent = `−${minutes} min`;
      let points = 0;
      const legend = [];
      series.forEach((s, i) => {
        const line = this.lines[i];
        let start = 0;
        while (start < s.length && s.t[start] < from) start += 1;
        let max = 0;
        for (let k = start; k < s.length; k += 1) if (s.v[k] > max) max = s.v[k];
        const top = max > 0 ? max * 1.1 : 1;
        const coords = [];
        for (let k = start; k < s.length; k += 1) {
          const x = PLOT.left + ((s.t[k] - from) / this.windowSeconds) * (PLOT.right - PLOT.left);
          const y = PLOT.bottom - (s.v[k] / top) * (PLOT.bottom - PLOT.top);
          coords.push(`${x.toFixed(1)},${y.toFixed(1)}`);
        }
        this.parts[i].path.setAttribute("points", coords.join(" "));
        this.parts[i].max.textContent = fmt(top, line.digits);
        if (i === 0) points = coords.length;
        legend.push(`${line.label} ${fmt(s.last(), line.digits)} ${line.unit}`);
      });
      this.empty.style.display = points ? "none" : "";
      this.legend.textContent = points ? legend.join(" · ") : "";
      this.svg.dataset.points = String(points);
      this.svg.dataset.last = series.length && series[0].length ? fmt(series[0].last(), this.lines[0].digits) : "";
    }
  }

  // Each CP's current charge: kW and kWh from its telemetry, since the charge began
  // (at most `cap` points); a new charge starts a new history.
  class ChargeHistory {
    constructor(cap) { this.cap = cap; this.byCp = new Map(); }
    record(cp, at) {
      if (!cp.session_id || cp.state !== "SUMINISTRANDO") return;
      let h = this.byCp.get(cp.id);
      if (!h || h.session !== cp.session_id) {
        h = { session: cp.session_id, kw: new Series(this.cap), kwh: new Series(this.cap) };
        this.byCp.set(cp.id, h);
      }
      h.kw.push(at, cp.kw || 0);
      h.kwh.push(at, cp.kwh || 0);
    }
    of(cpId) { return this.byCp.get(cpId) || null; }
    forget(cpId) { this.byCp.delete(cpId); }
  }

  E.Series = Series;
  E.LineChart = LineChart;
  E.ChargeHistory = ChargeHistory;
}(window.EVNET));
