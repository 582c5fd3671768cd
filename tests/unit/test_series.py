"""The dashboard's series (stream/observe/series.py): bounded memory, exact rates,
quality and drift as the workers' monitor computes them."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.observe.monitor import Monitor
from stream.observe.series import Series


def prediction(p: float = 0.9, y: int | None = None, latency_s: float = 0.01) -> dict:
    record = {"id": "e", "p": p, "ts_record": 100.0, "ts_scored": 100.0 + latency_s}
    if y is not None:
        record["y"] = y
    return record


@settings(max_examples=50, deadline=None)
@given(
    capacity=st.integers(1, 20),
    arrivals=st.lists(st.floats(0, 10_000, allow_nan=False), max_size=300),
)
def test_the_ring_holds_at_most_window_over_step_points(capacity, arrivals):
    series = Series(step_s=1.0, window_s=float(capacity), latency_sample=8)
    for now in sorted(arrivals):
        series.add_predictions([prediction()] * 20, now=now)
        assert len(series.points(now)) <= capacity
        assert all(len(p.latencies) <= 8 for p in [series._open] if p is not None)
    series.points(now=20_000.0)
    assert len(series.points(now=40_000.0)) == capacity  # full, never more


@settings(max_examples=50, deadline=None)
@given(
    step_s=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
    counts=st.lists(st.integers(0, 50), min_size=1, max_size=30),
)
def test_scored_rate_is_count_over_step_for_every_bucket(step_s, counts):
    series = Series(step_s=step_s, window_s=step_s * 100)
    t0 = 1_000 * step_s
    for i, count in enumerate(counts):
        # Anywhere inside bucket i, spread over several calls.
        now = t0 + (i + 0.25) * step_s
        series.add_predictions([prediction()] * (count // 2), now=now)
        series.add_predictions([prediction()] * (count - count // 2), now=now + step_s / 2)
    body = series.as_json(now=t0 + len(counts) * step_s)
    assert body["t"] == [t0 + i * step_s for i in range(len(counts))]
    assert body["scored_per_s"] == [count / step_s for count in counts]


def test_learned_rate_counts_growth_between_versions_from_the_first_one_seen():
    series = Series(step_s=2.0, window_s=20.0)
    series.add_model(5, 1_000, created_at=99.0, now=100.0)  # baseline: learned before
    series.add_model(6, 1_300, created_at=101.0, now=101.0)  # same bucket: +300
    series.add_model(6, 1_300, created_at=101.0, now=102.5)  # the same version again: nothing
    series.add_model(4, 9_999, created_at=90.0, now=103.0)  # older: ignored
    series.add_model(7, 1_500, created_at=105.0, now=105.0)  # +200
    series.add_model(8, 10, created_at=106.0, now=107.0)  # pipeline started anew: new baseline
    series.add_model(9, 50, created_at=107.5, now=107.5)  # +40
    body = series.as_json(now=110.0)
    assert body["t"] == [100.0, 102.0, 104.0, 106.0, 108.0]
    assert body["learned_per_s"] == [150.0, 0.0, 100.0, 20.0, 0.0]
    assert body["model_version"] == [6, 6, 7, 9, 9]
    assert body["model_age_s"] == [1.0, 3.0, 1.0, 0.5, 2.5]


def test_dead_letters_per_reason_and_lag_per_partition():
    series = Series(step_s=1.0, window_s=10.0)
    series.add_dead_letters(["not_json", "not_json", "bad_type"], now=10.1)
    series.set_lag({0: 5, 1: 7}, now=10.2)
    series.add_dead_letters(["bad_type"], now=11.5)
    series.set_lag({0: 3, 1: None}, now=12.5)
    body = series.as_json(now=13.0)
    assert body["t"] == [10.0, 11.0, 12.0]
    assert body["dead_letters_per_s"] == {"bad_type": [1.0, 1.0, 0.0], "not_json": [2.0, 0.0, 0.0]}
    assert body["lag"] == {"0": [5, 5, 3], "1": [7, 7, None]}


def test_latency_percentiles_of_the_bucket_and_none_without_predictions():
    series = Series(step_s=1.0, window_s=10.0)
    series.add_predictions([prediction(latency_s=i / 1000) for i in range(101)], now=5.0)
    series.add_model(1, 0, 0.0, now=6.0)
    body = series.as_json(now=7.0)
    assert body["latency_p50_s"][0] == pytest.approx(0.050)
    assert body["latency_p99_s"][0] == pytest.approx(0.099)
    assert body["latency_p50_s"][1] is None and body["latency_p99_s"][1] is None
    assert body["model_age_s"] == [None, None]  # no creation time: no age


def test_a_burst_keeps_at_most_the_reservoir_and_its_percentiles_stay_close():
    series = Series(step_s=1.0, window_s=10.0, latency_sample=512)
    latencies = [i / 10_000 for i in range(10_000)]
    random.Random(1).shuffle(latencies)
    series.add_predictions([prediction(latency_s=x) for x in latencies], now=1.0)
    assert len(series._open.latencies) == 512
    point = series.points(now=2.0)[0]
    assert point.scored_per_s == 10_000
    assert abs(point.latency_p50_s - 0.5) < 0.1
    assert abs(point.latency_p99_s - 0.99) < 0.05


def test_quality_is_the_workers_monitor_over_the_window_and_drifts_are_marked():
    series = Series(step_s=1.0, window_s=100.0, quality_window=200)
    reference = Monitor("reference", window=200)
    rng = random.Random(7)
    now = 0.0
    drift_bucket = None
    for i in range(3_000):
        y = rng.random() < 0.5
        # The model is good, then (from event 1,500) confidently wrong.
        good = i < 1_500
        p = (0.9 if y else 0.1) if good else (0.1 if y else 0.9)
        series.add_predictions([prediction(p, int(y))], now=now)
        if reference.observe([(y, p)]) is not None and drift_bucket is None:
            drift_bucket = now // 1.0
        now += 0.02
    body = series.as_json(now=now + 1.0)
    last = len(body["t"]) - 1
    expected = reference.quality()
    assert body["accuracy"][last] == expected["accuracy"]
    assert body["log_loss"][last] == expected["log_loss"]
    assert body["roc_auc"][last] == expected["roc_auc"]
    assert body["labeled_in_window"][last] == 200
    assert [d["t"] for d in body["drifts"]][:1] == [drift_bucket]
    assert body["drifts"][0]["labeled_seen"] > 1_500
    orjson.dumps(body)  # JSON as it is


def test_unlabeled_or_malformed_records_count_as_scored_only():
    series = Series(step_s=1.0, window_s=10.0)
    series.add_predictions([{"id": 1}, {"p": "x", "y": 1}, {"p": 2.0, "y": 1}], now=1.0)
    point = series.points(now=2.0)[0]
    assert point.scored_per_s == 3.0
    assert point.accuracy is None and point.labeled_in_window == 0
    assert point.latency_p50_s is None


def test_bad_shapes_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="step_s must be > 0, got 0"):
        Series(step_s=0)
    with pytest.raises(ValueError, match="window_s must be >= step_s"):
        Series(step_s=2.0, window_s=1.0)
