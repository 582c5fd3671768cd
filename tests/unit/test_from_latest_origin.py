"""`--from latest`: where a worker began learning a partition is durable before a
successor could need it, so that every event a worker predicted is learned.

Against fake clients that write one log of what reaches the broker, in order:
before predicting anything in a partition that neither the group nor the global
model places, the worker commits where it starts reading; before its first
commit past that origin, it sends a contribution covering the origin and
flushes it. (End to end: tests/integration/test_from_latest.py.)
"""

from __future__ import annotations

import pytest

from stream.config import MergeSettings, WorkerSettings
from stream.events.codec import encode, event_to_map
from stream.kafka.transport import Record
from stream.runtime.worker import Worker
from stream.sync.contribution import Contribution
from stream.sync.ledger import Ledger


class Broker:
    """What the worker's producer and consumer did, in one ordered log."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.producer, self.consumer = _Producer(self.log), _Consumer(self.log)

    def steps(self) -> list[tuple]:
        """The log without predictions: commits, flushes, contributions' ranges."""
        out = []
        for step in self.log:
            if step[0] == "send" and step[1].endswith("contributions"):
                out.append(("contribution", Contribution.from_bytes(step[2]).ranges))
            elif step[0] != "send":
                out.append(step)
        return out


class _Producer:
    def __init__(self, log: list) -> None:
        self.log = log

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:
        self.log.append(("send", topic, value))

    def flush(self, timeout_s: float) -> None:
        if not self.log or self.log[-1] != ("flush",):
            self.log.append(("flush",))


class _Consumer:
    def __init__(self, log: list) -> None:
        self.log = log

    def commit(self, offsets: dict[int, int]) -> bool:
        self.log.append(("commit", dict(offsets)))
        return True

    def highwater(self, partition: int) -> int | None:
        return None

    def assignment(self) -> list[int]:
        return [0, 1]


def _worker(reset: str, model_offset: int | None, committed: int | None) -> tuple[Worker, Broker]:
    settings = WorkerSettings(merge=MergeSettings(every_events=1000), auto_offset_reset=reset)
    broker = Broker()
    worker = Worker(settings, "w-test", consumer=broker.consumer, producer=broker.producer)
    worker._co_partitioned = True
    worker.ledger.assign(0, model_offset=model_offset, committed=committed)
    return worker, broker


def _batch(first: int, n: int) -> dict[int, list[Record]]:
    values = (
        encode(event_to_map(str(i), {"a": 1.0}, i % 2 == 0, None), "msgpack") for i in range(n)
    )
    return {0: [Record(first + i, None, v, 0) for i, v in enumerate(values)]}


def test_from_latest_the_start_is_committed_first_and_the_origin_contributed_before_passing_it():
    worker, broker = _worker("latest", model_offset=None, committed=None)
    worker._process(_batch(100, 5))
    worker._process(_batch(105, 5))
    assert broker.steps() == [
        ("commit", {0: 100}),  # placed: a successor starts here, not at the end
        ("flush",),  # the batch's predictions
        ("contribution", {0: (100, 105)}),  # the origin, in the model's offsets once merged
        ("flush",),
        ("commit", {0: 105}),
        ("flush",),  # the next batch: nothing more to place or announce
        ("commit", {0: 110}),
    ]


def test_from_latest_a_partition_the_group_placed_needs_only_its_origin_announced():
    worker, broker = _worker("latest", model_offset=None, committed=100)
    worker._process(_batch(100, 5))
    assert broker.steps() == [
        ("flush",),
        ("contribution", {0: (100, 105)}),
        ("flush",),
        ("commit", {0: 105}),
    ]


@pytest.mark.parametrize(
    ("reset", "model_offset"),
    [("latest", 100), ("earliest", None)],
    ids=["model knows", "earliest"],
)
def test_nothing_extra_when_the_model_places_the_partition_or_reading_starts_at_the_beginning(
    reset, model_offset
):
    worker, broker = _worker(reset, model_offset=model_offset, committed=None)
    worker._process(_batch(100, 5))
    assert broker.steps() == [("flush",), ("commit", {0: 105})]


def test_the_ledger_says_which_partitions_are_unplaced_and_which_origins_unannounced():
    ledger = Ledger()
    ledger.assign(0, model_offset=None, committed=None)
    ledger.assign(1, model_offset=40, committed=None)
    ledger.assign(2, model_offset=None, committed=7)
    assert ledger.unplaced() == [0]
    for p, first in ((0, 10), (1, 40), (2, 7)):
        ledger.read(p, first, first + 5)
    assert ledger.unannounced() == []  # nothing acknowledged yet
    ledger.acknowledge()
    assert ledger.unannounced() == [0, 2]
    ledger.contributed(ledger.open_ranges())
    assert ledger.unannounced() == []
    # A rebase onto a model that still does not know partition 0: back at its origin.
    assert ledger.restart(0, None) == 10
    ledger.read(0, 10, 20)
    ledger.acknowledge()
    assert ledger.unannounced() == [0]
