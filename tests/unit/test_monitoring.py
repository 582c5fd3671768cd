"""The Prometheus and Grafana setup shipped in deploy/: valid for the tools that
read it, about metrics our processes really expose, and alerts that fire when
they should (promtool's own rule tests, tests/monitoring/alerts_test.yml).

promtool comes with Debian's ``prometheus`` package (CI installs it); without
it the promtool checks are skipped, saying so, and the rest still runs.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from starlette.testclient import TestClient

from stream.config import MergerSettings, WorkerSettings
from stream.observe.metrics import MergerCollector, WorkerCollector
from stream.runtime.merger import Merger
from stream.runtime.worker import Worker

from .serve_fixtures import app_with

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "learnstream.json"
ALERTS_TEST = ROOT / "tests" / "monitoring" / "alerts_test.yml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; CI installs it)"
)

# A metric family's samples carry these suffixes in queries.
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
_NAME = re.compile(r"\blearnstream_[a-z_]+")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def _family(sample: str) -> str:
    for suffix in _SUFFIXES:
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


def _exposed() -> set[str]:
    """Every learnstream metric family a worker, a merger and serve expose."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(Worker(WorkerSettings(), "w-test")))
    registry.register(MergerCollector(Merger(MergerSettings(), "m-test"), lambda: 0.0))
    text = generate_latest(registry).decode()
    app, _ = app_with()
    text += TestClient(app).get("/metrics").text
    return {_family(m) for m in _NAME.findall(text)}


def _cli_default(settings: type, name: str):
    (declared,) = (f for f in dataclasses.fields(settings) if f.name == name)
    return declared.metadata["cli_default"]


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return queries + [a["expr"] for a in dashboard["annotations"]["list"]]


@needs_promtool
def test_promtool_accepts_the_scrape_configuration_and_its_rule_file():
    checked = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    checked = _promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in checked.stdout


@needs_promtool
def test_every_alert_fires_on_its_series_and_stays_quiet_on_healthy_ones():
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert tested == {rule["alert"] for rule in _alert_rules()}
    run = _promtool("test", "rules", str(ALERTS_TEST))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses queries only inside rules: each one becomes a recording rule.
    queries = _dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, query in enumerate(queries):
        rules["groups"][0]["rules"].append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


def test_alerts_and_dashboard_query_only_metrics_our_processes_expose():
    exposed = _exposed()
    used = {_family(m) for rule in _alert_rules() for m in _NAME.findall(rule["expr"])}
    used |= {_family(m) for query in _dashboard_queries() for m in _NAME.findall(query)}
    assert used - exposed == set()
    # And the charts the dashboard promises are there.
    assert {
        "learnstream_events_scored",
        "learnstream_events_learned",
        "learnstream_event_latency_seconds",
        "learnstream_consumer_lag",
        "learnstream_rolling_log_loss",
        "learnstream_dead_letters",
        "learnstream_learning_refused",
        "learnstream_drifts",
        "learnstream_merger_model_version",
        "learnstream_model_age_seconds",
    } <= used


def test_the_dashboard_uses_the_provisioned_datasource_and_panels_do_not_overlap():
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    used |= {a["datasource"]["uid"] for a in dashboard["annotations"]["list"]}
    assert used == uids
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        assert g["x"] + g["w"] <= 24
        cells |= mine
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_compose_runs_prometheus_and_grafana_on_the_shipped_files_and_scrapes_its_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # A compose worker container runs one worker process and its merger: the
    # worker on --metrics-port (9400 by default), the merger on the next port.
    worker_port = _cli_default(WorkerSettings, "metrics_port")
    for job, port in (("learnstream-worker", worker_port), ("learnstream-merger", worker_port + 1)):
        (dns,) = jobs[job]["dns_sd_configs"]
        assert dns["port"] == port and set(dns["names"]) <= set(services)
    assert services["worker"]["command"] == ["work", "--processes", "1"]
    (serve,) = jobs["learnstream-serve"]["static_configs"]
    assert serve["targets"] == ["serve:8000"]
    assert services["serve"]["command"][-2:] == ["--port", "8000"]
