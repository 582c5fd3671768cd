"""Chaos: workers and the merger are SIGKILLed mid-stream and restarted.

Every event still gets a prediction, and the global model learns every labeled
event below the committed offsets exactly once: none twice, none lost.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest
from kafka import TopicPartition

from stream.config import MergerSettings, RestartSettings
from stream.events.sources import SyntheticStream
from stream.kafka import clients
from stream.runtime.supervisor import Supervisor
from stream.tools.produce import ProduceSettings, produce

from .helpers import create_topics, merging, read_predictions, worker_settings
from .test_merging import wait_for_quiet_model

pytestmark = pytest.mark.integration

N_EVENTS = 50_000
PARTITIONS = 4
CHAOS_S = 24.0
KILL_EVERY_S = 3.0


def committed_offsets(kafka, topics) -> dict[int, int]:
    consumer = clients.consumer(kafka, client_id="test-committed", group_id=topics.group_id)
    try:
        return {
            p: consumer.committed(TopicPartition(topics.features, p)) or 0
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def test_sigkill_workers_and_merger_loses_nothing_and_learns_nothing_twice(kafka, topics):
    rng = random.Random(20261122)
    create_topics(kafka, topics, PARTITIONS)
    settings = worker_settings(kafka, topics, merge=merging(every_events=500, interval_s=0.5))
    # Killed on purpose again and again: restart fast, never call it a crash loop.
    restart = RestartSettings(delay_s=0.5, max_delay_s=0.5, max_restarts=1000)
    supervisor = Supervisor(settings, 4, MergerSettings.for_workers(settings), restart=restart)
    supervisor.start()
    kills: Counter[str] = Counter()
    try:
        supervisor.wait_assigned(PARTITIONS, timeout_s=60)
        stream = SyntheticStream(n_features=10, seed=3)
        producer = threading.Thread(
            target=produce,
            args=(
                iter(stream),
                ProduceSettings(
                    kafka=kafka,
                    topic=topics.features,
                    rate=N_EVENTS / (CHAOS_S - 4),
                    limit=N_EVENTS,
                ),
            ),
        )
        producer.start()
        start = time.monotonic()
        next_kill = start + KILL_EVERY_S
        merger_killed = False
        while time.monotonic() - start < CHAOS_S:
            supervisor.check()  # restarts what was killed
            now = time.monotonic()
            if now >= next_kill:
                if not merger_killed and now - start > CHAOS_S / 3:
                    key, merger_killed = "merger", True
                else:
                    key = rng.choice(sorted(supervisor.workers))
                process = supervisor.processes[key]
                if process.exitcode is None:
                    os.kill(process.pid, signal.SIGKILL)
                    kills[key.rstrip("0123456789")] += 1
                next_kill = now + KILL_EVERY_S
            time.sleep(0.1)
        producer.join(timeout=120)
        deadline = time.monotonic() + 120
        # Let the restarted processes settle and drain.
        while time.monotonic() < deadline:
            supervisor.check()
            try:
                predictions = read_predictions(
                    kafka,
                    topics.predictions,
                    {str(i) for i in range(N_EVENTS)},
                    timeout_s=30,
                    settle_s=0.5,
                )
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("events left without a prediction")
    finally:
        supervisor.stop()

    settled = wait_for_quiet_model(kafka, topics)
    committed = committed_offsets(kafka, topics)
    per_id = Counter(p["id"] for p in predictions)
    duplicates = sum(n - 1 for n in per_id.values())
    print(
        f"\nchaos: kills={dict(kills)} events={N_EVENTS} predictions={len(predictions)} "
        f"duplicates={duplicates} committed={committed} model_offsets={settled.offsets} "
        f"n_learned={settled.n_learned} version={settled.version}"
    )
    assert kills["merger"] == 1 and kills["w"] >= 4
    assert set(per_id) == {str(i) for i in range(N_EVENTS)}
    # Every event is labeled: learned exactly the events below the committed offsets.
    assert sum(committed.values()) == N_EVENTS
    assert settled.offsets == committed
    assert settled.n_learned == sum(committed.values())
