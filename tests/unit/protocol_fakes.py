"""In-process doubles of what surrounds a worker: its producer and consumer,
and a whole pipeline (a features partition, the contributions topic, the
model topic) whose merger is the real fence (:func:`merge_records`).

No broker, no threads, no clocks: a test says when a worker polls, cuts and
syncs, and when the merger merges, so an interleaving found in the field
(a new life taking over before the merger caught up, 2,000 lives evicting a
live one's entry) is replayed exactly.
"""

from __future__ import annotations

import struct

from stream.config import MergeSettings, ModelSettings, WorkerSettings
from stream.errors import DeliveryError
from stream.events.codec import encode, event_to_map
from stream.kafka.transport import Batch, Record
from stream.model.merge import KEYED, ftrl_params
from stream.model.state import ModelState
from stream.runtime.worker import Worker
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import merge_records


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


class FakeProducer:
    """Records what it is given: ``(topic, value, key, headers, partition)``."""

    def __init__(self, fail_flush: bool = False) -> None:
        self.sent: list[tuple] = []
        self.fail_flush = fail_flush

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:
        self.sent.append((topic, value, key, headers, partition))

    def flush(self, timeout_s: float) -> None:
        if self.fail_flush:
            raise DeliveryError("broker rejected 1 records")


class FakeConsumer:
    """Commits, accepted or refused; holds ``partitions``."""

    def __init__(self, accept_commits: bool = True, partitions: tuple[int, ...] = (0,)) -> None:
        self.accept_commits = accept_commits
        self.partitions = list(partitions)
        self.commits: list[dict[int, int]] = []

    def commit(self, offsets: dict[int, int]) -> bool:
        self.commits.append(dict(offsets))
        return self.accept_commits

    def highwater(self, partition: int) -> int | None:
        return None

    def assignment(self) -> list[int]:
        return list(self.partitions)


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
