"""The dashboard's data: every series ``serve``'s page and ``GET /v1/series`` show.

This is the one place they come from. ``serve``'s followers
(:mod:`stream.serve.runtime`) feed it what they read: each prediction record
(predictions topic), each global model version (model topic), each dead
letter's reason (dead-letter topic) and the workers' consumer lag per
partition (the group's committed offsets against the features topic's high
watermarks, as ``learnstream status`` computes it). It changes nothing it
watches.

Memory is bounded whatever the traffic: time is cut into buckets of
``step_s`` seconds; the open bucket holds counters and at most
``latency_sample`` latencies (a uniform reservoir), and each closed bucket
becomes one :class:`Point` of fixed size kept in a ring of
``window_s / step_s`` points (the oldest falls out). The rolling quality and
drift detector are the workers' :class:`~stream.observe.monitor.Monitor`, over
the last ``quality_window`` labeled predictions, so the page's accuracy, log
loss, ROC AUC and drift alarms mean what the ``learnstream_rolling_*`` and
``learnstream_drifts_total`` metrics mean.

What each series means (the same as the Prometheus metrics in deploy/):

- ``scored_per_s``: prediction records that reached the predictions topic,
  per second of the bucket they arrived in (``learnstream_events_scored``).
- ``learned_per_s``: growth of the global model's ``n_learned`` between
  versions, per second of the bucket the newer version arrived in (learning
  reaches the global model at merges, so this series comes in steps).
- ``latency_p50_s``, ``latency_p99_s``: ``ts_scored - ts_record`` of the
  bucket's predictions (Kafka record timestamp of the event to its scoring,
  as ``learnstream_event_latency_seconds``); None for a bucket without any.
- ``accuracy``, ``log_loss``, ``roc_auc``: over the last ``quality_window``
  labeled predictions at the bucket's end (None before the first).
- ``model_version``, ``model_age_s``: the newest global version at the
  bucket's end and its age then.
- ``dead_letters_per_s``: by reason, per second.
- ``lag``: per partition, the newest measurement at the bucket's end (None
  where none was made yet).
- ``drifts``: drift alarms (the loss went up), with the bucket they fell in.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.observe.monitor import DriftEvent, Monitor
from stream.observe.quality import percentiles

# One point per 2 s over the last 10 minutes: 300 points, a few tens of kB.
STEP_S = 2.0
WINDOW_S = 600.0
# Latencies kept per open bucket to estimate its p50 and p99: a uniform
# reservoir of 512 gives the p99 of a busy bucket within about a percentile.
LATENCY_SAMPLE = 512


@dataclass(frozen=True, slots=True)
class Point:
    """One closed bucket, starting at ``t`` (epoch seconds)."""

    t: float
    scored_per_s: float
    learned_per_s: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    accuracy: float | None
    log_loss: float | None
    roc_auc: float | None
    labeled_in_window: int
    model_version: int | None
    model_age_s: float | None
    dead_letters_per_s: tuple[tuple[str, float], ...]
    lag: tuple[tuple[int, int | None], ...]
    drifts: tuple[DriftEvent, ...]


@dataclass
class _Open:
    """The bucket being filled."""

    index: int
    scored: int = 0
    learned: int = 0
    latencies: list[float] = field(default_factory=list)
    latencies_seen: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    drifts: list[DriftEvent] = field(default_factory=list)


class Series:
    """Bounded time series of the pipeline, as ``serve`` sees it (thread-safe).

    Every ``add_*`` method takes ``now`` (epoch seconds; the clock's time when
    omitted) so that tests can feed synthetic time.
    """

    def __init__(
        self,
        step_s: float = STEP_S,
        window_s: float = WINDOW_S,
        quality_window: int = 1000,
        latency_sample: int = LATENCY_SAMPLE,
        detector: str = "adwin",
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        if not window_s >= step_s:
            raise ValueError(f"window_s must be >= step_s ({step_s}), got {window_s}")
        if latency_sample < 1:
            raise ValueError(f"latency_sample must be >= 1, got {latency_sample}")
        self.step_s = step_s
        self.window_s = window_s
        self.capacity = max(1, int(window_s // step_s))
        self.latency_sample = latency_sample
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._points: deque[Point] = deque(maxlen=self.capacity)
        self._open: _Open | None = None
        self._monitor = Monitor("serve", quality_window, detector)
        self._quality: tuple[int, dict[str, float] | None] = (0, None)
        self._model: tuple[int, int, float] | None = None  # version, n_learned, created_at
        self._lag: dict[int, int | None] = {}
        self._reasons: set[str] = set()

    # --- feeding --------------------------------------------------------

    def add_predictions(
        self, records: Iterable[Mapping[str, Any]], now: float | None = None
    ) -> None:
        """Prediction records as the worker publishes them (stream/runtime/worker.py):
        ``p``, ``ts_record``, ``ts_scored``, and ``y`` when the event was labeled.
        Records missing those fields count as scored, and nothing more."""
        labeled: list[tuple[bool, float]] = []
        latencies: list[float] = []
        n = 0
        for record in records:
            n += 1
            scored, at = record.get("ts_scored"), record.get("ts_record")
            if _number(scored) and _number(at):
                latencies.append(float(scored) - float(at))
            y, p = record.get("y"), record.get("p")
            if y in (0, 1) and _number(p) and 0.0 <= p <= 1.0:
                labeled.append((bool(y), float(p)))
        with self._lock:
            bucket = self._advance(now)
            bucket.scored += n
            for latency in latencies:
                self._sample(bucket, latency)
            if labeled:
                fired = self._monitor.observe(labeled)
                if fired is not None:
                    bucket.drifts.append(fired)

    def add_model(
        self, version: int, n_learned: int, created_at: float, now: float | None = None
    ) -> None:
        """A global model version read from the model topic (older ones are ignored).

        The first version seen sets the baseline: what it learned before
        ``serve`` started is not counted as learned now. A version that learned
        fewer events than the one before (a pipeline started anew) sets a new
        baseline too."""
        with self._lock:
            bucket = self._advance(now)
            if self._model is not None:
                last_version, last_learned, _ = self._model
                if version <= last_version:
                    return
                if n_learned >= last_learned:
                    bucket.learned += n_learned - last_learned
            self._model = (version, n_learned, created_at)

    def add_dead_letters(self, reasons: Iterable[str], now: float | None = None) -> None:
        """The ``learnstream.reason`` of each dead letter read."""
        with self._lock:
            bucket = self._advance(now)
            for reason in reasons:
                bucket.dead[reason] += 1
                self._reasons.add(reason)

    def set_lag(self, lag: Mapping[int, int | None], now: float | None = None) -> None:
        """The newest lag measurement, per partition of the features topic."""
        with self._lock:
            self._advance(now)
            self._lag = dict(lag)

    # --- reading --------------------------------------------------------

    def points(self, now: float | None = None) -> list[Point]:
        """The closed buckets, oldest first (at most ``capacity``)."""
        with self._lock:
            self._advance(now)
            return list(self._points)

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        """The documented shape of ``GET /v1/series``: one array per series, all
        as long as ``t`` (columns, ready for a chart library)."""
        points = self.points(now)
        reasons = sorted({reason for p in points for reason, _ in p.dead_letters_per_s})
        partitions = sorted({partition for p in points for partition, _ in p.lag})
        out: dict[str, Any] = {"step_s": self.step_s, "window_s": self.window_s}
        out["t"] = [p.t for p in points]
        for name in (
            "scored_per_s",
            "learned_per_s",
            "latency_p50_s",
            "latency_p99_s",
            "accuracy",
            "log_loss",
            "roc_auc",
            "labeled_in_window",
            "model_version",
            "model_age_s",
        ):
            out[name] = [getattr(p, name) for p in points]
        dead = [dict(p.dead_letters_per_s) for p in points]
        out["dead_letters_per_s"] = {r: [d.get(r, 0.0) for d in dead] for r in reasons}
        lags = [dict(p.lag) for p in points]
        out["lag"] = {str(k): [lag.get(k) for lag in lags] for k in partitions}
        out["drifts"] = [
            {"t": p.t, "at": d.at, "labeled_seen": d.n_seen, "log_loss": d.loss_mean}
            for p in points
            for d in p.drifts
        ]
        return out

    # --- buckets --------------------------------------------------------

    def _advance(self, now: float | None) -> _Open:
        """The open bucket for ``now``, closing the ones before it (lock held).

        A ``now`` earlier than the open bucket (a clock step back) counts in
        the open bucket: time never runs backwards on the page."""
        now = self._clock() if now is None else now
        index = math.floor(now / self.step_s)
        bucket = self._open
        if bucket is None:
            bucket = self._open = _Open(index)
            return bucket
        if index <= bucket.index:
            return bucket
        self._points.append(self._close(bucket))
        # Buckets in which nothing arrived: at most a ring's worth matters.
        for empty in range(max(bucket.index + 1, index - self.capacity), index):
            self._points.append(self._close(_Open(empty)))
        bucket = self._open = _Open(index)
        return bucket

    def _close(self, bucket: _Open) -> Point:
        step = self.step_s
        t = bucket.index * step
        end = t + step
        if bucket.latencies:
            pct = percentiles(bucket.latencies, (50, 99))
            p50, p99 = pct["p50"], pct["p99"]
        else:
            p50 = p99 = None
        quality = self._current_quality()
        version = age = None
        if self._model is not None:
            version, _, created_at = self._model
            age = end - created_at if created_at else None
        return Point(
            t=t,
            scored_per_s=bucket.scored / step,
            learned_per_s=bucket.learned / step,
            latency_p50_s=p50,
            latency_p99_s=p99,
            accuracy=quality and quality["accuracy"],
            log_loss=quality and quality["log_loss"],
            roc_auc=quality and quality["roc_auc"],
            labeled_in_window=len(self._monitor.window),
            model_version=version,
            model_age_s=age,
            dead_letters_per_s=tuple(
                (reason, count / step) for reason, count in sorted(bucket.dead.items())
            ),
            lag=tuple(sorted(self._lag.items())),
            drifts=tuple(bucket.drifts),
        )

    def _current_quality(self) -> dict[str, float] | None:
        """The monitor's window quality, recomputed only when labels arrived since."""
        seen, quality = self._quality
        if seen != self._monitor.n_labeled:
            quality = self._monitor.quality() if self._monitor.window else None
            self._quality = (self._monitor.n_labeled, quality)
        return quality

    def _sample(self, bucket: _Open, latency: float) -> None:
        """Reservoir sampling (Algorithm R): each latency of the bucket is kept
        with the same probability, in at most ``latency_sample`` slots."""
        bucket.latencies_seen += 1
        if len(bucket.latencies) < self.latency_sample:
            bucket.latencies.append(latency)
            return
        slot = self._rng.randrange(bucket.latencies_seen)
        if slot < self.latency_sample:
            bucket.latencies[slot] = latency


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
