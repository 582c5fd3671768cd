"""Drift detection on the loss stream: fires soon after a change, not without one."""

from __future__ import annotations

import itertools

import pytest

from stream.config import ModelSettings
from stream.events.sources import SyntheticStream
from stream.model.online import OnlineModel
from stream.observe.monitor import Histogram, Monitor

CHANGE_AT = 5000
LENGTH = 10_000
# ADWIN checks every 32 updates and needs evidence: allow a few hundred events
# (docs/observability.md: within 300). Page-Hinkley, tuned for this stream,
# fires sooner (docs/observability.md: within 100).
DETECTION_BOUND = 300
PAGE_HINKLEY_BOUND = 100


def _detections(stream: SyntheticStream, detector: str = "adwin") -> list[int]:
    model, monitor, fired = OnlineModel(ModelSettings()), Monitor("test", detector=detector), []
    for i, (_, x, y) in enumerate(itertools.islice(stream, LENGTH)):
        p = model.predict_proba(x)
        if monitor.observe([(y, p)]):
            fired.append(i)
        model.learn(x, y)
    return fired


@pytest.mark.parametrize("seed", [42, 4, 7])
def test_drift_fires_soon_after_the_change_point(seed):
    fired = _detections(SyntheticStream(seed=seed, drift_at=CHANGE_AT))
    assert fired, "no drift detected"
    assert CHANGE_AT <= fired[0] <= CHANGE_AT + DETECTION_BOUND, fired


@pytest.mark.parametrize("seed", [42, 4, 7])
def test_no_drift_on_a_stationary_stream_of_the_same_length(seed):
    assert _detections(SyntheticStream(seed=seed)) == []


@pytest.mark.parametrize("seed", [42, 4, 7])
def test_page_hinkley_fires_soon_after_the_change_point(seed):
    """page-hinkley used to crash on the first labeled event."""
    fired = _detections(SyntheticStream(seed=seed, drift_at=CHANGE_AT), "page-hinkley")
    assert fired, "no drift detected"
    assert CHANGE_AT <= fired[0] <= CHANGE_AT + PAGE_HINKLEY_BOUND, fired


@pytest.mark.parametrize("seed", [42, 4, 7])
def test_page_hinkley_stays_quiet_on_a_stationary_stream(seed):
    assert _detections(SyntheticStream(seed=seed), "page-hinkley") == []


def test_rolling_quality_uses_only_the_window():
    monitor = Monitor("test", window=4)
    monitor.observe([(True, 0.9)] * 10 + [(False, 0.9)] * 2 + [(True, 0.8)] * 2)
    quality = monitor.quality()
    assert quality["accuracy"] == pytest.approx(0.5)
    assert monitor.n_labeled == 14


def test_histogram_counts_are_cumulative_with_inf():
    histogram = Histogram((0.01, 0.1))
    histogram.observe_many([0.005, 0.01, 0.05, 3.0])
    assert histogram.cumulative() == [("0.01", 2), ("0.1", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(3.065)
