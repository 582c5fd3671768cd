"""Hostile internal records on a running pipeline: contributions and model
versions that are malformed or impossible are skipped and counted by the
merger, the worker and a merger taking over, and the global model still learns
every labeled event exactly once."""

from __future__ import annotations

import msgpack
import pytest

from stream.config import MergerSettings, ModelSettings
from stream.events.codec import encode, event_to_map
from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution

from .helpers import (
    FAST_GROUP,
    MergerThread,
    WorkerThread,
    create_topics,
    merging,
    send_raw,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration


def _events(first: int, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` labeled events (a label of False is a label)."""
    return [
        (
            str(i).encode(),
            encode(event_to_map(str(i), {"a": float(i % 7)}, i % 2 == 0, None), "json"),
        )
        for i in range(first, first + n)
    ]


def _hostile_contributions() -> list[tuple[bytes, bytes]]:
    delta = ModelState(weights={"a": 1.0}, n_learned=1)
    good = msgpack.unpackb(Contribution("w-h", 0, 0, {0: (0, 1)}, delta, 1.0).to_bytes())
    hostile = [
        {**good, "ranges": [[0, 1]]},
        {**good, "ranges": {"0": [0, 10**18]}},
        {**good, "ranges": {"7": [0, 1]}},
        {**good, "worker": ["w"]},
        [1, 2, 3],
    ]
    return [(b"w-hostile", msgpack.packb(h, use_bin_type=True)) for h in hostile]


def _hostile_versions() -> list[tuple[bytes, bytes]]:
    # A much newer epoch with an impossible state: taken, it would replace the model.
    newer = Snapshot(
        version=1,
        epoch=2**51,
        state=ModelState(scaler_counts={"a": -5.0}, scaler_means={"a": 0}, scaler_vars={"a": 0}),
        model_config=ModelSettings().as_dict(),
        created_at=1.0,
    )
    fields = msgpack.unpackb(newer.to_bytes())
    hostile = [newer.to_bytes(), msgpack.packb([1, 2]), msgpack.packb({**fields, "offsets": [1]})]
    return [(b"hostile", value) for value in hostile]


@pytest.mark.timeout(600)
def test_hostile_contributions_and_versions_are_skipped_and_every_event_is_learned_once(
    kafka, topics
):
    create_topics(kafka, topics, partitions=2)
    merger_settings = MergerSettings(kafka=kafka, topics=topics, merge=merging(), **FAST_GROUP)
    settings = worker_settings(kafka, topics, merge=merging(every_events=20, interval_s=0.3))
    first = MergerThread(merger_settings, "merger-a", stop_timeout_s=60)
    merger = first.merger
    with first, WorkerThread(settings) as thread:
        wait_for(lambda: merger.active, 60, "the merger to be active")
        send_raw(kafka, topics.features, _events(0, 200))
        wait_for(lambda: merger.snapshot.n_learned == 200, 120, "200 labeled events learned")
        send_raw(kafka, topics.contributions, _hostile_contributions())
        send_raw(kafka, topics.model, _hostile_versions())
        send_raw(kafka, topics.features, _events(200, 200))
        wait_for(lambda: merger.snapshot.n_learned == 400, 120, "400 labeled events learned")
        wait_for(lambda: merger.n_invalid == 5, 60, "5 invalid contributions counted")
        wait_for(lambda: thread.worker.model_records_invalid == 3, 60, "3 invalid versions counted")
    assert merger.snapshot.n_learned == 400 and merger.n_invalid == 5
    # A merger taking over reads the model topic through the hostile versions.
    taking_over = MergerThread(merger_settings, "merger-b", stop_timeout_s=60)
    second = taking_over.merger
    with taking_over, WorkerThread(settings):
        wait_for(lambda: second.active, 60, "the second merger to be active")
        assert second.snapshot.n_learned == 400
        assert second.snapshot.epoch < 2**51
        send_raw(kafka, topics.features, _events(400, 100))
        wait_for(lambda: second.snapshot.n_learned == 500, 120, "500 labeled events learned")
    assert second.snapshot.n_learned == 500
