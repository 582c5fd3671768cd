"""Debian's Prometheus scrapes a running pipeline, with the shipped configuration.

The parts are the real ones: ``learnstream work --processes 2``, a separate
``learnstream merge`` and ``learnstream serve`` on the embedded broker, events
flowing at a steady pace, and ``/usr/bin/prometheus`` with the jobs and alert
rules of ``deploy/prometheus`` (static targets at the test's ports instead of
the compose names, and a 1 s scrape and evaluation interval). Every PromQL
expression of the Grafana dashboard and of the alert rules runs through the
HTTP API: the dashboard's return data, the alerts' evaluate (a healthy pipeline
fires none of them), and the merger's target-down alert fires once the merger
is killed.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import signal
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from stream.events.sources import SyntheticStream
from stream.kafka.embedded import free_port
from stream.tools.produce import ProduceSettings, produce

from .helpers import create_topics, learnstream, pipeline_flags, send_raw, wait_for, work_command

pytestmark = pytest.mark.integration

PROMETHEUS = Path("/usr/bin/prometheus")
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "learnstream.json"

# Alert rules whose `for:` is shortened to this in the test's copy of
# alerts.yml: the shipped durations (minutes) keep a rebalance from paging
# anyone; the test needs an alert to fire within seconds of the merger's death.
TEST_FOR = "2s"
WORKER_PROCESSES = 2
EVENTS_PER_S = 200
STARTUP_S = 120


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every panel target and annotation of the Grafana dashboard."""
    board = json.loads(DASHBOARD.read_text())
    queries = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in board.get("annotations", {}).get("list", [])
        if a.get("expr")
    ]
    return queries


def _alert_rules() -> list[dict]:
    shipped = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in shipped["groups"] for rule in group["rules"]]


def _ports_in_a_row(n: int) -> int:
    """The first of ``n`` consecutive free ports: `work --metrics-port P`
    serves worker i on P+i."""
    while True:
        base = free_port()
        if base + n > 65535:
            continue
        taken = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
        return base


def _prometheus_config(tmp_path: Path, targets: dict[str, list[str]]) -> Path:
    """deploy/prometheus/prometheus.yml with the test's static targets, a 1 s
    scrape and evaluation interval, and the alert rules with short `for:`."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), f"the shipped jobs {jobs} are not the test's"
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        for discovery in ("dns_sd_configs", "file_sd_configs", "static_configs"):
            job.pop(discovery, None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]

    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
    assert config["rule_files"] == ["alerts.yml"], config["rule_files"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _api(port: int, path: str, **params: str) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://127.0.0.1:{port}/api/v1/{path}{query}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def _query(port: int, expr: str) -> list[dict]:
    try:
        data = _api(port, "query", query=expr)
    except urllib.error.HTTPError as exc:  # 400/422: the expression does not evaluate
        raise AssertionError(f"{expr!r} failed: {exc.read().decode()}") from exc
    return data["result"]


def _finite_data(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(float(r["value"][1])) for r in result)


def _started(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.skipif(
    not PROMETHEUS.exists(), reason=f"{PROMETHEUS} missing: apt-get install prometheus"
)
def test_prometheus_scrapes_the_pipeline_runs_every_query_and_fires_an_alert(
    kafka, topics, tmp_path
):
    create_topics(kafka, topics, partitions=WORKER_PROCESSES)
    pipeline = pipeline_flags(kafka, topics)
    workers_port = _ports_in_a_row(WORKER_PROCESSES)
    merger_port, serve_port, prometheus_port = free_port(), free_port(), free_port()
    targets = {
        "learnstream-worker": [f"127.0.0.1:{workers_port + i}" for i in range(WORKER_PROCESSES)],
        "learnstream-merger": [f"127.0.0.1:{merger_port}"],
        "learnstream-serve": [f"127.0.0.1:{serve_port}"],
    }
    config = _prometheus_config(tmp_path, targets)

    producing = threading.Event()
    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            _started(
                work_command(
                    kafka,
                    topics,
                    "--no-merger",
                    "--merge-every",
                    "50",
                    processes=WORKER_PROCESSES,
                    metrics_port=workers_port,
                ),
                tmp_path / "work.log",
            )
        )
        merger = _started(
            learnstream(
                "merge",
                "--group-id",
                topics.group_id,
                "--checkpoint-dir",
                str(tmp_path / "checkpoints"),
                "--metrics-port",
                str(merger_port),
                *pipeline,
            ),
            tmp_path / "merge.log",
        )
        processes.append(merger)
        processes.append(
            _started(
                learnstream("serve", "--port", str(serve_port), *pipeline),
                tmp_path / "serve.log",
            )
        )
        processes.append(
            _started(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        # Records that break the contract: the dead-letter series exist.
        send_raw(kafka, topics.features, [(b"bad-1", b"not an event"), (b"bad-2", b"\xff")])
        rows = itertools.takewhile(lambda _: not producing.is_set(), SyntheticStream(seed=20))
        threading.Thread(
            target=produce,
            args=(rows, ProduceSettings(kafka=kafka, topic=topics.features, rate=EVENTS_PER_S)),
            daemon=True,
        ).start()

        def every_target_up() -> bool:
            try:
                active = _api(prometheus_port, "targets")["activeTargets"]
            except OSError:
                return False  # Prometheus still starting
            up = {
                (t["labels"]["job"], t["labels"]["instance"]) for t in active if t["health"] == "up"
            }
            return up == {(job, i) for job, instances in targets.items() for i in instances}

        wait_for(every_target_up, STARTUP_S, "every target up in Prometheus")

        # The dashboard: every expression returns finite data while events flow.
        dashboard = _dashboard_queries()
        assert len(dashboard) == 21, [expr for _, expr in dashboard]
        panels = [(where, expr) for where, expr in dashboard if where.startswith("panel")]
        missing: list[str] = []

        def every_panel_has_data() -> bool:
            missing[:] = [
                f"{where}: {expr}"
                for where, expr in panels
                if not _finite_data(_query(prometheus_port, expr))
            ]
            return not missing

        try:
            wait_for(every_panel_has_data, STARTUP_S, "data in every dashboard panel")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty:\n" + "\n".join(missing)) from None
        # The drift markers are `> 0`: empty while no drift happens, but they
        # evaluate, and the series they read are exported.
        for where, expr in dashboard:
            if where.startswith("annotation"):
                _query(prometheus_port, expr)
                inner = re.sub(r"\s*>\s*0\s*$", "", expr)
                assert _finite_data(_query(prometheus_port, inner)), f"{where}: {inner}"

        # The alerts: every expression evaluates, and every series it reads exists
        # (a misspelt metric name would make an alert that can never fire).
        rules = _alert_rules()
        assert len(rules) == 9, [rule["alert"] for rule in rules]
        for rule in rules:
            _query(prometheus_port, rule["expr"])
            for name in sorted(set(re.findall(r"\b(?:learnstream_\w+|up)\b", rule["expr"]))):
                assert _query(prometheus_port, f"count({name})"), f"{rule['alert']} reads {name}"

        def every_rule_evaluated_ok() -> list[dict]:
            groups = _api(prometheus_port, "rules")["groups"]
            # Never evaluated yet: the zero time, 0001-01-01.
            evaluated = [
                r for g in groups for r in g["rules"] if not r["lastEvaluation"].startswith("0001")
            ]
            return evaluated if len(evaluated) == len(rules) else []

        evaluated = wait_for(every_rule_evaluated_ok, 30, "every alert rule evaluated")
        assert {r["name"] for r in evaluated} == {rule["alert"] for rule in rules}
        assert all(r["health"] == "ok" for r in evaluated), [
            (r["name"], r["health"], r.get("lastError")) for r in evaluated
        ]
        firing = [a for a in _api(prometheus_port, "alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing

        # Kill the merger: its target goes down, and the alert says which one.
        merger.send_signal(signal.SIGKILL)
        merger.wait(timeout=30)

        def target_down_firing() -> list[dict]:
            return [
                a
                for a in _api(prometheus_port, "alerts")["alerts"]
                if a["labels"]["alertname"] == "LearnstreamTargetDown" and a["state"] == "firing"
            ]

        fired = wait_for(target_down_firing, 60, "LearnstreamTargetDown firing")
        assert [a["labels"] for a in fired] == [
            {
                "alertname": "LearnstreamTargetDown",
                "job": "learnstream-merger",
                "instance": f"127.0.0.1:{merger_port}",
                "severity": "warning",
            }
        ]
        assert fired[0]["annotations"]["summary"] == (
            f"learnstream-merger target 127.0.0.1:{merger_port} is down"
        )
    finally:
        producing.set()
        for process in reversed(processes):
            _stop(process)
