"""Faults beyond SIGKILL: a process frozen (SIGSTOP) past its session timeout while
events flow, then resumed (SIGCONT): the broker, one worker (it comes back as a
zombie, evicted from the group), the merger (workers keep contributing).

Each runs a real ``learnstream work`` (two workers and a merger, default restart
policy) and asserts exact counts: every event has a prediction (the distinct
ids on the predictions topic are the events), and the global model, read after
every process has exited, has learned each labeled event exactly once. The
supervisor never gives up: ``work`` exits 0 on SIGTERM (1 after a crash loop).

The freeze itself lasts a fixed time: that is the fault, not a wait.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream.config import KafkaSettings
from stream.events.sources import SyntheticStream
from stream.kafka.embedded import EmbeddedBroker
from stream.sync.feed import published_model
from stream.tools.produce import ProduceSettings, produce

from .helpers import create_topics, read_predictions, wait_for, wait_for_learned, work_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 3_000
PARTITIONS = 4
# Events flow for about 15 s: the freeze lands in the middle of the stream.
RATE = 200.0
# Longer than the session timeout (5 s in FAST_GROUP_FLAGS) and a rebalance.
FREEZE_S = 8.0
STOP_LIMIT_S = 10


class Work:
    """``learnstream work --processes 2`` with its merger; children found in its log."""

    def __init__(self, kafka: KafkaSettings, topics, tmp_path: Path) -> None:
        self.log = tmp_path / "work.log"
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            work_command(
                kafka,
                topics,
                "--merge-every",
                "200",
                processes=2,
                checkpoint_dir=tmp_path / "checkpoints",
            ),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pid(self, key: str) -> int:
        """The pid of the newest life of child ``key`` (``w0``, ``w1``, ``merger``)."""
        found = re.findall(rf"process started key={key} pid=(\d+)", self.text())
        assert found, f"no process {key} started yet"
        return int(found[-1])

    def name(self, key: str) -> str:
        return re.findall(rf"process started key={key} pid=\d+ name=(\S+)", self.text())[-1]

    def stop(self) -> int:
        """SIGTERM; the exit code (0: stopped cleanly, never gave up)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_LIMIT_S * 3)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_work(kafka, topics, tmp_path) -> Iterator[Work]:
    work = Work(kafka, topics, tmp_path)
    try:
        yield work
    finally:
        work.kill()


def _produce_in_background(kafka, topics) -> threading.Thread:
    thread = threading.Thread(
        target=produce,
        args=(
            iter(SyntheticStream(n_features=10, seed=5)),
            ProduceSettings(kafka=kafka, topic=topics.features, rate=RATE, limit=N_EVENTS),
        ),
        daemon=True,
    )
    thread.start()
    return thread


def _wait_started(work: Work) -> None:
    """Both workers hold partitions and the merger is active: the pipeline runs."""
    wait_for(
        lambda: (
            "merger active" in work.text()
            and len(set(re.findall(r"partitions assigned worker=(\S+) partitions=\d", work.text())))
            == 2
        ),
        90,
        "both workers assigned and the merger active",
    )


def _freeze(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault itself: frozen this long
    finally:
        os.kill(pid, signal.SIGCONT)


def _finish(kafka, topics, work: Work, producer: threading.Thread) -> None:
    """Every event predicted, every labeled event learned once, after everything exits."""
    producer.join(timeout=120)
    assert not producer.is_alive(), "the producer did not finish"
    try:
        predictions = read_predictions(
            kafka, topics.predictions, {str(i) for i in range(N_EVENTS)}, settle_s=0.5
        )
        wait_for_learned(kafka, topics, N_EVENTS)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- work log ---\n{work.text()}") from exc
    code = work.stop()
    assert code == 0, f"work exited {code}\n{work.text()}"
    assert "giving up" not in work.text()
    assert {p["id"] for p in predictions} == {str(i) for i in range(N_EVENTS)}
    final = published_model(kafka, topics, "test-freeze")
    assert final is not None
    assert final.n_learned == N_EVENTS, work.text()
    assert sum(final.offsets.values()) == N_EVENTS


@pytest.mark.timeout(240)
def test_broker_frozen_past_the_session_timeout_loses_and_repeats_nothing(tmp_path, topics):
    # A broker of its own: freezing the session's broker would stall every other test.
    with EmbeddedBroker(port=0, log_path=tmp_path / "tansu.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(kafka, topics, PARTITIONS)
        with running_work(kafka, topics, tmp_path) as work:
            _wait_started(work)
            producer = _produce_in_background(kafka, topics)
            wait_for(lambda: "merged to version" in work.text(), 60, "a first merge")
            _freeze(broker.pid, FREEZE_S)
            _finish(kafka, topics, work, producer)
        # The freeze outlasted the sessions: the group had dropped its members.
        assert "partitions lost" in work.text()


@pytest.mark.timeout(240)
def test_worker_frozen_until_evicted_then_resumed_as_a_zombie(kafka, topics, tmp_path):
    create_topics(kafka, topics, PARTITIONS)
    with running_work(kafka, topics, tmp_path) as work:
        _wait_started(work)
        producer = _produce_in_background(kafka, topics)
        wait_for(lambda: "merged to version" in work.text(), 60, "a first merge")
        frozen, other = work.pid("w0"), work.name("w1")
        os.kill(frozen, signal.SIGSTOP)
        try:
            # Evicted: the other worker is given every partition.
            wait_for(
                lambda: f"partitions assigned worker={other} partitions=0,1,2,3" in work.text(),
                60,
                "the other worker to take every partition",
            )
            # Frozen on until the group has moved on without it: its partitions are
            # learned further by the other worker and merged.
            merges = work.text().count("merged to version")
            wait_for(
                lambda: work.text().count("merged to version") >= merges + 2,
                60,
                "two merges without the frozen worker",
            )
        finally:
            os.kill(frozen, signal.SIGCONT)
        _finish(kafka, topics, work, producer)
    # The zombie found out, and the supervisor never had to restart it.
    assert f"partitions lost worker={work.name('w0')}" in work.text()
    assert work.text().count("process started key=w0") == 1


@pytest.mark.timeout(240)
def test_merger_frozen_while_workers_contribute_then_resumed(kafka, topics, tmp_path):
    create_topics(kafka, topics, PARTITIONS)
    with running_work(kafka, topics, tmp_path) as work:
        _wait_started(work)
        producer = _produce_in_background(kafka, topics)
        wait_for(lambda: "merged to version" in work.text(), 60, "a first merge")
        _freeze(work.pid("merger"), FREEZE_S)
        _finish(kafka, topics, work, producer)
    # It lost the contributions partition while frozen and took it back, under a new epoch.
    assert "merger lost its partition" in work.text()
    epochs = [int(e) for e in re.findall(r"merger active \S+ epoch=(\d+) ", work.text())]
    assert len(epochs) >= 2 and epochs == sorted(set(epochs)), epochs
