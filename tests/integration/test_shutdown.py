"""SIGTERM stops `learnstream work` (a worker and the merger) cleanly mid-stream;
a restarted one carries on: no event without a prediction, none predicted or
learned twice."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from stream.events.sources import SyntheticStream
from stream.kafka.reader import records
from stream.sync.feed import published_model
from stream.tools.produce import ProduceSettings, produce

from .helpers import create_topics, read_predictions, work_command

pytestmark = pytest.mark.integration

N_EVENTS = 6_000


def _start_worker(kafka, topics, log_path, checkpoint_dir, client):
    """``learnstream work`` as a user runs it, in its own process."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        work_command(
            kafka,
            topics,
            "--max-poll-records",
            "200",
            "--client",
            client,
            processes=None,
            metrics_port=None,
            checkpoint_dir=checkpoint_dir,
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_for_predictions(kafka, topic: str, at_least: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    for seen, _ in enumerate(records(kafka, topic, idle_timeout_s=timeout_s), 1):
        if seen >= at_least:
            return
        assert time.monotonic() < deadline, f"fewer than {at_least} predictions in {timeout_s}s"


def test_sigterm_mid_stream_then_restart_leaves_no_event_without_prediction(
    kafka, topics, tmp_path, client
):
    create_topics(kafka, topics, partitions=2)
    log_path = tmp_path / "worker.log"
    first = _start_worker(kafka, topics, log_path, tmp_path / "checkpoints", client)
    # Events arrive over ~12 s; the worker is stopped and replaced midway.
    producer = threading.Thread(
        target=produce,
        args=(
            iter(SyntheticStream(seed=11)),
            ProduceSettings(kafka=kafka, topic=topics.features, rate=500, limit=N_EVENTS),
        ),
    )
    producer.start()
    # Mid-stream means: once the first worker has joined and scored some events.
    # (SIGTERM during its very first join can leave the embedded broker's group
    # waiting on a member that never synced; Apache Kafka evicts it.)
    _wait_for_predictions(kafka, topics.predictions, at_least=300)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, log_path.read_text()

    second = _start_worker(kafka, topics, log_path, tmp_path / "checkpoints", client)
    try:
        producer.join(timeout=60)
        try:
            predictions = read_predictions(
                kafka, topics.predictions, {str(i) for i in range(N_EVENTS)}
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{log_path.read_text()}") from exc
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, log_path.read_text()

    log = log_path.read_text()
    assert "stop requested" in log and "signal=SIGTERM" in log
    by_worker = Counter(p["worker"] for p in predictions)
    assert len(by_worker) == 2, f"both workers should have scored: {by_worker}"
    # A clean stop commits what it published: nothing is scored twice.
    per_id = Counter(p["id"] for p in predictions)
    assert set(per_id) == {str(i) for i in range(N_EVENTS)}
    assert max(per_id.values()) == 1
    # Learning, too, happened exactly once across the stop and restart.
    final = published_model(kafka, topics, "test")
    assert final is not None and final.n_learned == N_EVENTS
    assert sum(final.offsets.values()) == N_EVENTS
