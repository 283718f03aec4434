// The Croupier dashboard: polls /api/state (croupier status's report of a scrape taken
// when asked) every second and draws it. uPlot (vendored, static/vendor/) draws the charts.
"use strict";

const POLL_MS = 1000;
const KEEP = 300; // points per chart: five minutes at one a second
const series = { t: [], bets: [], lag: {}, p50: {}, p99: {} };
const charts = {};

function fmt(v, places) {
  if (v === null || v === undefined) return "—";
  return typeof v === "number" && places !== undefined ? v.toFixed(places) : String(v);
}

function when(unix) {
  if (!unix) return "never";
  const age = Date.now() / 1000 - unix;
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) +
    " UTC (" + Math.max(0, Math.round(age)) + " s ago)";
}

// Rows of a table's body, each a list of [text, className] cells, with data attributes.
function rows(id, items) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...items.map(({ cells, data }) => {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(data || {})) tr.dataset[k] = v;
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
}

function push(arr, v) { arr.push(v); if (arr.length > KEEP) arr.shift(); }

function chart(id, names, unit) {
  const el = document.getElementById(id);
  const width = Math.max(300, el.clientWidth || 420);
  const colors = ["#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037"];
  const opts = {
    width, height: 180,
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length],
                                          width: 1.5, value: (u, v) => fmt(v, 1) + unit }))],
    axes: [{}, { size: 60 }],
    legend: { live: false },
  };
  if (charts[id]) charts[id].destroy();
  el.replaceChildren();
  charts[id] = new uPlot(opts, [[], ...names.map(() => [])], el);
  charts[id].names = names.join("|");
  return charts[id];
}

function draw(id, byName, unit) {
  const names = Object.keys(byName).sort();
  if (!names.length) return;
  let c = charts[id];
  if (!c || c.names !== names.join("|")) c = chart(id, names, unit);
  c.setData([series.t.slice(), ...names.map((n) => byName[n].slice())]);
}

function track(store, key, value, length) {
  if (!store[key]) store[key] = new Array(length).fill(null);
  push(store[key], value);
}

function render(s) {
  document.getElementById("taken-at").textContent = when(s.taken_at);
  document.getElementById("taken-at").dataset.takenAt = s.taken_at;
  const topics = s.topics || {};
  const bets = Object.entries(topics).filter(([t]) => t === "bets" || t.endsWith(".bets"))
    .reduce((sum, [, v]) => sum + v.per_second, 0);
  document.getElementById("bets-per-s").textContent = fmt(bets, 1);

  push(series.t, s.taken_at);
  const n = series.t.length;
  push(series.bets, bets);
  const seen = new Set();
  for (const [t, v] of Object.entries(topics)) {
    seen.add(t);
    track(series.lag, t, v.lag, n - 1);
  }
  for (const t of Object.keys(series.lag)) if (!seen.has(t)) track(series.lag, t, null, n - 1);
  for (const [f, v] of Object.entries(s.decision_latency || {})) {
    track(series.p50, "p50 " + f, v.recent_p50_ms, n - 1);
    track(series.p99, "p99 " + f, v.recent_p99_ms, n - 1);
  }
  for (const store of [series.p50, series.p99]) {
    for (const arr of Object.values(store)) while (arr.length < n) arr.push(null);
  }
  draw("chart-bets", { "bets/s": series.bets }, "/s");
  draw("chart-lag", series.lag, "");
  draw("chart-latency", { ...series.p50, ...series.p99 }, " ms");

  rows("lag", Object.entries(topics).map(([t, v]) => ({
    data: { topic: t },
    cells: [[t], [fmt(v.events), "num events"], [fmt(v.per_second, 1), "num"],
            [fmt(v.lag), "num lag"]],
  })));
  rows("decision-latency", Object.entries(s.decision_latency || {}).map(([f, v]) => ({
    data: { flow: f },
    cells: [[f], [fmt(v.p50_ms, 1), "num"], [fmt(v.p99_ms, 1), "num"],
            [fmt(v.batches), "num decided"]],
  })));
  rows("latency", Object.entries(s.flows || {}).map(([f, v]) => ({
    data: { flow: f },
    cells: [[f], [fmt(v.p50_ms, 1), "num"], [fmt(v.p99_ms, 1), "num"],
            [fmt(v.batches), "num batches"]],
  })));
  rows("decisions", (s.decisions || []).map((d) => ({
    data: { key: [d.flow, d.status, d.reason || ""].join("|") },
    cells: [[d.flow], [d.status], [d.reason || ""], [fmt(d.total), "num total"],
            [fmt(d.per_second, 1), "num"]],
  })));
  rows("feeds", Object.entries(s.feeds || {}).map(([p, v]) => ({
    data: { producer: p, up: v.up ? "1" : "0" },
    cells: [[p], [v.up ? "up" : "DOWN", "state"], [when(v.last_alive)]],
  })));
  const platform = s.platform || {};
  rows("liability", (platform.liability || []).map((l) => ({
    data: { market: l.market, currency: l.currency },
    cells: [[l.market], [l.currency], [fmt(l.amount, 2), "num amount"]],
  })));
  rows("dead-letters", (s.dead_letters || []).map((d) => ({
    data: { key: d.topic + "|" + (d.reason || "") },
    cells: [[d.topic], [d.reason || ""], [fmt(d.total), "num total"],
            [fmt(d.per_second, 1), "num"]],
  })));
  const audit = platform.audit || {};
  for (const dd of document.querySelectorAll("#audit dd")) {
    const v = audit[dd.dataset.field];
    const none = v === null || v === undefined;
    if (dd.dataset.field === "last_checkpoint") dd.textContent = none ? "—" : when(v);
    else if (dd.dataset.field === "last_checkpoint_verified") {
      dd.textContent = none ? "—" : v === 1 ? "verified (pinned key)" : "NOT VERIFIED";
    } else dd.textContent = fmt(v);
    dd.dataset.value = v === null || v === undefined ? "" : String(v);
  }
  rows("report-lag", Object.entries(audit.report_lag || {}).map(([j, v]) => ({
    data: { jurisdiction: j }, cells: [[j], [fmt(v), "num"]],
  })));
  const al = document.getElementById("analytics-lag");
  al.textContent = fmt(platform.analytics_lag);
  rows("ggr", Object.entries(platform.ggr_today || {}).map(([c, v]) => ({
    data: { currency: c }, cells: [[c], [fmt(v, 2), "num amount"]],
  })));
  rows("processes", (s.processes || []).map((p) => ({
    data: { name: p.name, up: p.up ? "1" : "0" },
    cells: [[p.name], [p.role || "?"], [fmt(p.pid)], [p.up ? "yes" : "no"],
            [p.ready ? "ready" : "not ready"]],
  })));
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch("/api/state", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const state = await answer.json();
    render(state);
    window.croupierState = state;
    status.textContent = "live";
    status.dataset.state = "ok";
  } catch (err) {
    status.textContent = "no answer: " + err.message;
    status.dataset.state = "error";
  }
  setTimeout(poll, POLL_MS);
}

poll();
