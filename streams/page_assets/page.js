// trackwatch page: anomalies, metric explorer, "explain this period". No libraries, no CDN.
"use strict";

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || "";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const SVG = "http://www.w3.org/2000/svg";

async function api(path, query = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== "" && v != null) q.set(k, v);
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  const res = await fetch(path + "?" + q.toString(), { headers });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function text(tag, content, cls) {
  const el = document.createElement(tag);
  if (content != null) el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

// datetime-local inputs hold UTC wall times here (the page says times are UTC)
function toInput(seconds) { return new Date(seconds * 1000).toISOString().slice(0, 16); }
function fromInput(value) { return value ? value + ":00Z" : ""; }

function showView(name) {
  $$("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === name));
  $$(".view").forEach((v) => v.classList.toggle("active", v.id === name));
  history.replaceState(null, "", "#" + name);
}

// ------------------------------------------------------------------ anomalies

async function loadAnomalies() {
  const list = $("#anomaly-list");
  list.replaceChildren(text("li", "Loading…"));
  try {
    const data = await api("api/anomalies", { days: $("#days").value });
    $("#now").textContent = "history up to " + utc(data.now);
    list.replaceChildren();
    if (!data.anomalies.length) list.append(text("li", "No anomaly in this period."));
    for (const a of data.anomalies) {
      const li = text("li", null, a.state);
      li.append(text("div", a.explanation));
      const meta = text("div", `${a.kind} · ${a.state} · from ${utc(Date.parse(a.started_at) / 1000)}` +
        (a.ended_at ? ` to ${utc(Date.parse(a.ended_at) / 1000)}` : " (ongoing)"), "meta");
      const explore = text("button", "Chart");
      explore.addEventListener("click", () => openExplorer(a));
      const why = text("button", "Explain");
      why.addEventListener("click", () => openExplain(a));
      meta.append(" ", explore, " ", why);
      li.append(meta);
      list.append(li);
    }
  } catch (err) {
    list.replaceChildren(text("li", "Could not load anomalies: " + err.message, "error"));
  }
}

function alertPeriod(a) {
  const start = Date.parse(a.started_at) / 1000;
  const end = a.ended_at ? Date.parse(a.ended_at) / 1000 : Date.parse(a.updated_at) / 1000;
  return [start, Math.max(end, start + 600)];
}

function fillScope(form, a) {
  const s = a.series || {};
  form.elements.event.value = s.event || s.to_event || "";
  form.elements.source.value = s.source || "";
  form.elements.platform.value = s.platform || "";
  form.elements.version.value = s.app_version || "";
}

function openExplorer(a) {
  const form = $("#explore-form");
  fillScope(form, a);
  const [start, end] = alertPeriod(a);
  const pad = Math.max(3 * 3600, end - start);
  form.elements.from.value = toInput(start - pad);
  form.elements.to.value = toInput(end + pad / 2);
  showView("explorer");
  drawSeries();
}

function openExplain(a) {
  const form = $("#explain-form");
  fillScope(form, a);
  form.elements.funnel.value = "";
  const [start, end] = alertPeriod(a);
  form.elements.from.value = toInput(start);
  form.elements.to.value = toInput(end);
  showView("explain");
  runExplain();
}

// ------------------------------------------------------------------ explorer

function scopeOf(form) {
  const f = form.elements;
  return {
    event: f.event.value, source: f.source.value, platform: f.platform.value,
    version: f.version.value, from: fromInput(f.from.value), to: fromInput(f.to.value),
  };
}

async function drawSeries() {
  const form = $("#explore-form");
  const box = $("#chart");
  box.replaceChildren(text("p", "Loading…"));
  try {
    const data = await api("api/series", { ...scopeOf(form), metric: form.elements.metric.value });
    box.replaceChildren(chart(data));
  } catch (err) {
    box.replaceChildren(text("p", "Could not draw: " + err.message, "error"));
  }
}

function el(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function chart(data) {
  const W = 1000, H = 320, L = 56, R = 12, T = 14, B = 34;
  const pts = data.points;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "observed against expected" });
  if (!pts.length) { const t = el("text", { x: 20, y: 40 }); t.textContent = "No data."; svg.append(t); return svg; }
  const xs = pts.map((p) => p[0]);
  const x0 = xs[0], x1 = xs[xs.length - 1] + data.bucket;
  const ymax = Math.max(1, ...pts.map((p) => Math.max(p[1], p[4] ?? 0))) * 1.08;
  const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - v / ymax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {  // grid and y labels
    const v = (ymax * i) / 4;
    svg.append(el("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#e6e9ee" }));
    const t = el("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6675" });
    t.textContent = v >= 100 ? Math.round(v) : v.toFixed(1);
    svg.append(t);
  }
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const t = x0 + ((x1 - x0) * i) / ticks;
    const label = el("text", { x: X(t), y: H - 10, "text-anchor": "middle", "font-size": 11, fill: "#5b6675" });
    label.textContent = new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
    svg.append(label);
  }
  const band = pts.filter((p) => p[3] != null);
  if (band.length) {
    const up = band.map((p) => `${X(p[0] + data.bucket / 2)},${Y(p[4])}`);
    const down = band.slice().reverse().map((p) => `${X(p[0] + data.bucket / 2)},${Y(p[3])}`);
    svg.append(el("polygon", { points: up.concat(down).join(" "), fill: "#dce6f7", class: "band" }));
    svg.append(el("polyline", { points: band.map((p) => `${X(p[0] + data.bucket / 2)},${Y(p[2])}`).join(" "),
      fill: "none", stroke: "#9fb3da", "stroke-dasharray": "4 3" }));
  }
  svg.append(el("polyline", { points: pts.map((p) => `${X(p[0] + data.bucket / 2)},${Y(p[1])}`).join(" "),
    fill: "none", stroke: "#2457c5", "stroke-width": 2, class: "observed" }));
  for (const p of pts) {
    if (p[3] != null && (p[1] > p[4] || p[1] < p[3])) {
      svg.append(el("circle", { cx: X(p[0] + data.bucket / 2), cy: Y(p[1]), r: 3, fill: "#c0392b", class: "outside" }));
    }
  }
  const cap = el("text", { x: L, y: 11, "font-size": 11, fill: "#5b6675" });
  cap.textContent = `${data.metric} per ${data.bucket >= 3600 ? data.bucket / 3600 + " h" : data.bucket / 60 + " min"} · ${data.series} series`;
  svg.append(cap);
  return svg;
}

async function drawFunnel() {
  const form = $("#funnel-form");
  const box = $("#funnel");
  const scope = scopeOf($("#explore-form"));
  try {
    const data = await api("api/funnel", { funnel: form.elements.funnel.value, source: scope.source,
      platform: scope.platform, version: scope.version, from: scope.from, to: scope.to });
    const table = text("table", null, "funnel");
    table.append(row(["Step", "Users", "Went on", "Conversion", "Usually"], "th"));
    for (const s of data.steps) {
      const rate = s.rate == null ? "–" : (100 * s.rate).toFixed(0) + " %";
      const usual = s.usual == null ? "–" : (100 * s.usual).toFixed(0) + " %";
      const r = row([`${s.from} → ${s.to}`, Math.round(s.users), Math.round(s.converted), rate, usual], "td");
      const bars = document.createElement("td");
      bars.append(bar(s.rate, ""), document.createElement("br"), bar(s.usual, "usual"));
      r.append(bars);
      table.append(r);
    }
    box.replaceChildren(data.steps.length ? table : text("p", "No conversions in this period."));
  } catch (err) {
    box.replaceChildren(text("p", "Could not load the funnel: " + err.message, "error"));
  }
}

function bar(rate, cls) {
  const b = text("span", null, "bar " + cls);
  b.style.width = Math.round(200 * (rate || 0)) + "px";
  return b;
}

function row(cells, tag) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(text(tag, String(c)));
  return tr;
}

// ------------------------------------------------------------------ explain

async function runExplain() {
  const form = $("#explain-form");
  const box = $("#verdict");
  box.replaceChildren(text("p", "Looking at the history…"));
  try {
    const v = await api("api/explain", { ...scopeOf(form), funnel: form.elements.funnel.value });
    const card = text("div", null, "verdict");
    card.append(text("span", v.verdict, "badge " + v.verdict.replace(" ", "-")));
    card.append(text("p", v.paragraph, "paragraph"));
    if (v.expected != null) {
      card.append(text("p", `Observed ${fmt(v.observed)}; expected about ${fmt(v.expected)} ` +
        `(range ${fmt(v.lower)}–${fmt(v.upper)}), from ${v.baseline}.`, "side"));
    }
    card.append(text("h3", "Evidence"));
    const ul = document.createElement("ul");
    for (const e of v.evidence) {
      const li = text("li", e.text, e.side.replace(" ", "-"));
      if (e.side !== "context") li.append(" ", text("span", "(" + e.side + ")", "side"));
      ul.append(li);
    }
    if (!v.evidence.length) ul.append(text("li", "No evidence either way."));
    card.append(ul);
    if (v.alerts.length) {
      card.append(text("h3", "Alerts during this period"));
      const al = document.createElement("ul");
      for (const a of v.alerts.slice(0, 10)) al.append(text("li", a.explanation));
      card.append(al);
    }
    box.replaceChildren(card);
  } catch (err) {
    box.replaceChildren(text("p", "Could not explain: " + err.message, "error"));
  }
}

function fmt(v) { return v == null ? "–" : v >= 10 ? Math.round(v).toLocaleString("en") : (+v).toFixed(1); }

// ------------------------------------------------------------------ start

function options(select, values, anyLabel) {
  select.replaceChildren(new Option(anyLabel, ""));
  for (const v of values) select.append(new Option(v, v));
}

async function start() {
  $$("nav button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));
  $("#days").addEventListener("change", loadAnomalies);
  $("#explore-form").addEventListener("submit", (e) => { e.preventDefault(); drawSeries(); });
  $("#funnel-form").addEventListener("submit", (e) => { e.preventDefault(); drawFunnel(); });
  $("#explain-form").addEventListener("submit", (e) => { e.preventDefault(); runExplain(); });
  try {
    const dims = await api("api/dimensions");
    for (const form of [$("#explore-form"), $("#explain-form")]) {
      options(form.elements.event, dims.events, "every event");
      options(form.elements.source, dims.sources, "every source");
      options(form.elements.platform, dims.platforms, "every platform");
      options(form.elements.version, dims.versions, "every version");
      if (dims.last != null) {
        form.elements.to.value = toInput(dims.last + 60);
        form.elements.from.value = toInput(dims.last + 60 - 48 * 3600);
      }
    }
    options($("#explain-form").elements.funnel, dims.funnels, "no funnel");
    options($("#funnel-form").elements.funnel, dims.funnels, "choose a funnel");
    // the plan's funnels first; "(companion)" holds the pairs learnt from the traffic
    const named = dims.funnels.filter((f) => f !== "(companion)");
    if (dims.funnels.length) $("#funnel-form").elements.funnel.value = named[0] || dims.funnels[0];
  } catch (err) {
    $("#now").textContent = "history unavailable: " + err.message;
  }
  const view = location.hash.slice(1);
  if (["anomalies", "explorer", "explain"].includes(view)) showView(view);
  loadAnomalies();
}

start();
