"""The live dashboard served at ``GET /``: one HTML file that polls ``/v1/status``
and ``/v1/series`` and redraws its charts in place (no reload).

The charts are uPlot's (stream/serve/static, vendored: the page works with no
internet access). The page itself is open and holds no data; with a bearer
token set, it asks for the token once, keeps it in the browser's
localStorage, sends it as ``Authorization: Bearer`` with every data request,
and asks again on a 401. A link with ``?access_token=`` (older links) stores
that token and drops it from the address bar.
"""

from __future__ import annotations

REFRESH_MS = 1000
UPLOT_VERSION = "1.6.32"  # stream/serve/static/VENDORED.txt

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>learnstream serve</title>
<link rel="stylesheet" href="/static/uPlot.min.css">
<style>
* { box-sizing: border-box; }
body { font: 15px system-ui, sans-serif; margin: 0 auto; padding: 1em; color: #222;
       max-width: 1400px; overflow-wrap: anywhere; }
h1 { font-size: 1.3em; margin: 0 0 .6em; }
h2 { font-size: 1em; margin: 0 0 .3em; font-weight: 600; }
#numbers { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
           gap: .5em; margin: 0 0 1em; }
#numbers div { background: #f4f5f7; border-radius: 6px; padding: .4em .6em; min-width: 0; }
#numbers span { display: block; font-size: 12px; color: #666; }
#numbers b { font: 18px ui-monospace, monospace; }
#charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 440px), 1fr));
          gap: 1em; }
.chart { min-width: 0; border: 1px solid #e3e5e8; border-radius: 6px; padding: .5em; }
.plot { width: 100%; min-height: 40px; }
.empty { color: #888; font-size: 13px; margin: .4em 0; }
.u-legend { font-size: 12px; text-align: left; }
.u-legend.u-inline tr { margin-right: 8px; }
#state { color: #777; font-size: 13px; }
#token-form { background: #fff7e0; border: 1px solid #e8c766; border-radius: 6px;
              padding: .8em; margin: 0 0 1em; }
#token-form input { width: min(100%, 22em); font: inherit; padding: .3em; }
#token-form button { font: inherit; padding: .3em .8em; }
</style></head>
<body>
<h1>learnstream: the live pipeline</h1>
<form id="token-form" hidden>
  <label for="token">This server needs its bearer token (kept in this browser):</label><br>
  <input id="token" type="password" autocomplete="current-password" required>
  <button type="submit">Show the dashboard</button>
</form>
<div id="numbers">
<div><span>model version</span><b id="version">-</b></div>
<div><span>events learned</span><b id="n_learned">-</b></div>
<div><span>model age</span><b id="age">-</b></div>
<div><span>rolling accuracy</span><b id="accuracy">-</b></div>
<div><span>rolling log loss</span><b id="log_loss">-</b></div>
<div><span>labeled in window</span><b id="quality_n">-</b></div>
<div><span>requests/s</span><b id="rps">-</b></div>
<div><span>model swaps</span><b id="swaps">-</b></div>
</div>
<div id="charts">
<section class="chart" id="chart-throughput"><h2>events/s scored and learned</h2>
  <div class="plot"></div></section>
<section class="chart" id="chart-latency"><h2>event to prediction latency, ms</h2>
  <div class="plot"></div></section>
<section class="chart" id="chart-quality"><h2>rolling quality (red lines: drift alarms)</h2>
  <div class="plot"></div></section>
<section class="chart" id="chart-model"><h2>global model version and age, s</h2>
  <div class="plot"></div></section>
<section class="chart" id="chart-dead"><h2>dead letters/s by reason</h2>
  <div class="plot"></div></section>
<section class="chart" id="chart-lag"><h2>consumer lag by partition</h2>
  <div class="plot"></div></section>
</div>
<p id="state" data-refreshes="0">waiting for the first refresh</p>
<script src="/static/uPlot.iife.min.js"></script>
<script>
"use strict";
const TOKEN_KEY = "learnstream.token";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22", "#d62728"];
let token = localStorage.getItem(TOKEN_KEY);
const fromUrl = new URLSearchParams(location.search).get("access_token");
if (fromUrl) {
  token = fromUrl;
  localStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname);
}
const form = document.getElementById("token-form");
const input = document.getElementById("token");
const state = document.getElementById("state");
let waitingForToken = false;

class Unauthorized extends Error {}

function askForToken() {
  waitingForToken = true;
  form.hidden = false;
  state.textContent = token ? "the token was refused: enter it again" : "a token is needed";
  input.focus();
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  token = input.value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  input.value = "";
  form.hidden = true;
  waitingForToken = false;
  refresh();
});

async function getJSON(path) {
  const headers = token ? {"Authorization": "Bearer " + token} : {};
  const r = await fetch(path, {headers, cache: "no-store"});
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

const fmt = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
const ms = (xs) => xs.map((v) => v === null ? null : v * 1000);
const named = (obj, prefix) => Object.keys(obj).map((k) => [prefix + k, obj[k]]);

// What each chart draws from /v1/series: [label, values, scale] per line.
const CHARTS = {
  throughput: (d) => [["scored/s", d.scored_per_s], ["learned/s", d.learned_per_s]],
  latency: (d) => [["p50", ms(d.latency_p50_s)], ["p99", ms(d.latency_p99_s)]],
  quality: (d) => [["log loss", d.log_loss, "loss"], ["accuracy", d.accuracy, "share"],
                   ["ROC AUC", d.roc_auc, "share"]],
  model: (d) => [["version", d.model_version, "v"], ["age s", d.model_age_s, "s"]],
  dead: (d) => named(d.dead_letters_per_s, ""),
  lag: (d) => named(d.lag, "partition "),
};
const EMPTY = {
  dead: "no dead letters in the window",
  lag: "no lag measured by serve: see learnstream status, or the workers' " +
       "learnstream_consumer_lag metric",
};
const plots = {};

function drawMarkers(u) {
  const ts = u.markers || [];
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = "#d62728";
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const t of ts) {
    const x = Math.round(u.valToPos(t, "x", true));
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

function render(name, d) {
  const section = document.getElementById("chart-" + name);
  const box = section.querySelector(".plot");
  const lines = CHARTS[name](d);
  const key = lines.map((l) => l[0]).join("|");
  let plot = plots[name];
  if (!lines.length) {
    if (plot) { plot.destroy(); delete plots[name]; }
    box.innerHTML = '<p class="empty">' + EMPTY[name] + "</p>";
    section.dataset.points = "0";
    return;
  }
  const data = [d.t, ...lines.map((l) => l[1])];
  if (!plot || plot.key !== key) {
    if (plot) plot.destroy();
    box.innerHTML = "";
    const scales = {x: {time: true}};
    const axes = [{}];
    const units = [...new Set(lines.map((l) => l[2] || "y"))];
    units.forEach((unit, i) => {
      scales[unit] = {};
      axes.push({scale: unit, side: i === 0 ? 3 : 1, grid: {show: i === 0}, size: 50});
    });
    plot = new uPlot({
      width: Math.max(box.clientWidth, 100),
      height: 190,
      scales,
      axes,
      series: [{}, ...lines.map((l, i) => ({
        label: l[0], scale: l[2] || "y", stroke: COLORS[i % COLORS.length], width: 1.5,
        spanGaps: false, points: {show: false},
      }))],
      hooks: {draw: [drawMarkers]},
    }, data, box);
    plot.key = key;
    plots[name] = plot;
  } else {
    plot.setData(data);
  }
  if (name === "quality") {
    plot.markers = d.drifts.map((x) => x.t);
    section.dataset.drifts = String(plot.markers.length);
    plot.redraw(false, false);
  }
  section.dataset.points = String(d.t.length);
  section.dataset.lastT = d.t.length ? String(d.t[d.t.length - 1]) : "";
}

window.addEventListener("resize", () => {
  for (const name in plots) {
    const box = document.getElementById("chart-" + name).querySelector(".plot");
    plots[name].setSize({width: Math.max(box.clientWidth, 100), height: 190});
  }
});

function showStatus(s) {
  document.getElementById("version").textContent = s.model_version ?? "none yet";
  document.getElementById("n_learned").textContent = s.n_learned ?? "-";
  document.getElementById("age").textContent = fmt(s.age_s, 1) + " s";
  document.getElementById("accuracy").textContent = fmt(s.quality.accuracy, 4);
  document.getElementById("log_loss").textContent = fmt(s.quality.log_loss, 4);
  document.getElementById("quality_n").textContent = s.quality.n;
  document.getElementById("rps").textContent = fmt(s.requests_per_s, 1);
  document.getElementById("swaps").textContent = s.swaps;
}

let refreshes = 0;
async function refresh() {
  if (waitingForToken) return;
  try {
    const [s, d] = await Promise.all([getJSON("/v1/status"), getJSON("/v1/series")]);
    showStatus(s);
    for (const name in CHARTS) render(name, d);
    refreshes += 1;
    state.dataset.refreshes = refreshes;
    state.textContent = "refreshed " + new Date().toLocaleTimeString() +
      " (one point per " + d.step_s + " s over the last " + d.window_s / 60 + " min)";
  } catch (e) {
    if (e instanceof Unauthorized) askForToken();
    else state.textContent = "refresh failed: " + e.message;
  }
}
refresh();
setInterval(refresh, __REFRESH_MS__);
</script>
</body></html>
""".replace("__REFRESH_MS__", str(REFRESH_MS))
