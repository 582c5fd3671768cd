"""Protocol paths the guarantee relies on, each driven deterministically on a
real broker: model settings that disagree with the global model, a worker
that starts while the merger is away (the catch-up timeout) and whose
contributions are then rejected, a flush that the real client cannot
complete, and a merger frozen past its session timeout while a standby takes
over (a zombie merger). Each ends with the global model read after every
process has exited: every labeled event learned exactly once.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from stream.config import KafkaSettings, MergerSettings, ModelSettings, TopicSettings
from stream.errors import DeliveryError
from stream.events.sources import SyntheticStream
from stream.kafka import connect
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.reader import records
from stream.runtime import worker as worker_module
from stream.runtime.identity import SEPARATOR
from stream.sync.contribution import Contribution
from stream.tools.produce import ProduceSettings, produce

from .helpers import (
    FAST_GROUP_FLAGS,
    MergerThread,
    WorkerThread,
    assert_learned_exactly_once,
    create_topics,
    final_model,
    learnstream,
    merging,
    pipeline_flags,
    read_predictions,
    synthetic_features,
    wait_for,
    wait_for_learned,
    work_command,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = synthetic_features(10)


def _produce(kafka: KafkaSettings, topics: TopicSettings, ids: range) -> None:
    rows = itertools.islice(SyntheticStream(seed=31), ids.start, ids.stop)
    produce(rows, ProduceSettings(kafka=kafka, topic=topics.features, limit=len(ids)))


def _ids(ids: range) -> set[str]:
    return {str(i) for i in ids}


def _pipeline_flags(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    return [*pipeline_flags(kafka, topics), "--group-id", topics.group_id]


# -- model settings that disagree with the global model -----------------------


def test_other_model_settings_are_refused_at_start_with_a_clear_error(kafka, topics, tmp_path):
    create_topics(kafka, topics, partitions=1)
    settings = worker_settings(kafka, topics, merge=merging(checkpoint_dir=tmp_path / "ckpt"))
    with MergerThread(MergerSettings.for_workers(settings)), WorkerThread(settings):
        _produce(kafka, topics, range(100))
        wait_for_learned(kafka, topics, 100)
    learned = final_model(kafka, topics)
    sgd, ftrl = ModelSettings().as_dict(), ModelSettings(optimizer="ftrl").as_dict()
    for command in ("work", "merge"):
        flags = ["--metrics-port", "0"] if command == "work" else []
        done = subprocess.run(
            learnstream(
                command,
                "--optimizer",
                "ftrl",
                "--checkpoint-dir",
                str(tmp_path / "ckpt"),
                *flags,
                *_pipeline_flags(kafka, topics),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr[-3000:]
        assert (
            f"learnstream {command}: error: global model version {learned.version} was learned "
            f"with {sgd}, not {ftrl}; use the same model settings or another checkpoint dir/topic"
        ) in done.stderr, done.stderr[-3000:]
        # Refused before any process started: nothing was restarted.
        assert "process started" not in done.stderr
    # And the model is untouched.
    assert final_model(kafka, topics).order == learned.order


# -- the catch-up timeout, then a rejected contribution -------------------------


def _contributors(kafka: KafkaSettings, topics: TopicSettings) -> set[str]:
    """The worker names (each life's name) on the contributions topic."""
    return _names(
        Contribution.from_bytes(r.value).worker
        for r in records(kafka, topics.contributions, idle_timeout_s=1)
    )


def _names(lives) -> set[str]:
    """Worker names of life ids (``name~incarnation``, stream.runtime.identity)."""
    return {life.partition(SEPARATOR)[0] for life in lives}


def test_a_worker_that_could_not_catch_up_has_its_contributions_rejected_and_relearns(
    kafka, topics, caplog
):
    """Worker a learns 100 events and stops while no merger runs. Worker b
    starts: the merger has not caught up (it is not there), so b continues
    after the catch-up timeout from no model and learns the same 100 events.
    The merger then applies a's contributions and rejects b's (the offset
    fence); b takes the global model, in which its pending contributions'
    events already are, and learns the next 100 events from its offsets.
    Nothing is learned twice."""
    caplog.set_level(logging.INFO)
    create_topics(kafka, topics, partitions=1)
    settings = worker_settings(kafka, topics, merge=merging())
    _produce(kafka, topics, range(100))
    with WorkerThread(settings, name="worker-a"):
        read_predictions(kafka, topics.predictions, _ids(range(100)), settle_s=0)
    assert _contributors(kafka, topics) == {"worker-a"}

    with WorkerThread(settings, name="worker-b") as b:
        wait_for(
            lambda: b.worker.n_replayed == 100 and "worker-b" in _contributors(kafka, topics),
            timeout_s=120,
            what="b re-learning the 100 events and contributing them",
        )
        # It waited CATCH_UP_TIMEOUT_S for a merger that was not there, said so,
        # and went on from no model.
        assert "merger has not caught up worker=worker-b contributions_end=" in caplog.text
        with MergerThread(MergerSettings.for_workers(settings)):
            # The merger fences b's out; b, judging its pending contributions by
            # the version's offsets, drops them (the model holds those events).
            wait_for(
                lambda: "contribution rejected worker=worker-b~" in caplog.text,
                timeout_s=120,
                what="the merger rejecting b's contribution",
            )
            _produce(kafka, topics, range(100, 200))
            read_predictions(kafka, topics.predictions, _ids(range(200)), settle_s=0)
            wait_for_learned(kafka, topics, 200)
    final = final_model(kafka, topics)
    assert_learned_exactly_once(final, 200, FEATURES)
    assert _names(final.rejected) == {"worker-b"}
    assert _names(final.applied) == {"worker-a", "worker-b"}
    assert len(final.applied) == 2  # one life each


# -- a flush the real client cannot complete ---------------------------------


class FreezingProducer:
    """The real producer of the worker, with one fault injected: from the
    ``at``-th record on, the broker is frozen (SIGSTOP) until the next flush
    has returned, so that flush, in the real client, cannot be acknowledged."""

    def __init__(self, real, broker_pid: int, at: int) -> None:
        self._real, self._pid, self._at = real, broker_pid, at
        self._sent = 0
        self.frozen = False
        self.failures: list[BaseException] = []

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:
        self._sent += 1
        if self._sent == self._at:
            os.kill(self._pid, signal.SIGSTOP)
            self.frozen = True
        self._real.send(topic, value, key, headers, partition)

    def flush(self, timeout_s: float) -> None:
        try:
            self._real.flush(timeout_s)
        except DeliveryError as exc:
            self.failures.append(exc)
            raise
        finally:
            if self.frozen:
                os.kill(self._pid, signal.SIGCONT)
                self.frozen = False

    def partition_count(self, topic: str) -> int:
        return self._real.partition_count(topic)

    def close(self, timeout_s: float = 10.0) -> None:
        self._real.close(timeout_s)


@pytest.mark.timeout(300)
def test_a_flush_the_real_client_cannot_complete_fails_the_worker_and_loses_nothing(
    topics, tmp_path, monkeypatch
):
    n_events = 1_000
    # A broker of its own: freezing the session's broker would stall other tests.
    with EmbeddedBroker(port=0, log_path=tmp_path / "tansu.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(kafka, topics, partitions=1)
        settings = worker_settings(
            kafka, topics, merge=merging(every_events=100), delivery_timeout_s=2.0
        )
        wrapped: list[FreezingProducer] = []

        real_producer = connect.producer

        def producer(client, kafka_settings, name, **options):
            real = real_producer(client, kafka_settings, name, **options)
            if name != "worker-failing":  # the merger, the successor, the test: no fault
                return real
            wrapped.append(FreezingProducer(real, broker.pid, at=300))
            return wrapped[-1]

        monkeypatch.setattr(worker_module.connect, "producer", producer)
        _produce(kafka, topics, range(n_events))
        with MergerThread(MergerSettings.for_workers(settings)):
            failing = WorkerThread(settings, name="worker-failing")
            expected = r"records not acknowledged within 2\.0s"
            with pytest.raises(DeliveryError, match=expected), failing:
                wait_for(lambda: failing.error is not None, 120, "the flush failing")
            assert len(wrapped[0].failures) == 1
            assert failing.worker.ledger.tainted
            with WorkerThread(settings, name="worker-successor"):
                read_predictions(kafka, topics.predictions, _ids(range(n_events)), settle_s=0)
                wait_for_learned(kafka, topics, n_events)
        assert_learned_exactly_once(final_model(kafka, topics), n_events, FEATURES)


# -- a zombie merger ------------------------------------------------------------

MERGER_GROUP_FLAGS = FAST_GROUP_FLAGS[:6]  # `merge` has no catch-up timeout


def _merge_command(kafka, topics, tmp_path: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        learnstream(
            "merge",
            "--metrics-port",
            "0",
            *MERGER_GROUP_FLAGS,
            "--checkpoint-dir",
            str(tmp_path / "checkpoints"),
            *_pipeline_flags(kafka, topics),
        ),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


ACTIVE = re.compile(r"merger active merger=\S+ epoch=(\d+) ")


@pytest.mark.timeout(300)
def test_a_merger_frozen_past_its_session_while_a_standby_takes_over_learns_nothing_twice(
    kafka, topics, tmp_path
):
    n_events = 3_000
    create_topics(kafka, topics, partitions=2)
    logs = {name: tmp_path / f"merge-{name}.log" for name in ("one", "two")}
    work_log = tmp_path / "work.log"
    processes: list[subprocess.Popen] = []
    frozen: int | None = None
    try:
        with open(work_log, "ab") as out:
            processes.append(
                subprocess.Popen(
                    work_command(kafka, topics, "--no-merger", "--merge-every", "100", processes=2),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        mergers = {name: _merge_command(kafka, topics, tmp_path, log) for name, log in logs.items()}
        processes += mergers.values()
        text = {
            name: (lambda log=log: log.read_text(errors="replace")) for name, log in logs.items()
        }
        active = wait_for(
            lambda: next((n for n in text if "merger active" in text[n]()), None),
            timeout_s=120,
            what="one merger active",
        )
        standby = next(n for n in text if n != active)
        producer = threading.Thread(
            target=produce,
            args=(
                iter(SyntheticStream(seed=32)),
                ProduceSettings(kafka=kafka, topic=topics.features, rate=200, limit=n_events),
            ),
        )
        producer.start()
        wait_for(lambda: "merged to version" in text[active](), 60, "the active merger merging")
        # Frozen until the standby has taken over and merged: a condition, not a duration.
        frozen = mergers[active].pid
        os.kill(frozen, signal.SIGSTOP)
        wait_for(
            lambda: "merged to version" in text[standby]().partition("merger active")[2],
            timeout_s=120,
            what="the standby taking over and merging",
        )
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        wait_for(
            lambda: re.search(r"merger lost its partition|merger standing by", text[active]()),
            timeout_s=60,
            what="the zombie noticing it lost its role",
        )
        producer.join(timeout=120)
        read_predictions(kafka, topics.predictions, _ids(range(n_events)), settle_s=0)
        wait_for_learned(kafka, topics, n_events)
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
    assert [p.returncode for p in processes] == [0, 0, 0]
    final = final_model(kafka, topics)
    assert_learned_exactly_once(final, n_events, FEATURES)
    # The standby's takeover came under a greater epoch than the zombie's, and
    # the model readers hold is not from the zombie's epoch.
    zombie_epoch = int(ACTIVE.findall(text[active]())[0])
    standby_epoch = int(ACTIVE.findall(text[standby]())[0])
    assert standby_epoch > zombie_epoch
    assert final.epoch >= standby_epoch
