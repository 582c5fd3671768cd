"""The threads behind ``learnstream serve``: follow the model topic (or the
checkpoint directory) into the holder, the predictions topic into the rolling
quality, and all three (model, predictions, dead-letter topics) into the
dashboard's :class:`~stream.observe.series.Series`; and the producer behind
``POST /v1/events``.

Each thread survives a broker that is down or goes away: it logs, waits and
tries again, while the API goes on serving the version it has.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from stream.config import ServeSettings
from stream.events.codec import decode_map
from stream.events.deadletter import HEADER_PREFIX
from stream.kafka import connect
from stream.kafka.transport import Producer
from stream.model.merge import copy_state
from stream.observe import status
from stream.observe.series import Series
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from stream.sync.checkpoint import CheckpointStore
from stream.sync.feed import ModelFeed

logger = logging.getLogger(__name__)

# Back-off between attempts to reach a broker that did not answer, seconds.
RETRY_S = 2.0
CLIENT_ID = "learnstream-serve"
REASON_HEADER = f"{HEADER_PREFIX}reason"
# How often the workers' consumer lag is measured for the dashboard, seconds:
# each measurement is an admin round trip and a fetch per partition.
LAG_POLL_S = 10.0


class ServeRuntime:
    """Starts and stops the followers; gives the events producer on demand."""

    def __init__(
        self,
        settings: ServeSettings,
        holder: ModelHolder,
        quality: RollingQuality,
        series: Series | None = None,
        lag_poll_s: float = LAG_POLL_S,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.quality = quality
        self.series = series
        self.lag_poll_s = lag_poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer: Producer | None = None
        self._producer_lock = threading.Lock()

    def start(self) -> None:
        """Serve the newest checkpoint at once, then follow the broker (or the directory)."""
        s = self.settings
        if s.checkpoint_dir is not None:
            stored = self._store().latest()
            if stored is not None:
                self._offer(stored)
            else:
                logger.info("no checkpoint yet dir=%s", s.checkpoint_dir)
        if s.offline:
            self._spawn(self._follow_directory, "serve-checkpoints")
        else:
            self._spawn(self._follow_model_topic, "serve-model-feed")
            self._spawn(self._follow_predictions, "serve-predictions")
            if self.series is not None:
                self._spawn(self._follow_dead_letters, "serve-dead-letters")
                self._spawn(self._measure_lag, "serve-lag")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        with self._producer_lock:
            if self._producer is not None:
                self._producer.close(timeout_s)
                self._producer = None

    def producer(self) -> Producer:
        """The events producer, created on first use (blocking: call from a worker thread)."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = connect.producer(
                    self.settings.client, self.settings.kafka, f"{CLIENT_ID}-events", linger_ms=1
                )
            return self._producer

    def _follow_model_topic(self) -> None:
        s = self.settings
        feed: ModelFeed | None = None
        offered: tuple[int, int] | None = None
        while not self._stop.is_set():
            try:
                if feed is None:
                    feed = ModelFeed(s.kafka, s.topics, CLIENT_ID, s.client)
                    logger.info("following model topic=%s", s.topics.model)
                snapshot = feed.poll(timeout_ms=200)
                if snapshot is not None and snapshot.order != offered:
                    # A copy: the feed updates the version it holds in place,
                    # and a served version stays as it was swapped in.
                    offered = snapshot.order
                    self._offer(replace(snapshot, state=copy_state(snapshot.state)))
            except Exception as exc:  # a broker gone away must not end the thread
                logger.warning("model topic not readable, retrying in %.0f s: %r", RETRY_S, exc)
                if feed is not None:
                    _close_quietly(feed)
                    feed = None
                self._stop.wait(RETRY_S)
        if feed is not None:
            _close_quietly(feed)

    def _offer(self, snapshot) -> None:
        self.holder.offer(snapshot)
        if self.series is not None:
            self.series.add_model(snapshot.version, snapshot.n_learned, snapshot.created_at)

    def _store(self) -> CheckpointStore:
        """The checkpoints of this pipeline only: a directory shared with another
        pipeline never makes ``serve`` answer with that pipeline's model."""
        s = self.settings
        return CheckpointStore(
            Path(s.checkpoint_dir),  # type: ignore[arg-type]
            pipeline={"features": s.topics.features},
        )

    def _follow_directory(self) -> None:
        directory = Path(self.settings.checkpoint_dir)  # type: ignore[arg-type]
        store = self._store()
        seen: frozenset[str] = frozenset()
        while not self._stop.wait(self.settings.checkpoint_poll_s):
            # Any new file, not only the newest name: the newest may be another
            # pipeline's, and the store decides which are this pipeline's.
            names = frozenset(p.name for p in directory.glob("model-*.ckpt"))
            if names and names != seen:
                seen = names
                stored = store.latest()
                if stored is not None:
                    self._offer(stored)

    def _follow_predictions(self) -> None:
        self._follow(self.settings.topics.predictions, "predictions", self._observe_predictions)

    def _follow_dead_letters(self) -> None:
        self._follow(self.settings.topics.dead_letter, "dead-letters", self._observe_dead_letters)

    def _follow(self, topic: str, what: str, observe) -> None:
        """Read ``topic`` from its end on, handing each poll's records to ``observe``."""
        s = self.settings
        reader = None
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = connect.reader(s.client, s.kafka, topic, f"{CLIENT_ID}-{what}")
                    partitions = reader.partitions()
                    if not partitions:
                        raise LookupError(f"topic {topic!r} not found yet")
                    # From the end: the page shows the stream from now on. (On the
                    # embedded broker the end can be a few records early: harmless.)
                    reader.assign({p: reader.end_offset(p) for p in partitions})
                records = reader.poll(200, 5000)
                if records:
                    observe(records)
            except Exception as exc:
                logger.info("%s topic not readable, retrying: %r", what, exc)
                if reader is not None:
                    _close_quietly(reader)
                    reader = None
                self._stop.wait(RETRY_S)
        if reader is not None:
            _close_quietly(reader)

    def _measure_lag(self) -> None:
        """The workers' group lag per features partition, every ``lag_poll_s``."""
        assert self.series is not None
        s = self.settings
        while not self._stop.is_set():
            try:
                self.series.set_lag(status.lag(s.kafka, s.topics))
            except Exception as exc:  # no topic or group yet, or a broker gone away
                logger.info("consumer lag not measured, retrying: %r", exc)
            self._stop.wait(self.lag_poll_s)

    def _observe_predictions(self, records) -> None:
        decoded = []
        for record in records:
            if not record.value:
                continue
            try:
                obj, _ = decode_map(record.value)
            except Exception:
                continue
            decoded.append(obj)
            y, p = obj.get("y"), obj.get("p")
            if y in (0, 1) and isinstance(p, float):
                self.quality.add(bool(y), p)
        if self.series is not None:
            self.series.add_predictions(decoded)

    def _observe_dead_letters(self, records) -> None:
        assert self.series is not None
        reasons = []
        for record in records:
            for name, value in record.headers:
                if name == REASON_HEADER:
                    reasons.append(value.decode("utf-8", "replace"))
                    break
            else:
                reasons.append("unknown")
        self.series.add_dead_letters(reasons)


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception as exc:
        logger.debug("close failed: %r", exc)
