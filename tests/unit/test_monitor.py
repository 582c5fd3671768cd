"""Drift detection on the loss stream: fires soon after a change, not without one."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import ModelSettings
from stream.events.sources import SyntheticStream
from stream.model.online import OnlineModel
from stream.observe.monitor import Histogram, Monitor
from stream.observe.quality import entropy, prequential, window_quality

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


def test_calibration_is_predicted_positives_over_actual_ones():
    pairs = [(True, 0.5), (False, 0.25), (False, 0.25), (False, 0.0)]
    quality = prequential(pairs)
    assert quality.calibration == 1.0  # 0.5 + 0.25 + 0.25 predicted, 1 happened
    assert prequential([(True, 0.9), (False, 0.3)]).calibration == 1.2
    assert math.isnan(prequential([(False, 0.1)]).calibration)


def test_normalized_entropy_is_log_loss_over_the_entropy_of_the_label_rate():
    """Always predicting the rate scores exactly 1; knowing more scores below 1."""
    rate = 0.25
    at_the_rate = [(True, rate)] + [(False, rate)] * 3
    assert prequential(at_the_rate).normalized_entropy == pytest.approx(1.0, rel=1e-12)
    assert prequential(at_the_rate).calibration == pytest.approx(1.0)
    sharper = [(True, 0.6)] + [(False, 0.1)] * 3
    quality = prequential(sharper)
    expected = (-math.log(0.6) - 3 * math.log(0.9)) / 4 / entropy(rate)
    assert quality.normalized_entropy == pytest.approx(expected, rel=1e-9)
    assert quality.normalized_entropy < 1
    assert math.isnan(prequential([(True, 0.9)] * 3).normalized_entropy)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(0.001, 0.999, allow_nan=False)), min_size=1, max_size=50
    )
)
def test_window_quality_reports_calibration_and_normalized_entropy_of_its_pairs(pairs):
    quality = window_quality(pairs)
    positives = sum(y for y, _ in pairs)
    predicted = sum(p for _, p in pairs)
    if positives:
        assert quality["calibration"] == pytest.approx(predicted / positives)
    else:
        assert math.isnan(quality["calibration"])
    if 0 < positives < len(pairs):
        expected = quality["log_loss"] / entropy(positives / len(pairs))
        assert quality["normalized_entropy"] == pytest.approx(expected)
    else:
        assert math.isnan(quality["normalized_entropy"])


def test_a_batch_observed_at_once_counts_once_per_event():
    histogram = Histogram((1.0, 5.0))
    histogram.observe_times(0.5, 3)
    histogram.observe_times(7.0, 1)
    assert histogram.cumulative() == [("1.0", 3), ("5.0", 3), ("+Inf", 4)]
    assert histogram.total == 8.5 and histogram.n == 4


def test_quantiles_interpolate_within_their_bucket_as_prometheus_does():
    histogram = Histogram((1.0, 2.0, 4.0))
    assert math.isnan(histogram.quantile(0.5))
    histogram.observe_many([0.5] * 4 + [1.5] * 4 + [3.0] * 2)
    # rank 5 of 10 falls 1/4 into the (1, 2] bucket's 4 observations.
    assert histogram.quantile(0.5) == 1.25
    # rank 9.9: 1.9 of the (2, 4] bucket's 2.
    assert histogram.quantile(0.99) == pytest.approx(2.0 + 2.0 * 1.9 / 2)
    histogram.observe_times(100.0, 90)  # in +Inf: the last finite bound
    assert histogram.quantile(0.99) == 4.0


def test_the_single_model_yardstick_learns_categorical_and_hashed_events_as_workers_do():
    """Its features are the worker's: ``site=news``, hashed when the model is."""
    from stream.events.codec import features
    from stream.events.hashing import Hasher
    from stream.events.sources import CtrStream
    from stream.model.online import OnlineModel
    from stream.observe.quality import single_model_pairs

    rows = list(CtrStream(n_events=300, seed=2))
    settings = ModelSettings(optimizer="ftrl", scale=False, hash_bits=12)
    pairs = single_model_pairs(rows, settings)
    model, hasher = OnlineModel(settings), Hasher(12)
    expected = []
    for event_id, raw, y in rows:
        x = hasher(features(raw, event_id))
        expected.append((y, model.predict_proba(x)))
        model.learn(x, y)
    assert pairs == expected
