"""Rolling quality from the predictions topic, and the request rate, for the live page."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from stream.observe.quality import prequential

# What the summary carries besides ``n``: the fields of stream.observe.quality.Quality.
QUALITY_KEYS = ("accuracy", "log_loss", "calibration", "normalized_entropy")


class RollingQuality:
    """Accuracy and log loss over the last ``window`` labeled predictions seen."""

    def __init__(self, window: int) -> None:
        self._pairs: deque[tuple[bool, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.n_seen = 0

    def add(self, y: bool, p: float) -> None:
        with self._lock:
            self._pairs.append((y, p))
            self.n_seen += 1

    def summary(self) -> dict[str, float | int | None]:
        with self._lock:
            pairs = list(self._pairs)
        if not pairs:
            return dict.fromkeys(QUALITY_KEYS, None) | {"n": 0}
        q = prequential(pairs)
        # JSON has no NaN: a figure that is not defined (no positive label) is null.
        values = {key: getattr(q, key) for key in QUALITY_KEYS}
        return {"n": q.n} | {k: None if math.isnan(v) else v for k, v in values.items()}


class RateMeter:
    """Requests per second over the last ``span_s`` seconds, from a running count.

    ``tick`` records ``(time, count)`` (called about once a second); the rate is
    the count difference over the oldest sample still within the span.
    """

    def __init__(self, span_s: float = 5.0) -> None:
        self.span_s = span_s
        self.count = 0
        self._samples: deque[tuple[float, int]] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, self.count))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.span_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
