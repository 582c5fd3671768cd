"""The broker-free parts of `learnstream bench` run against the library as it
is (a bench that only breaks when someone runs it is no bench)."""

from __future__ import annotations

import json
from dataclasses import asdict

from stream.config import BenchSettings
from stream.tools.bench import BenchResult, decoding_us


def test_decoding_costs_are_measured_for_both_decoders_and_both_encoders():
    result = decoding_us(3)
    assert result["features"] == 3
    for name in ("general_us", "batch_us", "packb_us", "packer_us"):
        assert result[name] > 0, name


def test_the_categorical_bench_measures_every_kind_and_a_growing_vocabulary(tmp_path):
    from stream.cli import main
    from stream.tools.featurebench import rates, vocabulary_growth

    result = rates(2000, fields=4, repeats=1, hash_bits=8)
    for kind in ("numeric", "numeric_hashed", "categorical", "categorical_hashed",
                 "categorical8_hashed"):  # fmt: skip
        assert result[f"{kind}_eps"] > 0, kind
    growth = vocabulary_growth(2000, fields=20, hash_bits=8)
    assert growth["distinct_features"] == 2000 * 10 + 10 * 100
    assert growth["by_name_features_held"] == growth["distinct_features"]
    assert growth["hashed_features_held"] <= 2**8
    assert len(growth["hashed_eps_by_quarter"]) == 4
    out = tmp_path / "categorical.json"
    assert main(["bench", "--categorical", "--events", "2000", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {
        "rates",
        "vocabulary_growth",
        "hashing_quality",
        "sync_cost",
    }


def test_the_hashing_quality_bench_compares_hashed_and_exact_models_on_the_click_stream():
    from stream.tools.featurebench import QUALITY_MODELS, hashing_quality

    result = hashing_quality(4000, hash_bits=20)
    assert result["events"] == 4000
    assert 0.02 < result["click_rate"] < 0.06
    for model in QUALITY_MODELS:
        exact, hashed = result[f"{model}_exact_log_loss"], result[f"{model}_hashed_log_loss"]
        assert result[f"{model}_hashed_to_exact"] == round(hashed / exact, 4)
        # 2^20 slots for about 25,000 distinct values: collisions are rare, so
        # the hashed model is within the 1% of the exact one.
        assert abs(result[f"{model}_hashed_to_exact"] - 1) < 0.01
    # The stream's own probabilities beat predicting the base rate.
    assert result["true_model_ne"] < 1


def test_results_are_written_when_an_out_path_was_given(tmp_path):
    """``bench --out FILE``: the settings recorded with the results hold a path."""
    settings = BenchSettings(out=tmp_path / "bench.json")
    result = BenchResult(machine={}, settings=asdict(settings))
    assert json.loads(result.to_json())["settings"]["out"] == str(tmp_path / "bench.json")


def test_the_sync_bench_times_cut_and_adopt_both_ways_at_the_distinct_features_asked():
    from stream.tools.featurebench import sync_cost

    result = sync_cost(20_000, hash_bits=16, changed=100, periods=3)
    assert result["distinct_features"] == 20_000
    assert result["changed_slots"] == 100
    for way in ("changed", "whole"):
        assert result[f"cut_ms_{way}"] > 0 and result[f"adopt_ms_{way}"] > 0, way
        assert 0 < result[f"merging_cost_{way}"] < 1, way
    assert result["adopt_idle_ms_changed"] > 0


def test_the_click_models_are_compared_on_the_same_hashed_stream():
    from stream.tools.featurebench import CLICK_MODELS, click_models

    result = click_models(3000, hash_bits=16)
    assert result["events"] == 3000
    assert set(result) == {"events", *CLICK_MODELS}
    scaled = result["defaults (scaler, SGD 0.01)"]
    # The scaler zeroes a one-hot feature (always 1.0, variance 0): weights move
    # only in slots where two features of an event collided (a value of 2.0).
    assert scaled["nonzero"] * 100 < result["SGD --no-scaler, rate 0.01"]["nonzero"]
    for name in CLICK_MODELS:
        assert result[name]["log_loss"] > 0 and result[name]["nonzero"] >= 0
    # L1 keeps weights at exactly 0 that FTRL without it moves.
    assert (
        result["FTRL alpha 0.2, L1 1.0, L2 0.0"]["nonzero"]
        < result["FTRL alpha 0.2, L1 0.0, L2 0.0"]["nonzero"]
    )
