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

from stream.config import KafkaSettings, TopicSettings
from stream.errors import StreamError
from stream.events.codec import decode_map
from stream.kafka.inspect import TopicInspector, describe_group
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
                f"{self.recent.log_loss:.4f}, normalized entropy "
                f"{self.recent.normalized_entropy:.4f}, calibration {self.recent.calibration:.4f} "
                f"over the last {self.recent.n} labeled predictions"
            )
        if self.last_prediction_age_s is not None:
            lines.append(f"newest prediction: {self.last_prediction_age_s:.1f} s ago")
        if self.dead_letters is not None:
            lines.append(f"dead letters: {self.dead_letters}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def lag(kafka: KafkaSettings, topics: TopicSettings) -> dict[int, int | None]:
    """Each features partition's lag as :func:`collect` reports it (fetch high
    watermark minus the group's committed offset; None where no fetch answered),
    for ``serve``'s dashboard. Opens and closes its clients: one call costs an
    admin round trip and a one-record fetch per partition, so it is for polls
    seconds apart, not per request."""
    group = describe_group(kafka, topics.features, topics.group_id)
    with TopicInspector(kafka, client_id="learnstream-serve-lag") as inspector:
        highs = inspector.high_watermarks(topics.features, group.partitions)
    return {
        p: PartitionStatus(p, group.committed.get(p), highs.get(p)).lag for p in group.partitions
    }


def collect(
    kafka: KafkaSettings, topics: TopicSettings, checkpoint_dir: Path | None, recent: int = 1000
) -> Status:
    notes: list[str] = []
    group = describe_group(kafka, topics.features, topics.group_id)
    partitions, members, members_error = group.partitions, group.members, group.members_error
    committed = group.committed
    with TopicInspector(kafka) as inspector:
        highs = inspector.high_watermarks(topics.features, partitions)
        prediction_partitions = inspector.partitions(topics.predictions)
        prediction_highs = inspector.high_watermarks(topics.predictions, prediction_partitions)
        per_partition = max(1, recent // max(1, len(prediction_partitions)))
        predictions = []
        for value in inspector.tail(topics.predictions, prediction_highs, per_partition):
            try:
                predictions.append(decode_map(value)[0])
            except StreamError:
                continue
        dlq = inspector.high_watermarks(topics.dead_letter, [0]).get(0)

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
