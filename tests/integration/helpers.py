"""Shared steps of the integration tests: send raw records, read results back."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from stream.config import (
    GroupTimeouts,
    KafkaSettings,
    MergerSettings,
    MergeSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.events.codec import decode_map
from stream.events.deadletter import DeadLetter, parse
from stream.kafka import clients
from stream.kafka.reader import records
from stream.kafka.topics import ensure_pipeline
from stream.runtime.merger import Merger
from stream.runtime.worker import Worker
from stream.sync.checkpoint import Snapshot
from stream.sync.feed import ModelFeed, published_model
from tests.waiting import wait_for  # noqa: F401 - re-exported for the integration tests

# Short group timeouts: the embedded broker holds a join for about
# max_poll_interval_ms, so they bound how long a rebalance takes. Margins for a
# loaded 2-core machine: a member that misses heartbeats for a few seconds (a
# busy core, a GC pause) is not evicted, and the catch-up wait (a rebalance's
# hand-over) ends well within the poll interval, so a worker still waiting for
# the merger is never taken as dead and its partitions re-emitted.
FAST_GROUP = {
    "group": GroupTimeouts(
        max_poll_interval_ms=5_000, session_timeout_ms=5_000, heartbeat_interval_ms=1_000
    )
}
CATCH_UP_TIMEOUT_S = 2.0


# The same, as `learnstream work` flags.
FAST_GROUP_FLAGS = [
    "--max-poll-interval-ms",
    str(FAST_GROUP["group"].max_poll_interval_ms),
    "--session-timeout-ms",
    str(FAST_GROUP["group"].session_timeout_ms),
    "--heartbeat-interval-ms",
    str(FAST_GROUP["group"].heartbeat_interval_ms),
    "--catch-up-timeout-s",
    str(int(CATCH_UP_TIMEOUT_S)),
]

NO_MERGE = MergeSettings(enabled=False)


def learnstream(*args: str) -> list[str]:
    """The command line of ``learnstream ARGS``, run by this interpreter from
    this checkout (``python -m stream``), so a test needs no installed script."""
    return [sys.executable, "-m", "stream", *args]


def pipeline_flags(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """The broker and the two topics a test's pipeline uses, as flags."""
    return [
        "--bootstrap",
        kafka.bootstrap_servers,
        "--features-topic",
        topics.features,
        "--predictions-topic",
        topics.predictions,
    ]


def work_command(
    kafka: KafkaSettings,
    topics: TopicSettings,
    *extra: str,
    processes: int | None = 1,
    checkpoint_dir: Path | None = None,
    metrics_port: int | None = 0,
    fast_group: bool = True,
) -> list[str]:
    """The command line of ``learnstream work`` on the test's broker, topics and
    group: short group timeouts (FAST_GROUP_FLAGS) unless ``fast_group`` is
    false, metrics off unless a port is given, then ``extra`` flags last (so a
    test's own choice of a flag wins). ``None`` leaves a flag out, to run with
    the command's own default (``--processes 1``, ``--metrics-port 9400``,
    ``--checkpoint-dir`` from the environment or the current directory)."""
    return learnstream(
        "work",
        *(() if processes is None else ("--processes", str(processes))),
        *(() if metrics_port is None else ("--metrics-port", str(metrics_port))),
        "--group-id",
        topics.group_id,
        *(FAST_GROUP_FLAGS if fast_group else ()),
        *(() if checkpoint_dir is None else ("--checkpoint-dir", str(checkpoint_dir))),
        *pipeline_flags(kafka, topics),
        *extra,
    )


def merging(**overrides) -> MergeSettings:
    """Merge settings for tests: frequent merges, a catch-up wait that fits FAST_GROUP."""
    return MergeSettings(
        **{
            "every_events": 50,
            "interval_s": 0.5,
            "catch_up_timeout_s": CATCH_UP_TIMEOUT_S,
            **overrides,
        }
    )


def worker_settings(kafka: KafkaSettings, topics: TopicSettings, **overrides) -> WorkerSettings:
    """Worker settings for tests; merging is off unless ``merge=`` says otherwise."""
    return WorkerSettings(
        kafka=kafka, topics=topics, **{**FAST_GROUP, "merge": NO_MERGE, **overrides}
    )


def create_topics(kafka: KafkaSettings, topics: TopicSettings, partitions: int) -> None:
    ensure_pipeline(kafka, topics, partitions)


def send_raw(
    kafka: KafkaSettings, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Send (key, value) pairs exactly as given; wait for every acknowledgement."""
    producer = clients.producer(kafka, client_id="test-producer", linger_ms=5)
    futures = [producer.send(topic, key=key, value=value) for key, value in items]
    producer.flush()
    producer.close()
    for future in futures:
        future.get(timeout=10)
    return len(futures)


def read_predictions(
    kafka: KafkaSettings,
    topic: str,
    expected_ids: set,
    timeout_s: float = 120,
    settle_s: float = 2.0,
) -> list[dict]:
    """Every prediction on ``topic``, once each expected id has one and the topic
    has then been quiet for ``settle_s`` (so late duplicates are counted too)."""
    missing = set(expected_ids)
    deadline = time.monotonic() + timeout_s
    for record in records(kafka, topic, idle_timeout_s=timeout_s):
        missing.discard(decode_map(record.value)[0]["id"])
        if not missing:
            break
        if time.monotonic() > deadline:
            break
    if missing:
        raise AssertionError(f"{len(missing)} events have no prediction after {timeout_s}s")
    # Read again from the start until the topic has been quiet for settle_s.
    return [decode_map(r.value)[0] for r in records(kafka, topic, idle_timeout_s=settle_s)]


def wait_for_learned(kafka: KafkaSettings, topics, n: int, timeout_s: float = 120.0) -> Snapshot:
    """The first global version that has learned ``n`` events or more: a
    condition, not a quiet period. Whether nothing is learned twice later (a
    contribution sent at stop, a zombie's) is for :func:`final_model`, read
    once every process has exited."""
    feed = ModelFeed(kafka, topics, "test-wait-learned")
    try:
        latest = feed.initial()
        deadline = time.monotonic() + timeout_s
        while latest is None or latest.n_learned < n:
            if time.monotonic() > deadline:
                seen = None if latest is None else latest.n_learned
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for n_learned >= {n} (last seen: {seen})"
                )
            latest = feed.poll(timeout_ms=200)
        return latest
    finally:
        feed.close()


def final_model(kafka: KafkaSettings, topics) -> Snapshot:
    """The newest global version on the model topic, to be read once every
    process has exited: then nothing can change it any more, so contributions
    sent at stop are counted too."""
    snapshot = published_model(kafka, topics, "test-final-model", timeout_s=30)
    assert snapshot is not None, f"no model version on {topics.model}"
    return snapshot


def synthetic_features(n: int = 10) -> list[str]:
    """The feature names of a ``SyntheticStream(n_features=n)``."""
    return [f"f{i}" for i in range(n)]


def assert_learned_exactly_once(snapshot: Snapshot, n_labeled: int, features: list[str]) -> None:
    """Every labeled event learned exactly once, by the counter and by the model
    state itself: the scaler has counted each feature once per labeled event
    (every event of the stream carries every feature), and the offsets the
    model has learned up to cover exactly the events."""
    assert snapshot.n_learned == n_labeled
    assert sum(snapshot.offsets.values()) == n_labeled
    assert snapshot.state.scaler_counts == dict.fromkeys(features, float(n_labeled))


def read_dead_letters(
    kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 60
) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < expected and time.monotonic() < deadline:
        found = [parse(r.key, r.value, r.headers) for r in records(kafka, topic, idle_timeout_s=2)]
    return found


class _InThread:
    """A component's ``run()`` in a thread of the test process (for in-process
    checks): started on entering the block, stopped on leaving it, which fails
    if the thread outlives ``stop_timeout_s`` and re-raises what ended the run."""

    def __init__(self, component: Worker | Merger, name: str, stop_timeout_s: float) -> None:
        self._component = component
        self.error: BaseException | None = None
        self._stop_timeout_s = stop_timeout_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._component.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._component.stop()
        self._thread.join(self._stop_timeout_s)
        what = type(self._component).__name__.lower()
        assert not self._thread.is_alive(), f"{what} did not stop"
        if self.error is not None:
            raise self.error


class WorkerThread(_InThread):
    """A Worker running in a thread of the test process."""

    def __init__(self, settings: WorkerSettings, name: str = "test-worker") -> None:
        self.worker = Worker(settings, name)
        super().__init__(self.worker, name, stop_timeout_s=30.0)


class MergerThread(_InThread):
    """A Merger running in a thread of the test process."""

    def __init__(
        self, settings: MergerSettings, name: str = "test-merger", stop_timeout_s: float = 30.0
    ) -> None:
        self.merger = Merger(settings, name)
        super().__init__(self.merger, name, stop_timeout_s)
