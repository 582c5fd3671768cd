"""The worker: consume events, predict, publish, learn; commit after acknowledgement.

For each polled batch, in order:

1. decode every record; a bad one becomes a dead-letter record (never dropped);
2. score the event, produce its prediction, then learn from its label if it
   has one, so a prediction never saw its own label;
3. flush the producer and check that every prediction and dead letter was
   acknowledged by the broker; only then does the ledger
   (:class:`~stream.sync.ledger.Ledger`) count the batch as acknowledged;
4. commit ``offset + 1`` of the batch's last record per partition.

A crash anywhere before step 4 leaves the offsets where they were, so the
batch is read again: every event gets at least one prediction. A failed flush
taints the ledger: the local model then holds learning that no contribution
may describe, so none is sent any more (not even at revocation) and the worker
fails; its successor re-learns from the global model's offsets. A commit the
group refuses (it rebalanced) is logged and counted: the next owner predicts
those events again (at least once), and learns them only if the global model
has not (the offsets of the model, not of the group, drive learning).

With merging on (see :mod:`stream.runtime.merger`), what the model has *learned* is
tracked apart from what was *predicted*: the global model records, per
partition, the offset up to which it learned. A worker that is assigned a
partition starts reading at that offset, not at the committed one; events
between the two were already predicted, so they are learned again ("replayed")
without publishing a second prediction. Learning is thus exactly once, driven
by the global model's offsets; predictions are at least once.

The protocol's side of this (cut, sync, rebase, take-over: the local model as
a global version plus pending contributions) is :class:`~stream.sync.replica.Replica`;
the worker calls it between batches and from its rebalance callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from stream.config import WorkerSettings
from stream.errors import BadEvent, DeliveryError, NumericError
from stream.events.codec import PROCESSING_ERROR, decode_event, encode, prediction_record
from stream.events.deadletter import DeadLetterLog, headers
from stream.events.hashing import Hasher, featurizer
from stream.faults import CrashPoints
from stream.kafka import connect
from stream.kafka.topics import ensure_pipeline
from stream.kafka.transport import Batch, Consumer, Producer, Record
from stream.model.factory import build_model
from stream.model.online import OnlineModel
from stream.observe.metrics import WorkerCollector, serve
from stream.observe.monitor import Monitor
from stream.runtime.identity import life_id, new_incarnation
from stream.runtime.isolation import whole_or_each
from stream.sync.feed import ModelFeed
from stream.sync.ledger import Ledger
from stream.sync.replica import Replica

if TYPE_CHECKING:
    from stream.events.batch import DecodedBatch
    from stream.model.kernel import KernelModel

logger = logging.getLogger(__name__)

AssignmentCallback = Callable[[str, list[int]], None]

# The stage named in the dead letter of an event whose prediction could not be
# encoded or sent: the event itself was valid, and it is learned.
PUBLISHING = "publishing the prediction"


def _bad(exc: Exception, stage: str) -> BadEvent:
    """The dead-letter reason for what one record made raise."""
    if isinstance(exc, BadEvent):
        return exc
    logger.debug("record failed in %s", stage, exc_info=exc)
    return BadEvent(PROCESSING_ERROR, f"{stage} raised {exc!r:.300}")


def _fmt(partitions: list[int]) -> str:
    return ",".join(str(p) for p in partitions) or "-"


@dataclass(slots=True)
class _Tally:
    """What one batch did, summed over its partitions."""

    scored: int = 0
    learned: int = 0
    replayed: int = 0
    refused: int = 0
    labeled: list[tuple[bool, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, scored: int, learned: int, replayed: int, refused: int) -> None:
        self.scored += scored
        self.learned += learned
        self.replayed += replayed
        self.refused += refused


@dataclass(frozen=True, slots=True)
class _Scored:
    """What the batch decoder and the kernel made of some records of a partition."""

    decoded: DecodedBatch
    probabilities: list[float]
    learned: int
    refused: int
    replayed: int


def _subset(decoded, keep: list[int]):
    """The events ``keep`` (indices, in order) of a DecodedBatch, and all its errors."""
    from stream.events.batch import DecodedBatch

    starts = decoded.offsets[keep]
    sizes = decoded.offsets[[i + 1 for i in keep]] - starts
    offsets = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1])
    return DecodedBatch(
        positions=[decoded.positions[i] for i in keep],
        ids=[decoded.ids[i] for i in keep],
        labels=decoded.labels[keep],
        ts=[decoded.ts[i] for i in keep],
        encodings=[decoded.encodings[i] for i in keep],
        columns=decoded.columns[index],
        values=decoded.values[index],
        offsets=offsets,
        errors=decoded.errors,
    )


class Worker:
    """One member of the consumer group. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        settings: WorkerSettings,
        name: str,
        model: OnlineModel | KernelModel | None = None,
        clock: Callable[[], float] = time.time,
        on_assign: AssignmentCallback | None = None,
        incarnation: str | None = None,
        *,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        feed: ModelFeed | None = None,
    ) -> None:
        """``incarnation``: this process life's (see :mod:`stream.runtime.identity`);
        a fresh one if None, so every Worker object is a life of its own.
        ``consumer``, ``producer`` and ``feed`` (of the model topic): made from
        the settings in :meth:`run` when None; tests pass in-memory ones."""
        self.settings = settings
        self.name = name
        # What the protocol knows this life by: contributions carry it, the
        # merger's applied/rejected seqs are keyed by it.
        self.life = life_id(name, incarnation or new_incarnation())
        model = model if model is not None else self._new_model()
        # The contract's features to the model's: slots with --hash-bits, else as they are.
        self.featurize = featurizer(settings.model.hash_bits)
        self._decoder = None  # the BatchDecoder of the compiled path, per model
        self._decoder_model = None
        self.dead_letters = DeadLetterLog()
        self.n_scored = 0
        self.n_learned = 0
        self.n_replayed = 0
        self.n_commit_failures = 0
        # Labeled events whose learning step was refused by the model's numeric guard.
        self.n_refused = 0
        # How often the supervisor restarted this worker before (set by it).
        self.restarts = 0
        # When the first batch started and the last one ended (monotonic seconds):
        # how benchmarks time a drain without the group join in it.
        self.busy_since = 0.0
        self.busy_until = 0.0
        self.monitor = Monitor(name, settings.quality_window, settings.drift_detector)
        self.lag: dict[int, int] = {}
        self._stop = threading.Event()
        self._clock = clock
        self._on_assign = on_assign
        self._crash = CrashPoints(settings.crash_at)
        # Per assigned partition: predicted, acknowledged, learned, contributed.
        self.ledger = Ledger()
        self._consumer: Consumer | None = consumer
        self._producer: Producer | None = producer
        self._feed: ModelFeed | None = feed
        # The model and the protocol's side of it: the global version it is
        # based on, contributions pending (used only when merging).
        self.replica = Replica(
            settings,
            name,
            self.life,
            model,
            self.ledger,
            self._crash,
            consumer=consumer,
            producer=producer,
            feed=feed,
        )

    def _new_model(self) -> OnlineModel | KernelModel:
        """The compiled kernel when it covers the settings (same results as river)."""
        s = self.settings
        return build_model(s.model, s.model_impl, s.max_abs_weight)

    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return."""
        self._stop.set()

    @property
    def model(self) -> OnlineModel | KernelModel:
        """The local model (the replica's: a global version plus pending learning)."""
        return self.replica.model

    @model.setter
    def model(self, model: OnlineModel | KernelModel) -> None:
        self.replica.model = model

    @property
    def model_version(self) -> int:
        """The global version the local model is based on."""
        return self.replica.version

    @property
    def model_created_at(self) -> float:
        return self.replica.created_at

    @property
    def merging(self) -> bool:
        return self.settings.merge.enabled

    @property
    def hash_collisions_in_events(self) -> int:
        """Features that shared a hashed slot with another of the same event."""
        return self.featurize.in_event_collisions if isinstance(self.featurize, Hasher) else 0

    @property
    def model_records_invalid(self) -> int:
        """Model topic records its feed skipped as malformed or impossible."""
        return self._feed.n_invalid if self._feed is not None else 0

    def run(self) -> None:
        s = self.settings
        # Before anything reads or writes them: missing topics are created right,
        # wrong ones refused (an auto-created multi-partition contributions topic
        # would silently lose every contribution the merger does not read).
        ensure_pipeline(s.kafka, s.topics)
        consumer = self._consumer or connect.consumer(
            s.client,
            s.kafka,
            s.topics.features,
            self.name,
            group_id=s.topics.group_id,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_poll_records,
            timeouts=s.group,
        )
        producer = self._producer or connect.producer(s.client, s.kafka, self.name)
        self._consumer, self._producer = consumer, producer
        if s.metrics_port:
            serve(s.metrics_port, WorkerCollector(self), f"worker={self.name}")
        try:
            # A prediction goes to its event's partition number when the topics
            # match: co-partitioned, and no per-record key hashing in the client.
            self._co_partitioned = producer.partition_count(
                s.topics.predictions
            ) == producer.partition_count(s.topics.features)
            if self.merging and self._feed is None:
                self._feed = ModelFeed(s.kafka, s.topics, self.name, s.client)
            self.replica.attach(consumer, producer, self._feed)
            if self.merging:
                self.replica.start()
            self._warm_up()
            consumer.subscribe(self.on_assigned, self.on_revoked, self.on_lost)
            # What each choice became, said once: which implementation learns,
            # which detector watches the loss, how predictions are encoded.
            logger.info(
                "worker started worker=%s life=%s client=%s group=%s topic=%s merging=%s "
                "model_version=%d model_impl=%s drift_detector=%s output_encoding=%s",
                self.name,
                self.life,
                s.client,
                s.topics.group_id,
                s.topics.features,
                self.merging,
                self.model_version,
                "river" if isinstance(self.model, OnlineModel) else "kernel",
                s.drift_detector,
                s.output_encoding,
            )
            last_stats = time.monotonic()
            # A contribution may only cover events whose predictions are acknowledged,
            # which happens per batch: batches no larger than the merge period.
            max_records = s.max_poll_records
            if self.merging:
                max_records = min(max_records, s.merge.every_events)
            while not self._stop.is_set():
                batch = consumer.poll_batch(s.poll_timeout_ms, max_records)
                if batch:
                    started = time.monotonic()
                    try:
                        self._process(batch)
                    except BaseException:
                        # Part of the batch may be learned, none of it acknowledged.
                        self.ledger.taint("batch interrupted")
                        raise
                    if self.merging:
                        self.replica.step(idle=False)
                    self.busy_since = self.busy_since or started
                    self.busy_until = time.monotonic()
                    self.monitor.batch.observe_many([self.busy_until - started])
                else:
                    self._update_lag(consumer.assignment())
                    if self.merging:
                        self.replica.step(idle=True)
                if time.monotonic() - last_stats >= s.stats_interval_s:
                    self._log_stats()
                    last_stats = time.monotonic()
            if self.merging:
                self.replica.cut()
        finally:
            self._log_stats()
            try:
                producer.flush(s.delivery_timeout_s)
            finally:
                try:
                    # Before the producer: leaving the group revokes partitions,
                    # and revocation sends (and flushes) a last contribution.
                    consumer.close()
                finally:
                    producer.close(s.delivery_timeout_s)
                    if self._feed is not None:
                        self._feed.close()
            logger.info("worker stopped worker=%s", self.name)

    # -- the hot path -------------------------------------------------------

    def _process(self, batch: Batch) -> None:
        """Score, publish and learn one batch, then flush, acknowledge and commit."""
        ledger = self.ledger
        tally = _Tally()
        score = self._score_compiled if self._compiled() else self._score_records
        if self._from_latest:
            self._place(batch)
        for partition, records in batch.items():
            if partition not in ledger.partitions:
                # Revoked during this poll: the next owner reads these.
                continue
            score(partition, records, ledger.replay_below(partition), tally)
            ledger.read(partition, records[0].offset, records[-1].offset + 1)
        self._finish(batch, tally)

    @property
    def _from_latest(self) -> bool:
        """Merging with ``--from latest``: a partition nobody has placed yet is read
        from its end, so this worker must record where it began, durably, before
        a successor could need it (:meth:`_place`, :meth:`_announce`)."""
        return self.merging and self.settings.auto_offset_reset == "latest"

    def _place(self, batch: Batch) -> None:
        """Commit where reading starts, before predicting anything, in partitions
        that neither the group nor the global model place: a successor then starts
        there (and learns from there), not at the partition's end, past the
        events this worker predicted."""
        unplaced = set(self.ledger.unplaced())
        offsets = {p: records[0].offset for p, records in batch.items() if p in unplaced}
        if not offsets:
            return
        logger.info("placing where learning begins worker=%s offsets=%s", self.name, offsets)
        if self._consumer.commit(offsets):
            self.ledger.committed(offsets)

    def _score_records(
        self, partition: int, records: list[Record], replay_below: int, tally: _Tally
    ) -> None:
        """One partition's records, one at a time: the general decoder, then the model's
        ``predict_proba`` and ``learn`` per event (the path of the river model)."""
        s = self.settings
        send = self._producer.send
        predictions_topic = s.topics.predictions
        output_encoding = s.output_encoding
        limits = s.limits
        predict, learn = self.model.predict_proba, self.model.learn
        featurize = self.featurize
        clock = self._clock
        name, version = self.name, self.model_version
        co_partitioned = self._co_partitioned
        labeled, latencies = tally.labeled, tally.latencies
        scored = learned = replayed = refused = 0
        for offset, key, value, timestamp_ms in records:
            # Already predicted (and dead-lettered) before: learn only.
            replay = offset < replay_below
            # Isolation: whatever one record makes raise, it becomes a dead
            # letter and the batch goes on. An event that cannot be decoded or
            # scored is not learned; one whose prediction cannot be encoded or
            # sent is (as on the compiled path, where the kernel has learned it).
            try:
                event = decode_event(value, limits)
                y = event.y
                x = featurize(event.x)
                if not replay:
                    p = predict(x)
            except Exception as exc:
                if not replay:
                    self._dead_letter(_bad(exc, "scoring"), partition, offset, key, value)
                continue
            published = False
            if replay:
                replayed += 1
            else:
                try:
                    ts_record, now = timestamp_ms / 1000.0, clock()
                    prediction = prediction_record(
                        event.id, p, version, y, name, partition, offset, event.ts, ts_record, now
                    )
                    encoding = event.encoding if output_encoding == "same" else output_encoding
                    payload = encode(prediction, encoding)
                    send(
                        predictions_topic, payload, key, None, partition if co_partitioned else None
                    )
                except Exception as exc:
                    self._dead_letter(_bad(exc, PUBLISHING), partition, offset, key, value)
                else:
                    published = True
                    latencies.append(now - ts_record)
                    if y is not None:
                        labeled.append((y, p))
                    scored += 1
            if y is not None:
                try:
                    if learn(x, y):
                        learned += 1
                    else:
                        refused += 1
                except Exception as exc:
                    # One dead letter per record: an unpublished one has its own.
                    if published:
                        error = _bad(exc, "learning (the prediction was published)")
                        self._dead_letter(error, partition, offset, key, value)
        tally.add(scored, learned, replayed, refused)

    def _finish(self, batch: Batch, tally: _Tally) -> None:
        """Predictions (and dead letters) acknowledged, then offsets committed."""
        s, ledger = self.settings, self.ledger
        self._crash.hit("worker.before_flush")
        try:
            self._producer.flush(s.delivery_timeout_s)
        except DeliveryError:
            ledger.taint("flush failed")
            raise
        offsets = ledger.acknowledge()
        self.n_scored += tally.scored
        self.n_learned += tally.learned
        self.n_replayed += tally.replayed
        self.n_refused += tally.refused
        self.replica.learned(tally.learned)
        if offsets and self._from_latest:
            self.replica.announce(offsets)
        self._crash.hit("worker.after_flush_before_commit")
        if offsets:
            self._commit(offsets)
        self._update_lag(offsets)
        self.monitor.latency.observe_many(tally.latencies)
        if self.merging and tally.scored and self.replica.created_at:
            # The batch was scored with the version held now (versions change
            # only between batches): its age, once per event scored.
            age = max(0.0, time.time() - self.replica.created_at)
            self.monitor.model_age.observe_times(age, tally.scored)
        if self.monitor.observe(tally.labeled) and s.on_drift == "reset":
            logger.warning("model reset after drift worker=%s", self.name)
            self.model = self._new_model()
        logger.debug(
            "batch committed worker=%s topic=%s records=%d replayed=%d offsets=%s",
            self.name,
            s.topics.features,
            sum(len(r) for r in batch.values()),
            tally.replayed,
            offsets,
        )

    # -- the compiled hot path ---------------------------------------------------
    #
    # The same steps as _score_records, in the same order and with the same
    # results (tests/unit/test_worker_compiled.py), for the compiled kernel: one
    # BatchDecoder call and one kernel call per partition of the batch instead
    # of a decode, predict and learn per event.

    def _compiled(self) -> bool:
        from stream.model.kernel import KernelModel

        if not isinstance(self.model, KernelModel):
            return False
        if self._decoder is None or self._decoder_model is not self.model:
            from stream.events.batch import BatchDecoder, packer

            hasher = self.featurize if isinstance(self.featurize, Hasher) else None
            self._decoder = BatchDecoder(self.model.column, self.settings.limits, hasher)
            self._decoder_model = self.model
            self._pack = packer()
        return True

    def _warm_up(self) -> None:
        """Compile (or load the cached) kernels now, not inside the first batch."""
        if not self._compiled():
            return
        from stream.events import batch
        from stream.model import kernel

        started = time.perf_counter()
        kernel.warm_up()
        batch.warm_up()
        logger.info(
            "compiled kernel ready worker=%s seconds=%.2f",
            self.name,
            time.perf_counter() - started,
        )

    def _score_compiled(
        self, partition: int, records: list[Record], replay_below: int, tally: _Tally
    ) -> None:
        """One partition's records through the batch decoder and the kernel in one
        call each, then published; if either call raises, record by record, and a
        record that raises alone is a ``processing_error`` dead letter
        (:mod:`stream.runtime.isolation`)."""
        run = partial(self._decode_and_score, replay_below=replay_below)
        for part, outcome in whole_or_each(records, run, f"partition={partition} batch"):
            if not isinstance(outcome, Exception):
                self._publish_compiled(partition, part, outcome, replay_below, tally)
                continue
            offset, key, value, _ = part[0]
            if offset >= replay_below:  # below: dead-lettered before the handover
                self._dead_letter(_bad(outcome, "the compiled path"), partition, offset, key, value)

    def _decode_and_score(self, records: Sequence[Record], replay_below: int) -> _Scored:
        """Decode, predict and learn; raises a BadEvent naming the stage that raised,
        having changed nothing (the kernel is all or nothing)."""
        try:
            decoded = self._decoder.decode([r.value for r in records])
        except Exception as exc:
            raise _bad(exc, "the batch decoder") from exc
        positions, labels = decoded.positions, decoded.labels
        replayed = 0
        if replay_below > records[0].offset:
            # Replayed events are learned, not predicted: an unlabeled one is
            # skipped entirely, as _score_records does (but counted as replayed).
            replayed = sum(1 for r in positions if records[r].offset < replay_below)
            keep = [
                i
                for i, r in enumerate(positions)
                if records[r].offset >= replay_below or labels[i] >= 0
            ]
            decoded = _subset(decoded, keep)
            labels = decoded.labels
        model = self.model
        try:
            probabilities = model.score_and_learn(
                decoded.columns, decoded.values, decoded.offsets, labels
            ).tolist()
        except Exception as exc:
            raise _bad(exc, "the kernel") from exc
        learned = model.last_learned
        refused = int((labels >= 0).sum()) - learned
        return _Scored(decoded, probabilities, learned, refused, replayed)

    def _publish_compiled(
        self,
        partition: int,
        records: Sequence[Record],
        scored: _Scored,
        replay_below: int,
        tally: _Tally,
    ) -> None:
        """Send each scored event's prediction, and dead letters in record order."""
        s = self.settings
        send, pack = self._producer.send, self._pack
        predictions_topic = s.topics.predictions
        output_encoding = s.output_encoding
        name, version = self.name, self.model_version
        co_partitioned = self._co_partitioned
        decoded, probabilities, refused = scored.decoded, scored.probabilities, scored.refused
        # Dead letters go out in record order, between the predictions.
        errors = decoded.errors[::-1]
        now = self._clock()
        labels_list = decoded.labels.tolist()
        ids, ts_events, encodings = decoded.ids, decoded.ts, decoded.encodings
        labeled, latencies = tally.labeled, tally.latencies
        n_scored = 0
        for i, r in enumerate(decoded.positions):
            while errors and errors[-1][0] < r:
                self._dead_letter_at(errors.pop(), records, partition, replay_below)
            offset, key, value, timestamp_ms = records[r]
            if offset < replay_below:
                continue
            p = probabilities[i]
            if not 0.0 <= p <= 1.0:  # NaN fails both comparisons
                error = NumericError(f"prediction is p={p!r}, not a probability")
                self._dead_letter(_bad(error, "scoring"), partition, offset, key, value)
                if labels_list[i] >= 0:
                    # Counted as a dead letter, as the river path does (its
                    # predict raises before it learns), not as a refused step.
                    refused -= 1
                continue
            try:
                ts_record = timestamp_ms / 1000.0
                y = labels_list[i]
                prediction = prediction_record(
                    ids[i],
                    p,
                    version,
                    y if y >= 0 else None,
                    name,
                    partition,
                    offset,
                    ts_events[i],
                    ts_record,
                    now,
                )
                encoding = encodings[i] if output_encoding == "same" else output_encoding
                payload = (
                    pack(prediction) if encoding == "msgpack" else encode(prediction, encoding)
                )
                send(predictions_topic, payload, key, None, partition if co_partitioned else None)
            except Exception as exc:
                # The event was learned: only its prediction is missing.
                self._dead_letter(_bad(exc, PUBLISHING), partition, offset, key, value)
                continue
            latencies.append(now - ts_record)
            if y >= 0:
                labeled.append((y == 1, p))
            n_scored += 1
        while errors:
            self._dead_letter_at(errors.pop(), records, partition, replay_below)
        tally.add(n_scored, scored.learned, scored.replayed, refused)

    def _dead_letter_at(self, error, records, partition: int, replay_below: int) -> None:
        r, exc = error
        offset, key, value, _ = records[r]
        if offset >= replay_below:  # below: dead-lettered before the handover
            self._dead_letter(exc, partition, offset, key, value)

    def _commit(self, offsets: dict[int, int]) -> None:
        if self._consumer.commit(offsets):
            self.ledger.committed(offsets)
            self._crash.hit("worker.after_commit")
            return
        # The group moved on (this member's partitions were revoked or lost):
        # the next owner predicts these events again; learning is not affected.
        self.n_commit_failures += 1
        logger.warning(
            "offsets not committed, group rebalanced worker=%s offsets=%s failures=%d",
            self.name,
            offsets,
            self.n_commit_failures,
        )

    def _update_lag(self, partitions) -> None:
        highwater, position, lag = self._consumer.highwater, self.ledger.positions(), self.lag
        for partition in partitions:
            high = highwater(partition)
            if high is not None and partition in position:
                lag[partition] = max(0, high - position[partition])

    def _dead_letter(
        self, error: BadEvent, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        topic = self.settings.topics.features
        self.dead_letters.record(error, topic, partition, offset)
        self._producer.send(
            self.settings.topics.dead_letter,
            value,
            key,
            headers=headers(error, topic, partition, offset, self.name),
        )

    # -- rebalances -----------------------------------------------------------

    def on_revoked(self, revoked: list[int]) -> None:
        """Hand over cleanly: contribute what was learned (the batch is committed)."""
        logger.info("partitions revoked worker=%s partitions=%s", self.name, _fmt(revoked))
        if self.merging and revoked:
            self.replica.hand_over()
        for p in revoked:
            self._forget(p)

    def on_lost(self, lost: list[int]) -> None:
        """Another member may own these already: contributing would race it, so
        the un-merged learning is dropped and re-learned from the model's offsets."""
        logger.warning("partitions lost worker=%s partitions=%s", self.name, _fmt(lost))
        for p in lost:
            self._forget(p)
        if self.merging:
            self.replica.drop_lost(lost)

    def _forget(self, partition: int) -> None:
        self.ledger.forget(partition)
        self.lag.pop(partition, None)

    def on_assigned(self, assigned: list[int]) -> dict[int, int | None] | None:
        """Where to read the new partitions from: the group's committed offsets, or,
        when merging, the global model's offsets (see the module docstring)."""
        logger.info("partitions assigned worker=%s partitions=%s", self.name, _fmt(assigned))
        if self.merging and assigned:
            starts = self.replica.take_over(assigned)
        else:
            starts = None
            for p in assigned:
                self.ledger.assign(p, None, None)
        if self._on_assign is not None:
            self._on_assign(self.name, list(assigned))
        return starts

    def _log_stats(self) -> None:
        quality = self.monitor.quality()
        logger.info(
            "worker stats worker=%s scored=%d learned=%d replayed=%d refused=%d dead_lettered=%d "
            "by_reason=%s model_version=%d model_age_p50=%.2f model_age_p99=%.2f lag=%s "
            "accuracy=%.4f log_loss=%.4f roc_auc=%.4f calibration=%.4f normalized_entropy=%.4f "
            "drifts=%d",
            self.name,
            self.n_scored,
            self.n_learned,
            self.n_replayed,
            self.n_refused,
            self.dead_letters.total,
            dict(self.dead_letters.by_reason),
            self.model_version,
            self.monitor.model_age.quantile(0.5),
            self.monitor.model_age.quantile(0.99),
            dict(self.lag),
            quality["accuracy"],
            quality["log_loss"],
            quality["roc_auc"],
            quality["calibration"],
            quality["normalized_entropy"],
            len(self.monitor.drifts),
        )
