"""The worker: consume events, predict, publish, learn; commit after acknowledgement.

For each polled batch, in order:

1. decode every record; a bad one becomes a dead-letter record (never dropped);
2. score the event, produce its prediction, then learn from its label if it
   has one, so a prediction never saw its own label;
3. flush the producer and check that every prediction and dead letter was
   acknowledged by the broker;
4. commit ``offset + 1`` of the batch's last record per partition.

A crash anywhere before step 4 leaves the offsets where they were, so the
batch is read again: every event gets at least one prediction.

With merging on (see :mod:`stream.merger`), what the model has *learned* is
tracked apart from what was *predicted*: the global model records, per
partition, the offset up to which it learned. A worker that is assigned a
partition starts reading at that offset, not at the committed one; events
between the two were already predicted, so they are learned again ("replayed")
without publishing a second prediction. Learning is thus exactly once, driven
by the global model's offsets; predictions are at least once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream import clients
from stream.checkpoint import Snapshot
from stream.codec import decode_event, encode
from stream.config import WorkerSettings
from stream.contribution import Contribution
from stream.deadletter import DeadLetterLog, headers
from stream.errors import BadEvent, DeliveryError
from stream.feed import ModelFeed
from stream.merge import add, subtract
from stream.merger import check_compatible
from stream.model import ModelState, OnlineModel

logger = logging.getLogger(__name__)

AssignmentCallback = Callable[[str, list[int]], None]


def _fmt(partitions: set[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(partitions)) or "-"


@dataclass(frozen=True)
class _Pending:
    """A contribution sent but not yet seen in a global version."""

    seq: int
    delta: ModelState


class Worker:
    """One member of the consumer group. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        settings: WorkerSettings,
        name: str,
        model: OnlineModel | None = None,
        clock: Callable[[], float] = time.time,
        on_assign: AssignmentCallback | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.model = model if model is not None else OnlineModel(settings.model)
        self.model_version = 0
        self.dead_letters = DeadLetterLog()
        self.n_scored = 0
        self.n_learned = 0
        self.n_replayed = 0
        self._stop = threading.Event()
        self._clock = clock
        self._on_assign = on_assign
        # Merging state (used only when settings.merge.enabled).
        self._seq = 0
        self._pending: list[_Pending] = []
        self._cut_state = self.model.state()
        self._segment_start: dict[int, int] = {}
        self._position: dict[int, int] = {}
        self._published_upto: dict[int, int] = {}
        self._labeled_since_cut = 0
        self._last_cut = time.monotonic()
        self._feed: ModelFeed | None = None
        self._to_take_over: set[TopicPartition] = set()

    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return."""
        self._stop.set()

    @property
    def merging(self) -> bool:
        return self.settings.merge.enabled

    def run(self) -> None:
        s = self.settings
        consumer = clients.consumer(
            s.kafka,
            client_id=self.name,
            group_id=s.topics.group_id,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_poll_records,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        producer = clients.producer(s.kafka, client_id=self.name)
        self._consumer, self._producer = consumer, producer
        try:
            if self.merging:
                self._feed = ModelFeed(s.kafka, s.topics, self.name)
                initial = self._feed.initial()
                if initial is not None:
                    self._rebase_all(initial)
            consumer.subscribe([s.topics.features], listener=_Rebalance(self))
            logger.info(
                "worker started worker=%s group=%s topic=%s merging=%s model_version=%d",
                self.name,
                s.topics.group_id,
                s.topics.features,
                self.merging,
                self.model_version,
            )
            last_stats = time.monotonic()
            # A contribution may only cover events whose predictions are acknowledged,
            # which happens per batch: batches no larger than the merge period.
            max_records = s.max_poll_records
            if self.merging:
                max_records = min(max_records, s.merge.every_events)
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=max_records)
                if self._to_take_over:
                    self._take_over()
                if batch:
                    self._process(batch)
                if self.merging:
                    self._merge_step(idle=not batch)
                if time.monotonic() - last_stats >= s.stats_interval_s:
                    self._log_stats()
                    last_stats = time.monotonic()
            if self.merging:
                self._cut()
        finally:
            self._log_stats()
            try:
                producer.flush(timeout=s.delivery_timeout_s)
            finally:
                producer.close(timeout=s.delivery_timeout_s)
                consumer.close()
                if self._feed is not None:
                    self._feed.close()
            logger.info("worker stopped worker=%s", self.name)

    # -- the hot path -------------------------------------------------------

    def _process(self, batch: dict) -> None:
        s = self.settings
        producer = self._producer
        predictions_topic = s.topics.predictions
        dead_letter_topic = s.topics.dead_letter
        output_encoding = s.output_encoding
        max_bytes = s.max_event_bytes
        model = self.model
        clock = self._clock
        published_upto = self._published_upto
        pending = []
        offsets = {}
        scored = learned = replayed = 0
        for tp, records in batch.items():
            replay_below = published_upto.get(tp.partition, -1)
            for record in records:
                # Already predicted (and dead-lettered) before: learn only.
                replay = record.offset < replay_below
                try:
                    event = decode_event(record.value, max_bytes)
                except BadEvent as exc:
                    if replay:
                        continue
                    self.dead_letters.record(exc, record.topic, record.partition, record.offset)
                    pending.append(
                        producer.send(
                            dead_letter_topic,
                            key=record.key,
                            value=record.value,
                            headers=headers(
                                exc, record.topic, record.partition, record.offset, self.name
                            ),
                        )
                    )
                    continue
                if replay:
                    replayed += 1
                else:
                    p = model.predict_proba(event.x)
                    prediction = {
                        "id": event.id,
                        "p": p,
                        "y_pred": 1 if p >= 0.5 else 0,
                        "model_version": self.model_version,
                        "worker": self.name,
                        "partition": record.partition,
                        "offset": record.offset,
                        "ts_event": event.ts if event.ts is not None else record.timestamp / 1000.0,
                        "ts_record": record.timestamp / 1000.0,
                        "ts_scored": clock(),
                    }
                    if event.y is not None:
                        prediction["y"] = 1 if event.y else 0
                    encoding = event.encoding if output_encoding == "same" else output_encoding
                    value = encode(prediction, encoding)
                    pending.append(producer.send(predictions_topic, key=record.key, value=value))
                    scored += 1
                if event.y is not None:
                    model.learn(event.x, event.y)
                    learned += 1
            end = records[-1].offset + 1
            offsets[tp] = OffsetAndMetadata(end, "", -1)
            self._position[tp.partition] = end
            if end > replay_below:
                published_upto[tp.partition] = end
        self._await_delivery(pending)
        self.n_scored += scored
        self.n_learned += learned
        self.n_replayed += replayed
        self._labeled_since_cut += learned
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we processed: the new owner re-reads these
            # events, so their predictions are emitted again (at-least-once).
            logger.warning("commit failed after rebalance worker=%s error=%s", self.name, exc)
        logger.debug(
            "batch committed worker=%s records=%d replayed=%d offsets=%s",
            self.name,
            sum(len(r) for r in batch.values()),
            replayed,
            {f"{tp.partition}": om.offset for tp, om in offsets.items()},
        )

    def _await_delivery(self, pending: list) -> None:
        self._producer.flush(timeout=self.settings.delivery_timeout_s)
        for future in pending:
            if not future.is_done:
                raise DeliveryError(
                    f"record not acknowledged within {self.settings.delivery_timeout_s}s"
                )
            if future.failed():
                exc = future.exception
                raise DeliveryError(f"broker rejected a record: {exc!r}") from (
                    exc if isinstance(exc, BaseException) else None
                )

    # -- merging --------------------------------------------------------------

    def _merge_step(self, idle: bool) -> None:
        m = self.settings.merge
        due = self._labeled_since_cut >= m.every_events or (
            time.monotonic() - self._last_cut >= m.interval_s and self._has_open_segment()
        )
        if due:
            self._cut()
        elif idle and not self._has_open_segment():
            self._sync()

    def _has_open_segment(self) -> bool:
        return self._labeled_since_cut > 0 or any(
            self._position[p] > self._segment_start.get(p, self._position[p])
            for p in self._position
        )

    def _cut(self, sync: bool = True) -> None:
        """Send what was learned since the last cut as a contribution, then sync."""
        self._last_cut = time.monotonic()
        ranges = {
            p: (self._segment_start[p], end)
            for p, end in self._position.items()
            if p in self._segment_start and end > self._segment_start[p]
        }
        if not ranges:
            return
        state = self.model.state()
        delta = subtract(state, self._cut_state)
        contribution = Contribution(
            worker=self.name,
            seq=self._seq,
            base_version=self.model_version,
            ranges=ranges,
            delta=delta,
            created_at=time.time(),
        )
        future = self._producer.send(
            self.settings.topics.contributions,
            key=self.name.encode(),
            value=contribution.to_bytes(),
        )
        self._await_delivery([future])
        self._pending.append(_Pending(self._seq, delta))
        self._seq += 1
        self._cut_state = state
        for p, (_, end) in ranges.items():
            self._segment_start[p] = end
        self._labeled_since_cut = 0
        logger.debug(
            "contribution sent worker=%s seq=%d ranges=%s n=%d",
            self.name,
            contribution.seq,
            ranges,
            delta.n_learned,
        )
        if sync:
            self._sync()

    def _sync(self) -> None:
        """Take a newer global version, carrying our not-yet-merged learning over.

        Called only between segments (nothing learned since the last cut), so
        the local model is exactly the global one plus the pending deltas.
        """
        assert self._feed is not None
        latest = self._feed.poll()
        if latest is None or latest.version <= self.model_version:
            return
        if self._pending and latest.rejected.get(self.name, -1) >= self._pending[0].seq:
            logger.warning(
                "contribution rejected by merger worker=%s seq>=%d; re-learning from version=%d",
                self.name,
                self._pending[0].seq,
                latest.version,
            )
            self._rebase_all(latest)
            self._seek_to_model(latest, set(self._consumer.assignment()))
            return
        applied = latest.applied.get(self.name, -1)
        self._pending = [c for c in self._pending if c.seq > applied]
        state = latest.state
        for contribution in self._pending:
            state = add(state, contribution.delta)
        self.model.load_state(state)
        self._cut_state = state
        self.model_version = latest.version

    def _rebase_all(self, snapshot: Snapshot) -> None:
        """Become exactly the global model; un-merged learning is dropped (the
        partitions are then re-read from the model's offsets)."""
        check_compatible(snapshot, self.settings.model)
        self.model.load_state(snapshot.state)
        self._cut_state = snapshot.state
        self._pending = []
        self._labeled_since_cut = 0
        self.model_version = snapshot.version

    def _seek_to_model(self, snapshot: Snapshot, partitions: set[TopicPartition]) -> None:
        """Read each partition from where the global model stopped learning."""
        consumer = self._consumer
        unknown = [tp for tp in partitions if tp.partition not in snapshot.offsets]
        if unknown:
            consumer.seek_to_beginning(*unknown)
        for tp in partitions:
            if tp.partition in snapshot.offsets:
                consumer.seek(tp, snapshot.offsets[tp.partition])
            start = consumer.position(tp)
            self._segment_start[tp.partition] = start
            self._position[tp.partition] = start
        logger.info(
            "learning resumes worker=%s version=%d from=%s",
            self.name,
            snapshot.version,
            {tp.partition: self._position[tp.partition] for tp in sorted(partitions)},
        )

    # -- rebalances -----------------------------------------------------------

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Hand over cleanly: contribute what was learned (the batch is committed)."""
        logger.info("partitions revoked worker=%s partitions=%s", self.name, _fmt(revoked))
        if self.merging and revoked:
            # No sync here: a resync would seek, and this runs on the consumer's
            # IO thread, where its blocking calls are not allowed.
            self._cut(sync=False)
        for tp in revoked:
            self._forget(tp.partition)
        self._to_take_over -= set(revoked)

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """Another member may own these already: contributing would race it, so
        the un-merged learning is dropped and the next assignment re-learns it."""
        logger.warning("partitions lost worker=%s partitions=%s", self.name, _fmt(lost))
        if self.merging and self._feed is not None:
            snapshot = self._feed.poll()
            if snapshot is not None:
                self._rebase_all(snapshot)
            else:
                self.model.load_state(self._cut_state)
        for tp in lost:
            self._forget(tp.partition)
        self._to_take_over -= set(lost)

    def _forget(self, partition: int) -> None:
        for positions in (self._segment_start, self._position, self._published_upto):
            positions.pop(partition, None)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("partitions assigned worker=%s partitions=%s", self.name, _fmt(assigned))
        if self.merging and assigned:
            # Taking over needs blocking calls (committed offsets, positions), not
            # allowed on the IO thread running this: hold the partitions until the
            # main loop has done it.
            self._consumer.pause(*assigned)
            self._to_take_over |= set(assigned)
        if self._on_assign is not None:
            self._on_assign(self.name, sorted(tp.partition for tp in assigned))

    def _take_over(self) -> None:
        """Start learning the newly assigned partitions where the global model stopped."""
        assigned, self._to_take_over = self._to_take_over, set()
        feed = self._feed
        assert feed is not None
        target = feed.contributions_end()
        if not feed.wait_caught_up(target, self.settings.merge.catch_up_timeout_s):
            logger.warning(
                "merger has not caught up worker=%s contributions_end=%d; continuing at version=%s",
                self.name,
                target,
                feed.latest.version if feed.latest else None,
            )
        snapshot = feed.latest
        if snapshot is not None:
            self._rebase_all(snapshot)
        else:
            self._rebase_all(Snapshot(version=0, state=ModelState()))
        committed = {tp: self._consumer.committed(tp) for tp in assigned}
        for tp, offset in committed.items():
            if offset is not None:
                self._published_upto[tp.partition] = offset
        self._seek_to_model(snapshot or Snapshot(version=0, state=ModelState()), assigned)
        self._consumer.resume(*assigned)

    def _log_stats(self) -> None:
        logger.info(
            "worker stats worker=%s scored=%d learned=%d replayed=%d dead_lettered=%d "
            "by_reason=%s model_version=%d",
            self.name,
            self.n_scored,
            self.n_learned,
            self.n_replayed,
            self.dead_letters.total,
            dict(self.dead_letters.by_reason),
            self.model_version,
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.worker.on_lost(lost)


__all__ = ["KafkaError", "Worker"]
