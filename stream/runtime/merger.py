"""The merger: folds contributions into the global model, publishes, checkpoints.

One merger is active at a time: every merger process joins the merger group
and subscribes to the single-partition contributions topic, so Kafka gives
that partition to one member; the others stand by and take over when it dies.

On taking over, the merger starts from the newest snapshot it can find (model
topic or checkpoint directory) and reads contributions from the offset that
snapshot records, not from a committed group offset: the snapshot is the
truth about what the model has learned. Re-reading a contribution that is
already in the model is harmless, because the offset fence rejects it.

A merger that becomes active takes a new *epoch*, greater than any it can
find (model topic, checkpoint files), and publishes its starting version under
it at once. Readers (workers' feeds, a standby taking over, ``load_latest``)
order versions by (epoch, version): a merger that lost its partition but still
runs (a zombie, e.g. paused past its session timeout) publishes under its old
epoch, and nobody takes that for newer. The merger also checks that it still
holds the contributions partition before each publish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from stream.config import MergerSettings
from stream.errors import CheckpointError
from stream.faults import CrashPoints
from stream.kafka import connect
from stream.kafka.topics import ensure_internal, known_topic_id
from stream.kafka.transport import Consumer, Producer, Reader, Record
from stream.model.merge import copy_state, ftrl_params
from stream.observe.metrics import MergerCollector, serve
from stream.sync.chain import Cadence, delta_key, delta_of
from stream.sync.checkpoint import CheckpointStore, Snapshot
from stream.sync.feed import published_model
from stream.sync.fence import (
    TOPIC_ROLES,
    Changes,
    check_compatible,
    current_topic_ids,
    initial_snapshot,
    merge_records,
    model_key,
    next_epoch,
    rebind_topics,
)
from stream.sync.globalmodel import pipeline_of

logger = logging.getLogger(__name__)

# On stop, how long to keep merging the contributions of workers stopping too
# (a worker sends its last one within about a second of its SIGTERM). Short:
# `merge` must exit within 10 s of SIGTERM, and with workers running elsewhere
# contributions never pause; what is left is merged by the next active merger.
DRAIN_TIMEOUT_S = 3.0
# A checkpoint write that failed is not tried again sooner: each try writes a
# whole model, and a full disk should not cost that on every version.
CHECKPOINT_RETRY_S = 5.0


# How long to wait for the features topic's high watermark to reach a
# contribution's range end before taking the range as impossible. A worker read
# the events it contributes, so the broker has them; only the fetch response
# that reports it may lag (a fetch waits at most ~100 ms at the end of a partition).
HIGHWATER_WAIT_S = 2.0


class FeatureWatermarks:
    """The features topic's high watermarks, for checking contributions' ranges.

    From fetch responses (:meth:`Reader.highwater`), not ListOffsets, which the
    embedded broker answers wrongly when the last batch holds several records.
    The reader sits at the end of every partition, so its fetches carry little
    data; it is read again only when a range ends past the high watermark last
    seen (or names a partition not seen yet). A burst of impossible ranges costs
    one wait of :data:`HIGHWATER_WAIT_S`, not one each: after a wait times out,
    the next ones within that time get a single read.
    """

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._partitions: list[int] = []
        self._highs: dict[int, int] = {}
        self._timed_out_at = -HIGHWATER_WAIT_S

    def highwater(self, partition: int, at_least: int) -> int | None:
        if self._highs.get(partition, -1) >= at_least:
            return self._highs[partition]
        recently = time.monotonic() - self._timed_out_at < HIGHWATER_WAIT_S
        deadline = time.monotonic() + (0.0 if recently else HIGHWATER_WAIT_S)
        while True:
            if partition not in self._refresh():
                return None
            if self._highs.get(partition, -1) >= at_least:
                break
            if time.monotonic() >= deadline:
                if not recently:
                    self._timed_out_at = time.monotonic()
                break
        return self._highs.get(partition, 0)

    def _refresh(self) -> list[int]:
        partitions = self._reader.partitions()
        if partitions != self._partitions:
            self._reader.assign({p: self._reader.end_offset(p) for p in partitions})
            self._partitions = partitions
        if partitions:
            self._reader.poll(100, 10_000)  # what it returns is not needed
        for p in partitions:
            high = self._reader.highwater(p)
            if high is not None:
                self._highs[p] = high
        return partitions

    def close(self) -> None:
        self._reader.close()


class Merger:
    """``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        settings: MergerSettings,
        name: str,
        *,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        readers: Callable[[str, str], Reader] | None = None,
    ) -> None:
        """``consumer`` (of the contributions topic), ``producer`` and ``readers``
        (a reader of a topic for a client id): made from the settings when None;
        tests pass in-memory ones."""
        self.settings = settings
        self.name = name
        self.snapshot: Snapshot | None = None
        self._crash = CrashPoints(settings.crash_at)
        self.store = (
            CheckpointStore(
                settings.merge.checkpoint_dir, settings.merge.checkpoint_keep, self._crash
            )
            if settings.merge.checkpoint_dir
            else None
        )
        self._ftrl = ftrl_params(settings.model)
        # When a version goes out as a full snapshot besides its delta.
        self._cadence = Cadence(settings.merge.snapshot_every_versions)
        self._consumer, self._producer = consumer, producer
        self._readers = readers
        self._stop = threading.Event()
        self.active = False
        self.n_applied = 0
        self.n_rejected = 0
        # Contributions skipped as malformed or impossible.
        self.n_invalid = 0
        # Bumped by every rebalance callback: records polled before one are stale.
        self._rebalances = 0
        self._watermarks: FeatureWatermarks | None = None
        # How often the supervisor restarted this merger before (set by it).
        self.restarts = 0
        self.checkpoint_written_at = 0.0
        self._checkpointed: tuple[int, int] | None = None
        self.checkpoint_failures = 0
        self._checkpoint_failing = False
        self._checkpoint_retry_at = 0.0

    def stop(self) -> None:
        self._stop.set()

    def latest_known(self) -> Snapshot:
        """The version to continue from, under a new epoch: the newest (by epoch,
        then version) of the model topic's and this pipeline's checkpoints.

        Topic ids the chosen version records are asked of the broker until it
        reports them (an unreported id is never taken for a recreated topic).
        """
        s = self.settings
        published = published_model(
            s.kafka,
            s.topics,
            self.name,
            client=s.client,
            reader=self._readers(s.topics.model, f"{self.name}-feed") if self._readers else None,
        )
        pipeline = pipeline_of(s.kafka, s.topics)
        ids = current_topic_ids(s.kafka, s.topics)
        if self.store is not None:
            self.store = self.store.scoped(pipeline)
        stored = self.store.latest(ids.get("features")) if self.store else None
        candidates = [c for c in (published, stored) if c is not None]
        best = max(candidates, key=lambda c: c.order) if candidates else initial_snapshot(s.model)
        check_compatible(best, s.model)
        recorded = [r for r in TOPIC_ROLES if known_topic_id(best.topic_ids.get(r)) is not None]
        if any(role not in ids for role in recorded):
            ids = current_topic_ids(s.kafka, s.topics, required=recorded)
        rebound = rebind_topics(best, ids)
        epoch = next_epoch(c.epoch for c in (best, *candidates))
        # The merger folds contributions into this state in place from now on:
        # its own copy, made once per takeover.
        return replace(
            rebound,
            state=copy_state(rebound.state),
            epoch=epoch,
            created_at=time.time(),
            pipeline=pipeline,
        )

    def run(self) -> None:
        s = self.settings
        ensure_internal(s.kafka, s.topics)
        consumer = self._consumer or connect.consumer(
            s.client,
            s.kafka,
            s.topics.contributions,
            self.name,
            group_id=s.topics.merger_group,
            timeouts=s.group,
            max_poll_records=5000,
        )
        # gzip: a model record is mostly feature names, which compress well.
        producer = self._producer or connect.producer(
            s.client, s.kafka, self.name, linger_ms=0, compression="gzip"
        )
        self._consumer, self._producer = consumer, producer
        readers = self._readers or partial(connect.reader, s.client, s.kafka)
        self._watermarks = FeatureWatermarks(readers(s.topics.features, f"{self.name}-watermarks"))
        if s.metrics_port:
            serve(
                s.metrics_port,
                MergerCollector(self, lambda: self.checkpoint_written_at),
                f"merger={self.name}",
            )
        try:
            consumer.subscribe(self._on_assigned, self._on_revoked, self._on_lost)
            logger.info("merger started merger=%s group=%s", self.name, s.topics.merger_group)
            while not self._stop.is_set():
                self._poll_and_merge()
            # Workers stopping at the same moment send their last contributions
            # now: merge until the topic has been quiet for a moment.
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while self.active and time.monotonic() < deadline:
                if not self._poll_and_merge(timeout_ms=1000):
                    break
            if self.active:
                self._checkpoint(self.snapshot, force=True)
        finally:
            producer.close(10)
            consumer.close()
            self._watermarks.close()
            logger.info("merger stopped merger=%s", self.name)

    # -- the merger group: one member holds the contributions partition --------

    def _on_assigned(self, assigned: list[int]) -> dict[int, int | None] | None:
        self._rebalances += 1
        if 0 not in assigned:
            return None
        self.snapshot = self.latest_known()
        self.active = True
        logger.info(
            "merger active merger=%s epoch=%d version=%d n_learned=%d contributions_offset=%d",
            self.name,
            self.snapshot.epoch,
            self.snapshot.version,
            self.snapshot.n_learned,
            self.snapshot.contributions_offset,
        )
        # At once: from now on, a zombie's versions are older than this one.
        self._publish(self.snapshot)
        return {0: self.snapshot.contributions_offset}

    def _on_revoked(self, revoked: list[int]) -> None:
        self._rebalances += 1
        if revoked and self.active:
            self._checkpoint(self.snapshot, force=True)
            logger.info("merger standing by merger=%s", self.name)
        self.active = False

    def _on_lost(self, lost: list[int]) -> None:
        """Another merger may be active already: stop publishing, write nothing."""
        self._rebalances += 1
        if lost and self.active:
            logger.warning("merger lost its partition; standing by merger=%s", self.name)
        self.active = False

    def _poll_and_merge(self, timeout_ms: int = 200) -> bool:
        consumer = self._consumer
        rebalances = self._rebalances
        records = consumer.poll_batch(timeout_ms, 5000).get(0, [])
        if records:
            # Gather what else arrives within the linger: one version for many
            # contributions (each version is a full model on the model topic).
            deadline = time.monotonic() + self.settings.merge.version_linger_s
            while time.monotonic() < deadline and self._rebalances == rebalances:
                records.extend(consumer.poll_batch(20, 5000).get(0, []))
        if self._rebalances != rebalances:
            return self._drop_stale(records)
        if records and self.active and self.snapshot is not None:
            if 0 not in consumer.assignment():
                # Lost the partition without a revocation callback yet: a zombie.
                logger.warning("merger lost its partition; not publishing merger=%s", self.name)
                self.active = False
                return False
            self._merge(records)
            self._crash.hit("merger.after_checkpoint")
            if not consumer.commit({0: records[-1].offset + 1}):
                # Harmless: the snapshot, not the group offset, says where to resume.
                logger.warning("merger group offset not committed merger=%s", self.name)
            return True
        return False

    def _drop_stale(self, records: list[Record]) -> bool:
        """A rebalance happened during the polls: drop what they returned.

        A takeover seeks to its snapshot's contributions offset, so the records
        polled before it would come again, and be merged twice in one version.
        The fence would keep that from learning anything twice (the second copy
        starts where the first left the model, not where the model was), but it
        would record the second copy as *rejected*, and its worker, seeing its
        own applied contribution rejected, would throw away its un-merged
        learning and re-learn it; and ``contributions_offset`` would come from
        whichever copy was last. Records polled after the seek may sit in the
        same list, indistinguishable, so all are dropped and, if this merger is
        still the active one, read again from the snapshot's offset.
        """
        if self.active and self.snapshot is not None and 0 in self._consumer.assignment():
            self._consumer.seek({0: self.snapshot.contributions_offset})
        if records:
            logger.info(
                "rebalance while polling: %d records dropped, read again merger=%s active=%s",
                len(records),
                self.name,
                self.active,
            )
        return bool(records)

    def _merge(self, records: list[Record]) -> None:
        """Fold the records into the model IN PLACE (time proportional to them,
        not to the model) and publish the version.

        Once the fold has begun, ``self.snapshot``'s state is the new version's:
        if anything fails before the version is published, this merger no
        longer holds a version it published, so it stands down (nothing more is
        published or checkpointed from it) and the error propagates; a takeover
        starts again from the model topic or a checkpoint."""
        assert self.snapshot is not None
        try:
            snapshot, n_applied, n_rejected, n_invalid, changes = merge_records(
                self.snapshot,
                records,
                self.settings.merge.rule,
                self._ftrl,
                self._watermarks,
                in_place=True,
            )
            self._crash.hit("merger.after_merge_before_publish")
            self._publish_version(snapshot, changes)
        except BaseException:
            self.snapshot, self.active = None, False
            raise
        self.snapshot = snapshot
        self.n_applied += n_applied
        self.n_rejected += n_rejected
        self.n_invalid += n_invalid
        logger.info(
            "merged to version=%d epoch=%d applied=%d rejected=%d invalid=%d n_learned=%d "
            "changed=%d",
            snapshot.version,
            snapshot.epoch,
            n_applied,
            n_rejected,
            n_invalid,
            snapshot.n_learned,
            len(changes.keys),
        )

    def _publish_version(self, snapshot: Snapshot, changes: Changes) -> None:
        """A merged version: as a delta over the one before (the keys it changed,
        :mod:`stream.sync.chain`), then, when the cadence says so, as a full
        snapshot too (same version, after the delta: a reader following the
        topic takes the delta and skips the snapshot by its header). Then the
        checkpoint file, at its interval."""
        s = self.settings
        delta = delta_of(snapshot, snapshot.version - 1, changes)
        payload = delta.to_bytes()
        key = delta_key(snapshot.epoch, snapshot.version, self._cadence.every_versions)
        self._producer.send(s.topics.model, payload, key, None, 0)
        self._producer.flush(30)
        self._cadence.delta_published(len(payload))
        if self._cadence.snapshot_due():
            self._crash.hit("merger.after_delta_before_snapshot")
            self._publish(snapshot)
            return
        self._crash.hit("merger.after_publish_before_checkpoint")
        self._checkpoint(snapshot, force=False)

    def _publish(self, snapshot: Snapshot) -> None:
        """The full snapshot: model topic first (workers wait for it), then the
        checkpoint file.

        Each record is its own acknowledged request (raises DeliveryError if
        not acknowledged), so ListOffsets on the model topic is exact on every broker.
        Keyed by epoch (:func:`model_key`), so compaction keeps each merger's newest.
        """
        payload = snapshot.to_bytes()
        self._producer.send(self.settings.topics.model, payload, model_key(snapshot), None, 0)
        self._producer.flush(30)
        self._cadence.snapshot_published(len(payload))
        self._crash.hit("merger.after_publish_before_checkpoint")
        self._checkpoint(snapshot, force=False)

    def _checkpoint(self, snapshot: Snapshot | None, force: bool) -> None:
        """Write ``snapshot`` if the interval has passed (or ``force``) and it is new.

        A directory that cannot be written (permissions, a full disk, a path
        under a file) does not stop the merger: the model topic has every
        version, files only matter when the broker loses it. The failure is
        said once per episode, counted (``checkpoint_failures``), retried at
        most every ``CHECKPOINT_RETRY_S`` (or the interval), and its end is said too.
        """
        if self.store is None or snapshot is None or snapshot.order == self._checkpointed:
            return
        now = time.time()
        interval = self.settings.merge.checkpoint_interval_s
        if not force and (
            now - self.checkpoint_written_at < interval or now < self._checkpoint_retry_at
        ):
            return
        try:
            self.store.write(snapshot)
        except (OSError, CheckpointError) as exc:
            self.checkpoint_failures += 1
            self._checkpoint_retry_at = now + max(interval, CHECKPOINT_RETRY_S)
            if self._checkpoint_failing:
                logger.debug("checkpoint still not written version=%d: %s", snapshot.version, exc)
            else:
                self._checkpoint_failing = True
                logger.error(
                    "checkpoint not written; the merger keeps publishing versions on the "
                    "model topic and retries every %.0f s dir=%s version=%d error=%s",
                    max(interval, CHECKPOINT_RETRY_S),
                    self.store.directory,
                    snapshot.version,
                    exc,
                )
            return
        if self._checkpoint_failing:
            self._checkpoint_failing = False
            logger.warning(
                "checkpoints written again dir=%s version=%d failures=%d",
                self.store.directory,
                snapshot.version,
                self.checkpoint_failures,
            )
        self.checkpoint_written_at = time.time()
        self._checkpointed = snapshot.order
