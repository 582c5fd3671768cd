"""Kafka clients built from settings: one place for every client option we set.

Each tuned value carries its reason. Security options from
:class:`~stream.config.KafkaSettings` pass through to every client.
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from stream.config import KafkaSettings
from stream.errors import BrokerError

logger = logging.getLogger(__name__)

# Largest record learnstream writes, in bytes: a model or contribution record.
# A full model costs about 40 bytes per feature name (weight, scaler count, mean,
# variance, name) before compression: 64 MiB holds well over a million names.
# Apache Kafka's default topic limit (about 1 MB) holds about 17,000.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def producer(kafka: KafkaSettings, client_id: str, **overrides: object) -> KafkaProducer:
    """A producer that waits for full acknowledgement.

    ``acks="all"``: a prediction counts as delivered only once every in-sync
    replica has it, since offsets are committed on that basis. ``linger_ms=2``
    lets a batch of predictions share one request without adding visible latency.
    """
    config: dict[str, object] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "linger_ms": 2,
        "batch_size": 256 * 1024,
        "retries": 5,
        # A retried send (an acknowledgement lost, a broker that paused) is
        # written once, not twice. Set explicitly: an option that conflicts with
        # it then raises instead of silently turning it off. Apache Kafka >= 0.11
        # and the embedded broker accept it (tests/integration/test_idempotence.py).
        "enable_idempotence": True,
        # A contribution or a whole model is one record; the internal topics are
        # created to accept this much (see stream.kafka.topics).
        "max_request_size": MAX_RECORD_BYTES,
    }
    config.update(kafka.options)
    config.update(overrides)
    return _connect(KafkaProducer, config)


def consumer(kafka: KafkaSettings, client_id: str, **overrides: object) -> KafkaConsumer:
    """A consumer with manual commits: offsets move only after predictions are acknowledged."""
    config: dict[str, object] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Never create topics from the consumer side: a typo would silently wait forever.
        "allow_auto_create_topics": False,
        "fetch_max_wait_ms": 100,
    }
    config.update(kafka.options)
    config.update(overrides)
    return _connect(KafkaConsumer, config)


def admin(kafka: KafkaSettings, client_id: str = "learnstream-admin") -> KafkaAdminClient:
    config: dict[str, object] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id,
    }
    config.update(kafka.options)
    return _connect(KafkaAdminClient, config)


def _connect(cls: type, config: dict[str, object]) -> object:
    try:
        return cls(**config)
    except KafkaTimeoutError as exc:  # kafka-python 3: "Unable to bootstrap from ..."
        raise BrokerError(f"no broker answers at {config['bootstrap_servers']!r}") from exc
