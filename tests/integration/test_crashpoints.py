"""Recovery from a crash at each named point of the protocol, with exact counts.

Each test arms one crash point (``LEARNSTREAM_CRASH_AT``) in a real
``learnstream work`` command: the process dies by SIGKILL exactly there, its
supervisor restarts it (disarmed), and the global model ends up having learned
every labeled event exactly once. Topics are not pre-created.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stream.events.sources import SyntheticStream
from stream.faults import CRASH_POINTS
from stream.sync.feed import ModelFeed
from stream.tools.produce import ProduceSettings, produce

from .helpers import FAST_GROUP_FLAGS, read_predictions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 2_000


def _work(kafka, topics, tmp_path, crash_at: str, processes: int) -> subprocess.Popen:
    log = open(tmp_path / "work.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream",
            "work",
            "--processes",
            str(processes),
            "--metrics-port",
            "0",
            "--group-id",
            topics.group_id,
            *FAST_GROUP_FLAGS,
            "--merge-every",
            "200",
            "--checkpoint-dir",
            str(tmp_path / "checkpoints"),
            "--checkpoint-interval-s",
            "0",
            "--bootstrap",
            kafka.bootstrap_servers,
            "--features-topic",
            topics.features,
            "--predictions-topic",
            topics.predictions,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "LEARNSTREAM_CRASH_AT": crash_at},
    )


def wait_for_learned(kafka, topics, n: int, timeout_s: float = 120.0):
    """The first version that has learned ``n`` events (or the last one seen),
    then a quiet moment to catch any version that learns more."""
    feed = ModelFeed(kafka, topics, "test-crashpoints")
    try:
        latest = feed.initial()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (latest is None or latest.n_learned < n):
            latest = feed.poll(timeout_ms=200)
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < quiet_until:
            latest = feed.poll(timeout_ms=200)
        return latest
    finally:
        feed.close()


CASES = [
    ("worker.before_flush:2", 1),
    ("worker.after_flush_before_commit:2", 1),
    ("worker.after_commit:2", 1),
    ("worker.after_contribution_sent:2", 1),
    ("worker.on_revoke_after_contribution", 2),
    ("merger.after_merge_before_publish:2", 1),
    ("merger.after_publish_before_checkpoint:2", 1),
    ("merger.during_checkpoint_write:2", 1),
    ("merger.after_checkpoint:2", 1),
]


def test_every_crash_point_has_a_test():
    assert {case.split(":")[0] for case, _ in CASES} == set(CRASH_POINTS)


@pytest.mark.parametrize(("crash_at", "processes"), CASES, ids=[c for c, _ in CASES])
def test_a_crash_at_this_point_loses_nothing_and_learns_nothing_twice(
    kafka, topics, tmp_path, crash_at, processes
):
    point = crash_at.split(":")[0]
    if point == "worker.on_revoke_after_contribution":
        # A backlog first, so the first worker has learned when the second joins
        # and its partitions are revoked.
        produce(
            iter(SyntheticStream(seed=21)),
            ProduceSettings(kafka=kafka, topic=topics.features, limit=N_EVENTS),
        )
    work = _work(kafka, topics, tmp_path, crash_at, processes)
    try:
        if point != "worker.on_revoke_after_contribution":
            produce(
                iter(SyntheticStream(seed=21)),
                ProduceSettings(kafka=kafka, topic=topics.features, limit=N_EVENTS),
            )
        predictions = read_predictions(
            kafka, topics.predictions, {str(i) for i in range(N_EVENTS)}, settle_s=0.5
        )
        settled = wait_for_learned(kafka, topics, N_EVENTS)
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=60)
    log = (tmp_path / "work.log").read_text()
    assert f"crash point reached, dying point={point}" in log
    assert "exitcode=-9; restarting" in log
    assert {p["id"] for p in predictions} == {str(i) for i in range(N_EVENTS)}
    assert settled.n_learned == N_EVENTS
    assert sum(settled.offsets.values()) == N_EVENTS
