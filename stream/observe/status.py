"""``learnstream status``: the pipeline at a glance, from Kafka and checkpoints alone.

Works while the pipeline runs and after it stopped: nothing here talks to a
worker. Lag is the fetch high watermark minus the group's committed offset:
the high watermark comes from a fetch response, which is right on every
broker (the embedded one answers ListOffsets wrongly for multi-record batches).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition
from kafka.errors import KafkaError

from stream.config import KafkaSettings, TopicSettings
from stream.errors import StreamError
from stream.events.codec import decode_map
from stream.kafka import clients
from stream.observe.quality import Quality, prequential
from stream.sync.globalmodel import load_latest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    committed: int | None
    high_watermark: int | None
    recent_workers: tuple[str, ...] = ()

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None:
            return None
        return self.high_watermark - (self.committed or 0)


@dataclass(frozen=True)
class Status:
    group: str
    members: list[dict] | None
    members_error: str | None
    partitions: list[PartitionStatus]
    model_version: int | None
    model_age_s: float | None
    model_n_learned: int | None
    recent: Quality | None
    last_prediction_age_s: float | None
    dead_letters: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)

    def format(self) -> str:
        lines = [f"consumer group {self.group}"]
        if self.members is not None:
            lines.append(f"  members: {len(self.members)}")
            for member in self.members:
                lines.append(f"    {member['client_id']:<40} partitions {member['partitions']}")
        else:
            lines.append(f"  members: not available ({self.members_error})")
        lines.append("  partition  committed  high-watermark      lag  recent scorers")
        for p in self.partitions:
            lines.append(
                f"  {p.partition:>9}  {_n(p.committed):>9}  {_n(p.high_watermark):>14}  "
                f"{_n(p.lag):>7}  {', '.join(p.recent_workers) or '-'}"
            )
        lines.append(f"  total lag {self.total_lag}")
        if self.model_version is not None:
            lines.append(
                f"global model: version {self.model_version}, {self.model_n_learned} events "
                f"learned, {self.model_age_s:.1f} s old"
            )
        else:
            lines.append("global model: none found")
        if self.recent is not None and self.recent.n:
            lines.append(
                f"recent quality: accuracy {self.recent.accuracy:.4f}, log loss "
                f"{self.recent.log_loss:.4f} over the last {self.recent.n} labeled predictions"
            )
        if self.last_prediction_age_s is not None:
            lines.append(f"newest prediction: {self.last_prediction_age_s:.1f} s ago")
        if self.dead_letters is not None:
            lines.append(f"dead letters: {self.dead_letters}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def high_watermarks(consumer, topic: str, partitions: list[int]) -> dict[int, int | None]:
    """Each partition's high watermark, read from a fetch response."""
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


def tail(consumer, topic: str, highs: dict[int, int | None], per_partition: int) -> list[dict]:
    """The last ``per_partition`` records of each partition, decoded."""
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
    found: list[dict] = []
    deadline = time.monotonic() + 15
    while remaining and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
            for record in records:
                try:
                    found.append(decode_map(record.value)[0])
                except StreamError:
                    continue
            if consumer.position(tp) >= remaining.get(tp, 0):
                remaining.pop(tp, None)
    return found


def collect(
    kafka: KafkaSettings, topics: TopicSettings, checkpoint_dir: Path | None, recent: int = 1000
) -> Status:
    admin = clients.admin(kafka, client_id="learnstream-status")
    notes: list[str] = []
    try:
        partitions = sorted(
            p["partition_index"]
            for t in admin.describe_topics([topics.features])
            for p in t.get("partitions", [])
        )
        if not partitions:
            raise StreamError(f"topic {topics.features!r} does not exist")
        members, members_error = None, None
        try:
            described = admin.describe_groups([topics.group_id])
            members = [
                {
                    "client_id": m.get("client_id", "?"),
                    "partitions": sorted(
                        tp.partition
                        for tp in (m.get("member_assignment") or {}).get("assignment", [])
                        if getattr(tp, "topic", topics.features) == topics.features
                    )
                    if isinstance(m.get("member_assignment"), dict)
                    else m.get("member_assignment"),
                }
                for group in described
                for m in group.get("members", [])
            ]
        except (KafkaError, ValueError, KeyError, TypeError) as exc:
            members_error = f"DescribeGroups answer not readable: {exc!r}"
        offsets = admin.list_group_offsets(topics.group_id).get(topics.group_id, {})
        committed = {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == topics.features and om.offset is not None and om.offset >= 0
        }
    finally:
        admin.close()

    consumer = clients.consumer(kafka, client_id="learnstream-status", group_id=None)
    try:
        highs = high_watermarks(consumer, topics.features, partitions)
        prediction_partitions = sorted(consumer.partitions_for_topic(topics.predictions) or [])
        prediction_highs = high_watermarks(consumer, topics.predictions, prediction_partitions)
        per_partition = max(1, recent // max(1, len(prediction_partitions)))
        predictions = tail(consumer, topics.predictions, prediction_highs, per_partition)
        dlq = high_watermarks(consumer, topics.dead_letter, [0]).get(0)
    finally:
        consumer.close()

    scorers: dict[int, Counter] = {}
    for prediction in predictions:
        scorers.setdefault(prediction.get("partition", -1), Counter())[
            prediction.get("worker")
        ] += 1
    labeled = [(bool(p["y"]), float(p["p"])) for p in predictions if "y" in p]
    newest = max((p.get("ts_scored", 0.0) for p in predictions), default=None)

    try:
        snapshot = load_latest(kafka, topics, checkpoint_dir)
    except StreamError as exc:
        snapshot = None
        notes.append(str(exc))
    return Status(
        group=topics.group_id,
        members=members,
        members_error=members_error,
        partitions=[
            PartitionStatus(
                p,
                committed.get(p),
                highs.get(p),
                tuple(w for w, _ in scorers.get(p, Counter()).most_common(3)),
            )
            for p in partitions
        ],
        model_version=snapshot.version if snapshot else None,
        model_age_s=time.time() - snapshot.created_at if snapshot else None,
        model_n_learned=snapshot.n_learned if snapshot else None,
        recent=prequential(labeled) if labeled else None,
        last_prediction_age_s=time.time() - newest if newest else None,
        dead_letters=dlq,
        notes=notes,
    )
