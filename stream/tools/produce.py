"""Send events to the features topic at a chosen rate, with delivery checked."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tqdm import tqdm

from stream.config import ClientName, Encoding, KafkaSettings
from stream.errors import ConfigError
from stream.events.codec import encode, event_to_map
from stream.events.sources import Row
from stream.kafka import connect

logger = logging.getLogger(__name__)

KeyMode = Literal["id", "none"]
# How long the final flush may wait for the broker's acknowledgements.
DELIVERY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ProduceSettings:
    """``rate``: events per second (None: as fast as the broker takes them).
    ``key``: "id" keys each record by its event id (so an id always lands on the
    same partition), "none" lets the client spread records.
    ``timestamp``: add ``ts`` (send time, epoch seconds) to each event.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic: str = "features"
    encoding: Encoding = "msgpack"
    rate: float | None = None
    limit: int | None = None
    key: KeyMode = "id"
    timestamp: bool = True
    client: ClientName = "confluent"

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"rate must be > 0 events/s, got {self.rate}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}")
        if self.key not in ("id", "none"):
            raise ConfigError(f"key must be 'id' or 'none', got {self.key!r}")


@dataclass(frozen=True)
class ProduceResult:
    sent: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def produce(
    rows: Iterable[Row], settings: ProduceSettings, progress: bool = False
) -> ProduceResult:
    """Send ``rows`` as events; return once every record is acknowledged.

    Raises DeliveryError when the broker rejected any record.
    """
    producer = connect.producer(
        settings.client, settings.kafka, "learnstream-producer", linger_ms=5
    )
    sent = 0
    start = time.monotonic()
    bar = tqdm(total=settings.limit, unit="ev", disable=not progress, mininterval=0.5)
    try:
        for event_id, x, y in rows:
            if settings.limit is not None and sent >= settings.limit:
                break
            if settings.rate is not None:
                # Pace against the start, not the previous send, so the mean rate holds.
                delay = start + sent / settings.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            ts = time.time() if settings.timestamp else None
            value = encode(event_to_map(event_id, x, y, ts), settings.encoding)
            key = str(event_id).encode() if settings.key == "id" else None
            producer.send(settings.topic, value, key)
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
        producer.flush(DELIVERY_TIMEOUT_S)
        bar.update(sent % 1000)
    finally:
        bar.close()
        producer.close()
    result = ProduceResult(sent, time.monotonic() - start)
    logger.info(
        "produced topic=%s events=%d elapsed_s=%.2f rate=%.0f/s",
        settings.topic,
        result.sent,
        result.elapsed_s,
        result.rate,
    )
    return result
