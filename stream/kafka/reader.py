"""Read a topic from outside the group: predictions, dead letters, anything.

The reader assigns itself every partition (no consumer group), so it never
takes partitions away from the workers and can start from the beginning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from stream.config import KafkaSettings
from stream.errors import StreamError
from stream.kafka import clients

logger = logging.getLogger(__name__)


def records(
    kafka: KafkaSettings,
    topic: str,
    from_beginning: bool = True,
    idle_timeout_s: float | None = None,
    wait_for_topic_s: float = 30.0,
) -> Iterator[ConsumerRecord]:
    """Records of ``topic`` across all partitions, as they arrive.

    Stops after ``idle_timeout_s`` seconds without a record (None: never).
    """
    consumer = clients.consumer(kafka, client_id="learnstream-reader", group_id=None)
    try:
        partitions = _partitions(consumer, topic, wait_for_topic_s)
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        last = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=200, max_records=5000)
            if batch:
                last = time.monotonic()
                for recs in batch.values():
                    yield from recs
            elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
    finally:
        consumer.close()


def _partitions(consumer, topic: str, wait_s: float) -> list[TopicPartition]:
    deadline = time.monotonic() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise StreamError(f"topic {topic!r} does not exist (waited {wait_s}s)")
        time.sleep(0.5)
        consumer.topics()  # refresh metadata
