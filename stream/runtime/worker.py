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
from stream.events.codec import PROCESSING_ERROR, decode_event, encode
from stream.events.deadletter import DeadLetterLog, headers
from stream.events.hashing import Hasher, featurizer
from stream.faults import CrashPoints
from stream.kafka import connect
from stream.kafka.topics import ensure_pipeline
from stream.kafka.transport import Batch, Consumer, Producer, Record
from stream.model.factory import build_model
from stream.model.merge import add, copy_state, ftrl_params, subtract
from stream.model.online import OnlineModel
from stream.model.state import ModelState
from stream.observe.metrics import WorkerCollector, serve
from stream.observe.monitor import Monitor
from stream.runtime.identity import life_id, new_incarnation
from stream.runtime.isolation import whole_or_each
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import check_compatible
from stream.sync.ledger import Ledger
from stream.sync.pending import Pending, settle

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
        self.model = model if model is not None else self._new_model()
        # The contract's features to the model's: slots with --hash-bits, else as they are.
        self.featurize = featurizer(settings.model.hash_bits)
        self._decoder = None  # the BatchDecoder of the compiled path, per model
        self._decoder_model = None
        # The global model version this worker's model is based on: (epoch, version).
        self.model_epoch = 0
        self.model_version = 0
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
        self.model_created_at = 0.0
        self._stop = threading.Event()
        self._clock = clock
        self._on_assign = on_assign
        self._crash = CrashPoints(settings.crash_at)
        # Per assigned partition: predicted, acknowledged, learned, contributed.
        self.ledger = Ledger()
        # Merging state (used only when settings.merge.enabled).
        self._seq = 0
        self._pending: list[Pending] = []
        self._cut_state = self.model.state()
        self._labeled_since_cut = 0
        self._last_cut = time.monotonic()
        self._consumer: Consumer | None = consumer
        self._producer: Producer | None = producer
        self._feed: ModelFeed | None = feed
        self._ftrl = ftrl_params(settings.model)

    def _new_model(self) -> OnlineModel | KernelModel:
        """The compiled kernel when it covers the settings (same results as river)."""
        s = self.settings
        return build_model(s.model, s.model_impl, s.max_abs_weight)

    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return."""
        self._stop.set()

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
            if self.merging:
                if self._feed is None:
                    self._feed = ModelFeed(s.kafka, s.topics, self.name, s.client)
                initial = self._feed.initial()
                if initial is not None:
                    self._rebase_all(initial)
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
                        self._merge_step(idle=False)
                    self.busy_since = self.busy_since or started
                    self.busy_until = time.monotonic()
                    self.monitor.batch.observe_many([self.busy_until - started])
                else:
                    self._update_lag(consumer.assignment())
                    if self.merging:
                        self._merge_step(idle=True)
                if time.monotonic() - last_stats >= s.stats_interval_s:
                    self._log_stats()
                    last_stats = time.monotonic()
            if self.merging:
                self._cut()
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

    def _announce(self, offsets: dict[int, int]) -> None:
        """Before the first commit past where learning of a partition began (the
        global model not knowing the partition): contribute and flush, so that a
        successor finds the origin in the model's offsets once the merger has
        applied it, rather than only the committed offset past it."""
        if not set(self.ledger.unannounced()) & set(offsets):
            return
        if self._cut(sync=False):
            self._producer.flush(self.settings.delivery_timeout_s)

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
                    ts_record = timestamp_ms / 1000.0
                    prediction = {
                        "id": event.id,
                        "p": p,
                        "y_pred": 1 if p >= 0.5 else 0,
                        "model_version": version,
                        "worker": name,
                        "partition": partition,
                        "offset": offset,
                        "ts_event": event.ts if event.ts is not None else ts_record,
                        "ts_record": ts_record,
                        "ts_scored": clock(),
                    }
                    if y is not None:
                        prediction["y"] = 1 if y else 0
                    encoding = event.encoding if output_encoding == "same" else output_encoding
                    payload = encode(prediction, encoding)
                    send(
                        predictions_topic, payload, key, None, partition if co_partitioned else None
                    )
                except Exception as exc:
                    self._dead_letter(_bad(exc, PUBLISHING), partition, offset, key, value)
                else:
                    published = True
                    latencies.append(prediction["ts_scored"] - ts_record)
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
        self._labeled_since_cut += tally.learned
        if offsets and self._from_latest:
            self._announce(offsets)
        self._crash.hit("worker.after_flush_before_commit")
        if offsets:
            self._commit(offsets)
        self._update_lag(offsets)
        self.monitor.latency.observe_many(tally.latencies)
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
                ts_event = ts_events[i]
                prediction = {
                    "id": ids[i],
                    "p": p,
                    "y_pred": 1 if p >= 0.5 else 0,
                    "model_version": version,
                    "worker": name,
                    "partition": partition,
                    "offset": offset,
                    "ts_event": ts_event if ts_event is not None else ts_record,
                    "ts_record": ts_record,
                    "ts_scored": now,
                }
                y = labels_list[i]
                if y >= 0:
                    prediction["y"] = y
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
        return self._labeled_since_cut > 0 or self.ledger.has_open_segment()

    def _cut(self, sync: bool = True) -> bool:
        """Send what was learned since the last cut as a contribution, then sync.
        Returns whether one was sent."""
        self._last_cut = time.monotonic()
        if self.ledger.tainted is not None:
            logger.warning(
                "no contribution from a tainted ledger worker=%s reason=%s; its learning is "
                "re-learned from the global model's offsets",
                self.name,
                self.ledger.tainted,
            )
            return False
        ranges = self.ledger.open_ranges()
        if not ranges:
            return False
        state = self.model.state()
        delta = subtract(state, self._cut_state)
        contribution = Contribution(
            worker=self.life,
            seq=self._seq,
            base_version=self.model_version,
            ranges=ranges,
            delta=delta,
            created_at=time.time(),
            opens=self.ledger.opening(ranges),
        )
        # Not flushed here: the next batch's flush acknowledges it (or fails the
        # worker, and the fence makes its successor re-learn those events).
        # Partition 0 by name: the merger reads only that one.
        self._producer.send(
            self.settings.topics.contributions,
            contribution.to_bytes(),
            self.life.encode(),
            partition=0,
        )
        self._pending.append(Pending(self._seq, ranges, delta, contribution.opens))
        self._seq += 1
        self._cut_state = state
        self.ledger.contributed(ranges)
        self._labeled_since_cut = 0
        logger.debug(
            "contribution sent worker=%s seq=%d ranges=%s n=%d",
            self.name,
            contribution.seq,
            ranges,
            delta.n_learned,
        )
        self._crash.hit(
            "worker.after_contribution_sent",
            lambda: self._producer.flush(self.settings.delivery_timeout_s),
        )
        if sync:
            self._sync()
        return True

    def _sync(self) -> None:
        """Take a newer global version, carrying our not-yet-merged learning over.

        Called only between segments (nothing learned since the last cut), so
        the local model is exactly the global one plus the pending deltas.
        """
        assert self._feed is not None
        latest = self._feed.poll()
        if latest is None or latest.order <= (self.model_epoch, self.model_version):
            return
        settled = settle(self._pending, latest, self.life)
        if settled.rejected:
            logger.warning(
                "contribution rejected by merger worker=%s life=%s seq=%d; re-learning from "
                "version=%d",
                self.name,
                self.life,
                settled.rejected[0].seq,
                latest.version,
            )
            self._rebase_all(latest)
            self._seek_to_model(latest, self._consumer.assignment())
            return
        self._pending = settled.pending
        # The feed updates the version it holds in place when the next delta
        # comes: the cut state kept until the next cut must be our own.
        state = copy_state(latest.state) if not self._pending else latest.state
        for contribution in self._pending:
            state = add(state, contribution.delta, ftrl=self._ftrl)
        self.model.load_state(state)
        self._cut_state = state
        self.model_epoch, self.model_version = latest.order
        self.model_created_at = latest.created_at

    def _rebase_all(self, snapshot: Snapshot) -> None:
        """Become exactly the global model; un-merged learning is dropped (the
        caller restarts every partition it keeps at the model's offsets)."""
        check_compatible(snapshot, self.settings.model)
        # Our own copy: the feed updates the version it holds in place.
        state = copy_state(snapshot.state)
        self.model.load_state(state)
        self._cut_state = state
        self._pending = []
        self._labeled_since_cut = 0
        self.model_epoch, self.model_version = snapshot.order
        self.model_created_at = snapshot.created_at
        self.ledger.rebased()

    def _seek_to_model(self, snapshot: Snapshot, partitions: list[int]) -> None:
        """Read each partition again from where the global model stopped learning."""
        self._consumer.seek(self._learning_starts(snapshot, partitions))

    def _learning_starts(self, snapshot: Snapshot, partitions: list[int]) -> dict[int, int | None]:
        """Restart the ledger of ``partitions`` at the model's offsets; return where
        to read each (None: its beginning). A partition the model never learned
        from starts where this worker first read it; failing that, at its
        beginning, or, with ``--from latest``, where the group's offset (or
        the reset policy) puts it: such a partition is left out. (A takeover
        re-assigns the ledger, so there the first read is the model's offset or
        the policy's.)"""
        starts: dict[int, int | None] = {}
        for p in partitions:
            start = self.ledger.restart(p, snapshot.offsets.get(p))
            if start is not None:
                starts[p] = start
            elif self.settings.auto_offset_reset == "earliest":
                starts[p] = None
        logger.info(
            "learning resumes worker=%s epoch=%d version=%d from=%s",
            self.name,
            snapshot.epoch,
            snapshot.version,
            {
                p: "beginning" if starts.get(p, 0) is None else starts.get(p, "group offset")
                for p in sorted(partitions)
            },
        )
        return starts

    # -- rebalances -----------------------------------------------------------

    def on_revoked(self, revoked: list[int]) -> None:
        """Hand over cleanly: contribute what was learned (the batch is committed)."""
        logger.info("partitions revoked worker=%s partitions=%s", self.name, _fmt(revoked))
        if self.merging and revoked:
            # No sync: a resync seeks, and partitions are changing hands right now.
            # Flushed before the next owner starts from the model's offsets.
            self._cut(sync=False)
            try:
                self._producer.flush(self.settings.delivery_timeout_s)
            except DeliveryError as exc:
                # The next owner re-learns from the model's offsets; this worker's
                # model holds a delta nobody will merge, until its next rebase.
                self.ledger.taint(f"hand-over contribution not acknowledged: {exc}")
            self._crash.hit("worker.on_revoke_after_contribution")
        for p in revoked:
            self._forget(p)

    def on_lost(self, lost: list[int]) -> None:
        """Another member may own these already: contributing would race it, so
        the un-merged learning is dropped and re-learned from the model's offsets."""
        logger.warning("partitions lost worker=%s partitions=%s", self.name, _fmt(lost))
        for p in lost:
            self._forget(p)
        if self.merging and self._feed is not None:
            snapshot = self._feed.poll() or Snapshot(version=0, state=ModelState())
            self._rebase_all(snapshot)
            kept = [p for p in self._consumer.assignment() if p not in lost]
            if kept:
                self._seek_to_model(snapshot, kept)

    def _forget(self, partition: int) -> None:
        self.ledger.forget(partition)
        self.lag.pop(partition, None)

    def on_assigned(self, assigned: list[int]) -> dict[int, int | None] | None:
        """Where to read the new partitions from: the group's committed offsets, or,
        when merging, the global model's offsets (see the module docstring)."""
        logger.info("partitions assigned worker=%s partitions=%s", self.name, _fmt(assigned))
        if self.merging and assigned:
            starts = self._take_over(assigned)
        else:
            starts = None
            for p in assigned:
                self.ledger.assign(p, None, None)
        if self._on_assign is not None:
            self._on_assign(self.name, list(assigned))
        return starts

    def _take_over(self, assigned: list[int]) -> dict[int, int | None]:
        """Rebase onto the newest global model and restart *every* partition held
        at its offsets: the rebase dropped un-merged learning of the partitions
        kept as well (with incremental rebalancing, those are not in ``assigned``)."""
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
        snapshot = feed.latest or Snapshot(version=0, state=ModelState())
        self._rebase_all(snapshot)
        held = sorted(set(assigned) | set(self.ledger.partitions))
        for p, committed in self._consumer.committed(held).items():
            self.ledger.assign(p, snapshot.offsets.get(p), committed)
        return self._learning_starts(snapshot, held)

    def _log_stats(self) -> None:
        quality = self.monitor.quality()
        logger.info(
            "worker stats worker=%s scored=%d learned=%d replayed=%d refused=%d dead_lettered=%d "
            "by_reason=%s model_version=%d lag=%s accuracy=%.4f log_loss=%.4f roc_auc=%.4f "
            "drifts=%d",
            self.name,
            self.n_scored,
            self.n_learned,
            self.n_replayed,
            self.n_refused,
            self.dead_letters.total,
            dict(self.dead_letters.by_reason),
            self.model_version,
            dict(self.lag),
            quality["accuracy"],
            quality["log_loss"],
            quality["roc_auc"],
            len(self.monitor.drifts),
        )
