"""The recommended CTR model (docs): FTRL-Proximal on unscaled one-hot features.

Why unscaled: a one-hot feature is 1.0 whenever an event has it (an absent
feature is not a 0 the scaler sees), so StandardScaler's variance of it stays
0 and it is scaled to 0 on every event: with the scaler on (the default), a
model learns nothing from its categorical features. These tests pin that, and
that the recommended flags learn them.
"""

from __future__ import annotations

from stream.config import ModelSettings
from stream.events.codec import features
from stream.events.hashing import featurizer
from stream.model.online import OnlineModel
from stream.observe.quality import prequential
from tests.unit.test_categorical_paths import categorical_rows

# alpha (--learning-rate) 0.2, --ftrl-beta 1, --ftrl-l1 1, --l2 0, --no-scaler.
RECOMMENDED = ModelSettings(
    optimizer="ftrl", learning_rate=0.2, ftrl_beta=1.0, ftrl_l1=1.0, l2=0.0, scale=False
)


def learned(settings: ModelSettings, n: int = 3000) -> tuple[OnlineModel, float]:
    """The model after ``n`` categorical rows, and its prequential log loss."""
    model = OnlineModel(settings)
    featurize = featurizer(settings.hash_bits)
    pairs = []
    for row in categorical_rows(n, seed=4):
        x = featurize(features(row["x"], row["id"]))
        y = bool(row["y"])
        pairs.append((y, model.predict_proba(x)))
        model.learn(x, y)
    return model, prequential(pairs).log_loss


def test_with_the_scaler_a_one_hot_feature_teaches_nothing():
    model, _ = learned(ModelSettings(optimizer="ftrl", learning_rate=0.1))
    state = model.state()
    one_hot = {name for name in state.scaler_vars if "=" in name}
    assert len(one_hot) == 46  # 40 sites and 6 tags
    assert {state.scaler_vars[name] for name in one_hot} == {0.0}
    assert {name for name, w in state.weights.items() if w != 0.0} == {"n"}


def test_the_recommended_model_learns_the_categories_and_beats_the_scaled_one():
    model, loss = learned(RECOMMENDED)
    _, scaled_loss = learned(ModelSettings(optimizer="ftrl", learning_rate=0.1))
    weights = model.state().weights
    assert sum(1 for name, w in weights.items() if "=" in name and w != 0.0) == 46
    assert loss < scaled_loss


def test_hashed_the_recommended_model_learns_the_same_slots_as_names():
    by_name, _ = learned(RECOMMENDED)
    hashed, _ = learned(ModelSettings(**{**RECOMMENDED.as_dict(), "hash_bits": 20}))
    hasher = featurizer(20)
    # No two of these 47 names share a slot of 2^20, so the hashed model is the
    # same model under other keys, bit for bit.
    assert hashed.state().weights == {
        hasher.key(name): w for name, w in by_name.state().weights.items()
    }
