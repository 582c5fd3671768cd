"""The model wrapper behaves exactly as river driven by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import compose, linear_model, optim, preprocessing

from stream.config import ModelSettings
from stream.events.sources import SyntheticStream, river_dataset
from stream.model.online import OnlineModel
from stream.model.state import ModelState


def _by_hand(settings: ModelSettings):
    if settings.optimizer == "ftrl":
        lr = linear_model.LogisticRegression(
            optimizer=optim.FTRLProximal(
                alpha=settings.learning_rate,
                beta=settings.ftrl_beta,
                l1=settings.ftrl_l1,
                l2=settings.l2,
            ),
            l2=0.0,
        )
    else:
        lr = linear_model.LogisticRegression(
            optimizer=optim.SGD(settings.learning_rate), l2=settings.l2
        )
    return compose.Pipeline(preprocessing.StandardScaler(), lr) if settings.scale else lr


SETTINGS = [
    ModelSettings(),
    ModelSettings(scale=False),
    ModelSettings(learning_rate=0.05, l2=0.001),
    ModelSettings(optimizer="ftrl", learning_rate=0.1, l2=0.5, ftrl_l1=0.01),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
def test_wrapper_gives_rivers_probabilities(settings):
    ours, theirs = OnlineModel(settings), _by_hand(settings)
    for _, x, y in river_dataset("phishing"):
        assert ours.predict_proba(x) == theirs.predict_proba_one(x)[True]
        ours.learn(x, y)
        theirs.learn_one(x, y)
    assert ours.n_learned == 1250


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
def test_state_round_trip_restores_the_same_model(settings):
    stream = iter(SyntheticStream(n_features=5, seed=3))
    original = OnlineModel(settings)
    for _ in range(300):
        _, x, y = next(stream)
        original.learn(x, y)
    restored = OnlineModel(settings)
    restored.load_state(original.state())
    assert restored.state() == original.state()
    for _ in range(200):
        _, x, y = next(stream)
        assert restored.predict_proba(x) == original.predict_proba(x)
        restored.learn(x, y)
        original.learn(x, y)


def test_state_is_a_snapshot_not_a_view():
    model = OnlineModel(ModelSettings())
    model.learn({"a": 1.0}, True)
    snapshot = model.state()
    model.learn({"a": 3.0}, False)
    assert snapshot.n_learned == 1
    assert snapshot.scaler_means == {"a": 1.0}
    assert isinstance(snapshot, ModelState)


_NAMES = st.sampled_from([f"f{i}" for i in range(6)]) | st.text(min_size=1, max_size=3)
_VALUES = st.floats(-1e4, 1e4, allow_nan=False) | st.sampled_from([0.0, -0.0, 1.0])


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(SETTINGS),
    seed=st.integers(0, 3),
    batch=st.lists(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), max_size=30),
)
def test_predict_proba_many_is_predict_proba_bit_for_bit(which, seed, batch):
    import random

    rng = random.Random(seed)
    model = OnlineModel(which)
    for _ in range(200):
        x = {f"f{i}": rng.gauss(i, 1 + i) for i in range(6) if rng.random() < 0.9}
        if rng.random() < 0.1:
            x["const"] = 1.0  # a feature without variance
        model.learn(x, rng.random() < 0.5)
    xs = [dict(items) for items in batch]
    many = model.predict_proba_many(xs)
    assert many == [model.predict_proba(x) for x in xs]
    assert [type(p) for p in many] == [type(model.predict_proba(x)) for x in xs]


@pytest.mark.parametrize(
    "model",
    [
        ModelSettings(l2=0.01),
        ModelSettings(scale=False, l2=0.5, learning_rate=0.1),
        ModelSettings(optimizer="ftrl", l2=0.5, ftrl_l1=0.1),
    ],
    ids=repr,
)
def test_a_learning_step_changes_only_the_state_of_the_events_features(model):
    """With an L2 penalty too (river masks its weights with the event while it
    learns): so a step costs time in the event's size, not the model's, and the
    numeric guard need save and restore only the event's features."""
    online = OnlineModel(model)
    for i in range(300):
        online.learn({f"f{i % 50}": 1.0 + i % 3, f"g{i % 7}": -0.5}, i % 2 == 0)
    before = online.state()
    x = {"f3": 2.0, "new": 1.0}
    online.learn(x, True)
    after = online.state()
    for field in ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n"):
        old, new = getattr(before, field), getattr(after, field)
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        assert changed <= set(x), (field, changed)
    assert after != before  # the step did change the event's features


def test_a_refused_step_with_l2_is_undone_exactly():
    online = OnlineModel(ModelSettings(scale=False, l2=0.01, learning_rate=1.0), max_abs_weight=5)
    for i in range(50):
        online.learn({f"f{i % 10}": 1.0}, i % 2 == 0)
    before = online.state()
    x = {"f1": 1e10, "brand-new": 3.0}
    wrong = online.predict_proba(x) < 0.5  # the label that makes the step huge
    assert online.learn(x, wrong) is False
    assert online.state() == before
