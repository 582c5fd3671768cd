"""The algebra of merging learning state."""

from __future__ import annotations

import collections
import itertools
from dataclasses import replace

import pytest
from river import optim

from stream.config import MergeSettings, ModelSettings
from stream.errors import ConfigError
from stream.events.sources import SyntheticStream
from stream.model.merge import add, ftrl_params, ftrl_weight, merge, subtract
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
def test_merging_one_model_is_the_identity_of_its_learning_state(settings):
    base = _learned(settings, _rows(100, seed=1)).state()
    after = _learned(settings, _rows(300), start=base).state()
    ftrl = ftrl_params(settings)
    merged = merge(base, [subtract(after, base)], ftrl=ftrl)
    if ftrl is None:
        _assert_states_close(merged, after)
    else:
        # FTRL: z and n are the state; the weights are its closed form.
        _assert_states_close(merged, replace(after, weights=merged.weights))
        _assert_close(
            merged.weights,
            {k: ftrl_weight(after.ftrl_z[k], after.ftrl_n[k], ftrl) for k in merged.weights},
        )


def test_merging_nothing_leaves_the_base_unchanged():
    base = _learned(ModelSettings(), _rows(50)).state()
    assert merge(base, []) == base


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "ftrl"])
def test_order_of_contributions_does_not_matter(settings):
    base = _learned(settings, _rows(100, seed=1)).state()
    deltas = [
        subtract(_learned(settings, _rows(n, seed=s), start=base).state(), base)
        for n, s in ((50, 2), (120, 3), (80, 4))
    ]
    ftrl = ftrl_params(settings)
    first = merge(base, deltas, ftrl=ftrl)
    for order in itertools.permutations(deltas):
        _assert_states_close(merge(base, list(order), ftrl=ftrl), first)


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "ftrl"])
def test_one_version_or_one_per_contribution_give_the_same_model(settings):
    """The result does not depend on how the merger batches contributions
    into versions (its linger): no rule averages over a batch."""
    base = _learned(settings, _rows(100, seed=1)).state()
    deltas = [
        subtract(_learned(settings, _rows(n, seed=s), start=base).state(), base)
        for n, s in ((50, 2), (120, 3), (80, 4))
    ]
    ftrl = ftrl_params(settings)
    one_by_one = base
    for delta in deltas:
        one_by_one = merge(one_by_one, [delta], ftrl=ftrl)
    _assert_states_close(merge(base, deltas, ftrl=ftrl), one_by_one)


def test_the_average_rule_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"average.*removed.*timing"):
        MergeSettings(rule="average")


def test_a_delta_holds_only_the_features_that_changed():
    settings = ModelSettings()
    wide = {f"g{i}": 1.0 for i in range(1000)}
    model = OnlineModel(settings)
    model.learn(wide, True)
    before = model.state()
    model.learn({"g1": 2.0, "g2": -1.0}, False)
    delta = subtract(model.state(), before)
    assert set(delta.scaler_counts) == {"g1", "g2"}
    # The two features' weights moved; so may nothing else but through the intercept.
    assert set(delta.weights) == {"g1", "g2"}


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


def test_sum_adds_every_step():
    base = ModelState(weights={"a": 1.0}, intercept=0.0)
    one = ModelState(weights={"a": 4.0}, intercept=1.0, n_learned=1)
    three = ModelState(weights={"a": -4.0}, intercept=2.0, n_learned=3)
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


def test_ftrl_weights_come_from_the_merged_z_and_n_not_from_summed_weight_deltas():
    settings = SETTINGS[1]
    ftrl = ftrl_params(settings)
    base = _learned(settings, _rows(100, seed=1)).state()
    deltas = [
        subtract(_learned(settings, _rows(80, seed=s), start=base).state(), base) for s in (2, 3)
    ]
    merged = merge(base, deltas, ftrl=ftrl)
    for name, weight in merged.weights.items():
        assert weight == ftrl_weight(merged.ftrl_z[name], merged.ftrl_n[name], ftrl)
    assert ftrl_weight(0.05, 4.0, replace(ftrl, l1=0.1)) == 0.0  # inside the L1 ball


FTRL_VARIANTS = [
    ModelSettings(optimizer="ftrl", learning_rate=0.1, l2=0.1),
    ModelSettings(optimizer="ftrl", learning_rate=0.1, l2=0.5, ftrl_l1=0.2, ftrl_beta=0.5),
    ModelSettings(optimizer="ftrl", learning_rate=0.3, l2=0.0, ftrl_l1=1.0, scale=False),
]


@pytest.mark.parametrize("settings", FTRL_VARIANTS, ids=["l2", "l1-beta0.5", "l1-unscaled"])
def test_merged_ftrl_weights_are_what_rivers_ftrl_proximal_computes_from_the_merged_state(
    settings,
):
    """river is the reference: its ``FTRLProximal``, given the merged ``z`` and
    ``n``, computes at its next step exactly the merged weight of every
    coordinate outside the L1 ball; inside it, the merge's weight is FTRL's
    zero (river leaves such a weight as it was: zero for one it never set)."""
    ftrl = ftrl_params(settings)
    base = _learned(settings, _rows(100, seed=1)).state()
    deltas = [
        subtract(_learned(settings, _rows(80, seed=s), start=base).state(), base) for s in (2, 3)
    ]
    merged = merge(base, deltas, ftrl=ftrl)
    assert set(merged.weights) == set(merged.ftrl_z) == {f"f{i}" for i in range(6)}
    for name, weight in merged.weights.items():
        river_ftrl = optim.FTRLProximal(alpha=ftrl.alpha, beta=ftrl.beta, l1=ftrl.l1, l2=ftrl.l2)
        river_ftrl.z = collections.defaultdict(float, merged.ftrl_z)
        river_ftrl.n = collections.defaultdict(float, merged.ftrl_n)
        stepped = river_ftrl.step({}, {name: 0.25})  # any gradient: w comes before it
        assert weight == stepped.get(name, 0.0), name
