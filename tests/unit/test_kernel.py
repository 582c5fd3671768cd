"""The compiled kernel against river itself: same probabilities, same state, bit for bit.

Every configuration the kernel covers, 24 of them: scaler on/off x (SGD with
and without L2 at two learning rates, FTRL with four alpha/L1/L2 variants at
beta 1.0 and 0.5), on river's Phishing and Bananas, and on synthetic
streams whose feature names vary from event to event, with new names arriving
late and unlabeled events interleaved.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets

from stream.config import ModelSettings
from stream.events.codec import features
from stream.model.factory import build_model
from stream.model.kernel import KernelModel
from stream.model.online import OnlineModel
from stream.model.state import ModelState

CONFIGS = [
    ModelSettings(scale=scale, optimizer="sgd", l2=l2, learning_rate=lr)
    for scale, l2, lr in itertools.product((True, False), (0.0, 0.01), (0.01, 0.1))
] + [
    ModelSettings(
        scale=scale, optimizer="ftrl", learning_rate=alpha, l2=l2, ftrl_l1=l1, ftrl_beta=beta
    )
    for scale, (alpha, l2, l1), beta in itertools.product(
        (True, False),
        ((0.1, 0.0, 0.0), (0.05, 1.0, 0.0), (0.1, 0.5, 0.2), (0.3, 0.0, 1.0)),
        (1.0, 0.5),
    )
]


def _name(s: ModelSettings) -> str:
    name = f"{s.optimizer}-scale{int(s.scale)}-lr{s.learning_rate}-l2{s.l2}"
    return name if s.optimizer == "sgd" else f"{name}-l1{s.ftrl_l1}-beta{s.ftrl_beta}"


def test_the_documented_24_configurations_vary_every_setting_the_kernel_takes():
    """docs/benchmarks.md says 24 configurations: each one distinct, FTRL's beta varied."""
    assert len(CONFIGS) == len(set(CONFIGS)) == 24
    ftrl = [s for s in CONFIGS if s.optimizer == "ftrl"]
    assert {s.ftrl_beta for s in ftrl} == {1.0, 0.5}
    assert {s.scale for s in CONFIGS} == {True, False}


def phishing() -> list[tuple[dict[str, float], bool | None]]:
    return [({k: float(v) for k, v in x.items()}, bool(y)) for x, y in datasets.Phishing()]


def bananas() -> list[tuple[dict[str, float], bool | None]]:
    return [({k: float(v) for k, v in x.items()}, bool(y)) for x, y in datasets.Bananas()]


def varying(n: int, seed: int) -> list[tuple[dict[str, float], bool | None]]:
    """Names vary per event (subsets, shuffled order), new names appear late,
    a third of the events are unlabeled, values span several magnitudes."""
    rng = random.Random(seed)
    stream = []
    for i in range(n):
        pool = [f"f{j}" for j in range(5 + i // 200)]  # new names keep arriving
        names = rng.sample(pool, rng.randint(1, min(len(pool), 12)))
        x = {name: rng.gauss(0, 1) * 10 ** rng.randint(-3, 3) for name in names}
        if rng.random() < 0.05:
            x[f"rare{rng.randint(0, 10_000)}"] = 1.0  # seen once, maybe unlabeled
        y = None if rng.random() < 0.33 else bool(sum(x.values()) + rng.gauss(0, 1) > 0)
        stream.append((x, y))
    return stream


def categorical(n: int, seed: int) -> list[tuple[dict[str, float], bool | None]]:
    """Strings and lists of strings, one-hot by the contract's own function: a
    vocabulary that keeps growing, names that differ from event to event."""
    rng = random.Random(seed)
    stream = []
    for i in range(n):
        raw = {
            "site": f"s{rng.randint(0, 20 + i // 10)}",
            "tags": rng.sample(["a", "b", "c", "d", "a=b"], rng.randint(0, 3)),
            "n": rng.gauss(0, 3),
        }
        x = features(raw, i)
        y = None if rng.random() < 0.2 else bool(("a" in raw["tags"]) ^ (rng.random() < 0.2))
        stream.append((x, y))
    return stream


STREAMS = {
    "categorical": lambda: categorical(3000, seed=4),
    "phishing": phishing,
    "bananas": bananas,
    "varying": lambda: varying(3000, seed=7),
}


def river_run(settings: ModelSettings, stream) -> tuple[list[float], ModelState]:
    model = OnlineModel(settings)
    probabilities = []
    for x, y in stream:
        probabilities.append(float(model.predict_proba(x)))
        if y is not None:
            model.learn(x, y)
    return probabilities, model.state()


def assert_same_state(got: ModelState, want: ModelState) -> None:
    """Same names in every dict, same values bit for bit."""
    for field in ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.intercept == want.intercept
    assert got.n_learned == want.n_learned


@pytest.mark.parametrize("settings", CONFIGS, ids=_name)
@pytest.mark.parametrize("stream_name", sorted(STREAMS))
def test_kernel_equals_river_bit_for_bit(settings: ModelSettings, stream_name: str) -> None:
    stream = STREAMS[stream_name]()
    want_p, want_state = river_run(settings, stream)
    kernel = KernelModel(settings)
    # Uneven batches: batch boundaries must not matter.
    got_p: list[float] = []
    i = 0
    for size in itertools.cycle((1, 7, 64, 500)):
        chunk = stream[i : i + size]
        if not chunk:
            break
        got_p.extend(kernel.score_and_learn_dicts([x for x, _ in chunk], [y for _, y in chunk]))
        i += size
    assert got_p == want_p
    assert_same_state(kernel.state(), want_state)


@pytest.mark.parametrize("settings", CONFIGS[::3], ids=_name)
def test_one_event_surface_equals_river(settings: ModelSettings) -> None:
    stream = varying(400, seed=3)
    river_model, kernel = OnlineModel(settings), KernelModel(settings)
    for x, y in stream:
        assert kernel.predict_proba(x) == river_model.predict_proba(x)
        if y is not None:
            kernel.learn(x, y)
            river_model.learn(x, y)
    assert_same_state(kernel.state(), river_model.state())


@pytest.mark.parametrize("settings", CONFIGS[::2], ids=_name)
def test_state_round_trips_and_continues_like_river(settings: ModelSettings) -> None:
    """Load a state learned elsewhere (as merging and checkpoints do) into both,
    then both go on identically."""
    first, second = varying(600, seed=11), varying(600, seed=12)
    _, learned = river_run(settings, first)
    river_model, kernel = OnlineModel(settings), KernelModel(settings)
    kernel.score_and_learn_dicts([{"zzz": 5.0}], [True])  # a column the state lacks
    river_model.load_state(learned)
    kernel.load_state(learned)
    assert_same_state(kernel.state(), learned)
    probabilities = kernel.score_and_learn_dicts([x for x, _ in second], [y for _, y in second])
    want = []
    for x, y in second:
        want.append(float(river_model.predict_proba(x)))
        if y is not None:
            river_model.learn(x, y)
    assert probabilities.tolist() == want
    assert_same_state(kernel.state(), river_model.state())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(
                st.sampled_from([f"n{i}" for i in range(8)]),
                st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                min_size=1,
            ),
            st.sampled_from([None, False, True]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(CONFIGS),
)
def test_any_stream_equals_river(stream, settings: ModelSettings) -> None:
    want_p, want_state = river_run(settings, stream)
    kernel = KernelModel(settings)
    got = kernel.score_and_learn_dicts([x for x, _ in stream], [y for _, y in stream])
    assert got.tolist() == want_p
    assert_same_state(kernel.state(), want_state)


def test_extreme_logits_saturate_like_river() -> None:
    """river's sigmoid is exactly 0 or 1 beyond |z| > 30; the loss gradient
    switches formula beyond 18."""
    settings = ModelSettings(scale=False, learning_rate=5.0)
    stream = [({"a": 1e3 * (-1) ** i}, i % 3 == 0) for i in range(50)]
    want_p, want_state = river_run(settings, stream)
    kernel = KernelModel(settings)
    got = kernel.score_and_learn_dicts([x for x, _ in stream], [y for _, y in stream])
    assert got.tolist() == want_p
    assert_same_state(kernel.state(), want_state)
    assert {0.0, 1.0} <= set(want_p)
    assert all(math.isfinite(p) for p in got)


def test_factory_picks_the_kernel_for_covered_settings() -> None:
    for s in CONFIGS:
        assert isinstance(build_model(s), KernelModel)
    assert isinstance(build_model(CONFIGS[0], prefer="river"), OnlineModel)


def test_layout_columns_are_stable_and_grow() -> None:
    kernel = KernelModel(ModelSettings())
    first = kernel.columns_of(["a", "b"])
    assert kernel.columns_of(["b", "a", "c"]).tolist() == [first[1], first[0], 2]
    many = kernel.columns_of([f"x{i}" for i in range(1000)])
    assert many.tolist() == list(range(3, 1003))
    out = kernel.score_and_learn(
        many, np.ones(1000), np.array([0, 1000], dtype=np.int64), np.array([1], dtype=np.int8)
    )
    assert out.tolist() == [0.5]
    assert len(kernel.state().weights) == 1000


@pytest.mark.parametrize("settings", [CONFIGS[1], CONFIGS[9], CONFIGS[14]], ids=_name)
def test_long_stream_equals_river(settings: ModelSettings) -> None:
    """30,000 events with names coming and going: no drift of even one bit."""
    stream = varying(30_000, seed=1)
    want_p, want_state = river_run(settings, stream)
    kernel = KernelModel(settings)
    got: list[float] = []
    for i in range(0, len(stream), 1000):
        chunk = stream[i : i + 1000]
        got.extend(kernel.score_and_learn_dicts([x for x, _ in chunk], [y for _, y in chunk]))
    assert got == want_p
    assert_same_state(kernel.state(), want_state)


def test_the_kernel_refuses_the_same_absurd_steps_as_river_and_stays_finite():
    """The numeric guard: with a small weight bound, steps on huge features are
    refused and undone by both implementations alike."""
    rng = random.Random(5)
    events = []
    for i in range(400):
        x = {f"f{j}": rng.gauss(0, 1) for j in range(4)}
        if i % 7 == 0:
            x["f1"] = rng.choice([1e150, -1e150, 1e120])
        events.append((x, rng.random() < 0.5))
    refused = {}
    for model in (
        ModelSettings(),
        ModelSettings(scale=False, l2=0.01),
        ModelSettings(scale=False, optimizer="ftrl", learning_rate=0.1),
    ):
        river, kernel = OnlineModel(model, 50.0), KernelModel(model, 50.0)
        for x, y in events:
            assert kernel.predict_proba(x) == river.predict_proba(x)
            assert kernel.learn(x, y) == river.learn(x, y)
        assert kernel.state() == river.state()
        assert kernel.n_refused == river.n_refused
        assert all(abs(w) <= 50.0 for w in kernel.state().weights.values())
        refused[(model.scale, model.optimizer)] = kernel.n_refused
    # Unscaled, SGD's steps on the huge features would push weights past the
    # bound: refused (FTRL's weights stay small by construction).
    assert refused[(False, "sgd")] > 0


def test_a_batch_without_events_learns_nothing():
    model = KernelModel(ModelSettings())
    assert model.learn({"a": 1.0}, True)
    empty = np.zeros(0, np.int64)
    model.score_and_learn(empty, np.zeros(0), np.zeros(1, np.int64), np.zeros(0, np.int8))
    assert model.last_learned == 0 and model.n_learned == 1
