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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream.config import WorkerSettings
from stream.errors import BadEvent
from stream.events.codec import decode_event, encode
from stream.events.deadletter import DeadLetterLog, headers
from stream.kafka import connect
from stream.kafka.transport import Batch
from stream.model.factory import build_model
from stream.model.merge import add, subtract
from stream.model.online import OnlineModel
from stream.model.state import ModelState
from stream.observe.metrics import WorkerCollector, serve
from stream.observe.monitor import Monitor
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import check_compatible

logger = logging.getLogger(__name__)

AssignmentCallback = Callable[[str, list[int]], None]


def _subset(decoded, keep: list[int]):
    """The events ``keep`` (indices, in order) of a DecodedBatch."""
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
    )


def _fmt(partitions: list[int]) -> str:
    return ",".join(str(p) for p in partitions) or "-"


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
        # The compiled kernel when it covers the settings (same results as river).
        self.model = (
            model if model is not None else build_model(settings.model, settings.model_impl)
        )
        self._decoder = None  # the BatchDecoder of the compiled path, per model
        self.model_version = 0
        self.dead_letters = DeadLetterLog()
        self.n_scored = 0
        self.n_learned = 0
        self.n_replayed = 0
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
        # Merging state (used only when settings.merge.enabled).
        self._seq = 0
        self._pending: list[_Pending] = []
        self._cut_state = self.model.state()
        # Per partition: where the open segment starts (None: at the first record
        # read, when the model has never learned from that partition).
        self._segment_start: dict[int, int | None] = {}
        self._position: dict[int, int] = {}
        self._published_upto: dict[int, int] = {}
        self._labeled_since_cut = 0
        self._last_cut = time.monotonic()
        self._feed: ModelFeed | None = None

    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return."""
        self._stop.set()

    @property
    def merging(self) -> bool:
        return self.settings.merge.enabled

    def run(self) -> None:
        s = self.settings
        consumer = connect.consumer(
            s.client,
            s.kafka,
            s.topics.features,
            self.name,
            group_id=s.topics.group_id,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_poll_records,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        producer = connect.producer(s.client, s.kafka, self.name)
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
                self._feed = ModelFeed(s.kafka, s.topics, self.name)
                initial = self._feed.initial()
                if initial is not None:
                    self._rebase_all(initial)
            self._warm_up()
            consumer.subscribe(self.on_assigned, self.on_revoked, self.on_lost)
            logger.info(
                "worker started worker=%s client=%s group=%s topic=%s merging=%s model_version=%d",
                self.name,
                s.client,
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
                batch = consumer.poll_batch(s.poll_timeout_ms, max_records)
                if batch:
                    started = time.monotonic()
                    self._process(batch)
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
        if self._compiled():
            self._process_compiled(batch)
            return
        s = self.settings
        send = self._producer.send
        features_topic = s.topics.features
        predictions_topic = s.topics.predictions
        output_encoding = s.output_encoding
        max_bytes = s.max_event_bytes
        predict, learn = self.model.predict_proba, self.model.learn
        clock = self._clock
        name, version = self.name, self.model_version
        co_partitioned = self._co_partitioned
        published_upto, segment_start = self._published_upto, self._segment_start
        offsets = {}
        scored = learned = replayed = 0
        labeled: list[tuple[bool, float]] = []
        latencies: list[float] = []
        for partition, records in batch.items():
            replay_below = published_upto.get(partition, -1)
            if partition in segment_start and segment_start[partition] is None:
                segment_start[partition] = records[0].offset
            for offset, key, value, timestamp_ms in records:
                # Already predicted (and dead-lettered) before: learn only.
                replay = offset < replay_below
                try:
                    event = decode_event(value, max_bytes)
                except BadEvent as exc:
                    if not replay:
                        self._dead_letter(exc, partition, offset, key, value)
                    continue
                y = event.y
                if replay:
                    replayed += 1
                else:
                    p = predict(event.x)
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
                    latencies.append(prediction["ts_scored"] - ts_record)
                    if y is not None:
                        prediction["y"] = 1 if y else 0
                        labeled.append((y, p))
                    encoding = event.encoding if output_encoding == "same" else output_encoding
                    send(
                        predictions_topic,
                        encode(prediction, encoding),
                        key,
                        None,
                        partition if co_partitioned else None,
                    )
                    scored += 1
                if y is not None:
                    learn(event.x, y)
                    learned += 1
            end = records[-1].offset + 1
            offsets[partition] = end
            self._position[partition] = end
            if end > replay_below:
                published_upto[partition] = end
        # Predictions (and dead letters) acknowledged, then offsets committed.
        self._producer.flush(s.delivery_timeout_s)
        self.n_scored += scored
        self.n_learned += learned
        self.n_replayed += replayed
        self._labeled_since_cut += learned
        self._consumer.commit(offsets)
        self._update_lag(offsets)
        self.monitor.latency.observe_many(latencies)
        if self.monitor.observe(labeled) and s.on_drift == "reset":
            logger.warning("model reset after drift worker=%s", self.name)
            self.model = build_model(s.model, s.model_impl)
        logger.debug(
            "batch committed worker=%s topic=%s records=%d replayed=%d offsets=%s",
            self.name,
            features_topic,
            sum(len(r) for r in batch.values()),
            replayed,
            offsets,
        )

    # -- the compiled hot path (issue 12) --------------------------------------
    #
    # The same steps as _process, in the same order and with the same results,
    # for a KernelModel: one BatchDecoder call and one kernel call per
    # partition of the batch instead of a decode, predict and learn per event.

    def _compiled(self) -> bool:
        from stream.model.kernel import KernelModel

        if not isinstance(self.model, KernelModel):
            return False
        if self._decoder is None or self._decoder_model is not self.model:
            from stream.events.batch import BatchDecoder, packer

            self._decoder = BatchDecoder(self.model.column, self.settings.max_event_bytes)
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

    def _process_compiled(self, batch: Batch) -> None:
        s = self.settings
        send, pack = self._producer.send, self._pack
        predictions_topic = s.topics.predictions
        output_encoding = s.output_encoding
        model, decoder, clock = self.model, self._decoder, self._clock
        name, version = self.name, self.model_version
        co_partitioned = self._co_partitioned
        published_upto, segment_start = self._published_upto, self._segment_start
        offsets = {}
        scored = learned = replayed = 0
        labeled: list[tuple[bool, float]] = []
        latencies: list[float] = []
        for partition, records in batch.items():
            replay_below = published_upto.get(partition, -1)
            if partition in segment_start and segment_start[partition] is None:
                segment_start[partition] = records[0].offset
            decoded = decoder.decode([r.value for r in records])
            # Dead letters go out in record order, between the predictions.
            errors = decoded.errors[::-1]
            positions, labels = decoded.positions, decoded.labels
            if replay_below > records[0].offset:
                # Replayed events are learned, not predicted: an unlabeled one is
                # skipped entirely, as _process does (but counted as replayed).
                replayed += sum(1 for r in positions if records[r].offset < replay_below)
                keep = [
                    i
                    for i, r in enumerate(positions)
                    if records[r].offset >= replay_below or labels[i] >= 0
                ]
                decoded = _subset(decoded, keep)
                positions, labels = decoded.positions, decoded.labels
            probabilities = model.score_and_learn(
                decoded.columns, decoded.values, decoded.offsets, labels
            ).tolist()
            now = clock()
            labels_list = labels.tolist()
            learned += sum(1 for y in labels_list if y >= 0)
            ids, ts_events, encodings = decoded.ids, decoded.ts, decoded.encodings
            for i, r in enumerate(positions):
                while errors and errors[-1][0] < r:
                    self._dead_letter_at(errors.pop(), records, partition, replay_below)
                offset, key, _, timestamp_ms = records[r]
                if offset < replay_below:
                    continue
                p = probabilities[i]
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
                latencies.append(now - ts_record)
                y = labels_list[i]
                if y >= 0:
                    prediction["y"] = y
                    labeled.append((y == 1, p))
                encoding = encodings[i] if output_encoding == "same" else output_encoding
                send(
                    predictions_topic,
                    pack(prediction) if encoding == "msgpack" else encode(prediction, encoding),
                    key,
                    None,
                    partition if co_partitioned else None,
                )
                scored += 1
            while errors:
                self._dead_letter_at(errors.pop(), records, partition, replay_below)
            end = records[-1].offset + 1
            offsets[partition] = end
            self._position[partition] = end
            if end > replay_below:
                published_upto[partition] = end
        # Predictions (and dead letters) acknowledged, then offsets committed.
        self._producer.flush(s.delivery_timeout_s)
        self.n_scored += scored
        self.n_learned += learned
        self.n_replayed += replayed
        self._labeled_since_cut += learned
        self._consumer.commit(offsets)
        self._update_lag(offsets)
        self.monitor.latency.observe_many(latencies)
        if self.monitor.observe(labeled) and s.on_drift == "reset":
            logger.warning("model reset after drift worker=%s", self.name)
            self.model = build_model(s.model, s.model_impl)
        logger.debug(
            "batch committed worker=%s records=%d replayed=%d offsets=%s",
            self.name,
            sum(len(r) for r in batch.values()),
            replayed,
            offsets,
        )

    def _dead_letter_at(self, error, records, partition: int, replay_below: int) -> None:
        r, exc = error
        offset, key, value, _ = records[r]
        if offset >= replay_below:  # below: dead-lettered before the handover
            self._dead_letter(exc, partition, offset, key, value)

    def _update_lag(self, partitions) -> None:
        highwater, position, lag = self._consumer.highwater, self._position, self.lag
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
        if self._labeled_since_cut > 0:
            return True
        starts = self._segment_start
        return any(
            starts.get(p) is not None and end > starts[p] for p, end in self._position.items()
        )

    def _cut(self, sync: bool = True) -> None:
        """Send what was learned since the last cut as a contribution, then sync."""
        self._last_cut = time.monotonic()
        starts = self._segment_start
        ranges = {
            p: (starts[p], end)
            for p, end in self._position.items()
            if starts.get(p) is not None and end > starts[p]
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
        # Not flushed here: the next batch's flush acknowledges it (or fails the
        # worker, and the fence makes its successor re-learn those events).
        self._producer.send(
            self.settings.topics.contributions, contribution.to_bytes(), self.name.encode()
        )
        self._pending.append(_Pending(self._seq, delta))
        self._seq += 1
        self._cut_state = state
        for p, (_, end) in ranges.items():
            starts[p] = end
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
            self._seek_to_model(latest, self._consumer.assignment())
            return
        applied = latest.applied.get(self.name, -1)
        self._pending = [c for c in self._pending if c.seq > applied]
        state = latest.state
        for contribution in self._pending:
            state = add(state, contribution.delta)
        self.model.load_state(state)
        self._cut_state = state
        self.model_version = latest.version
        self.model_created_at = latest.created_at

    def _rebase_all(self, snapshot: Snapshot) -> None:
        """Become exactly the global model; un-merged learning is dropped (the
        partitions are then re-read from the model's offsets)."""
        check_compatible(snapshot, self.settings.model)
        self.model.load_state(snapshot.state)
        self._cut_state = snapshot.state
        self._pending = []
        self._labeled_since_cut = 0
        self.model_version = snapshot.version
        self.model_created_at = snapshot.created_at

    def _seek_to_model(self, snapshot: Snapshot, partitions: list[int]) -> None:
        """Read each partition from where the global model stopped learning
        (its beginning, if the model never learned from it)."""
        self._consumer.seek(self._learning_starts(snapshot, partitions))

    def _learning_starts(self, snapshot: Snapshot, partitions: list[int]) -> dict[int, int | None]:
        """Open new segments at the model's offsets; return them (None: beginning)."""
        starts = {p: snapshot.offsets.get(p) for p in partitions}
        for p, start in starts.items():
            self._segment_start[p] = start
            self._position.pop(p, None)
        logger.info(
            "learning resumes worker=%s version=%d from=%s",
            self.name,
            snapshot.version,
            {p: "beginning" if o is None else o for p, o in sorted(starts.items())},
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
            self._producer.flush(self.settings.delivery_timeout_s)
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
        for positions in (self._segment_start, self._position, self._published_upto, self.lag):
            positions.pop(partition, None)

    def on_assigned(self, assigned: list[int]) -> dict[int, int | None] | None:
        """Where to read the new partitions from: the group's committed offsets, or,
        when merging, the global model's offsets (see the module docstring)."""
        logger.info("partitions assigned worker=%s partitions=%s", self.name, _fmt(assigned))
        starts = self._take_over(assigned) if self.merging and assigned else None
        if self._on_assign is not None:
            self._on_assign(self.name, list(assigned))
        return starts

    def _take_over(self, assigned: list[int]) -> dict[int, int | None]:
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
        for p, offset in self._consumer.committed(assigned).items():
            if offset is not None:
                self._published_upto[p] = offset
        return self._learning_starts(snapshot, assigned)

    def _log_stats(self) -> None:
        quality = self.monitor.quality()
        logger.info(
            "worker stats worker=%s scored=%d learned=%d replayed=%d dead_lettered=%d "
            "by_reason=%s model_version=%d lag=%s accuracy=%.4f log_loss=%.4f roc_auc=%.4f "
            "drifts=%d",
            self.name,
            self.n_scored,
            self.n_learned,
            self.n_replayed,
            self.dead_letters.total,
            dict(self.dead_letters.by_reason),
            self.model_version,
            dict(self.lag),
            quality["accuracy"],
            quality["log_loss"],
            quality["roc_auc"],
            len(self.monitor.drifts),
        )
