"""Named crash points: deterministic fault injection for recovery tests.

A random SIGKILL lands wherever the process happens to be; whether it hit the
one instant that matters is luck. A crash point is a named place in the
protocol where a test can make the process die, exactly there, by SIGKILL
(no cleanup, no ``finally``: as a power cut would). Tests arm one with the
``LEARNSTREAM_CRASH_AT=name[:count]`` environment variable (read by the CLI,
at the edge, into the ``crash_at`` setting): the process dies at the
``count``-th time it reaches ``name``. A supervisor restarts a crashed process
disarmed, so the crash happens once and recovery can be checked.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from stream.errors import ConfigError

logger = logging.getLogger(__name__)

# Every crash point, with what has happened when a process dies there.
CRASH_POINTS: dict[str, str] = {
    "worker.before_flush": "a batch's predictions were sent, none is known acknowledged",
    "worker.after_flush_before_commit": "a batch's predictions are acknowledged, "
    "its offsets not committed",
    "worker.after_commit": "a batch is committed, its learning not yet contributed",
    "worker.after_contribution_sent": "a contribution is acknowledged, no version with it "
    "has arrived",
    "worker.on_revoke_after_contribution": "partitions are being revoked; the hand-over "
    "contribution (if there was learning to hand over) is acknowledged",
    "merger.after_merge_before_publish": "a version is computed, not published",
    "merger.after_delta_before_snapshot": "a version is on the model topic as a delta, "
    "the full snapshot due with it is not",
    "merger.after_publish_before_checkpoint": "a version is on the model topic, "
    "not in a checkpoint file",
    "merger.during_checkpoint_write": "a checkpoint's temporary file is written, not renamed",
    "merger.after_checkpoint": "a version is published and checkpointed, the merger "
    "group's offset not committed",
}


@dataclass(frozen=True)
class CrashAt:
    """Die the ``count``-th time ``point`` is reached."""

    point: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> CrashAt:
        """``name`` or ``name:count``; raises ConfigError naming the bad part."""
        point, _, count = text.partition(":")
        if point not in CRASH_POINTS:
            raise ConfigError(f"unknown crash point {point!r}; known: {sorted(CRASH_POINTS)}")
        try:
            n = int(count) if count else 1
        except ValueError as exc:
            raise ConfigError(f"crash point count must be an integer, got {count!r}") from exc
        if n < 1:
            raise ConfigError(f"crash point count must be >= 1, got {n}")
        return cls(point, n)


class CrashPoints:
    """The armed crash point of one process (or none)."""

    def __init__(self, crash_at: str | None = None) -> None:
        self.armed = CrashAt.parse(crash_at) if crash_at else None
        self._hits = 0

    def hit(self, point: str, prepare: Callable[[], None] | None = None) -> None:
        """Reached ``point``: die here if it is the armed one and its count is due.

        ``prepare`` runs just before dying, only then: it makes the point mean
        what its name says (e.g. flush, so "after a contribution is sent" holds
        one that the broker has).
        """
        armed = self.armed
        if armed is None or armed.point != point:
            return
        self._hits += 1
        if self._hits < armed.count:
            return
        if prepare is not None:
            prepare()
        logger.warning(
            "crash point reached, dying point=%s hit=%d pid=%d", point, self._hits, os.getpid()
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


NO_CRASH = CrashPoints()
