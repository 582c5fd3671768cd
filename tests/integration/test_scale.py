"""A vocabulary far beyond what fits in one default-sized Kafka record."""

from __future__ import annotations

import pytest

from stream.config import MergerSettings
from stream.kafka.reader import records
from stream.kafka.topics import INTERNAL_MAX_MESSAGE_BYTES
from stream.runtime.supervisor import Supervisor
from stream.sync.contribution import Contribution
from stream.tools.produce import ProduceSettings, produce

from .helpers import merging, read_predictions, worker_settings
from .test_crashpoints import wait_for_learned

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 2_000
NEW_PER_EVENT = 50  # 2,000 x 50 = 100,000 distinct feature names


def test_100000_distinct_feature_names_merge_without_an_oversized_record(kafka, topics):
    rows = [
        (
            str(i),
            {"bias": 1.0, **{f"n{i * NEW_PER_EVENT + j}": 1.0 + j for j in range(50)}},
            i % 3 == 0,
        )
        for i in range(N_EVENTS)
    ]
    # No topics created beforehand: the processes create them.
    settings = worker_settings(kafka, topics, merge=merging(every_events=250, interval_s=0.5))
    supervisor = Supervisor(settings, 2, MergerSettings.for_workers(settings)).start()
    try:
        supervisor.wait_assigned(4, timeout_s=60)
        produce(rows, ProduceSettings(kafka=kafka, topic=topics.features))
        read_predictions(kafka, topics.predictions, {r[0] for r in rows}, settle_s=0.5)
        settled = wait_for_learned(kafka, topics, N_EVENTS)
        # Every merger and worker process still runs: none crashed on a record.
        assert all(p.exitcode is None for p in supervisor.processes.values())
    finally:
        supervisor.stop()
    assert settled.n_learned == N_EVENTS
    assert len(settled.state.scaler_counts) == N_EVENTS * NEW_PER_EVENT + 1
    model_sizes = [len(r.value) for r in records(kafka, topics.model, idle_timeout_s=2)]
    contributions = [
        (len(r.value), Contribution.from_bytes(r.value))
        for r in records(kafka, topics.contributions, idle_timeout_s=2)
    ]
    assert max(model_sizes) < INTERNAL_MAX_MESSAGE_BYTES
    # Deltas are sparse: a contribution holds the names its events touched, not
    # the vocabulary (each event brings 50 new names, plus the shared "bias").
    for _, contribution in contributions:
        delta = contribution.delta
        assert len(delta.scaler_counts) == NEW_PER_EVENT * delta.n_learned + 1
    print(
        f"\n100,000 names: largest model record {max(model_sizes):,} bytes (uncompressed), "
        f"largest contribution {max(s for s, _ in contributions):,} bytes, "
        f"{len(contributions)} contributions, {len(model_sizes)} versions"
    )
