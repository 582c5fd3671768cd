"""Two worker processes share four partitions: one prediction per event,
bad records in the dead-letter topic and nowhere else."""

from __future__ import annotations

import json
import math
from collections import Counter

import msgpack
import pytest

from stream.events import codec
from stream.events.sources import SyntheticStream
from stream.runtime.supervisor import Supervisor

from .helpers import create_topics, read_dead_letters, read_predictions, send_raw, worker_settings

pytestmark = pytest.mark.integration

N_EVENTS = 20_000

# One of each kind of bad input, each tagged so it can be recognised in the DLQ.
BAD = [
    (b"\xc1 not msgpack nor json", codec.UNDECODABLE),
    (b'{"id": "bad-1", "x": {', codec.UNDECODABLE),
    (json.dumps(["bad-2"]).encode(), codec.NOT_A_MAP),
    (json.dumps({"x": {"a": 1}, "tag": "bad-3"}).encode(), codec.MISSING_ID),
    (json.dumps({"id": "bad-4", "y": 1}).encode(), codec.MISSING_FEATURES),
    (json.dumps({"id": "bad-5", "x": {"f0": None}}).encode(), codec.NON_NUMERIC_FEATURE),
    (msgpack.packb({"id": "bad-6", "x": {"f0": math.nan}}), codec.NON_FINITE_FEATURE),
    (b'{"id": "bad-7", "x": {"f0": Infinity}}', codec.NON_FINITE_FEATURE),
    (json.dumps({"id": "bad-8", "x": {"f0": 1.0}, "y": "maybe"}).encode(), codec.INVALID_LABEL),
    (json.dumps({"id": "bad-9", "x": {"f0": 1.0}, "y": 3}).encode(), codec.INVALID_LABEL),
    (
        json.dumps({"id": "bad-10", "x": {f"f{i}": 0.5 for i in range(20_000)}}).encode(),
        codec.OVERSIZED,
    ),
]


def _stream_with_bad_records_mixed_in():
    every = N_EVENTS // len(BAD)
    for n, (event_id, x, y) in enumerate(SyntheticStream(n_features=10, seed=7)):
        if n == N_EVENTS:
            return
        encoding = "json" if n % 3 == 0 else "msgpack"
        yield event_id.encode(), codec.encode(codec.event_to_map(event_id, x, y, None), encoding)
        if n % every == every // 2:
            value, _ = BAD[n // every]
            yield f"bad-key-{n // every}".encode(), value


def test_two_processes_share_partitions_and_dead_letter_exactly_the_bad_records(
    kafka, topics, client
):
    create_topics(kafka, topics, partitions=4)
    supervisor = Supervisor(worker_settings(kafka, topics, client=client), count=2).start()
    try:
        assignment = supervisor.wait_assigned(partitions=4, timeout_s=60)
        sent = send_raw(kafka, topics.features, _stream_with_bad_records_mixed_in())
        assert sent == N_EVENTS + len(BAD)
        predictions = read_predictions(kafka, topics.predictions, {str(i) for i in range(N_EVENTS)})
        dead = read_dead_letters(kafka, topics.dead_letter, expected=len(BAD))
    finally:
        supervisor.stop()

    per_id = Counter(p["id"] for p in predictions)
    assert set(per_id) == {str(i) for i in range(N_EVENTS)}
    assert max(per_id.values()) == 1, "an event got more than one prediction"

    # Both workers took partitions and scored the events of their own partitions.
    assert len(assignment) == 2
    by_worker = Counter(p["worker"] for p in predictions)
    assert set(by_worker) == set(assignment)
    for worker, partitions in assignment.items():
        assert {p["partition"] for p in predictions if p["worker"] == worker} == set(partitions)

    # Exactly the bad records, byte for byte, each with its reason and source position.
    assert sorted((d.value, d.reason) for d in dead) == sorted(BAD)
    assert all(d.topic == topics.features and d.offset >= 0 for d in dead)
    assert {d.key for d in dead} == {f"bad-key-{i}".encode() for i in range(len(BAD))}
    assert all(d.worker in assignment for d in dead)
    assert supervisor.processes and all(p.exitcode == 0 for p in supervisor.processes.values())
    assert {p["worker"] for p in predictions} <= set(assignment)
