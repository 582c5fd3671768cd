"""Send events to the features topic at a chosen rate, with delivery checked."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm import tqdm

from stream.config import KeyMode as KeyMode  # re-exported: the tools' callers import it here
from stream.config import ProduceSettings as ProduceSettings
from stream.events.codec import encode, event_to_map
from stream.events.sources import Row
from stream.kafka import connect
from stream.kafka.transport import Producer

logger = logging.getLogger(__name__)

# How long the final flush may wait for the broker's acknowledgements.
DELIVERY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ProduceResult:
    sent: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def event_producer(settings: ProduceSettings) -> Producer:
    """The producer :func:`produce` sends with. Made ahead, it has started by
    the time the first event is sent: an idempotent producer's first send
    waits for its producer id (half a second on the embedded broker), which
    would otherwise count in every latency measured from the events' timestamps."""
    return connect.producer(settings.client, settings.kafka, "learnstream-producer", linger_ms=5)


def produce(
    rows: Iterable[Row],
    settings: ProduceSettings,
    progress: bool = False,
    producer: Producer | None = None,
) -> ProduceResult:
    """Send ``rows`` as events; return once every record is acknowledged.
    ``producer``: one made ahead by :func:`event_producer` (the caller closes
    it); None: made here and closed.

    Raises DeliveryError when the broker rejected any record.
    """
    owned = producer is None
    producer = producer or event_producer(settings)
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
        if owned:
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
