"""No record, however hostile, stops a worker or poisons the model.

An independent client (confluent-kafka's own Producer) writes good events with
every class of hostile record between them (deep nesting, huge integers, huge
finite floats, NaN, odd keys, extension types, invalid UTF-8, surrogates,
oversized records, random bytes, ...) to a running ``learnstream work``.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from stream.config import ModelSettings, TopicSettings
from stream.events import codec
from stream.kafka.embedded import free_port
from stream.model.online import OnlineModel
from stream.model.state import non_finite
from stream.sync.feed import published_model
from tests.waiting import wait_for

from .helpers import (
    WorkerThread,
    create_topics,
    read_dead_letters,
    read_predictions,
    send_raw,
    work_command,
    worker_settings,
)
from .hostile import EXPECTED, good_events, hostile_class, mixed, produce_independently
from .test_observability import _one, scrape

pytestmark = pytest.mark.integration

N_GOOD = 60_000
N_HOSTILE = 40_000


def _free_ports(count: int) -> int:
    """A base port with ``count`` free ports from it on."""
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + count):
                if port != base:
                    import socket

                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def _settled(log: Path, partitions: int) -> bool:
    """Both workers hold partitions and together hold them all (from their logs)."""
    latest: dict[str, set[int]] = {}
    for worker, parts in re.findall(
        r"partitions assigned worker=(\S+) partitions=(\S+)", log.read_text()
    ):
        latest[worker] = set() if parts == "-" else {int(p) for p in parts.split(",")}
    held = [parts for parts in latest.values() if parts]
    return len(held) == 2 and set().union(*held) == set(range(partitions))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hostile_records_never_stop_a_worker_nor_poison_the_model(kafka, topics, tmp_path):
    create_topics(kafka, topics, partitions=4)
    port = _free_ports(3)
    log = tmp_path / "work.log"
    with open(log, "w") as log_file:
        work = subprocess.Popen(
            work_command(
                kafka,
                topics,
                processes=2,
                metrics_port=port,
                checkpoint_dir=tmp_path / "ckpt",
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        # Produce once the group has settled, so no rebalance re-delivers a batch.
        wait_for(lambda: _settled(log, 4), 120, "both workers to hold partitions")
        good = good_events(N_GOOD)
        records = list(mixed(good, N_HOSTILE))
        assert len(records) >= 100_000
        hostile = {key: value for key, value in records if key.startswith(b"h-")}
        assert len(hostile) == N_HOSTILE
        assert {hostile_class(key) for key in hostile} == set(EXPECTED)
        assert produce_independently(kafka.bootstrap_servers, topics.features, records) == len(
            records
        )

        # Every good event is predicted, no hostile one is.
        good_ids = {key.decode() for key, _ in good}
        predictions = read_predictions(kafka, topics.predictions, good_ids, timeout_s=600)
        assert {p["id"] for p in predictions} == good_ids
        assert all(0.0 <= p["p"] <= 1.0 for p in predictions)

        # Every hostile record is dead-lettered, as sent, with a reason of its class.
        letters = read_dead_letters(kafka, topics.dead_letter, N_HOSTILE, timeout_s=300)
        by_key = {letter.key: letter for letter in letters}
        assert set(by_key) == set(hostile)
        wrong = [
            (key, letter.reason, letter.error)
            for key, letter in by_key.items()
            if letter.reason not in EXPECTED[hostile_class(key)] or not letter.error
        ]
        assert not wrong, wrong[:10]
        assert all(letter.value == hostile[key] for key, letter in by_key.items())
        reasons = Counter(letter.reason for letter in by_key.values())
        assert codec.PROCESSING_ERROR not in reasons  # the decoder named them all

        # The global model learned every good event once and only finite numbers.
        def model_complete():
            snapshot = published_model(kafka, topics, "test-hostile")
            return snapshot if snapshot and snapshot.n_learned == N_GOOD else None

        snapshot = wait_for(model_complete, 120, f"the global model to learn {N_GOOD} events")
        assert non_finite(snapshot.state) is None
        assert all(math.isfinite(w) for w in snapshot.state.weights.values())
        assert set(snapshot.state.weights) == {f"f{i}" for i in range(10)}

        # No worker restarted: by their metrics, and by the supervisor's log.
        for index in range(2):
            samples = scrape(port + index)
            assert _one(samples, "learnstream_restarts_total") == 0
            assert _one(samples, "learnstream_learning_refused_total") == 0
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=120)
    text = log.read_text()
    assert work.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    assert "process exited" not in text and "worker failed" not in text
    assert "merger failed" not in text and "crash loop" not in text
    assert "dead-lettered reason=" in text  # rate-limited, but there


def _other_topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:10]
    return TopicSettings(
        features=f"features-{tag}", predictions=f"predictions-{tag}", group_id=f"group-{tag}"
    )


def test_hostile_records_change_no_prediction_of_the_good_events(kafka, topics):
    """One worker, merging off: the good events' p are exactly those of a run
    without the hostile records (dead letters never touch the model)."""
    good = good_events(4000, seed=3)
    good_ids = {key.decode() for key, _ in good}
    runs = {}
    for run, run_topics, records in (
        ("clean", topics, good),
        ("hostile", _other_topics(), list(mixed(good, 3000, seed=8))),
    ):
        create_topics(kafka, run_topics, partitions=1)
        produce_independently(kafka.bootstrap_servers, run_topics.features, records)
        with WorkerThread(worker_settings(kafka, run_topics)) as thread:
            predictions = read_predictions(kafka, run_topics.predictions, good_ids, settle_s=1)
        assert thread.worker.dead_letters.total == (0 if run == "clean" else 3000)
        runs[run] = {p["id"]: p["p"] for p in predictions}
    assert runs["hostile"] == runs["clean"]


class _Exploding(OnlineModel):
    """Raises while scoring an event with feature ``boom``, while learning one with ``bang``."""

    def predict_proba(self, x):
        if "boom" in x:
            raise ZeroDivisionError("boom while scoring")
        return super().predict_proba(x)

    def learn(self, x, y):
        if "bang" in x:
            raise KeyError("bang while learning")
        return super().learn(x, y)


def test_whatever_raises_for_one_record_is_a_processing_error_and_the_batch_goes_on(kafka, topics):
    create_topics(kafka, topics, partitions=1)
    events = [
        {"id": "first", "x": {"a": 1.0}, "y": 1},
        {"id": "boom", "x": {"boom": 1.0}, "y": 1},
        {"id": "bang", "x": {"bang": 1.0}, "y": 0},
        {"id": "absurd", "x": {"a": 1e140}, "y": 0},  # p=1, a step to w=-1e138: refused
        {"id": "last", "x": {"a": 2.0}, "y": 0},
    ]
    send_raw(kafka, topics.features, [(None, json.dumps(e).encode()) for e in events])
    settings = worker_settings(kafka, topics, model=ModelSettings(scale=False))
    thread = WorkerThread(settings)
    thread.worker.model = _Exploding(settings.model, settings.max_abs_weight)
    with thread:
        predictions = read_predictions(
            kafka, topics.predictions, {"first", "bang", "absurd", "last"}, settle_s=1
        )
        letters = read_dead_letters(kafka, topics.dead_letter, 2)
    assert sorted(p["id"] for p in predictions) == ["absurd", "bang", "first", "last"]
    assert all(0.0 <= p["p"] <= 1.0 for p in predictions)
    errors = {letter.offset: (letter.reason, letter.error) for letter in letters}
    assert errors == {
        1: (codec.PROCESSING_ERROR, "scoring raised ZeroDivisionError('boom while scoring')"),
        2: (
            codec.PROCESSING_ERROR,
            "learning (the prediction was published) raised KeyError('bang while learning')",
        ),
    }
    worker = thread.worker
    assert (worker.n_scored, worker.n_learned, worker.n_refused) == (4, 2, 1)
    assert all(abs(w) <= settings.max_abs_weight for w in worker.model.state().weights.values())


def test_a_non_finite_model_version_is_refused_by_workers_and_mergers(kafka, topics, caplog):
    """A poisoned version on the model topic (published before mergers refused
    them) is never loaded: workers and mergers both read the topic through the feed."""
    from stream.model.state import ModelState
    from stream.sync.checkpoint import Snapshot

    create_topics(kafka, topics, partitions=1)
    poisoned = Snapshot(version=7, state=ModelState(weights={"a": math.nan}, n_learned=3))
    send_raw(kafka, topics.model, [(b"global", poisoned.to_bytes())])
    assert published_model(kafka, topics, "test-feed", timeout_s=5) is None
    assert "model record skipped" in caplog.text
    assert "not finite: weights['a'] = nan" in caplog.text
