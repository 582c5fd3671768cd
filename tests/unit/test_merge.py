"""The algebra of merging learning state."""

from __future__ import annotations

import itertools

import pytest

from stream.config import ModelSettings
from stream.events.sources import SyntheticStream
from stream.model.merge import add, merge, subtract
from stream.model.online import OnlineModel
from stream.model.state import ModelState

SETTINGS = [ModelSettings(), ModelSettings(optimizer="ftrl", learning_rate=0.1, l2=0.1)]


def _learned(settings: ModelSettings, rows, start: ModelState | None = None) -> OnlineModel:
    model = OnlineModel(settings)
    if start is not None:
        model.load_state(start)
    for _, x, y in rows:
        model.learn(x, y)
    return model


def _rows(n: int, seed: int = 5):
    return list(itertools.islice(SyntheticStream(n_features=6, seed=seed), n))


def _assert_close(a: dict, b: dict, tol: float = 1e-9) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=tol, abs=tol), key


def _assert_states_close(a: ModelState, b: ModelState, tol: float = 1e-9) -> None:
    for name in ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n"):
        _assert_close(getattr(a, name), getattr(b, name), tol)
    assert a.intercept == pytest.approx(b.intercept, abs=tol)
    assert a.n_learned == b.n_learned


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "ftrl"])
@pytest.mark.parametrize("rule", ["sum", "average"])
def test_merging_one_model_is_the_identity(settings, rule):
    base = _learned(settings, _rows(100, seed=1)).state()
    after = _learned(settings, _rows(300), start=base).state()
    _assert_states_close(merge(base, [subtract(after, base)], rule), after)


def test_merging_nothing_leaves_the_base_unchanged():
    base = _learned(ModelSettings(), _rows(50)).state()
    assert merge(base, []) == base


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "ftrl"])
@pytest.mark.parametrize("rule", ["sum", "average"])
def test_order_of_contributions_does_not_matter(settings, rule):
    base = _learned(settings, _rows(100, seed=1)).state()
    deltas = [
        subtract(_learned(settings, _rows(n, seed=s), start=base).state(), base)
        for n, s in ((50, 2), (120, 3), (80, 4))
    ]
    first = merge(base, deltas, rule)
    for order in itertools.permutations(deltas):
        _assert_states_close(merge(base, list(order), rule), first)


def test_two_halves_of_a_stream_give_the_whole_streams_statistics():
    settings = ModelSettings()
    rows = _rows(1000)
    empty = ModelState()
    halves = [_learned(settings, rows[:400]).state(), _learned(settings, rows[400:]).state()]
    merged = merge(empty, [subtract(h, empty) for h in halves])
    whole = _learned(settings, rows).state()
    # The scaler sees every event exactly as one model would; counts add up.
    _assert_close(merged.scaler_counts, whole.scaler_counts)
    _assert_close(merged.scaler_means, whole.scaler_means)
    _assert_close(merged.scaler_vars, whole.scaler_vars)
    assert merged.n_learned == whole.n_learned == 1000


def test_subtract_then_add_round_trips_the_scaler_statistics():
    settings = ModelSettings()
    before = _learned(settings, _rows(200, seed=9)).state()
    after = _learned(settings, _rows(300), start=before).state()
    delta = subtract(after, before)
    assert delta.n_learned == 300
    assert set(delta.scaler_counts.values()) == {300.0}
    _assert_states_close(add(before, delta), after)


def test_average_weights_contributions_by_their_labeled_events():
    base = ModelState(weights={"a": 1.0}, intercept=0.0)
    one = ModelState(weights={"a": 4.0}, intercept=1.0, n_learned=1)
    three = ModelState(weights={"a": -4.0}, intercept=2.0, n_learned=3)
    averaged = merge(base, [one, three], "average")
    assert averaged.weights["a"] == pytest.approx(1.0 + (1 * 4.0 + 3 * -4.0) / 4)
    assert averaged.intercept == pytest.approx((1 * 1.0 + 3 * 2.0) / 4)
    assert averaged.n_learned == 4
    summed = merge(base, [one, three], "sum")
    assert summed.weights["a"] == pytest.approx(1.0)
    assert summed.intercept == pytest.approx(3.0)


def test_ftrl_state_adds_exactly():
    settings = SETTINGS[1]
    base = _learned(settings, _rows(100, seed=1)).state()
    after = _learned(settings, _rows(100), start=base).state()
    delta = subtract(after, base)
    assert delta.ftrl_n and all(v >= 0 for v in delta.ftrl_n.values())
    _assert_close(add(base, delta).ftrl_z, after.ftrl_z)
