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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream import clients
from stream.codec import decode_event, encode
from stream.config import WorkerSettings
from stream.deadletter import DeadLetterLog, headers
from stream.errors import BadEvent, DeliveryError
from stream.model import OnlineModel

logger = logging.getLogger(__name__)


AssignmentCallback = Callable[[str, list[int]], None]


class _LogRebalance(ConsumerRebalanceListener):
    def __init__(self, worker: str, on_assign: AssignmentCallback | None) -> None:
        self.worker = worker
        self.on_assign = on_assign

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Every batch is committed before the next poll, so nothing is pending here.
        logger.info("partitions revoked worker=%s partitions=%s", self.worker, _fmt(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("partitions assigned worker=%s partitions=%s", self.worker, _fmt(assigned))
        if self.on_assign is not None:
            self.on_assign(self.worker, sorted(tp.partition for tp in assigned))


def _fmt(partitions: set[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(partitions)) or "-"


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
        self._stop = threading.Event()
        self._clock = clock
        self._on_assign = on_assign

    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return."""
        self._stop.set()

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
        try:
            consumer.subscribe(
                [s.topics.features], listener=_LogRebalance(self.name, self._on_assign)
            )
            logger.info(
                "worker started worker=%s group=%s topic=%s",
                self.name,
                s.topics.group_id,
                s.topics.features,
            )
            last_stats = time.monotonic()
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=s.max_poll_records)
                if batch:
                    self._process(batch, consumer, producer)
                if time.monotonic() - last_stats >= s.stats_interval_s:
                    self._log_stats()
                    last_stats = time.monotonic()
        finally:
            self._log_stats()
            try:
                producer.flush(timeout=s.delivery_timeout_s)
            finally:
                producer.close(timeout=s.delivery_timeout_s)
                consumer.close()
            logger.info("worker stopped worker=%s", self.name)

    def _process(self, batch: dict, consumer, producer) -> None:
        s = self.settings
        predictions_topic = s.topics.predictions
        dead_letter_topic = s.topics.dead_letter
        output_encoding = s.output_encoding
        max_bytes = s.max_event_bytes
        model = self.model
        clock = self._clock
        pending = []
        offsets = {}
        scored = learned = 0
        for tp, records in batch.items():
            for record in records:
                try:
                    event = decode_event(record.value, max_bytes)
                except BadEvent as exc:
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
                pending.append(
                    producer.send(
                        predictions_topic, key=record.key, value=encode(prediction, encoding)
                    )
                )
                scored += 1
                if event.y is not None:
                    model.learn(event.x, event.y)
                    learned += 1
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        self._await_delivery(producer, pending)
        self.n_scored += scored
        self.n_learned += learned
        try:
            consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we processed: the new owner re-reads these
            # events, so their predictions are emitted again (at-least-once).
            logger.warning("commit failed after rebalance worker=%s error=%s", self.name, exc)
        logger.debug(
            "batch committed worker=%s records=%d offsets=%s",
            self.name,
            sum(len(r) for r in batch.values()),
            {f"{tp.partition}": om.offset for tp, om in offsets.items()},
        )

    def _await_delivery(self, producer, pending: list) -> None:
        producer.flush(timeout=self.settings.delivery_timeout_s)
        for future in pending:
            if not future.is_done:
                raise DeliveryError(
                    f"record not acknowledged within {self.settings.delivery_timeout_s}s"
                )
            if future.failed():
                exc = future.exception
                raise DeliveryError(f"broker rejected a record: {exc!r}") from (
                    exc if isinstance(exc, KafkaError | BaseException) else None
                )

    def _log_stats(self) -> None:
        logger.info(
            "worker stats worker=%s scored=%d learned=%d dead_lettered=%d by_reason=%s",
            self.name,
            self.n_scored,
            self.n_learned,
            self.dead_letters.total,
            dict(self.dead_letters.by_reason),
        )
