"""The merger: folds contributions into the global model, publishes, checkpoints.

One merger is active at a time: every merger process joins the merger group
and subscribes to the single-partition contributions topic, so Kafka gives
that partition to one member; the others stand by and take over when it dies.

On taking over, the merger starts from the newest snapshot it can find (model
topic or checkpoint directory) and reads contributions from the offset that
snapshot records, not from a committed group offset: the snapshot is the
truth about what the model has learned. Re-reading a contribution that is
already in the model is harmless, because the offset fence rejects it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from kafka import ConsumerRebalanceListener, TopicPartition

from stream import clients
from stream.checkpoint import CheckpointStore, Snapshot
from stream.config import (
    KafkaSettings,
    MergeRule,
    MergeSettings,
    ModelSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.contribution import Contribution
from stream.errors import ConfigError, DeliveryError
from stream.feed import published_model
from stream.merge import merge
from stream.metrics import MergerCollector, serve
from stream.model import ModelState

logger = logging.getLogger(__name__)

# How many workers' applied/rejected sequence numbers a snapshot remembers.
# Workers are named per process, so restarts add names; old ones are dropped.
MAX_TRACKED_WORKERS = 1000
# On stop, how long to keep merging the contributions of workers stopping too.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MergerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 15_000
    metrics_port: int = 0

    @classmethod
    def for_workers(cls, workers: WorkerSettings) -> MergerSettings:
        """The merger that goes with these workers: same broker, topics, model, timing."""
        return cls(
            kafka=workers.kafka,
            topics=workers.topics,
            model=workers.model,
            merge=workers.merge,
            session_timeout_ms=workers.session_timeout_ms,
            heartbeat_interval_ms=workers.heartbeat_interval_ms,
            max_poll_interval_ms=workers.max_poll_interval_ms,
        )


def fence(snapshot_offsets: dict[int, int], contribution: Contribution) -> str | None:
    """Why ``contribution`` cannot be applied on top of these offsets, or None.

    A partition the model has never learned from accepts any start (the first
    contribution for it defines where learning began).
    """
    for partition, (start, end) in contribution.ranges.items():
        if end < start:
            return f"partition {partition}: empty range [{start}, {end})"
        current = snapshot_offsets.get(partition)
        if current is not None and start != current:
            return f"partition {partition}: starts at {start}, model is at {current}"
    return None


def apply_contributions(
    snapshot: Snapshot,
    contributions: list[tuple[int, Contribution]],
    rule: MergeRule,
    next_offset: int,
) -> tuple[Snapshot, int, int]:
    """Pure: the next snapshot after these (contributions-topic offset, contribution)
    pairs, read up to ``next_offset``; plus how many were applied and rejected."""
    offsets = dict(snapshot.offsets)
    applied = dict(snapshot.applied)
    rejected = dict(snapshot.rejected)
    deltas: list[ModelState] = []
    n_rejected = 0
    for offset, contribution in contributions:
        reason = fence(offsets, contribution)
        if reason is not None:
            rejected[contribution.worker] = max(
                rejected.get(contribution.worker, -1), contribution.seq
            )
            n_rejected += 1
            logger.warning(
                "contribution rejected worker=%s seq=%d offset=%d reason=%s",
                contribution.worker,
                contribution.seq,
                offset,
                reason,
            )
            continue
        deltas.append(contribution.delta)
        for partition, (_, end) in contribution.ranges.items():
            offsets[partition] = end
        applied[contribution.worker] = max(applied.get(contribution.worker, -1), contribution.seq)
    state = merge(snapshot.state, deltas, rule) if deltas else snapshot.state
    next_snapshot = Snapshot(
        version=snapshot.version + 1,
        state=state,
        offsets=offsets,
        contributions_offset=next_offset,
        applied=_newest(applied),
        rejected=_newest(rejected),
        model_config=snapshot.model_config,
        topic_ids=snapshot.topic_ids,
        created_at=time.time(),
    )
    return next_snapshot, len(deltas), n_rejected


def _newest(seqs: dict[str, int]) -> dict[str, int]:
    if len(seqs) <= MAX_TRACKED_WORKERS:
        return seqs
    return dict(list(seqs.items())[-MAX_TRACKED_WORKERS:])


def initial_snapshot(model: ModelSettings) -> Snapshot:
    return Snapshot(
        version=0, state=ModelState(), model_config=model.as_dict(), created_at=time.time()
    )


def current_topic_ids(kafka: KafkaSettings, topics: TopicSettings) -> dict[str, str]:
    """The broker's ids of the topics a snapshot's offsets refer to."""
    admin = clients.admin(kafka, client_id="learnstream-merger-admin")
    try:
        described = admin.describe_topics([topics.features, topics.contributions])
    finally:
        admin.close()
    names = {topics.features: "features", topics.contributions: "contributions"}
    return {names[t["name"]]: str(t["topic_id"]) for t in described if t.get("topic_id")}


def rebind_topics(snapshot: Snapshot, topic_ids: dict[str, str]) -> Snapshot:
    """The snapshot, with offsets kept only for topics that are still the same.

    A recreated topic (or a new broker, such as a restarted embedded one that
    lost everything) starts at offset 0 again: the model keeps what it learned,
    but learning of the new topic starts from its beginning.
    """
    offsets, contributions_offset = snapshot.offsets, snapshot.contributions_offset
    known = snapshot.topic_ids
    if known.get("features") not in (None, topic_ids.get("features")):
        logger.warning(
            "features topic was recreated; learning restarts at its beginning "
            "version=%d old_id=%s new_id=%s",
            snapshot.version,
            known.get("features"),
            topic_ids.get("features"),
        )
        offsets = {}
    if known.get("contributions") not in (None, topic_ids.get("contributions")):
        logger.warning(
            "contributions topic was recreated; reading it from 0 version=%d", snapshot.version
        )
        contributions_offset = 0
    if (offsets, contributions_offset, known) == (
        snapshot.offsets,
        snapshot.contributions_offset,
        topic_ids,
    ):
        return snapshot
    return replace(
        snapshot, offsets=offsets, contributions_offset=contributions_offset, topic_ids=topic_ids
    )


def check_compatible(snapshot: Snapshot, model: ModelSettings) -> None:
    if snapshot.model_config and snapshot.model_config != model.as_dict():
        raise ConfigError(
            f"global model version {snapshot.version} was learned with {snapshot.model_config}, "
            f"not {model.as_dict()}; use the same model settings or another checkpoint dir/topic"
        )


class Merger:
    """``run()`` blocks until ``stop()``."""

    def __init__(self, settings: MergerSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.snapshot: Snapshot | None = None
        self.store = (
            CheckpointStore(settings.merge.checkpoint_dir, settings.merge.checkpoint_keep)
            if settings.merge.checkpoint_dir
            else None
        )
        self._stop = threading.Event()
        self.active = False
        self.n_applied = 0
        self.n_rejected = 0
        self.checkpoint_written_at = 0.0
        self._checkpointed: int | None = None

    def stop(self) -> None:
        self._stop.set()

    def latest_known(self) -> tuple[Snapshot, bool]:
        """Newest of the model topic's last version and the checkpoint directory's,
        and whether the model topic lacks it (so it must be published again)."""
        published = published_model(self.settings.kafka, self.settings.topics, self.name)
        stored = self.store.latest() if self.store else None
        candidates = [s for s in (published, stored) if s is not None]
        best = (
            max(candidates, key=lambda s: s.version)
            if candidates
            else initial_snapshot(self.settings.model)
        )
        check_compatible(best, self.settings.model)
        rebound = rebind_topics(best, current_topic_ids(self.settings.kafka, self.settings.topics))
        stale = published is None or published.version < best.version or rebound != best
        return rebound, stale

    def run(self) -> None:
        s = self.settings
        contributions_tp = TopicPartition(s.topics.contributions, 0)
        consumer = clients.consumer(
            s.kafka,
            client_id=self.name,
            group_id=s.topics.merger_group,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_poll_records=5000,
        )
        producer = clients.producer(s.kafka, client_id=self.name, linger_ms=0)
        merger = self
        if s.metrics_port:
            serve(
                s.metrics_port,
                MergerCollector(self, lambda: self.checkpoint_written_at),
                f"merger={self.name}",
            )

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                if revoked:
                    merger._checkpoint(merger.snapshot, force=True)
                    logger.info("merger standing by merger=%s", merger.name)
                merger.active = False

            def on_partitions_assigned(self, assigned):
                if contributions_tp not in assigned:
                    return
                merger.snapshot, republish = merger.latest_known()
                consumer.seek(contributions_tp, merger.snapshot.contributions_offset)
                merger.active = True
                logger.info(
                    "merger active merger=%s version=%d n_learned=%d contributions_offset=%d",
                    merger.name,
                    merger.snapshot.version,
                    merger.snapshot.n_learned,
                    merger.snapshot.contributions_offset,
                )
                if republish:
                    merger._publish(producer, merger.snapshot)

        try:
            consumer.subscribe([s.topics.contributions], listener=Listener())
            logger.info("merger started merger=%s group=%s", self.name, s.topics.merger_group)
            while not self._stop.is_set():
                self._poll_and_merge(consumer, producer, contributions_tp)
            # Workers stopping at the same moment send their last contributions
            # now: merge until the topic has been quiet for a moment.
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while self.active and time.monotonic() < deadline:
                if not self._poll_and_merge(consumer, producer, contributions_tp, timeout_ms=1000):
                    break
            if self.active:
                self._checkpoint(self.snapshot, force=True)
        finally:
            producer.close(timeout=10)
            consumer.close()
            logger.info("merger stopped merger=%s", self.name)

    def _poll_and_merge(
        self, consumer, producer, tp: TopicPartition, timeout_ms: int = 200
    ) -> bool:
        records = consumer.poll(timeout_ms=timeout_ms).get(tp, [])
        if records:
            # Gather what else arrives within the linger: one version for many
            # contributions (each version is a full model on the model topic).
            deadline = time.monotonic() + self.settings.merge.version_linger_s
            while time.monotonic() < deadline:
                more = consumer.poll(timeout_ms=20).get(tp, [])
                records.extend(more)
        if records and self.active and self.snapshot is not None:
            self._merge(records, producer)
            consumer.commit()
            return True
        return False

    def _merge(self, records: list, producer) -> None:
        assert self.snapshot is not None
        readable = []
        for record in records:
            try:
                readable.append((record.offset, Contribution.from_bytes(record.value)))
            except (ValueError, KeyError, TypeError) as exc:
                # Corrupt: skipping it loses nothing. Its events stay unlearned, the
                # sender's next contribution is fenced out, and it re-learns them.
                logger.warning("contribution unreadable offset=%d error=%r", record.offset, exc)
        snapshot, n_applied, n_rejected = apply_contributions(
            self.snapshot, readable, self.settings.merge.rule, next_offset=records[-1].offset + 1
        )
        self._publish(producer, snapshot)
        self.snapshot = snapshot
        self.n_applied += n_applied
        self.n_rejected += n_rejected
        logger.info(
            "merged to version=%d applied=%d rejected=%d n_learned=%d",
            snapshot.version,
            n_applied,
            n_rejected,
            snapshot.n_learned,
        )

    def _publish(self, producer, snapshot: Snapshot) -> None:
        """Model topic first (workers wait for it), then the checkpoint file."""
        future = producer.send(self.settings.topics.model, key=b"global", value=snapshot.to_bytes())
        producer.flush(timeout=30)
        if future.failed() or not future.is_done:
            raise DeliveryError(
                f"model version {snapshot.version} not acknowledged: {future.exception!r}"
            )
        self._checkpoint(snapshot, force=False)

    def _checkpoint(self, snapshot: Snapshot | None, force: bool) -> None:
        """Write ``snapshot`` if the interval has passed (or ``force``) and it is new."""
        if self.store is None or snapshot is None or snapshot.version == self._checkpointed:
            return
        interval = self.settings.merge.checkpoint_interval_s
        if force or time.time() - self.checkpoint_written_at >= interval:
            self.store.write(snapshot)
            self.checkpoint_written_at = time.time()
            self._checkpointed = snapshot.version
