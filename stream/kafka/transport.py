"""The Kafka client interface of every process on the hot path (worker, model
feed, merger, serve, producer); :mod:`stream.kafka.connect` picks the client.

Two implementations behave identically: confluent-kafka
(:mod:`stream.kafka.confluent`, librdkafka underneath, the default) and
kafka-python (:mod:`stream.kafka.kafka_python`, pure Python, several times
slower).

The interface is batch-shaped on purpose: ``poll_batch`` hands back plain
tuples grouped by partition, so the hot loop never touches a client object
per record, and the producer reports failures once per ``flush`` instead of
through a future per record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol


class Record(NamedTuple):
    """One consumed record; ``timestamp_ms`` is the record's (producer) timestamp."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


Batch = dict[int, list[Record]]
Compression = Literal["none", "gzip"]

# Called when partitions are assigned, where blocking client calls are allowed.
# Returns where to start reading each partition (None: its beginning), or None
# to start where the group committed.
AssignHook = Callable[[list[int]], dict[int, int | None] | None]
PartitionsHook = Callable[[list[int]], None]


class Consumer(Protocol):
    """A group member reading one topic, with manual commits."""

    topic: str

    def subscribe(
        self, on_assign: AssignHook, on_revoke: PartitionsHook, on_lost: PartitionsHook
    ) -> None: ...

    def poll_batch(self, timeout_ms: int, max_records: int) -> Batch: ...

    def commit(self, offsets: dict[int, int]) -> bool:
        """Commit next offsets per partition; False if the group rebalanced meanwhile."""
        ...

    def committed(self, partitions: list[int]) -> dict[int, int | None]: ...

    def seek(self, offsets: dict[int, int | None]) -> None:
        """Read each partition from ``offset`` next (None: from its beginning)."""
        ...

    def assignment(self) -> list[int]: ...

    def highwater(self, partition: int) -> int | None:
        """The partition's high watermark from the latest fetch response (None
        before one). Not ListOffsets: the embedded broker answers that wrongly
        when the last batch holds several records; fetch responses are right."""
        ...

    def close(self) -> None: ...


class ReadRecord(NamedTuple):
    """One record read outside a group, with where it came from and its headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes]]


class Reader(Protocol):
    """Reads chosen partitions of one topic without a consumer group.

    It never takes partitions away from a group's members and commits
    nothing: for following the model topic, reading the contributions topic's
    end, tailing predictions and dead letters.
    """

    topic: str

    def partitions(self, wait_s: float = 0.0) -> list[int]:
        """The topic's partitions; waits up to ``wait_s`` for the topic to exist."""
        ...

    def assign(self, starts: dict[int, int | None]) -> None:
        """Read these partitions, each from ``offset`` (None: its beginning)."""
        ...

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]: ...

    def position(self, partition: int) -> int:
        """The offset of the next record this reader will return from ``partition``."""
        ...

    def end_offset(self, partition: int) -> int:
        """The partition's end from ListOffsets. Right on Apache Kafka; the embedded
        broker undercounts when the last batch holds several records, so callers
        that need exactness there use records produced one request each, or
        :meth:`highwater` after a fetch."""
        ...

    def highwater(self, partition: int) -> int | None:
        """The high watermark from the latest fetch response (None before one)."""
        ...

    def close(self) -> None: ...


class Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float) -> None:
        """Wait for every record sent so far; raise DeliveryError if any failed."""
        ...

    def partition_count(self, topic: str) -> int: ...

    def close(self, timeout_s: float = 10.0) -> None: ...
