"""The live page served at ``GET /``: one HTML file, refreshed by polling ``/v1/status``."""

from __future__ import annotations

REFRESH_MS = 1000

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>learnstream serve</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td { padding: .3em 1.2em .3em 0; }
td.v { font: 20px ui-monospace, monospace; } #state { color: #777; }
</style></head>
<body>
<h1>learnstream: the live global model</h1>
<table>
<tr><td>model version</td><td class="v" id="version">-</td></tr>
<tr><td>events learned</td><td class="v" id="n_learned">-</td></tr>
<tr><td>model age</td><td class="v" id="age">-</td></tr>
<tr><td>rolling accuracy</td><td class="v" id="accuracy">-</td></tr>
<tr><td>rolling log loss</td><td class="v" id="log_loss">-</td></tr>
<tr><td>labeled predictions in window</td><td class="v" id="quality_n">-</td></tr>
<tr><td>requests/s</td><td class="v" id="rps">-</td></tr>
<tr><td>model swaps</td><td class="v" id="swaps">-</td></tr>
</table>
<p id="state" data-refreshes="0">waiting for the first refresh</p>
<script>
const token = new URLSearchParams(location.search).get("access_token");
const headers = token ? {"Authorization": "Bearer " + token} : {};
const fmt = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
let refreshes = 0;
async function refresh() {
  const state = document.getElementById("state");
  try {
    const r = await fetch("/v1/status", {headers, cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    document.getElementById("version").textContent = s.model_version ?? "none yet";
    document.getElementById("n_learned").textContent = s.n_learned ?? "-";
    document.getElementById("age").textContent = fmt(s.age_s, 1) + " s";
    document.getElementById("accuracy").textContent = fmt(s.quality.accuracy, 4);
    document.getElementById("log_loss").textContent = fmt(s.quality.log_loss, 4);
    document.getElementById("quality_n").textContent = s.quality.n;
    document.getElementById("rps").textContent = fmt(s.requests_per_s, 1);
    document.getElementById("swaps").textContent = s.swaps;
    refreshes += 1;
    state.dataset.refreshes = refreshes;
    state.textContent = "refreshed " + new Date().toLocaleTimeString();
  } catch (e) {
    state.textContent = "refresh failed: " + e.message;
  }
}
refresh();
setInterval(refresh, __REFRESH_MS__);
</script>
</body></html>
""".replace("__REFRESH_MS__", str(REFRESH_MS))
