"""Watching the pipeline: metrics match what was scored, lag is right and drains
to zero (on a backlog produced in large batches), status and report after a demo."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import urllib.request

import pytest

from stream.events.codec import encode, event_to_map
from stream.events.sources import SyntheticStream
from stream.kafka.embedded import free_port
from stream.observe.status import collect

from .helpers import (
    WorkerThread,
    create_topics,
    learnstream,
    pipeline_flags,
    send_raw,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
BATCH = 200


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(learnstream_\w+)(\{[^}]*\})? (\S+)$", line)
        if match:
            samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def _one(samples: dict[str, float], name: str, **labels: str) -> float:
    for key, value in samples.items():
        if key.split("{")[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    raise KeyError(f"{name} {labels} not in {sorted(samples)[:10]}...")


def test_metrics_match_the_events_scored_and_lag_drains_to_zero(kafka, topics, client):
    create_topics(kafka, topics, partitions=1)
    events = [
        (None, encode(event_to_map(i, x, y, None), "msgpack"))
        for i, x, y in itertools.islice(SyntheticStream(seed=9), N_EVENTS)
    ]
    bad = [(None, b"\xc1 not an event"), (None, b'{"id": 1, "x": {"a": null}}')] * 2
    # A backlog first, produced in large batches (linger): the case where the
    # embedded broker's ListOffsets goes wrong and the fetch high watermark does not.
    send_raw(kafka, topics.features, events + bad)

    port = free_port()
    settings = worker_settings(
        kafka, topics, metrics_port=port, max_poll_records=BATCH, client=client
    )
    with WorkerThread(settings) as running:
        worker = running.worker
        wait_for(lambda: worker.n_scored >= N_EVENTS // 4, 60, "a quarter of the events scored")
        mid = scrape(port)
        wait_for(lambda: worker.n_scored >= N_EVENTS, 60, "every event scored")
        # An idle poll refreshes the lag from the fetch high watermark.
        wait_for(lambda: worker.lag.get(0) == 0, 30, "the lag to drain to zero")
        end = scrape(port)
        status = collect(kafka, topics, None)

    name = worker.name
    scored_mid = _one(mid, "learnstream_events_scored_total", worker=name)
    lag_mid = _one(mid, "learnstream_consumer_lag", worker=name, partition="0")
    assert 0 < scored_mid < N_EVENTS
    # Lag is what is left to read: with the scored events it makes up the topic.
    assert abs(scored_mid + lag_mid - (N_EVENTS + len(bad))) <= BATCH + len(bad)

    assert _one(end, "learnstream_events_scored_total", worker=name) == N_EVENTS
    assert _one(end, "learnstream_events_learned_total", worker=name) == N_EVENTS
    assert _one(end, "learnstream_dead_letters_total", worker=name, reason="undecodable") == 2
    assert (
        _one(end, "learnstream_dead_letters_total", worker=name, reason="non_numeric_feature") == 2
    )
    assert _one(end, "learnstream_consumer_lag", worker=name, partition="0") == 0
    assert _one(end, "learnstream_event_latency_seconds_count", worker=name) == N_EVENTS
    assert _one(end, "learnstream_batch_seconds_count", worker=name) >= N_EVENTS / BATCH
    assert 0.5 < _one(end, "learnstream_rolling_accuracy", worker=name) <= 1.0
    # Calibration and normalized entropy of the window the worker holds (it is
    # idle: the window is what it was at the scrape), computed here from the pairs.
    window = list(worker.monitor.window)
    assert len(window) == 1000
    positives = sum(y for y, _ in window)
    predicted = math.fsum(p for _, p in window)
    calibration = _one(end, "learnstream_rolling_calibration", worker=name)
    assert calibration == pytest.approx(predicted / positives, rel=1e-12)
    loss = _one(end, "learnstream_rolling_log_loss", worker=name)
    rate = positives / len(window)
    label_entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    normalized = _one(end, "learnstream_rolling_normalized_entropy", worker=name)
    assert normalized == pytest.approx(loss / label_entropy, rel=1e-12)
    # The synthetic stream is learnable: the model knows more than the label rate.
    assert normalized < 1

    # status agrees, from Kafka alone.
    [partition] = status.partitions
    assert partition.high_watermark == N_EVENTS + len(bad)
    assert partition.committed == N_EVENTS + len(bad)
    assert partition.lag == 0 and status.total_lag == 0
    assert status.dead_letters == len(bad)


def test_status_and_report_after_a_demo_run(kafka, topics, tmp_path):
    common = pipeline_flags(kafka, topics)
    checkpoints = tmp_path / "ckpt"
    demo = subprocess.run(
        learnstream(
            "demo",
            "--group-id",
            topics.group_id,
            "--checkpoint-dir",
            str(checkpoints),
            *common,
        ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert demo.returncode == 0, demo.stderr

    status = subprocess.run(
        learnstream(
            "status",
            "--json",
            "--group-id",
            topics.group_id,
            "--checkpoint-dir",
            str(checkpoints),
            *common,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["total_lag"] == 0
    assert sum(p["high_watermark"] for p in data["partitions"]) == 1250
    assert data["model_n_learned"] == 1250 and data["model_version"] >= 1
    assert data["recent"]["n"] > 0 and 0.5 < data["recent"]["accuracy"] <= 1.0

    out = tmp_path / "report.html"
    report = subprocess.run(
        learnstream("report", "--out", str(out), *common),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    assert page.count('<img alt="report-') == 3
    assert "1250 predictions (1250 labeled)" in page
    for kind in ("quality", "throughput", "latency"):
        png = tmp_path / f"report-{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000, f"{png.name} is suspiciously small"
        assert f"report-{kind}.png" in report.stdout
