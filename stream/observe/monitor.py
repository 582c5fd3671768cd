"""What a worker watches about its own predictions: rolling quality and drift.

Fed once per batch with the batch's labeled ``(y, p)`` pairs and latencies,
so nothing here runs per event on the hot path except river's own updates.
The drift detector (ADWIN by default) watches the per-event log loss: when
the data changes under the model, its loss rises and ADWIN's window splits.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

from river import drift

from stream.observe.quality import window_quality

logger = logging.getLogger(__name__)

# Event-to-prediction latency buckets, seconds (Prometheus histogram bounds).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Age of the global version an event was scored with, seconds: a version is
# made every merge interval (1 s by default) plus the time to reach a worker.
MODEL_AGE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

# Losses are clipped so one confident mistake does not dominate the detector.
_EPS = 1e-7


@dataclass(frozen=True)
class DriftEvent:
    worker: str
    n_seen: int
    loss_mean: float
    at: float


class Histogram:
    """Cumulative bucket counts and sum, cheap to feed a batch at a time."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: +Inf
        self.total = 0.0
        self.n = 0

    def observe_many(self, values: list[float]) -> None:
        counts, bounds = self.counts, self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        self.total += sum(values)
        self.n += len(values)

    def observe_times(self, value: float, times: int) -> None:
        """``value`` observed ``times`` times (a batch's events share it)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.n += times

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) as Prometheus's ``histogram_quantile``
        estimates it: linear within the bucket it falls in (the last finite
        bound if it falls in +Inf); NaN before any observation."""
        if not self.n:
            return float("nan")
        rank = q * self.n
        below, lower = 0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            if below + count >= rank and count:
                return lower + (bound - lower) * (rank - below) / count
            below += count
            lower = bound
        return self.bounds[-1]

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Monitor:
    """Rolling accuracy, log loss and ROC AUC over the last ``window`` labeled
    events, and a drift detector on their log loss.

    Per event it only appends to the window and updates the detector (well
    under a microsecond); the quality metrics are river's, computed over the
    window when asked for (a scrape, a stats line), not on the hot path.
    A drift counts only when the loss went *up*: ADWIN also splits its window
    when the model gets better, which is no news.
    """

    def __init__(self, worker: str, window: int = 1000, detector: str = "adwin") -> None:
        self.worker = worker
        self.window: deque[tuple[bool, float]] = deque(maxlen=window)
        self.detector = _detector(detector)
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batch = Histogram(BATCH_BUCKETS_S)
        # How old the global version was when each event was scored with it.
        self.model_age = Histogram(MODEL_AGE_BUCKETS_S)
        self.n_labeled = 0
        self.drifts: list[DriftEvent] = []

    def observe(self, labeled: list[tuple[bool, float]]) -> DriftEvent | None:
        """Update with a batch's (label, probability) pairs; return a drift if one fired."""
        fired = None
        detector = self.detector
        # ADWIN's estimation and width properties go through three Python
        # property calls each (~4 us per event, profiled); its window's own
        # getters give the same numbers directly.
        adwin = isinstance(detector, drift.ADWIN)
        self.window.extend(labeled)
        for y, p in labeled:
            self.n_labeled += 1
            q = p if y else 1.0 - p
            loss = -math.log(min(max(q, _EPS), 1.0 - _EPS))
            if adwin:
                helper = detector._helper  # replaced when a drift resets the detector
                width = helper.get_width()
                total = (helper.get_total() / width if width else 0.0) * width
            detector.update(loss)
            if not detector.drift_detected or fired is not None:
                continue
            if not adwin:
                # Page-Hinkley runs in mode "up": it fires only when the loss rose.
                fired = DriftEvent(self.worker, self.n_labeled, self._recent_loss(), time.time())
                continue
            # ADWIN dropped its older part; compare that part's mean loss with
            # what is left (the recent part).
            dropped = width + 1 - detector.width
            if dropped > 0:
                older = (total + loss - detector.estimation * detector.width) / dropped
                if detector.estimation > older:
                    fired = DriftEvent(
                        self.worker, self.n_labeled, detector.estimation, time.time()
                    )
        if fired is not None:
            self.drifts.append(fired)
            logger.warning(
                "drift detected worker=%s labeled_seen=%d recent_log_loss=%.4f",
                fired.worker,
                fired.n_seen,
                fired.loss_mean,
            )
        return fired

    def _recent_loss(self, last: int = 100) -> float:
        """Mean log loss of the last ``last`` labeled predictions."""
        recent = list(self.window)[-last:]
        losses = [-math.log(min(max(p if y else 1.0 - p, _EPS), 1.0 - _EPS)) for y, p in recent]
        return sum(losses) / len(losses) if losses else 0.0

    def quality(self) -> dict[str, float]:
        """River's accuracy, log loss and ROC AUC over the current window."""
        return window_quality(list(self.window))


def _detector(name: str):
    if name == "adwin":
        return drift.ADWIN()
    if name == "page-hinkley":
        # "up": a drift is news only when the loss rises (as for ADWIN, above).
        # delta: a rise of the mean log loss below 0.05 nats is tolerated; river's
        # default (0.005) fired on stationary synthetic streams, this one fires
        # within 100 events of the change (tests/unit/test_monitor.py).
        return drift.PageHinkley(mode="up", delta=0.05, threshold=50.0)
    raise ValueError(f"drift detector must be 'adwin' or 'page-hinkley', got {name!r}")
