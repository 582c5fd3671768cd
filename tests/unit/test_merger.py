"""The merger's steps against fake clients: hostile records are skipped and the
merge goes on; a rebalance during the linger does not merge records twice;
epochs are unique; compaction keeps the active merger's newest version."""

from __future__ import annotations

import logging

import msgpack
import pytest

import stream.runtime.merger as merger_module
from stream.config import MergerSettings
from stream.kafka.transport import Record
from stream.model.state import ModelState
from stream.runtime.merger import Merger
from stream.sync.chain import KIND_SNAPSHOT, peek
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from tests.fakes import FakeProducer


class FixedWatermarks:
    def __init__(self, highs: dict[int, int]) -> None:
        self.highs = highs

    def highwater(self, partition: int, at_least: int) -> int | None:
        return self.highs.get(partition)


class ContributionsConsumer:
    """The contributions partition as a list; returns two records per poll. On
    poll number ``rebalance_on_poll`` the group rebalances: it calls the
    merger's assignment hook and seeks where the hook says, as the real
    consumers do inside poll."""

    def __init__(self, records: list[Record], rebalance_on_poll: int | None = None) -> None:
        self.records = records
        self.position = 0
        self.polls = 0
        self.rebalance_on_poll = rebalance_on_poll
        self.on_assigned = None
        self.commits: list[dict[int, int]] = []

    def poll_batch(self, timeout_ms: int, max_records: int) -> dict[int, list[Record]]:
        self.polls += 1
        if self.polls == self.rebalance_on_poll:
            self.seek(self.on_assigned([0]))
        batch = self.records[self.position : self.position + 2]
        self.position += len(batch)
        return {0: batch} if batch else {}

    def seek(self, offsets: dict[int, int | None]) -> None:
        self.position = offsets[0] or 0

    def assignment(self) -> list[int]:
        return [0]

    def commit(self, offsets: dict[int, int]) -> bool:
        self.commits.append(dict(offsets))
        return True


def _record(offset: int, worker: str, value: bytes) -> Record:
    return Record(offset, worker.encode(), value, 0)


def _contribution(worker: str, seq: int, start: int, end: int) -> bytes:
    delta = ModelState(weights={"a": 1.0}, n_learned=end - start)
    opens = frozenset({0} if start == 0 else ())  # read from the partition's beginning
    return Contribution(worker, seq, 0, {0: (start, end)}, delta, 1.0, opens).to_bytes()


def _merger(consumer: ContributionsConsumer, producer: FakeProducer, start: Snapshot) -> Merger:
    merger = Merger(MergerSettings(), "m-test", consumer=consumer, producer=producer)
    merger._watermarks = FixedWatermarks({0: 100, 1: 100})
    merger.snapshot, merger.active = start, True
    consumer.on_assigned = merger._on_assigned
    return merger


def _published(producer: FakeProducer) -> list[Snapshot]:
    """The full snapshots published (a merger that did not publish its starting
    version publishes a snapshot after its first delta: nothing to follow yet)."""
    return [
        Snapshot.from_bytes(value)
        for _, value, *_ in producer.sent
        if peek(value).kind == KIND_SNAPSHOT  # type: ignore[union-attr]
    ]


def test_hostile_contributions_are_skipped_counted_and_logged_and_the_merge_goes_on(caplog):
    hostile = [
        msgpack.packb({"worker": "w-x", "seq": 0, "ranges": [[0, 5]]}),  # ranges a list
        msgpack.packb([1, 2, 3]),  # not a map
        msgpack.packb({"worker": ["w"], "seq": 0}),  # worker a list
        _contribution("w-far", 0, 20, 10**18),  # past the high watermark
        b"\xc1",  # not msgpack
    ]
    records = [_record(0, "w0", _contribution("w0", 0, 0, 10))]
    records += [_record(1 + i, "w-hostile", value) for i, value in enumerate(hostile)]
    records += [_record(6, "w0", _contribution("w0", 1, 10, 20))]
    producer = FakeProducer()
    merger = _merger(
        ContributionsConsumer(records), producer, Snapshot(version=0, state=ModelState())
    )
    caplog.set_level(logging.ERROR)
    merger._merge(records)
    [published] = _published(producer)
    assert (merger.n_applied, merger.n_rejected, merger.n_invalid) == (2, 0, 5)
    assert published.n_learned == 20 and published.offsets == {0: 20}
    assert published.contributions_offset == 7
    skipped = [r.getMessage() for r in caplog.records if "contribution skipped" in r.getMessage()]
    assert len(skipped) == 5
    assert all("worker='w-hostile'" in line for line in skipped)
    assert [line.split()[2] for line in skipped] == [f"offset={i}" for i in range(1, 6)]


def test_records_polled_before_a_rebalance_are_not_merged_with_their_re_read_copies(
    monkeypatch,
):
    records = [_record(i, "w0", _contribution("w0", i, 5 * i, 5 * i + 5)) for i in range(3)]
    consumer = ContributionsConsumer(records, rebalance_on_poll=2)
    producer = FakeProducer()
    start = Snapshot(version=0, state=ModelState())
    merger = _merger(consumer, producer, start)
    # The takeover on the rebalance finds the same version (nothing was merged yet).
    monkeypatch.setattr(merger, "latest_known", lambda: start)
    while merger._poll_and_merge(timeout_ms=0):
        pass
    assert (merger.n_applied, merger.n_rejected) == (3, 0)
    assert merger.snapshot.n_learned == 15 and merger.snapshot.offsets == {0: 15}
    assert merger.snapshot.rejected == {}
    assert consumer.commits[-1] == {0: 3}


def test_two_mergers_that_take_over_from_the_same_versions_take_different_epochs(monkeypatch):
    seen = Snapshot(version=9, epoch=5, state=ModelState())
    monkeypatch.setattr(merger_module, "published_model", lambda *a, **k: seen)
    monkeypatch.setattr(merger_module, "current_topic_ids", lambda *a, **k: {})
    monkeypatch.setattr(merger_module, "pipeline_of", lambda *a: {"features": "features"})
    epochs = {Merger(MergerSettings(), f"m{i}").latest_known().epoch for i in range(20)}
    assert len(epochs) == 20
    assert min(epochs) > seen.epoch


def _compacted(sent: list[tuple]) -> list[Snapshot]:
    """What log compaction leaves: the last record written under each key."""
    last = {key: value for _, value, key, *_ in sent}
    return [Snapshot.from_bytes(value) for value in last.values()]


@pytest.mark.parametrize("zombie_writes_last", [True, False])
def test_compaction_keeps_the_active_mergers_newest_version(zombie_writes_last):
    producer = FakeProducer()
    merger = _merger(ContributionsConsumer([]), producer, Snapshot(version=0, state=ModelState()))
    active = [Snapshot(version=v, epoch=2 << 20, state=ModelState()) for v in (1, 2)]
    zombie = Snapshot(version=50, epoch=1 << 20, state=ModelState())
    for snapshot in [*active, zombie] if zombie_writes_last else [zombie, *active]:
        merger._publish(snapshot)
    newest = max(_compacted(producer.sent), key=lambda s: s.order)
    assert newest.order == active[-1].order


class FakeFeaturesReader:
    """Two partitions; each poll is a fetch whose response raises partition 0's
    high watermark by 10 (events keep arriving), up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.high, self.limit, self.polls = 0, limit, 0

    def partitions(self, wait_s: float = 0.0) -> list[int]:
        return [0, 1]

    def assign(self, starts: dict[int, int | None]) -> None:
        pass

    def end_offset(self, partition: int) -> int:
        return 0

    def poll(self, timeout_ms: int, max_records: int) -> list:
        self.polls += 1
        self.high = min(self.high + 10, self.limit)
        return []

    def highwater(self, partition: int) -> int | None:
        return self.high if partition == 0 else 0

    def close(self) -> None:
        pass


def test_feature_watermarks_wait_for_a_reachable_end_and_once_for_impossible_ones(monkeypatch):
    monkeypatch.setattr(merger_module, "HIGHWATER_WAIT_S", 0.2)
    reader = FakeFeaturesReader(limit=50)
    watermarks = merger_module.FeatureWatermarks(reader)
    assert watermarks.highwater(0, 30) == 30  # three fetches
    assert watermarks.highwater(0, 20) == 30 and reader.polls == 3  # known: no fetch
    assert watermarks.highwater(7, 1) is None  # no such partition
    assert watermarks.highwater(0, 10**18) == 50  # waited, then gave up
    polls = reader.polls
    assert watermarks.highwater(0, 10**18) == 50 and reader.polls == polls + 1  # no new wait
