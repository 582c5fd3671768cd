"""Kafka clients built from settings: one place for every client option we set.

Each tuned value carries its reason. Security options from
:class:`~stream.config.KafkaSettings` pass through to every client.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from stream.config import KafkaSettings, TopicSettings
from stream.errors import BrokerError

logger = logging.getLogger(__name__)


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
        "max_request_size": 2 * 1024 * 1024,
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


def pipeline_topics(topics: TopicSettings, partitions: int) -> dict[str, int]:
    """Every topic the pipeline uses, with its partition count."""
    return {
        topics.features: partitions,
        topics.predictions: partitions,
        topics.dead_letter: 1,
        # One partition each: the merger needs one total order of contributions,
        # and the model topic is a single sequence of versions.
        topics.contributions: 1,
        topics.model: 1,
    }


def topic_configs(topics: TopicSettings) -> dict[str, dict[str, str]]:
    """Only the latest model version matters: compact the model topic."""
    return {topics.model: {"cleanup.policy": "compact"}}


def ensure_topics(
    kafka: KafkaSettings,
    partitions: dict[str, int],
    replication_factor: int = 1,
    configs: dict[str, dict[str, str]] | None = None,
) -> dict[str, int]:
    """Create missing topics; return each topic's partition count as the broker reports it.

    Existing topics are left alone (a warning says so when they have fewer
    partitions than asked, since that caps how many workers can share the load).
    """
    client = admin(kafka)
    try:
        configs = configs or {}
        wanted = [
            NewTopic(name, count, replication_factor, topic_configs=configs.get(name, {}))
            for name, count in partitions.items()
        ]
        for topic in wanted:
            try:
                client.create_topics([topic])
                logger.info(
                    "topic created topic=%s partitions=%d", topic.name, topic.num_partitions
                )
            except TopicAlreadyExistsError:
                logger.info("topic exists topic=%s", topic.name)
        actual = describe_partitions(client, list(partitions))
        for name, count in partitions.items():
            if actual.get(name, 0) < count:
                logger.warning(
                    "topic has fewer partitions than asked topic=%s partitions=%d asked=%d",
                    name,
                    actual.get(name, 0),
                    count,
                )
        return actual
    finally:
        client.close()


def create_pipeline_topics(
    kafka: KafkaSettings, topics: TopicSettings, partitions: int, replication_factor: int = 1
) -> dict[str, int]:
    return ensure_topics(
        kafka, pipeline_topics(topics, partitions), replication_factor, topic_configs(topics)
    )


def describe_partitions(client: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition count per topic; topics metadata may lag creation briefly, so retry."""
    deadline = time.monotonic() + 10
    while True:
        try:
            described = client.describe_topics(topics)
            counts = {t["name"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
            if len(counts) == len(topics) or time.monotonic() > deadline:
                return counts
        except KafkaError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
