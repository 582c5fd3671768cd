"""The worker's batch steps against fake clients: what the ledger lets through
when a flush fails or a commit is refused."""

from __future__ import annotations

import pytest

from stream.config import MergeSettings, WorkerSettings
from stream.errors import DeliveryError
from stream.events.codec import encode, event_to_map
from stream.kafka.transport import Record
from stream.runtime.worker import Worker
from stream.sync.contribution import Contribution
from tests.unit.protocol_fakes import FakeConsumer, FakeProducer


def _worker(producer: FakeProducer, consumer: FakeConsumer) -> Worker:
    worker = Worker(WorkerSettings(merge=MergeSettings(every_events=1000)), "w-test")
    worker._producer, worker._consumer, worker._co_partitioned = producer, consumer, True
    worker.ledger.assign(0, model_offset=0, committed=None)
    return worker


def _batch(n: int, first: int = 0) -> dict[int, list[Record]]:
    return {
        0: [
            Record(
                i,
                str(i).encode(),
                encode(event_to_map(str(i), {"a": float(i)}, i % 2 == 0, None), "msgpack"),
                0,
            )
            for i in range(first, first + n)
        ]
    }


def _contributions(producer: FakeProducer, topic: str) -> list[tuple[Contribution, int | None]]:
    return [(Contribution.from_bytes(v), p) for t, v, _, _, p in producer.sent if t == topic]


def test_a_failed_flush_commits_nothing_and_no_contribution_covers_the_batch():
    producer, consumer = FakeProducer(fail_flush=True), FakeConsumer()
    worker = _worker(producer, consumer)
    with pytest.raises(DeliveryError):
        worker._process(_batch(5))
    assert consumer.commits == []
    assert worker.ledger.tainted == "flush failed"
    # Not even at revocation: the model learned events whose predictions may be lost.
    worker.on_revoked([0])
    assert _contributions(producer, worker.settings.topics.contributions) == []


def test_a_refused_commit_is_counted_and_the_learning_still_contributed_once():
    producer, consumer = FakeProducer(), FakeConsumer(accept_commits=False)
    worker = _worker(producer, consumer)
    worker._process(_batch(5))
    assert consumer.commits == [{0: 5}]
    assert worker.n_commit_failures == 1
    assert worker.ledger.partitions[0].committed is None
    worker.on_revoked([0])
    [(contribution, partition)] = _contributions(producer, worker.settings.topics.contributions)
    assert partition == 0  # by name: the merger reads only partition 0
    assert contribution.ranges == {0: (0, 5)}
    assert contribution.delta.n_learned == 5


def test_contributions_tile_the_batches_and_carry_what_they_learned():
    producer, consumer = FakeProducer(), FakeConsumer()
    worker = _worker(producer, consumer)
    worker._process(_batch(3))
    worker._cut(sync=False)
    worker._process(_batch(4, first=3))
    worker._cut(sync=False)
    sent = [c for c, _ in _contributions(producer, worker.settings.topics.contributions)]
    assert [c.ranges for c in sent] == [{0: (0, 3)}, {0: (3, 7)}]
    assert [c.delta.n_learned for c in sent] == [3, 4]
    assert consumer.commits == [{0: 3}, {0: 7}]
