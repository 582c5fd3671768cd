"""Model quality and latency summaries, shared by the demo, the reader and tests."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from river import metrics

from stream.config import ModelSettings
from stream.events.codec import features
from stream.events.hashing import featurizer
from stream.events.sources import Row
from stream.model.online import OnlineModel


@dataclass(frozen=True)
class Quality:
    """Prequential (predict-then-learn) quality over ``n`` labeled events.

    ``calibration``: the sum of the predicted probabilities over the number of
    positives (1: as many clicks predicted as happened; above 1: the model
    over-predicts); NaN without a positive. ``normalized_entropy``: log loss
    over the entropy of the labels' own rate, what always predicting that rate
    would score (below 1: the model knows more than the rate; He et al. 2014,
    the measure click-through models are compared by, since a plain log loss
    falls with the rate itself); NaN when every label is the same.
    """

    n: int
    accuracy: float
    log_loss: float
    calibration: float = math.nan
    normalized_entropy: float = math.nan


def entropy(rate: float) -> float:
    """The log loss of always predicting ``rate``, on labels of that rate (nats)."""
    if not 0.0 < rate < 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def prequential(pairs: Iterable[tuple[bool, float]], *also: metrics.base.Metric) -> Quality:
    """Quality of predictions ``p`` (probability of class 1) against labels ``y``:
    river's accuracy (decision ``p >= 0.5``) and log loss, and from them the
    calibration and normalized entropy: the one computation behind every
    quality figure (demo, status, serve's page, the worker's window).
    ``also``: more river metrics, fed the same ``{True: p, False: 1 - p}``
    probabilities in the same pass."""
    accuracy, log_loss = metrics.Accuracy(), metrics.LogLoss()
    n = positives = 0
    predicted = 0.0
    for y, p in pairs:
        accuracy.update(y, p >= 0.5)
        proba = {True: p, False: 1.0 - p}
        log_loss.update(y, proba)
        for metric in also:
            metric.update(y, proba)
        n += 1
        positives += bool(y)
        predicted += p
    loss = log_loss.get()
    base = entropy(positives / n) if n else 0.0
    return Quality(
        n,
        accuracy.get(),
        loss,
        calibration=predicted / positives if positives else math.nan,
        normalized_entropy=loss / base if base else math.nan,
    )


def window_quality(pairs: Iterable[tuple[bool, float]]) -> dict[str, float]:
    """Accuracy, log loss, ROC AUC, calibration and normalized entropy over a
    window of ``(y, p)`` pairs, as the worker reports them (its /metrics
    gauges, stats line and live series): :func:`prequential`'s, plus river's
    ROC AUC."""
    roc_auc = metrics.ROCAUC()
    quality = prequential(pairs, roc_auc)
    return {
        "accuracy": float(quality.accuracy),
        "log_loss": float(quality.log_loss),
        "roc_auc": float(roc_auc.get()),
        "calibration": quality.calibration,
        "normalized_entropy": quality.normalized_entropy,
    }


def single_model_pairs(rows: Iterable[Row], settings: ModelSettings) -> list[tuple[bool, float]]:
    """``(y, p)`` of every labeled event, predicted by one in-process river model
    over the stream in order, before it learns the event: the yardstick. Its
    features are the worker's: categorical values as ``name=value``, hashed
    when the settings say so."""
    model = OnlineModel(settings)
    featurize = featurizer(settings.hash_bits)
    pairs = []
    for event_id, raw, y in rows:
        x = featurize(features(raw, event_id))
        p = model.predict_proba(x)
        if y is not None:
            pairs.append((y, p))
            model.learn(x, y)
    return pairs


def single_model_baseline(rows: Iterable[Row], settings: ModelSettings) -> Quality:
    """The quality of :func:`single_model_pairs`."""
    return prequential(single_model_pairs(rows, settings))


def percentiles(
    values: Iterable[float], qs: tuple[float, ...] = (50, 95, 99, 100)
) -> dict[str, float]:
    arr = np.fromiter(values, dtype=float)
    if arr.size == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {("max" if q == 100 else f"p{q:g}"): float(np.percentile(arr, q)) for q in qs}
