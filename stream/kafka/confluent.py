"""The transport on confluent-kafka (librdkafka): the default client."""

from __future__ import annotations

import logging
import time
import uuid

from stream.config import GroupTimeouts, KafkaSettings
from stream.errors import BrokerError, ConfigError, DeliveryError, StreamError
from stream.kafka import clients
from stream.kafka.transport import (
    AssignHook,
    Batch,
    Compression,
    PartitionsHook,
    ReadRecord,
    Record,
)

try:
    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_INVALID,
        Consumer,
        KafkaError,
        KafkaException,
        Producer,
        TopicPartition,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "--client confluent needs confluent-kafka (a dependency of learnstream): "
        "pip install confluent-kafka, or use --client kafka-python"
    ) from exc

logger = logging.getLogger(__name__)

# kafka-python option names (ours) -> librdkafka property names.
_OPTION_NAMES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_kerberos_service_name": "sasl.kerberos.service.name",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "ssl_crlfile": "ssl.crl.location",
    "ssl_ciphers": "ssl.cipher.suites",
    "request_timeout_ms": "socket.timeout.ms",
}

# Commit errors that mean "the group moved on": the new owner re-reads.
_REBALANCED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
}


def _base_config(kafka: KafkaSettings, client_id: str) -> dict[str, object]:
    """librdkafka's common properties: every option of ``kafka.options`` (the
    security settings as well as ``--kafka-option``), translated, because a
    client that dropped ``--security-protocol`` would talk plaintext to a
    secured broker."""
    config: dict[str, object] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
    }
    for name, value in kafka.options.items():
        if name == "ssl_check_hostname":
            config["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        elif name in _OPTION_NAMES:
            config[_OPTION_NAMES[name]] = value
        else:
            raise ConfigError(f"Kafka option {name!r} has no confluent-kafka equivalent here")
    return config


class ConfluentConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        client_id: str,
        *,
        group_id: str,
        auto_offset_reset: str = "earliest",
        timeouts: GroupTimeouts | None = None,
        max_poll_records: int = 1000,
    ) -> None:
        self.topic = topic
        timeouts = timeouts or GroupTimeouts()
        config = _base_config(kafka, client_id)
        config.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": auto_offset_reset,
                "session.timeout.ms": timeouts.session_timeout_ms,
                "heartbeat.interval.ms": timeouts.heartbeat_interval_ms,
                "max.poll.interval.ms": timeouts.max_poll_interval_ms,
                "enable.partition.eof": False,
                # librdkafka pauses fetching for up to 1 s once its queue is full
                # (100k messages by default); 1 ms keeps a fast worker fed.
                "fetch.queue.backoff.ms": 1,
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer = Consumer(config)
        self._on_assign: AssignHook = lambda partitions: None
        self._on_revoke: PartitionsHook = lambda partitions: None
        self._on_lost: PartitionsHook = lambda partitions: None

    def subscribe(
        self, on_assign: AssignHook, on_revoke: PartitionsHook, on_lost: PartitionsHook
    ) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    # librdkafka calls these from consume(), on this thread: blocking is fine.
    def _assigned(self, consumer: Consumer, partitions: list) -> None:
        starts = self._on_assign(sorted(tp.partition for tp in partitions)) or {}
        consumer.assign(
            [
                TopicPartition(
                    self.topic,
                    tp.partition,
                    OFFSET_BEGINNING
                    if starts.get(tp.partition, -1) is None
                    else starts.get(tp.partition, OFFSET_INVALID),
                )
                for tp in partitions
            ]
        )

    def _revoked(self, consumer: Consumer, partitions: list) -> None:
        self._on_revoke(sorted(tp.partition for tp in partitions))

    def _lost(self, consumer: Consumer, partitions: list) -> None:
        self._on_lost(sorted(tp.partition for tp in partitions))

    def poll_batch(self, timeout_ms: int, max_records: int) -> Batch:
        # consume() waits for all max_records or the timeout: take what is queued
        # now, and block only while nothing is, so a slow stream is not held back.
        consume = self._consumer.consume
        messages = consume(num_messages=max_records, timeout=0)
        if not messages:
            messages = consume(num_messages=1, timeout=timeout_ms / 1000)
            if messages:
                messages += consume(num_messages=max_records - 1, timeout=0)
        batch: Batch = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise StreamError(f"consumer failed: {error}")
                logger.warning("consumer error=%s", error)
                continue
            partition = message.partition()
            records = batch.get(partition)
            if records is None:
                records = batch[partition] = []
            records.append(
                Record(message.offset(), message.key(), message.value(), message.timestamp()[1])
            )
        return batch

    def commit(self, offsets: dict[int, int]) -> bool:
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
            return True
        except KafkaException as exc:
            if exc.args and exc.args[0].code() in _REBALANCED:
                logger.warning("commit failed after rebalance error=%s", exc)
                return False
            raise

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        found = self._consumer.committed(
            [TopicPartition(self.topic, p) for p in partitions], timeout=30
        )
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

    def seek(self, offsets: dict[int, int | None]) -> None:
        for p, offset in offsets.items():
            self._consumer.seek(
                TopicPartition(self.topic, p, OFFSET_BEGINNING if offset is None else offset)
            )

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def highwater(self, partition: int) -> int | None:
        # cached=True: the watermarks from the latest fetch, no broker request.
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), cached=True
        )
        return high if high >= 0 else None

    def close(self) -> None:
        self._consumer.close()


class ConfluentReader:
    def __init__(self, kafka: KafkaSettings, topic: str, client_id: str) -> None:
        self.topic = topic
        config = _base_config(kafka, client_id)
        config.update(
            {
                # librdkafka needs a group id even for assign(); nothing joins or commits.
                "group.id": f"learnstream-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer = Consumer(config)
        # Next offset per partition, from what poll() returned (librdkafka's own
        # position lags behind records still in its queue).
        self._positions: dict[int, int] = {}

    def _tp(self, partition: int, offset: int = OFFSET_INVALID) -> TopicPartition:
        return TopicPartition(self.topic, partition, offset)

    def partitions(self, wait_s: float = 0.0) -> list[int]:
        deadline = time.monotonic() + wait_s
        while True:
            topic = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            if time.monotonic() >= deadline:
                if wait_s:
                    raise StreamError(f"topic {self.topic!r} does not exist (waited {wait_s}s)")
                return []
            time.sleep(0.2)

    def assign(self, starts: dict[int, int | None]) -> None:
        self._consumer.assign(
            [self._tp(p, OFFSET_BEGINNING if o is None else o) for p, o in starts.items()]
        )
        self._positions = {p: o for p, o in starts.items() if o is not None}

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]:
        consume = self._consumer.consume
        messages = consume(num_messages=max_records, timeout=0)
        if not messages:
            messages = consume(num_messages=max_records, timeout=timeout_ms / 1000)
        out = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise StreamError(f"reader failed: {error}")
                logger.warning("reader error topic=%s error=%s", self.topic, error)
                continue
            self._positions[message.partition()] = message.offset() + 1
            out.append(
                ReadRecord(
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    message.timestamp()[1],
                    list(message.headers() or []),
                )
            )
        return out

    def position(self, partition: int) -> int:
        if partition in self._positions:
            return self._positions[partition]
        [tp] = self._consumer.position([self._tp(partition)])
        if tp.offset >= 0:
            return tp.offset
        low, _ = self._consumer.get_watermark_offsets(self._tp(partition), timeout=10)
        return low

    def end_offset(self, partition: int) -> int:
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp(partition), timeout=10)
        except KafkaException as exc:
            # A missing topic answers _UNKNOWN_PARTITION: the caller's error, not a traceback.
            raise BrokerError(
                f"end offset of topic {self.topic!r} partition {partition} not known: "
                f"{exc.args[0] if exc.args else exc}"
            ) from exc
        return high

    def highwater(self, partition: int) -> int | None:
        _, high = self._consumer.get_watermark_offsets(self._tp(partition), cached=True)
        return high if high >= 0 else None

    def close(self) -> None:
        self._consumer.close()


def producer_config(
    kafka: KafkaSettings, client_id: str, linger_ms: int = 2, compression: Compression = "none"
) -> dict[str, object]:
    """librdkafka's producer options (without the delivery callback)."""
    config = _base_config(kafka, client_id)
    config.update(
        {
            "compression.type": compression,
            "acks": "all",
            "linger.ms": linger_ms,
            # A contribution is one record (see clients.MAX_RECORD_BYTES).
            "message.max.bytes": clients.MAX_RECORD_BYTES,
            # A retried send (an acknowledgement lost, a broker that paused) is
            # written once, not twice, and in order. Apache Kafka >= 0.11 and the
            # embedded broker accept it (tests/integration/test_idempotence.py).
            "enable.idempotence": True,
            "delivery.report.only.error": True,
        }
    )
    return config


class ConfluentProducer:
    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        linger_ms: int = 2,
        compression: Compression = "none",
    ) -> None:
        config = producer_config(kafka, client_id, linger_ms, compression)
        # Report failures only: a Python callback per acknowledged record
        # is work for nothing (flush still waits for every acknowledgement).
        config["on_delivery"] = self._delivered
        self._producer = Producer(config)
        self._failures: list = []
        self._sent = 0

    def _delivered(self, error, _message) -> None:
        if error is not None:
            self._failures.append(error)

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, object] = {}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:  # local queue full: let it drain
                self._producer.poll(0.05)
        self._sent += 1
        if self._sent % 10_000 == 0:
            self._producer.poll(0)  # serve delivery (error) callbacks

    def flush(self, timeout_s: float) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} records not acknowledged within {timeout_s}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"broker rejected {len(failures)} records; first: {failures[0]}")

    def partition_count(self, topic: str) -> int:
        return len(self._producer.list_topics(topic, timeout=30).topics[topic].partitions)

    def close(self, timeout_s: float = 10.0) -> None:
        if self._producer is None:
            return
        self._producer.flush(timeout_s)
        # librdkafka's handle lives (and reconnects) until it is freed.
        self._producer = None
