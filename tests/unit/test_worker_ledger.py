"""The worker's batch steps against fake clients: what the ledger lets through
when a flush fails or a commit is refused."""

from __future__ import annotations

import pytest

from stream.config import MergeSettings, WorkerSettings
from stream.errors import DeliveryError
from stream.events.codec import encode, event_to_map
from stream.kafka.transport import Record
from stream.model.state import ModelState
from stream.runtime.worker import Worker
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.fence import apply_contributions
from tests.fakes import FakeConsumer, FakeProducer


def _worker(producer: FakeProducer, consumer: FakeConsumer) -> Worker:
    settings = WorkerSettings(merge=MergeSettings(every_events=1000))
    worker = Worker(settings, "w-test", consumer=consumer, producer=producer)
    worker._co_partitioned = True
    worker.ledger.assign(0, model_offset=0, committed=None)
    return worker


def _batch(n: int, first: int = 0, partition: int = 0) -> dict[int, list[Record]]:
    return {
        partition: [
            Record(
                i,
                str(i).encode(),
                encode(event_to_map(str(i), {"a": float(i)}, i % 2 == 0, None), "msgpack"),
                partition,
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
    worker.replica.cut(sync=False)
    worker._process(_batch(4, first=3))
    worker.replica.cut(sync=False)
    sent = [c for c, _ in _contributions(producer, worker.settings.topics.contributions)]
    assert [c.ranges for c in sent] == [{0: (0, 3)}, {0: (3, 7)}]
    assert [c.delta.n_learned for c in sent] == [3, 4]
    assert consumer.commits == [{0: 3}, {0: 7}]


def test_only_a_range_from_where_learning_began_opens_a_partition_the_model_has_not_learned():
    producer, consumer = FakeProducer(), FakeConsumer()
    worker = _worker(producer, consumer)  # the model stands at offset 0 of partition 0
    worker.ledger.assign(1, model_offset=None, committed=None)  # and knows nothing of 1
    worker._process({**_batch(5), **_batch(5, partition=1)})
    worker.replica.cut(sync=False)
    worker.ledger.forget(0)  # partition 0 revoked
    worker._process(_batch(5, first=5, partition=1))
    worker.replica.cut(sync=False)
    first, second = (c for c, _ in _contributions(producer, worker.settings.topics.contributions))
    assert (first.ranges, first.opens) == ({0: (0, 5), 1: (0, 5)}, {1})
    assert (second.ranges, second.opens) == ({1: (5, 10)}, frozenset())

    # Meanwhile the previous owner of partition 0 had its events 0-4 merged: the
    # first contribution is fenced out, and the second cannot open partition 1
    # at offset 5, which would leave events 0-4 of partition 1 never learned.
    model = Snapshot(version=3, state=ModelState(n_learned=5), offsets={0: 5})
    model, applied, rejected = apply_contributions(
        model, [(0, first), (1, second)], "sum", next_offset=2
    )
    assert (applied, rejected) == (0, 2) and model.offsets == {0: 5}

    # The worker rebases and reads partition 1 again from where it began: that
    # range opens it, and every event of it is learned once.
    worker.replica.rebase(model)
    assert worker.replica.learning_starts(model, [1]) == {1: 0}
    worker._process(_batch(10, partition=1))
    worker.replica.cut(sync=False)
    third = _contributions(producer, worker.settings.topics.contributions)[-1][0]
    assert (third.ranges, third.opens) == ({1: (0, 10)}, {1})
    model, applied, rejected = apply_contributions(model, [(2, third)], "sum", next_offset=3)
    assert (applied, rejected) == (1, 0)
    assert model.offsets == {0: 5, 1: 10} and model.n_learned == 15
