"""An in-memory Kafka for unit tests: the real protocol code, no broker.

Topics are lists of records per partition. A :class:`FakeGroup` holds a consumer
group's members, its generation, who owns which partition and the committed
offsets. The clients implement :mod:`stream.kafka.transport`'s interfaces
(:class:`FakeConsumer`, :class:`FakeProducer`, :class:`FakeReader`) the way the
real ones behave where the protocol depends on it:

- a producer's records reach the log at ``flush`` or when the test lets its
  background sending run (:meth:`FakeProducer.deliver`); a flush can be made to
  fail (:meth:`FakeProducer.fail_next_flush`), delivering only a prefix of what
  was sent (per partition, Kafka keeps order, so what is lost is a tail) and
  raising :class:`~stream.errors.DeliveryError`; a crash loses what was not flushed;
- rebalances are eager, as both real clients run them: every member's
  ``on_revoke`` with all it held, then every member's ``on_assign`` with all it
  now holds, each then reading where the hook said (missing: the committed
  offset, else the reset policy; None: the beginning);
- a commit is refused (False) unless the member is in the group's current
  generation: after a member joined, left or was evicted, until the next
  rebalance, and for ever for a member evicted without knowing it (a zombie);
- fetching needs no group membership: a zombie keeps reading what it held.

Made without a cluster (``FakeProducer()``, ``FakeConsumer()``), a client has
one of its own: a producer whose ``sent`` list is what a test looks at, a
consumer that is the one member of its group holding partition 0 (or those it
is given), whose ``commits`` are every commit it was asked for.

Below them, :class:`Pipeline`: a worker's surroundings for the protocol tests
(a features partition, the contributions topic and the model topic as lists,
the merger as the real fence), so an interleaving found in the field is
replayed exactly.

Nothing here sleeps or reads a clock: a test drives every step.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from stream.config import MergeSettings, ModelSettings, WorkerSettings
from stream.errors import DeliveryError
from stream.events.codec import encode, event_to_map
from stream.kafka.transport import (
    AssignHook,
    Batch,
    PartitionsHook,
    ReadRecord,
    Record,
)
from stream.model.merge import KEYED, ftrl_params
from stream.model.state import ModelState
from stream.runtime.worker import Worker
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import merge_records


class Stored(NamedTuple):
    """One record on a partition's log."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


class FakeKafka:
    """The cluster: topics (created on first use, one partition unless said) and groups.

    ``grows``: a partition exists once something is written to it (the cluster
    of a client made without one, which a test writes to as it pleases).
    """

    def __init__(self, partitions: dict[str, int] | None = None, grows: bool = False) -> None:
        self.logs: dict[str, list[list[Stored]]] = {}
        # Offsets log compaction removed, per (topic, partition): readers skip them.
        self.compacted: dict[tuple[str, int], set[int]] = {}
        self.groups: dict[str, FakeGroup] = {}
        self.grows = grows
        for topic, count in (partitions or {}).items():
            self.create(topic, count)

    def create(self, topic: str, partitions: int = 1) -> None:
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(partitions)]

    def log(self, topic: str, partition: int = 0) -> list[Stored]:
        self.create(topic)
        logs = self.logs[topic]
        while self.grows and partition >= len(logs):
            logs.append([])
        return logs[partition]

    def partitions(self, topic: str) -> int:
        self.create(topic)
        return len(self.logs[topic])

    def end(self, topic: str, partition: int = 0) -> int:
        return len(self.log(topic, partition))

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Write one record (as an acknowledged produce would); returns its offset."""
        log = self.log(topic, partition)
        log.append(Stored(key, value, list(headers or []), len(log)))
        return len(log) - 1

    def compact(self, topic: str, partition: int = 0) -> None:
        """What log compaction leaves: per key, only the record written last
        (offsets do not change; readers skip the removed ones)."""
        log = self.log(topic, partition)
        last = {s.key: offset for offset, s in enumerate(log)}
        removed = self.compacted.setdefault((topic, partition), set())
        removed.update(offset for offset, s in enumerate(log) if last[s.key] != offset)

    def records(self, topic: str, partition: int = 0) -> list[Record]:
        return [
            Record(offset, s.key, s.value, s.timestamp_ms)
            for offset, s in enumerate(self.log(topic, partition))
        ]

    def group(self, group_id: str) -> FakeGroup:
        if group_id not in self.groups:
            self.groups[group_id] = FakeGroup(group_id)
        return self.groups[group_id]

    def producer(self) -> FakeProducer:
        return FakeProducer(self)

    def consumer(
        self, topic: str, group_id: str, member: str, auto_offset_reset: str = "earliest"
    ) -> FakeConsumer:
        return FakeConsumer(self, topic, self.group(group_id), member, auto_offset_reset)

    def reader(self, topic: str, client_id: str = "reader") -> FakeReader:
        return FakeReader(self, topic)


@dataclass
class FakeGroup:
    """A consumer group: members of the current generation and committed offsets."""

    group_id: str
    generation: int = 0
    members: dict[str, FakeConsumer] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)

    def owner(self, partition: int) -> str | None:
        for name, member in self.members.items():
            if partition in member.assigned:
                return name
        return None

    def join(self, consumer: FakeConsumer) -> None:
        """A member joins (it holds nothing until the next :meth:`rebalance`)."""
        if consumer.member in self.members:
            raise AssertionError(f"member {consumer.member!r} joined twice")
        self.members[consumer.member] = consumer
        self.generation += 1

    def leave(self, consumer: FakeConsumer) -> None:
        """A member leaves cleanly: its partitions are revoked (its hook runs)."""
        if self.members.get(consumer.member) is not consumer:
            return
        held = sorted(consumer.assigned)
        if held:
            consumer.on_revoke(held)
        consumer.assigned = {}
        del self.members[consumer.member]
        self.generation += 1

    def evict(self, member: str) -> FakeConsumer | None:
        """The session timed out (the member crashed, froze or was cut off): it is
        out of the group and its partitions are free, and it is not told."""
        consumer = self.members.pop(member, None)
        if consumer is not None:
            self.generation += 1
        return consumer

    def rebalance(self, assignment: dict[str, list[int]]) -> None:
        """An eager rebalance of the current members to ``assignment`` (member name
        -> partitions; a member left out gets nothing)."""
        unknown = set(assignment) - set(self.members)
        if unknown:
            raise AssertionError(f"assignment names non-members {sorted(unknown)}")
        taken = [p for ps in assignment.values() for p in ps]
        if len(taken) != len(set(taken)):
            raise AssertionError(f"a partition assigned twice: {assignment}")
        self.generation += 1
        members = list(self.members.values())
        for consumer in members:
            held, consumer.assigned = sorted(consumer.assigned), {}
            consumer.generation = self.generation
            if held:
                consumer.on_revoke(held)
        for consumer in members:
            consumer.assign_from_group(sorted(assignment.get(consumer.member, [])))


class FakeConsumer:
    """A group member reading one topic (:class:`~stream.kafka.transport.Consumer`).

    Without ``kafka``: the one member of a group of a cluster of its own,
    holding ``partitions`` from the start (a test feeds the worker batches
    itself); ``accept_commits=False``: the group has rebalanced since, so every
    commit is refused. ``commits``: every commit asked for, refused ones too.
    """

    def __init__(
        self,
        kafka: FakeKafka | None = None,
        topic: str = "features",
        group: FakeGroup | None = None,
        member: str = "member",
        auto_offset_reset: str = "earliest",
        *,
        accept_commits: bool = True,
        partitions: tuple[int, ...] = (0,),
    ) -> None:
        alone = kafka is None
        kafka = kafka if kafka is not None else FakeKafka(grows=True)
        group = group if group is not None else kafka.group("group")
        self.kafka, self.topic, self.group, self.member = kafka, topic, group, member
        self.auto_offset_reset = auto_offset_reset
        # Partition -> position (the next offset to return).
        self.assigned: dict[int, int] = {}
        self.generation = -1
        self.on_assign: AssignHook = lambda partitions: None
        self.on_revoke: PartitionsHook = lambda partitions: None
        self.on_lost: PartitionsHook = lambda partitions: None
        self._next = 0  # round robin over partitions, so none starves
        self.closed = False
        self.commits: list[dict[int, int]] = []
        if alone:
            group.join(self)
            self.generation = group.generation
            self.assigned = dict.fromkeys(partitions, 0)
            if not accept_commits:
                group.generation += 1

    def subscribe(
        self, on_assign: AssignHook, on_revoke: PartitionsHook, on_lost: PartitionsHook
    ) -> None:
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost
        self.group.join(self)

    def assign_from_group(self, partitions: list[int]) -> None:
        """The group gave this member ``partitions``: the hook says where to read."""
        starts = self.on_assign(partitions) or {}
        self.assigned = {}
        for p in partitions:
            start = starts.get(p, -1)
            self.assigned[p] = 0 if start is None else start if start >= 0 else self._reset(p)

    def _reset(self, partition: int) -> int:
        committed = self.group.committed.get(partition)
        if committed is not None:
            return committed
        return 0 if self.auto_offset_reset == "earliest" else self.kafka.end(self.topic, partition)

    def lose(self) -> list[int]:
        """The client finds out it was evicted: ``on_lost`` with what it held."""
        lost = sorted(self.assigned)
        if lost:
            self.on_lost(lost)
        self.assigned = {}
        return lost

    def poll_batch(self, timeout_ms: int, max_records: int) -> Batch:
        batch: Batch = {}
        partitions = sorted(self.assigned)
        if not partitions:
            return batch
        left = max_records
        start = self._next % len(partitions)
        self._next += 1
        for p in partitions[start:] + partitions[:start]:
            position = self.assigned[p]
            log = self.kafka.log(self.topic, p)
            records = [
                Record(o, log[o].key, log[o].value, log[o].timestamp_ms)
                for o in range(position, min(len(log), position + left))
            ]
            if records:
                batch[p] = records
                self.assigned[p] = records[-1].offset + 1
                left -= len(records)
            if left <= 0:
                break
        return batch

    def commit(self, offsets: dict[int, int]) -> bool:
        self.commits.append(dict(offsets))
        if self.group.members.get(self.member) is not self:
            return False
        if self.generation != self.group.generation:
            return False
        self.group.committed.update(offsets)
        return True

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        return {p: self.group.committed.get(p) for p in partitions}

    def seek(self, offsets: dict[int, int | None]) -> None:
        for p, offset in offsets.items():
            if p not in self.assigned:
                raise AssertionError(f"{self.member} seeks partition {p}, not assigned")
            self.assigned[p] = 0 if offset is None else offset

    def assignment(self) -> list[int]:
        return sorted(self.assigned)

    def highwater(self, partition: int) -> int | None:
        """Known for the partitions this member fetches, as a client's is."""
        return self.kafka.end(self.topic, partition) if partition in self.assigned else None

    def close(self) -> None:
        self.group.leave(self)
        self.closed = True


class FakeProducer:
    """Sends reach the log at :meth:`flush` (:class:`~stream.kafka.transport.Producer`).

    ``sent``: every send as it was given, ``(topic, value, key, headers,
    partition)``. Without ``kafka``, a cluster of its own. ``fail_flush``:
    every flush fails, delivering nothing (the broker refuses them all).
    """

    def __init__(self, kafka: FakeKafka | None = None, fail_flush: bool = False) -> None:
        self.kafka = kafka if kafka is not None else FakeKafka(grows=True)
        self.pending: list[tuple[str, int, bytes | None, bytes | None, list]] = []
        self.sent: list[tuple] = []
        self.fail_flush = fail_flush
        # Set by fail_next_flush: how many pending records the next flush delivers.
        self._deliver_only: int | None = None
        self.flushes = 0

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent.append((topic, value, key, headers, partition))
        if partition is None:
            count = self.kafka.partitions(topic)
            partition = zlib.crc32(key) % count if key is not None else 0
        self.pending.append((topic, partition, value, key, list(headers or [])))

    def deliver(self) -> None:
        """The client's background sending: what was sent so far reaches the log
        (a real producer does not wait for ``flush`` to send)."""
        pending, self.pending = self.pending, []
        for topic, partition, value, key, headers in pending:
            self.kafka.append(topic, partition, value, key, headers)

    def fail_next_flush(self, deliver: int = 0) -> None:
        """The next flush delivers only the first ``deliver`` pending records, then raises."""
        self._deliver_only = deliver

    def recover(self) -> None:
        """No failure pending any more."""
        self._deliver_only = None

    def flush(self, timeout_s: float = 0.0) -> None:
        self.flushes += 1
        pending, self.pending = self.pending, []
        deliver, self._deliver_only = self._deliver_only, None
        if self.fail_flush:
            deliver = 0
        delivered = pending if deliver is None else pending[:deliver]
        for topic, partition, value, key, headers in delivered:
            self.kafka.append(topic, partition, value, key, headers)
        if deliver is not None:
            raise DeliveryError(f"broker rejected {len(pending) - len(delivered)} records")

    def crash(self) -> None:
        """SIGKILL: what was sent but not flushed is lost."""
        self.pending = []

    def partition_count(self, topic: str) -> int:
        return self.kafka.partitions(topic)

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)


class FakeReader:
    """Reads chosen partitions without a group (:class:`~stream.kafka.transport.Reader`)."""

    def __init__(self, kafka: FakeKafka, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self._positions: dict[int, int] = {}
        self._highs: dict[int, int] = {}

    def partitions(self, wait_s: float = 0.0) -> list[int]:
        return list(range(self.kafka.partitions(self.topic)))

    def assign(self, starts: dict[int, int | None]) -> None:
        self._positions = {p: 0 if o is None else o for p, o in starts.items()}

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]:
        out: list[ReadRecord] = []
        for p, position in self._positions.items():
            log = self.kafka.log(self.topic, p)
            removed = self.kafka.compacted.get((self.topic, p), set())
            self._highs[p] = len(log)
            o = position
            while o < len(log) and len(out) < max_records:
                if o not in removed:
                    s = log[o]
                    out.append(ReadRecord(p, o, s.key, s.value, s.timestamp_ms, s.headers))
                o += 1
            self._positions[p] = o
        return out

    def position(self, partition: int) -> int:
        return self._positions[partition]

    def end_offset(self, partition: int) -> int:
        return self.kafka.end(self.topic, partition)

    def highwater(self, partition: int) -> int | None:
        return self._highs.get(partition)

    def close(self) -> None:
        pass


# A worker's surroundings for the protocol tests.


def label(offset: int) -> bool | None:
    """The label of the event at ``offset``: every third one has none."""
    return None if offset % 3 == 2 else offset % 2 == 0


def event_record(offset: int) -> Record:
    """The msgpack event at ``offset`` of partition 0."""
    event = event_to_map(str(offset), {"a": float(offset % 7)}, label(offset), None)
    return Record(offset, str(offset).encode(), encode(event, "msgpack"), 0)


def events(n: int) -> list[Record]:
    return [event_record(i) for i in range(n)]


def labeled_below(end: int) -> int:
    """How many events below offset ``end`` carry a label: what the model must
    have learned, exactly, once it has learned up to ``end``."""
    return sum(1 for i in range(end) if label(i) is not None)


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)


def changed_keys(before: ModelState, after: ModelState) -> frozenset[str]:
    """The keys whose state differs between two versions, bit for bit (0.0 and
    -0.0 differ): what :meth:`ModelFeed.changed_since` may answer at least."""
    out: set[str] = set()
    for m in KEYED:
        a: dict[str, float] = getattr(before, m)
        b: dict[str, float] = getattr(after, m)
        out.update(k for k in a.keys() | b.keys() if _bits(a.get(k)) != _bits(b.get(k)))
    return frozenset(out)


class DiffFeed(ModelFeed):
    """A :class:`ModelFeed` that answers :meth:`changed_since` as a feed of
    deltas would: it keeps every version it read, and answers with the keys
    whose state differs between the one asked about and the newest."""

    def __init__(self, *args, **kwargs) -> None:
        self.seen: dict[tuple[int, int], Snapshot] = {}
        super().__init__(*args, **kwargs)

    def poll(self, timeout_ms: int = 0) -> Snapshot | None:
        latest = super().poll(timeout_ms)
        if latest is not None:
            self.seen.setdefault(latest.order, latest)
        return latest

    def changed_since(self, order: tuple[int, int]) -> frozenset[str] | None:
        if self.latest is None or order not in self.seen:
            return None
        return changed_keys(self.seen[order].state, self.latest.state)


class Pipeline:
    """One features partition, the contributions topic and the model topic as
    lists; the group's committed offsets; the merger as the real fence."""

    def __init__(self, features: list[Record], model: ModelSettings | None = None) -> None:
        self.features = features
        self.model = model or ModelSettings()
        self.contributions: list[Record] = []
        self.versions: list[Snapshot] = [Snapshot(version=0, state=ModelState())]
        self.committed: dict[int, int] = {}

    @property
    def latest(self) -> Snapshot:
        return self.versions[-1]

    def merge(self, up_to: int | None = None) -> Snapshot:
        """Publish one version of every contribution not merged yet, below
        ``up_to`` (the contributions topic's offset) if given."""
        start = self.latest.contributions_offset
        records = self.contributions[start:up_to]
        if records:
            merged = merge_records(self.latest, records, "sum", ftrl_params(self.model), None)
            self.versions.append(merged.snapshot)
        return self.latest

    def contribute(self, contribution: Contribution) -> None:
        """A contribution sent by someone other than a :class:`Worker` here."""
        offset = len(self.contributions)
        self.contributions.append(
            Record(offset, contribution.worker.encode(), contribution.to_bytes(), 0)
        )

    def contributed(self) -> list[Contribution]:
        return [Contribution.from_bytes(r.value) for r in self.contributions]

    def start_life(self, name: str, every_events: int = 1000, whole: bool = False) -> Worker:
        """A new process life of worker ``name``, as ``run()`` starts it: rebased
        onto the newest version, then assigned partition 0 (its take-over
        waits for the merger for no time at all: a test merges explicitly).
        ``whole``: its feed cannot tell what changed (it adopts whole versions)."""
        settings = WorkerSettings(
            model=self.model, merge=MergeSettings(every_events=every_events, catch_up_timeout_s=0)
        )
        feed = WholeFeed(self) if whole else PipelineFeed(self)
        consumer = PartitionConsumer(self)
        producer = PipelineProducer(self, settings.topics.contributions)
        worker = Worker(settings, name, consumer=consumer, producer=producer, feed=feed)
        worker._co_partitioned = True
        worker.replica.start()
        consumer.seek(worker.on_assigned([0]))
        return worker


class PipelineProducer(FakeProducer):
    """Contributions go onto the pipeline's contributions topic as they are sent."""

    def __init__(self, pipeline: Pipeline, contributions_topic: str) -> None:
        super().__init__()
        self.pipeline, self.contributions_topic = pipeline, contributions_topic

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:
        super().send(topic, value, key, headers, partition)
        if topic == self.contributions_topic:
            self.pipeline.contributions.append(
                Record(len(self.pipeline.contributions), key, value, 0)
            )


class PartitionConsumer(FakeConsumer):
    """Reads the pipeline's features partition from a position it seeks; commits
    go to the group's offsets, which every life of every worker shares."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.position = 0
        self.seeks: list[dict[int, int | None]] = []

    def poll_batch(self, timeout_ms: int, max_records: int) -> Batch:
        records = self.pipeline.features[self.position : self.position + max_records]
        self.position += len(records)
        return {0: records} if records else {}

    def seek(self, offsets: dict[int, int | None]) -> None:
        self.seeks.append(dict(offsets))
        if 0 in offsets:
            self.position = offsets[0] or 0

    def commit(self, offsets: dict[int, int]) -> bool:
        self.pipeline.committed.update(offsets)
        return super().commit(offsets)

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        return {p: self.pipeline.committed.get(p) for p in partitions}


class PipelineFeed:
    """The model topic as a worker's feed sees it: the newest version."""

    n_invalid = 0

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @property
    def latest(self) -> Snapshot | None:
        return self.pipeline.latest

    def poll(self, timeout_ms: int = 0) -> Snapshot | None:
        return self.pipeline.latest

    def initial(self, timeout_s: float = 10.0) -> Snapshot | None:
        return self.pipeline.latest

    def changed_since(self, order: tuple[int, int]) -> frozenset[str] | None:
        held = [v for v in self.pipeline.versions if v.order == order]
        return changed_keys(held[0].state, self.latest.state) if held else None

    def contributions_end(self) -> int:
        return len(self.pipeline.contributions)

    def wait_caught_up(self, target: int, timeout_s: float) -> bool:
        return self.pipeline.latest.contributions_offset >= target

    def close(self) -> None:
        pass


class WholeFeed(PipelineFeed):
    """A feed that cannot tell what changed, as the model topic of whole models."""

    def changed_since(self, order: tuple[int, int]) -> frozenset[str] | None:
        return None


def read_and_cut(worker: Worker, n: int) -> None:
    """One turn of the worker's loop: poll up to ``n`` events and process them
    (predict, learn, flush, commit); send what it learned as a contribution;
    sync with the newest version (an idle worker only syncs)."""
    batch = worker._consumer.poll_batch(0, n) if n else {}
    if batch:
        worker._process(batch)
    if not worker.replica.cut():
        worker.replica.sync()
