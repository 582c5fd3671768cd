"""Dead-letter records: the original bytes, untouched, with why and where in headers.

Headers (all UTF-8 bytes), so any Kafka tool can read them and the value stays
exactly what the producer sent:

- ``learnstream.reason``: one of :data:`stream.events.codec.REASONS`
- ``learnstream.error``: the human-readable message
- ``learnstream.topic``, ``learnstream.partition``, ``learnstream.offset``: the source record
- ``learnstream.worker``: the worker that rejected it
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from stream.errors import BadEvent

logger = logging.getLogger(__name__)

HEADER_PREFIX = "learnstream."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record as read back from the topic."""

    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    worker: str
    value: bytes | None
    key: bytes | None


def headers(error: BadEvent, topic: str, partition: int, offset: int, worker: str) -> list:
    return [
        ("learnstream.reason", error.reason.encode()),
        # backslashreplace: a message can never fail to become a header.
        ("learnstream.error", error.message.encode("utf-8", "backslashreplace")),
        ("learnstream.topic", topic.encode()),
        ("learnstream.partition", str(partition).encode()),
        ("learnstream.offset", str(offset).encode()),
        ("learnstream.worker", worker.encode()),
    ]


def parse(key: bytes | None, value: bytes | None, record_headers: list) -> DeadLetter:
    """Read a dead-letter record back (for tests, tools and replays)."""
    h = {
        name[len(HEADER_PREFIX) :]: raw.decode()
        for name, raw in record_headers
        if name.startswith(HEADER_PREFIX)
    }
    return DeadLetter(
        reason=h["reason"],
        error=h["error"],
        topic=h["topic"],
        partition=int(h["partition"]),
        offset=int(h["offset"]),
        worker=h["worker"],
        value=value,
        key=key,
    )


class DeadLetterLog:
    """Counts dead letters by reason and logs them without flooding the log.

    A burst of bad input (a producer with a bug) would otherwise write one line
    per record on the hot path; instead at most ``per_second`` lines a second are
    written, and the next line says how many were not shown.
    """

    def __init__(self, per_second: int = 5) -> None:
        self.by_reason: Counter[str] = Counter()
        self._per_second = per_second
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def record(self, error: BadEvent, topic: str, partition: int, offset: int) -> None:
        self.by_reason[error.reason] += 1
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self._per_second:
            self._suppressed += 1
            return
        self._in_window += 1
        logger.warning(
            "dead-lettered reason=%s topic=%s partition=%d offset=%d error=%r%s",
            error.reason,
            topic,
            partition,
            offset,
            error.message,
            f" (+{self._suppressed} not logged)" if self._suppressed else "",
        )
        self._suppressed = 0

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())
