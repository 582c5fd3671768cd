"""The transport on kafka-python (pure Python; ``--client kafka-python``)."""

from __future__ import annotations

import logging
import time

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from stream.config import GroupTimeouts, KafkaSettings
from stream.errors import DeliveryError, StreamError
from stream.kafka import clients
from stream.kafka.transport import (
    AssignHook,
    Batch,
    Compression,
    PartitionsHook,
    ReadRecord,
    Record,
)

logger = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):
    """kafka-python runs these on its IO thread, where the consumer's own
    blocking calls are refused: assignment work is deferred to ``poll_batch``."""

    def __init__(self, owner: KafkaPythonConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.owner._pending_assign -= {tp.partition for tp in revoked}
        self.owner._on_revoke(sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            # Hold them until the assign hook has said where to start.
            self.owner._consumer.pause(*assigned)
            self.owner._pending_assign |= {tp.partition for tp in assigned}

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.owner._pending_assign -= {tp.partition for tp in lost}
        self.owner._on_lost(sorted(tp.partition for tp in lost))


class KafkaPythonConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        client_id: str,
        *,
        group_id: str,
        auto_offset_reset: str = "earliest",
        timeouts: GroupTimeouts | None = None,
        max_poll_records: int = 1000,
    ) -> None:
        self.topic = topic
        timeouts = timeouts or GroupTimeouts()
        self._consumer = clients.consumer(
            kafka,
            client_id=client_id,
            group_id=group_id,
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=timeouts.session_timeout_ms,
            heartbeat_interval_ms=timeouts.heartbeat_interval_ms,
            max_poll_interval_ms=timeouts.max_poll_interval_ms,
            max_poll_records=max_poll_records,
        )
        self._pending_assign: set[int] = set()
        self._on_assign: AssignHook = lambda partitions: None
        self._on_revoke: PartitionsHook = lambda partitions: None
        self._on_lost: PartitionsHook = lambda partitions: None

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def subscribe(
        self, on_assign: AssignHook, on_revoke: PartitionsHook, on_lost: PartitionsHook
    ) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._consumer.subscribe([self.topic], listener=_Listener(self))

    def poll_batch(self, timeout_ms: int, max_records: int) -> Batch:
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if self._pending_assign:
            self._take_over()
        return {
            tp.partition: [Record(r.offset, r.key, r.value, r.timestamp) for r in records]
            for tp, records in polled.items()
        }

    def _take_over(self) -> None:
        partitions, self._pending_assign = sorted(self._pending_assign), set()
        starts = self._on_assign(partitions)
        if starts:
            self.seek(starts)
        self._consumer.resume(*(self._tp(p) for p in partitions))

    def commit(self, offsets: dict[int, int]) -> bool:
        try:
            self._consumer.commit(
                {self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
            )
            return True
        except CommitFailedError as exc:
            logger.warning("commit failed after rebalance error=%s", exc)
            return False

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        return {p: self._consumer.committed(self._tp(p)) for p in partitions}

    def seek(self, offsets: dict[int, int | None]) -> None:
        beginning = [self._tp(p) for p, o in offsets.items() if o is None]
        if beginning:
            self._consumer.seek_to_beginning(*beginning)
        for p, offset in offsets.items():
            if offset is not None:
                self._consumer.seek(self._tp(p), offset)

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def highwater(self, partition: int) -> int | None:
        return self._consumer.highwater(self._tp(partition))

    def close(self) -> None:
        self._consumer.close()


class KafkaPythonReader:
    def __init__(self, kafka: KafkaSettings, topic: str, client_id: str) -> None:
        self.topic = topic
        self._consumer = clients.consumer(kafka, client_id=client_id, group_id=None)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def partitions(self, wait_s: float = 0.0) -> list[int]:
        deadline = time.monotonic() + wait_s
        while True:
            found = self._consumer.partitions_for_topic(self.topic)
            if found:
                return sorted(found)
            if time.monotonic() >= deadline:
                if wait_s:
                    raise StreamError(f"topic {self.topic!r} does not exist (waited {wait_s}s)")
                return []
            time.sleep(0.2)
            self._consumer.topics()  # refresh metadata

    def assign(self, starts: dict[int, int | None]) -> None:
        self._consumer.assign([self._tp(p) for p in starts])
        beginning = [self._tp(p) for p, o in starts.items() if o is None]
        if beginning:
            self._consumer.seek_to_beginning(*beginning)
        for p, offset in starts.items():
            if offset is not None:
                self._consumer.seek(self._tp(p), offset)

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]:
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [
            ReadRecord(tp.partition, r.offset, r.key, r.value, r.timestamp, list(r.headers or []))
            for tp, records in polled.items()
            for r in records
        ]

    def position(self, partition: int) -> int:
        return self._consumer.position(self._tp(partition))

    def end_offset(self, partition: int) -> int:
        tp = self._tp(partition)
        return self._consumer.end_offsets([tp]).get(tp, 0)

    def highwater(self, partition: int) -> int | None:
        return self._consumer.highwater(self._tp(partition))

    def close(self) -> None:
        self._consumer.close()


class KafkaPythonProducer:
    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        linger_ms: int = 2,
        compression: Compression = "none",
    ) -> None:
        self._producer = clients.producer(
            kafka,
            client_id=client_id,
            linger_ms=linger_ms,
            compression_type=None if compression == "none" else compression,
        )
        self._failures: list[BaseException] = []
        self._record_failure = self._failures.append

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        self._producer.send(
            topic, value=value, key=key, headers=headers, partition=partition
        ).add_errback(self._record_failure)

    def flush(self, timeout_s: float) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as exc:
            raise DeliveryError(f"records not acknowledged within {timeout_s}s") from exc
        if self._failures:
            failures, self._failures[:] = list(self._failures), []
            raise DeliveryError(
                f"broker rejected {len(failures)} records; first: {failures[0]!r}"
            ) from failures[0]

    def partition_count(self, topic: str) -> int:
        return len(self._producer.partitions_for(topic))

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)
