"""Feature hashing: a feature's slot is MurmurHash3 x86 32-bit of its UTF-8 name,
seed 0, modulo 2^B, the same in every process and language; features of one
event in one slot are summed; a hashed model holds at most 2^B features."""

from __future__ import annotations

import math
import random

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import ModelSettings
from stream.errors import ConfigError
from stream.events.codec import features
from stream.events.hashing import SEED, Hasher, estimated_collisions, featurizer, slot
from stream.model.kernel import KernelModel
from stream.model.online import OnlineModel

# MurmurHash3_x86_32 reference vectors (the SMHasher implementation's outputs).
VECTORS = [
    (b"", 0, 0x00000000),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"!Ce\x87", 0, 0xF55B516B),
    (b"!Ce\x87", 0x5082EDEE, 0x2362F9DE),
    (b"!Ce", 0, 0x7E4A8634),
    (b"!C", 0, 0xA0F7B07A),
    (b"!", 0, 0x72661CF4),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    (b"foo", 0, 4138058784),  # mmh3.hash(b"foo", 0) == -156908512, signed
]


@pytest.mark.parametrize("data, seed, expected", VECTORS)
def test_mmh3_is_murmurhash3_x86_32(data: bytes, seed: int, expected: int) -> None:
    assert mmh3.hash(data, seed, signed=False) == expected


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """The reference algorithm, written out (what any language computes)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & mask  # noqa: E731
    tail = len(data) - len(data) % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = rotl((k * c1) & mask, 15) * c2 & mask
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    k = int.from_bytes(data[tail:], "little") if len(data) > tail else 0
    if k:
        h ^= rotl((k * c1) & mask, 15) * c2 & mask
    h ^= len(data)
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & mask
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def test_the_written_out_algorithm_gives_the_reference_vectors() -> None:
    for data, seed, expected in VECTORS:
        assert murmur3_x86_32(data, seed) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(1, 24))
def test_a_slot_is_murmurhash3_of_the_utf8_name_seed_0_modulo_2_to_the_bits(name, bits) -> None:
    assert SEED == 0
    assert slot(name, bits) == murmur3_x86_32(name.encode("utf-8"), 0) % 2**bits
    assert Hasher(bits).key(name) == str(slot(name, bits))


def test_slots_are_fixed_numbers_every_implementation_must_give() -> None:
    """A few slots written down: a model hashed here is read the same anywhere."""
    assert slot("site=news.example", 20) == murmur3_x86_32(b"site=news.example") % 2**20
    assert [slot(name, 18) for name in ("f0", "tags=sport", "ü=日本")] == [
        murmur3_x86_32(name.encode()) % 2**18 for name in ("f0", "tags=sport", "ü=日本")
    ]
    assert slot("foo", 32 - 8) == 4138058784 % 2**24


def _colliding(bits: int) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(10_000):
        name = f"n{i}"
        s = slot(name, bits)
        if s in seen:
            return seen[s], name
        seen[s] = name
    raise AssertionError("no collision")


def test_features_of_one_event_in_one_slot_are_summed_in_the_events_order() -> None:
    a, b = _colliding(4)
    hasher = Hasher(4)
    x = hasher({a: 0.25, "other": 3.0, b: 2.0})
    k = str(slot(a, 4))
    assert x[k] == 0.25 + 2.0
    assert next(iter(x)) == k  # the slot takes the place of its first feature
    assert hasher.in_event_collisions == 1
    assert hasher({a: 1.0}) == {k: 1.0}
    assert hasher.in_event_collisions == 1


def test_without_hash_bits_features_stay_as_they_are() -> None:
    x = {"a": 1.0, "site=b": 1.0}
    assert featurizer(None)(x) is x
    assert ModelSettings().as_dict() == {
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "l2": 0.0,
        "scale": True,
        "ftrl_beta": 1.0,
        "ftrl_l1": 0.0,
    }  # as before hashing existed: older global versions and checkpoints still match
    assert ModelSettings(hash_bits=18).as_dict()["hash_bits"] == 18


@pytest.mark.parametrize("bits", [0, 25, -1, 2.0, True])
def test_hash_bits_out_of_range_are_refused(bits) -> None:
    with pytest.raises(ConfigError, match="hash_bits must be an integer in \\[1, 24\\]"):
        ModelSettings(hash_bits=bits)


def test_collisions_are_estimated_from_the_slots_in_use() -> None:
    """Linear counting: from the occupancy alone, the vocabulary (slots in use
    plus features sharing one) is estimated within 3%, from 0.1 to 2 times the
    slots; the collisions' estimate is that, minus the slots in use."""
    bits = 12
    rng = random.Random(3)
    for n in (400, 2000, 8000):
        names = {f"v{rng.getrandbits(64)}" for _ in range(n)}
        used = len({slot(name, bits) for name in names})
        estimate = estimated_collisions(used, 1 << bits)
        assert used + estimate == pytest.approx(len(names), rel=0.03)
        assert estimate == pytest.approx(len(names) - used, rel=0.15, abs=3)
    assert estimated_collisions(0, 1 << bits) == 0.0
    assert estimated_collisions(1 << bits, 1 << bits) == math.inf


CONFIGS = [
    ModelSettings(hash_bits=6),
    ModelSettings(hash_bits=6, scale=False, l2=0.01),
    ModelSettings(hash_bits=10, optimizer="ftrl", learning_rate=0.1, ftrl_l1=0.1),
]


def hashed_stream(settings_: ModelSettings, n: int, seed: int):
    """Categorical events with a growing vocabulary, hashed into few slots (so
    events have features sharing a slot)."""
    rng = random.Random(seed)
    hasher = Hasher(settings_.hash_bits)
    stream = []
    for i in range(n):
        raw = {
            "user": f"u{rng.randint(0, i + 10)}",
            "tags": rng.sample([f"t{j}" for j in range(30)], rng.randint(0, 5)),
            "n": rng.gauss(0, 2),
        }
        y = None if rng.random() < 0.2 else rng.random() < 0.4
        stream.append((hasher(features(raw, i)), y))
    return stream, hasher


@pytest.mark.parametrize("model", CONFIGS, ids=lambda s: f"{s.optimizer}-b{s.hash_bits}")
def test_a_hashed_kernel_equals_river_on_slots_bit_for_bit(model: ModelSettings) -> None:
    stream, hasher = hashed_stream(model, 3000, seed=1)
    assert hasher.in_event_collisions > 0
    river = OnlineModel(model)
    want = []
    for x, y in stream:
        want.append(river.predict_proba(x))
        if y is not None:
            river.learn(x, y)
    kernel = KernelModel(model)
    got: list[float] = []
    for i in range(0, len(stream), 250):
        chunk = stream[i : i + 250]
        got.extend(kernel.score_and_learn_dicts([x for x, _ in chunk], [y for _, y in chunk]))
    assert got == want
    assert kernel.state() == river.state()
    assert kernel.slots_used() == river.slots_used() == len(river.state().weights)


def test_a_hashed_model_is_bounded_by_its_slots_not_its_vocabulary() -> None:
    model = ModelSettings(hash_bits=10)
    kernel, river = KernelModel(model), OnlineModel(model)
    hasher = Hasher(10)
    for i in range(20_000):  # 20,000 distinct names into 1,024 slots
        x = hasher({f"id={i}": 1.0, "n": float(i % 7)})
        kernel.learn(x, i % 3 == 0)
        if i < 3000:
            river.learn(x, i % 3 == 0)
    state = kernel.state()
    assert len(state.weights) <= 1024
    assert all(0 <= int(k) < 1024 for k in state.weights)
    assert kernel._w.shape == (1024,)  # arrays indexed by slot, allocated once
    assert kernel.columns == {} and kernel.names == []
    assert len(river.state().weights) <= 1024


def test_a_hashed_kernel_refuses_keys_that_are_not_its_slots() -> None:
    kernel = KernelModel(ModelSettings(hash_bits=4))
    for bad in ("16", "a", "-1", "\u0661"):  # the last: an Arabic-Indic digit one
        with pytest.raises(ValueError, match="has no slot"):
            kernel.column(bad)
    assert kernel.columns_of(["0", "15"]).tolist() == [0, 15]


def test_a_hashed_state_loads_into_both_and_they_go_on_alike() -> None:
    model = ModelSettings(hash_bits=8, optimizer="ftrl")
    first, _ = hashed_stream(model, 800, seed=5)
    second, _ = hashed_stream(model, 800, seed=6)
    learned = KernelModel(model)
    learned.score_and_learn_dicts([x for x, _ in first], [y for _, y in first])
    kernel, river = KernelModel(model), OnlineModel(model)
    kernel.load_state(learned.state())
    river.load_state(learned.state())
    got = kernel.score_and_learn_dicts([x for x, _ in second], [y for _, y in second])
    want = []
    for x, y in second:
        want.append(river.predict_proba(x))
        if y is not None:
            river.learn(x, y)
    assert np.array_equal(got, np.array(want))
    assert kernel.state() == river.state()


def test_a_global_model_hashed_or_not_is_loaded_only_into_a_model_alike() -> None:
    from stream.model.state import ModelState
    from stream.sync.checkpoint import Snapshot
    from stream.sync.fence import check_compatible

    by_name = Snapshot(version=1, state=ModelState(), model_config=ModelSettings().as_dict())
    hashed = Snapshot(2, ModelState(), model_config=ModelSettings(hash_bits=18).as_dict())
    check_compatible(by_name, ModelSettings())
    check_compatible(hashed, ModelSettings(hash_bits=18))
    for snapshot, model in ((by_name, ModelSettings(hash_bits=18)), (hashed, ModelSettings()),
                            (hashed, ModelSettings(hash_bits=20))):  # fmt: skip
        with pytest.raises(ConfigError, match="was learned with"):
            check_compatible(snapshot, model)
