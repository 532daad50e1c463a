// The mesh dashboard: polls the JSON API and draws with plain DOM and SVG (no libraries, so
// the page works offline and from the binary alone).
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const pct = (v) => (v === null || v === undefined ? "-" : (v * 100).toFixed(2) + "%");
const num = (v, d = 1) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
const ms = (v) => (v === null || v === undefined ? "-" : Math.round(v) + " ms");
const rateClass = (v) => (v === null || v === undefined ? "muted" : v >= 0.99 ? "good" : v >= 0.95 ? "warn" : "bad");

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// A polyline of `values` scaled into w×h; gaps (null) break nothing, they are skipped.
function sparkline(values, w, h, max, cls) {
  const pts = values
    .map((v, i) => (v === null ? null : [(i * w) / Math.max(values.length - 1, 1), h - (v / (max || 1)) * (h - 2) - 1]))
    .filter((p) => p !== null)
    .map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1))
    .join(" ");
  return el("svg:polyline", { points: pts, fill: "none", stroke: cls, "stroke-width": "1.5" });
}

function workloadRow(w) {
  const h = w.history || [];
  const spark = el("svg:svg", { class: "spark", width: 160, height: 24, "data-field": "sparkline" });
  spark.append(sparkline(h.map((p) => p.success_rate), 160, 24, 1, "#1a7f37"));
  spark.append(sparkline(h.map((p) => p.rps), 160, 24, Math.max(...h.map((p) => p.rps), 1), "#0969da"));
  return el("tr", { "data-workload": w.name, "data-namespace": w.namespace },
    el("td", {}, w.namespace),
    el("td", { "data-field": "name" }, w.name),
    el("td", { "data-field": "meshed" }, w.meshed === null ? "-" : w.meshed + "/" + w.meshed),
    el("td", { class: "num " + rateClass(w.success_rate), "data-field": "success-rate" }, pct(w.success_rate)),
    el("td", { class: "num", "data-field": "rps" }, num(w.rps)),
    el("td", { class: "num", "data-field": "p50" }, ms(w.latency_ms_p50)),
    el("td", { class: "num", "data-field": "p95" }, ms(w.latency_ms_p95)),
    el("td", { class: "num", "data-field": "p99" }, ms(w.latency_ms_p99)),
    el("td", { class: "num", "data-field": "tcp" }, w.tcp_conn === null ? "-" : num(w.tcp_conn, 0)),
    el("td", {}, spark));
}

function drawWorkloads(ws) {
  document.querySelector("#workloads tbody").replaceChildren(...ws.map(workloadRow));
}

// Nodes on an ellipse, edges as arrows labelled with RPS and a lock when mTLS.
function drawTopology(edges) {
  const svg = document.getElementById("topology");
  const names = [...new Set(edges.flatMap((e) => [e.src, e.dst]))].sort();
  const pos = {};
  names.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(names.length, 1) - Math.PI / 2;
    pos[n] = [320 + 240 * Math.cos(a), 180 + 130 * Math.sin(a)];
  });
  const defs = el("svg:defs", {},
    el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" },
      el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#56606c" })));
  const parts = [defs];
  for (const e of edges) {
    const [x1, y1] = pos[e.src], [x2, y2] = pos[e.dst];
    const len = Math.hypot(x2 - x1, y2 - y1) || 1;
    const pad = 34 / len;
    const [ax, ay, bx, by] = [x1 + (x2 - x1) * pad, y1 + (y2 - y1) * pad, x2 - (x2 - x1) * pad, y2 - (y2 - y1) * pad];
    const [mx, my] = [(ax + bx) / 2, (ay + by) / 2 - 4];
    parts.push(el("svg:g", { class: "edge", "data-edge": e.src + "->" + e.dst, "data-secured": e.secured },
      el("svg:line", { x1: ax, y1: ay, x2: bx, y2: by, "marker-end": "url(#arrow)" }),
      el("svg:text", { x: mx + (e.secured ? 8 : 0), y: my, "text-anchor": "middle" }, num(e.rps) + " rps"),
      ...(e.secured ? [lock(mx - 30, my - 9)] : []),
      el("svg:title", {}, (e.client_id || "no client identity") + " → " + (e.server_id || "no server identity"))));
  }
  for (const n of names) {
    const [x, y] = pos[n];
    parts.push(el("svg:g", { class: "node", "data-node": n },
      el("svg:rect", { x: x - 40, y: y - 12, width: 80, height: 24, rx: 5 }),
      el("svg:text", { x, y: y + 4, "text-anchor": "middle" }, n)));
  }
  svg.replaceChildren(...parts);
}

// A padlock drawn in SVG (no icon font, no emoji font needed): the calls are mTLS.
function lock(x, y) {
  return el("svg:g", { class: "lock", transform: "translate(" + x + "," + y + ")" },
    el("svg:path", { d: "M2.5,5 V3.5 a2.5,2.5 0 0 1 5,0 V5", fill: "none", stroke: "#1a7f37", "stroke-width": "1.4" }),
    el("svg:rect", { x: 1, y: 5, width: 8, height: 6, rx: 1, fill: "#1a7f37" }),
    el("svg:title", {}, "mTLS"));
}

function backendRow(b) {
  // Widths through the CSSOM: the page's CSP forbids inline style attributes.
  const w = el("div", { class: "w" }), o = el("div", { class: "o" });
  w.style.width = (b.weight_percent ?? 0) + "%";
  o.style.width = (b.observed_percent ?? 0) + "%";
  const bar = el("div", { class: "bar" }, w, o);
  const weight = b.weight_percent === null ? "?" : Math.round(b.weight_percent) + "%";
  return el("div", { class: "backend", "data-backend": b.name, "data-weight": b.weight_percent === null ? "" : Math.round(b.weight_percent) },
    el("span", {}, b.name),
    bar,
    el("span", { "data-field": "weights" }, weight + " set · " + (b.observed_percent === null ? "-" : Math.round(b.observed_percent) + "%") + " seen · ",
      el("span", { class: rateClass(b.success_rate) }, pct(b.success_rate))));
}

function drawRoutes(routes) {
  const out = routes.map((r) =>
    el("div", { class: "route", "data-route": r.service, "data-route-name": r.route },
      el("h3", {}, r.service + (r.route ? " · " + r.route : "") + " ",
        el("span", { class: "muted" }, num(r.rps) + " rps, " + pct(r.success_rate) + (r.configured ? "" : " (weights unknown: no --policy)"))),
      ...r.backends.map(backendRow)));
  document.getElementById("routes").replaceChildren(...(out.length ? out : [el("p", { class: "muted" }, "no routes yet")]));
}

// A canary: its phase, a bar of stable/canary weight, its checks and the last decisions.
const phaseClass = { Progressing: "warn", Succeeded: "good", Failed: "bad", Halted: "bad" };
function drawCanaries(canaries) {
  const out = canaries.map((c) => {
    const w = el("div", { class: "w" });
    w.style.width = (c.weight ?? 0) + "%";
    const weight = c.weight === null ? "not started" : c.canary + " " + c.weight + "% · " + c.stable + " " + (100 - c.weight) + "%";
    return el("div", { class: "canary", "data-canary": c.namespace + "/" + c.name, "data-phase": c.phase ?? "", "data-weight": c.weight ?? "" },
      el("h3", {}, c.namespace + "/" + c.name + " ",
        el("span", { class: "muted" }, c.target + ": " + c.stable + " → " + c.canary)),
      el("div", { class: "backend" },
        el("span", { class: phaseClass[c.phase] || "muted", "data-field": "phase" }, c.phase ?? "Waiting"),
        el("div", { class: "bar" }, w),
        el("span", { "data-field": "weight" }, weight + " · failed checks " + c.failed_checks + " of " + c.threshold)),
      el("p", { "data-field": "decision" }, c.reason + ": " + c.message),
      el("ol", { class: "muted" }, ...c.history.slice(-6).reverse().map((d) => el("li", {}, d.reason + ": " + d.message))));
  });
  document.getElementById("canaries").replaceChildren(...(out.length ? out : [el("p", { class: "muted" }, "no canaries (mesh demo --canary drives one)")]));
}

function drawCerts(certs) {
  const now = Date.now() / 1000;
  document.querySelector("#certs tbody").replaceChildren(...certs.map((c) => {
    let text = "unknown", cls = "muted";
    if (c.expires_at !== null) {
      const left = c.expires_at - now;
      text = new Date(c.expires_at * 1000).toISOString().replace(".000", "") + " (in " + (left / 3600).toFixed(1) + " h)";
      cls = left <= 0 ? "bad" : left < 3600 ? "warn" : "good";
    }
    return el("tr", { "data-cert": c.workload },
      el("td", {}, c.namespace), el("td", {}, c.workload), el("td", {}, c.pod),
      el("td", { class: cls, "data-field": "expiry" }, text));
  }));
}

let tapSource = null;
function startTap(status) {
  const p = document.getElementById("tap-status");
  if (!status.tap.available) {
    p.dataset.tap = "unavailable";
    p.textContent = status.tap.reason;
    return;
  }
  if (tapSource) return;
  p.dataset.tap = "live";
  p.textContent = "live: the newest requests first";
  tapSource = new EventSource("/api/tap");
  const body = document.querySelector("#tap tbody");
  tapSource.onmessage = (m) => {
    const e = JSON.parse(m.data);
    body.prepend(el("tr", { "data-tap-event": "" },
      el("td", {}, e.direction ?? ""), el("td", {}, e.method ?? ""), el("td", {}, e.authority ?? ""),
      el("td", {}, e.path ?? ""), el("td", { class: e.classification === "failure" ? "bad" : "" }, e.status ?? ""),
      el("td", {}, ms(e.latency_ms)), el("td", {}, e.route ?? ""), el("td", {}, e.backend ?? "")));
    while (body.children.length > 100) body.lastChild.remove();
  };
  tapSource.addEventListener("dropped", (m) => { p.textContent = "live (" + m.data + " events dropped: the page was too slow)"; });
}

async function refresh() {
  const s = document.getElementById("status");
  try {
    const [status, ws, edges, routes, certs, canaries] = await Promise.all(
      ["/api/status", "/api/workloads", "/api/edges", "/api/routes", "/api/certs", "/api/canaries"].map(get));
    drawWorkloads(ws || []);
    drawTopology(edges || []);
    drawRoutes(routes || []);
    drawCerts(certs || []);
    drawCanaries(canaries || []);
    if (status && status.tap) startTap(status);
    const src = status && status.source ? status.source.kind : "";
    s.dataset.status = status && status.error ? "error" : "ok";
    s.textContent = status && status.error ? "error: " + status.error
      : "source: " + src + (status && status.window_seconds ? ", rates over " + status.window_seconds.toFixed(0) + " s" : ", waiting for a second scrape") + ", updated " + new Date().toLocaleTimeString();
  } catch (e) {
    s.dataset.status = "error";
    s.textContent = "cannot reach the dashboard: " + e.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
