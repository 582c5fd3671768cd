"""A vocabulary far beyond what fits in one default-sized Kafka record."""

from __future__ import annotations

import pytest

from stream.config import MergerSettings
from stream.kafka.reader import records
from stream.runtime.supervisor import Supervisor
from stream.sync.contribution import Contribution
from stream.tools.produce import ProduceSettings, produce

from .helpers import final_model, merging, read_predictions, wait_for_learned, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 2_000
NEW_PER_EVENT = 50  # 2,000 x 50 = 100,000 distinct feature names
# Kafka's default max.message.bytes (1 MiB): a model of 100,000 names is larger.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


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
        wait_for_learned(kafka, topics, N_EVENTS)
        # Every merger and worker process still runs: none crashed on a record.
        assert all(p.exitcode is None for p in supervisor.processes.values())
    finally:
        supervisor.stop()
    settled = final_model(kafka, topics)
    assert settled.n_learned == N_EVENTS
    # Every name learned once, the shared one once per event: nothing lost or
    # doubled on the way through records beyond the default size.
    assert settled.state.scaler_counts == {
        "bias": float(N_EVENTS),
        **{f"n{k}": 1.0 for k in range(N_EVENTS * NEW_PER_EVENT)},
    }
    model_sizes = [len(r.value) for r in records(kafka, topics.model, idle_timeout_s=2)]
    contributions = [
        (len(r.value), Contribution.from_bytes(r.value))
        for r in records(kafka, topics.contributions, idle_timeout_s=2)
    ]
    # The point of the test: the model records are beyond a default-sized record.
    assert max(model_sizes) > DEFAULT_MAX_MESSAGE_BYTES
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
