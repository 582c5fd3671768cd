"""Model quality and latency summaries, shared by the demo, the reader and tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from river import metrics

from stream.config import ModelSettings
from stream.events.sources import Row
from stream.model.online import OnlineModel


@dataclass(frozen=True)
class Quality:
    """Prequential (predict-then-learn) quality over ``n`` labeled events."""

    n: int
    accuracy: float
    log_loss: float


def prequential(pairs: Iterable[tuple[bool, float]]) -> Quality:
    """Quality of predictions ``p`` (probability of class 1) against labels ``y``."""
    accuracy, log_loss = metrics.Accuracy(), metrics.LogLoss()
    n = 0
    for y, p in pairs:
        accuracy.update(y, p >= 0.5)
        log_loss.update(y, {True: p, False: 1.0 - p})
        n += 1
    return Quality(n, accuracy.get(), log_loss.get())


def single_model_baseline(rows: Iterable[Row], settings: ModelSettings) -> Quality:
    """One in-process river model over the stream in order: the yardstick."""
    model = OnlineModel(settings)
    pairs = []
    for _, x, y in rows:
        p = model.predict_proba(x)
        if y is not None:
            pairs.append((y, p))
            model.learn(x, y)
    return prequential(pairs)


def percentiles(
    values: Iterable[float], qs: tuple[float, ...] = (50, 95, 99, 100)
) -> dict[str, float]:
    arr = np.fromiter(values, dtype=float)
    if arr.size == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {("max" if q == 100 else f"p{q:g}"): float(np.percentile(arr, q)) for q in qs}
