"""Pick a Kafka client: the transport implementation named by ``--client``.

Kept apart from :mod:`stream.kafka.transport` (the interface) so the
implementations can import the interface without a cycle.
"""

from __future__ import annotations

from stream.config import ClientName, KafkaSettings, choices_of
from stream.errors import ConfigError
from stream.kafka.transport import Compression, Consumer, Producer, Reader

# The clients, from the ClientName type (the one list of them).
CLIENTS: tuple[ClientName, ...] = choices_of(ClientName)


def consumer(
    client: ClientName, kafka: KafkaSettings, topic: str, client_id: str, **group: object
) -> Consumer:
    """``group``: group_id, auto_offset_reset, timeouts (:class:`GroupTimeouts`),
    max_poll_records."""
    if client == "kafka-python":
        from stream.kafka.kafka_python import KafkaPythonConsumer

        return KafkaPythonConsumer(kafka, topic, client_id, **group)
    if client == "confluent":
        from stream.kafka.confluent import ConfluentConsumer

        return ConfluentConsumer(kafka, topic, client_id, **group)
    raise ConfigError(f"client must be one of {CLIENTS}, got {client!r}")


def producer(
    client: ClientName,
    kafka: KafkaSettings,
    client_id: str,
    linger_ms: int = 2,
    compression: Compression = "none",
) -> Producer:
    """``compression``: batches compressed by the client, stored so by the broker
    (gzip for model versions: mostly feature names, which compress well)."""
    if client == "kafka-python":
        from stream.kafka.kafka_python import KafkaPythonProducer

        return KafkaPythonProducer(kafka, client_id, linger_ms, compression)
    if client == "confluent":
        from stream.kafka.confluent import ConfluentProducer

        return ConfluentProducer(kafka, client_id, linger_ms, compression)
    raise ConfigError(f"client must be one of {CLIENTS}, got {client!r}")


def reader(client: ClientName, kafka: KafkaSettings, topic: str, client_id: str) -> Reader:
    """A group-less reader of ``topic`` (see :class:`~stream.kafka.transport.Reader`)."""
    if client == "kafka-python":
        from stream.kafka.kafka_python import KafkaPythonReader

        return KafkaPythonReader(kafka, topic, client_id)
    if client == "confluent":
        from stream.kafka.confluent import ConfluentReader

        return ConfluentReader(kafka, topic, client_id)
    raise ConfigError(f"client must be one of {CLIENTS}, got {client!r}")
