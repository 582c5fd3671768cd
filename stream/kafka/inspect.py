"""Look at topics and groups from outside: high watermarks, the newest records,
a group's members and committed offsets. For ``learnstream status``.

High watermarks come from fetch responses, which are right on every broker
(the embedded one answers ListOffsets wrongly for multi-record batches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import TopicPartition
from kafka.errors import KafkaError

from stream.config import KafkaSettings
from stream.errors import StreamError
from stream.kafka import clients


@dataclass(frozen=True)
class GroupView:
    """A consumer group as the broker describes it, for one topic."""

    partitions: list[int]  # the topic's partitions
    members: list[dict] | None  # client_id and partitions; None when not readable
    members_error: str | None
    committed: dict[int, int]  # partition -> committed offset


def describe_group(kafka: KafkaSettings, topic: str, group_id: str) -> GroupView:
    admin = clients.admin(kafka, client_id="learnstream-status")
    try:
        partitions = sorted(
            p["partition_index"]
            for t in admin.describe_topics([topic])
            for p in t.get("partitions", [])
        )
        if not partitions:
            raise StreamError(f"topic {topic!r} does not exist")
        members, members_error = None, None
        try:
            described = admin.describe_groups([group_id])
            members = [
                {
                    "client_id": m.get("client_id", "?"),
                    "partitions": sorted(
                        tp.partition
                        for tp in (m.get("member_assignment") or {}).get("assignment", [])
                        if getattr(tp, "topic", topic) == topic
                    )
                    if isinstance(m.get("member_assignment"), dict)
                    else m.get("member_assignment"),
                }
                for group in described
                for m in group.get("members", [])
            ]
        except (KafkaError, ValueError, KeyError, TypeError) as exc:
            members_error = f"DescribeGroups answer not readable: {exc!r}"
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
        committed = {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == topic and om.offset is not None and om.offset >= 0
        }
    finally:
        admin.close()
    return GroupView(partitions, members, members_error, committed)


class TopicInspector:
    """One group-less consumer for looking at several topics; close() when done."""

    def __init__(self, kafka: KafkaSettings, client_id: str = "learnstream-status") -> None:
        self._consumer = clients.consumer(kafka, client_id=client_id, group_id=None)

    def __enter__(self) -> TopicInspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str) -> list[int]:
        return sorted(self._consumer.partitions_for_topic(topic) or [])

    def high_watermarks(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        """Each partition's high watermark, read from a fetch response."""
        consumer = self._consumer
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: dict[int, int | None] = {}
        deadline = time.monotonic() + 10
        while len(out) < len(tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None:
                    out[tp.partition] = high
        return {p: out.get(p) for p in partitions}

    def tail(self, topic: str, highs: dict[int, int | None], per_partition: int) -> list[bytes]:
        """The values of the last ``per_partition`` records of each partition."""
        consumer = self._consumer
        tps = []
        for p, high in highs.items():
            if high:
                tp = TopicPartition(topic, p)
                tps.append((tp, max(0, high - per_partition), high))
        if not tps:
            return []
        consumer.assign([tp for tp, _, _ in tps])
        for tp, start, _ in tps:
            consumer.seek(tp, start)
        remaining = {tp: high for tp, _, high in tps}
        found: list[bytes] = []
        deadline = time.monotonic() + 15
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
                found.extend(record.value for record in records)
                if consumer.position(tp) >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        return found
