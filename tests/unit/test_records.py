"""Internal records are trusted no more than events: for any bytes or any map,
decoding a contribution, a model version or a checkpoint file returns a valid
record or raises the record's one documented error, naming the field; valid
records round-trip; and whatever decodes can be merged, loaded and served."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import ModelSettings
from stream.errors import CheckpointError, ContributionError
from stream.model.merge import add
from stream.model.state import ModelState, impossible, pack_state
from stream.sync.checkpoint import MAGIC, SCHEMA_VERSION, CheckpointStore, Snapshot
from stream.sync.contribution import Contribution
from stream.sync.fence import apply_contributions
from stream.sync.globalmodel import export, model_of

# The features topic the tests' merger sees: 4 partitions, 1,000 events each.
HIGH = 1000
PARTITIONS = 4


class FixedWatermarks:
    """The features topic as a dict: partition -> high watermark."""

    def __init__(self, highs: dict[int, int]) -> None:
        self.highs = highs

    def highwater(self, partition: int, at_least: int) -> int | None:
        return self.highs.get(partition)


WATERMARKS = FixedWatermarks({p: HIGH for p in range(PARTITIONS)})

# -- strategies ---------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(min_value=0.0, allow_infinity=False, width=64)
names = st.text(min_size=1, max_size=6)


@st.composite
def possible_states(draw, max_learned: int = 10**6) -> ModelState:
    """A learning state some learning could produce (or a delta of one)."""
    scaled = draw(st.lists(names, max_size=6, unique=True))
    return ModelState(
        weights=draw(st.dictionaries(names, finite, max_size=6)),
        intercept=draw(finite),
        scaler_counts={n: draw(nonneg) for n in scaled},
        scaler_means={n: draw(finite) for n in scaled},
        scaler_vars={n: draw(nonneg) for n in scaled},
        ftrl_z=draw(st.dictionaries(names, finite, max_size=6)),
        ftrl_n=draw(st.dictionaries(names, nonneg, max_size=6)),
        n_learned=draw(st.integers(0, max_learned)),
    )


@st.composite
def contributions(draw) -> Contribution:
    partitions = draw(st.lists(st.integers(0, PARTITIONS - 1), min_size=1, unique=True))
    ranges = {}
    for p in partitions:
        start = draw(st.integers(0, HIGH))
        ranges[p] = (start, draw(st.integers(start, HIGH)))
    span = sum(end - start for start, end in ranges.values())
    return Contribution(
        worker=draw(names),
        seq=draw(st.integers(0, 2**40)),
        base_version=draw(st.integers(0, 2**40)),
        ranges=ranges,
        delta=draw(possible_states(max_learned=span)),
        created_at=draw(finite),
        opens=frozenset(draw(st.lists(st.sampled_from(partitions), unique=True))),
    )


@st.composite
def snapshots(draw) -> Snapshot:
    seqs = st.dictionaries(names, st.integers(0, 2**40), max_size=4)
    return Snapshot(
        version=draw(st.integers(0, 2**52)),
        epoch=draw(st.integers(0, 2**52)),
        state=draw(possible_states()),
        offsets=draw(st.dictionaries(st.integers(0, 64), st.integers(0, 2**62), max_size=4)),
        contributions_offset=draw(st.integers(0, 2**62)),
        applied=draw(seqs),
        rejected=draw(seqs),
        model_config=draw(st.sampled_from([{}, ModelSettings().as_dict()])),
        topic_ids=draw(st.dictionaries(st.sampled_from(["features", "contributions"]), names)),
        created_at=draw(st.floats(1.0, 4e9)),
    )


# Anything msgpack can carry, hostile values included: ints up to uint64 and
# down to int64's minimum, NaN and infinities, bytes where text belongs.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-1, 0, 10**18, 2**53, 2**63 - 1]),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=24),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a nested map/list a value sits."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, item in data.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            out += _paths(item, (*prefix, i))
    return out


def _replaced(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {**data, head: _replaced(data[head], rest, value)}
    return [_replaced(item, rest, value) if i == head else item for i, item in enumerate(data)]


def _removed(data: Any, path: tuple) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k != head}
        return [v for i, v in enumerate(data) if i != head]
    if isinstance(data, dict):
        return {**data, head: _removed(data[head], rest)}
    return [_removed(v, rest) if i == head else v for i, v in enumerate(data)]


@st.composite
def damaged(draw, valid: st.SearchStrategy) -> bytes:
    """A valid record's map with one value replaced by anything, or removed."""
    data = msgpack.unpackb(draw(valid).to_bytes(), raw=False)
    path = draw(st.sampled_from(_paths(data)))
    if draw(st.booleans()):
        data = _removed(data, path)
    else:
        data = _replaced(data, path, draw(st.one_of(values, st.binary(max_size=40))))
    return msgpack.packb(data, use_bin_type=True)


def anything() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    )


def _is_valid_contribution(c: Contribution) -> None:
    assert isinstance(c.worker, str) and c.worker
    assert all(0 <= s <= e <= WATERMARKS.highs[p] for p, (s, e) in c.ranges.items())
    assert c.ranges and 0 <= c.seq < 2**53 and 0 <= c.base_version < 2**53
    assert impossible(c.delta) is None and math.isfinite(c.created_at)
    assert c.delta.n_learned <= sum(e - s for s, e in c.ranges.values())


# -- contributions --------------------------------------------------------------


@given(contributions())
def test_a_valid_contribution_round_trips(contribution):
    assert Contribution.from_bytes(contribution.to_bytes(), WATERMARKS) == contribution


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(anything(), damaged(contributions())))
def test_any_contribution_bytes_decode_to_a_valid_one_or_raise_contribution_error(payload):
    try:
        contribution = Contribution.from_bytes(payload, WATERMARKS)
    except ContributionError:
        return
    _is_valid_contribution(contribution)
    # Whatever decodes can be merged, into an empty model or a populated one.
    base = Snapshot(version=0, state=ModelState(weights={"a": 1.0}, scaler_counts={}))
    apply_contributions(base, [(0, contribution)], "sum", next_offset=1)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("worker", ["w"], "field worker: not a non-empty string"),
        ("seq", -1, "field seq: outside"),
        ("seq", 1e18, "field seq: not an integer"),
        ("seq", 10**18, "field seq: outside [0, 9007199254740992)"),
        ("ranges", [[0, 5]], "field ranges: not a map"),
        ("ranges", {"0": [5, 3]}, "field ranges[0]: ends before it starts"),
        ("ranges", {"0": [0, 10**18]}, "field ranges[0]: ends past the high watermark 1000"),
        ("ranges", {"9": [0, 5]}, "field ranges[9]: the features topic has no such partition"),
        ("ranges", {"0": (0, 5, 7)}, "field ranges[0]: not a [start, end] pair"),
        ("ranges", {"-1": [0, 5]}, "field ranges: partition key is not a decimal string"),
        ("ranges", {}, "field ranges: empty"),
        ("created_at", float("nan"), "field created_at: not finite"),
        ("opens", {"0": True}, "field opens: not a list of partitions"),
        ("opens", [-1], "field opens: outside"),
        ("opens", [3], "field opens: names a partition that has no range: [3]"),
    ],
)
def test_named_hostile_fields_are_refused_naming_field_and_value(field, value, named):
    good = msgpack.unpackb(_good().to_bytes(), raw=False)
    payload = msgpack.packb({**good, field: value}, use_bin_type=True)
    with pytest.raises(ContributionError, match="contribution") as caught:
        Contribution.from_bytes(payload, WATERMARKS)
    assert named in str(caught.value)


def test_a_contribution_from_before_opens_existed_opens_any_partition():
    old = msgpack.unpackb(_good().to_bytes(), raw=False)
    del old["opens"]
    contribution = Contribution.from_bytes(msgpack.packb(old), WATERMARKS)
    assert contribution.opens is None
    model, applied, _ = apply_contributions(
        Snapshot(version=0, state=ModelState()), [(0, contribution)], "sum", next_offset=1
    )
    assert applied == 1 and model.offsets == {0: 15}


@pytest.mark.parametrize(
    ("delta", "named"),
    [
        (
            ModelState(scaler_counts={"a": -1.0}, scaler_means={"a": 0.0}, scaler_vars={"a": 0.0}),
            "scaler_counts['a'] = -1.0 (negative)",
        ),
        (
            ModelState(scaler_counts={"a": 1.0}, scaler_means={"a": 0.0}, scaler_vars={"a": -2.0}),
            "scaler_vars['a'] = -2.0 (negative)",
        ),
        (ModelState(ftrl_n={"a": -0.5}), "ftrl_n['a'] = -0.5 (negative)"),
        (ModelState(scaler_counts={"a": 1.0}), "scaler_counts['a'] without scaler_means"),
        (ModelState(weights={"a": float("inf")}), "not finite: weights['a'] = inf"),
        (ModelState(n_learned=-3), "n_learned = -3 (negative)"),
        (ModelState(n_learned=6), "learned 6 events from ranges of 5 offsets"),
    ],
)
def test_impossible_deltas_are_refused_naming_what(delta, named):
    bad = Contribution("w", 0, 0, {0: (10, 15)}, delta, 1.0)
    with pytest.raises(ContributionError) as caught:
        Contribution.from_bytes(bad.to_bytes(), WATERMARKS)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("packed", "named"),
    [
        ({"weights": {"i": struct.pack("<I", 5), "v": struct.pack("<d", 1.0)}}, "index 5 out"),
        ({"weights": {"i": struct.pack("<2I", 0, 0), "v": struct.pack("<2d", 1, 2)}}, "twice"),
        ({"weights": {"i": struct.pack("<I", 0), "v": struct.pack("<2d", 1, 2)}}, "1 indices"),
        ({"weights": {"v": struct.pack("<2d", 1, 2)}}, "2 values for 1 names"),
        ({"weights": {"v": b"\x00" * 7}}, "not a whole number of float64"),
        ({"weights": [1.0]}, "not a map with packed values"),
    ],
)
def test_malformed_packed_states_are_refused(packed, named):
    delta = {"names": ["a"], "maps": packed, "intercept": 0.0, "n_learned": 0}
    good = msgpack.unpackb(_good().to_bytes(), raw=False)
    payload = msgpack.packb({**good, "delta": delta}, use_bin_type=True)
    with pytest.raises(ContributionError, match="field delta") as caught:
        Contribution.from_bytes(payload, WATERMARKS)
    assert named in str(caught.value)


def _good() -> Contribution:
    return Contribution(
        "w-1", 3, 2, {0: (10, 15)}, ModelState(weights={"a": 1.0}, n_learned=5), 1.0
    )


# -- model versions and checkpoint files ------------------------------------------


@given(snapshots())
def test_a_valid_model_version_round_trips(snapshot):
    assert Snapshot.from_bytes(snapshot.to_bytes()) == snapshot


def _usable(snapshot: Snapshot) -> None:
    """What the readers do with a version: load it, export it, merge into it."""
    assert 0 <= snapshot.epoch < 2**53 and 0 <= snapshot.version < 2**53
    assert impossible(snapshot.state) is None
    model_of(snapshot)
    export(snapshot)
    add(snapshot.state, _good().delta)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(anything(), damaged(snapshots())))
def test_any_model_record_decodes_to_a_usable_version_or_raises_checkpoint_error(payload):
    try:
        snapshot = Snapshot.from_bytes(payload)
    except CheckpointError:
        return
    _usable(snapshot)


_HEADER = struct.Struct(">6sIIQ")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=80),
        # Right header, CRC and length: the payload itself is what is damaged.
        st.one_of(anything(), damaged(snapshots())).map(
            lambda p: _HEADER.pack(MAGIC, SCHEMA_VERSION, zlib.crc32(p), len(p)) + p
        ),
    )
)
def test_any_checkpoint_file_reads_as_a_usable_version_or_raises_checkpoint_error(
    tmp_path_factory, raw
):
    path = tmp_path_factory.mktemp("ckpt") / "model-000000-000000000001.ckpt"
    path.write_bytes(raw)
    try:
        snapshot = CheckpointStore.read(path)
    except CheckpointError:
        return
    _usable(snapshot)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ([1, 2, 3], "model version: not a map"),
        ("global", "model version: not a map"),
        ({"schema": 9}, "field schema: not one of (1, 2)"),
    ],
)
def test_a_model_record_that_is_not_a_version_is_refused(data, named):
    with pytest.raises(CheckpointError) as caught:
        Snapshot.from_bytes(msgpack.packb(data))
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("offsets", [0, 5], "field offsets: not a map"),
        ("offsets", {"0": -5}, "field offsets[0]: outside"),
        ("applied", {"w": "7"}, "field applied['w']: not an integer"),
        ("applied", {"w": -1}, "field applied['w']: outside"),
        ("epoch", 2**60, "field epoch: outside"),
        ("n_learned", 11, "field n_learned: differs from the state's 10"),
        ("model_config", {"optimizer": "adam"}, "field model_config: not valid model settings"),
        ("topic_ids", {"features": 7}, "field topic_ids: not a map of strings to strings"),
        ("pipeline", {"features": ["x"]}, "field pipeline: not a map of strings to strings"),
    ],
)
def test_named_hostile_version_fields_are_refused(field, value, named):
    good = Snapshot(
        version=3,
        state=ModelState(weights={"a": 1.0}, n_learned=10),
        offsets={0: 10},
        applied={"w": 2},
        created_at=1.0,
    )
    payload = msgpack.packb({**msgpack.unpackb(good.to_bytes()), field: value})
    with pytest.raises(CheckpointError) as caught:
        Snapshot.from_bytes(payload)
    assert named in str(caught.value)


def test_packed_state_round_trips_only_through_pack_state():
    # The packed form a checkpoint carries is exactly pack_state's.
    state = ModelState(weights={"a": 1.0}, scaler_counts={"a": 2.0}, n_learned=4)
    snapshot = Snapshot(version=1, state=state, created_at=1.0)
    assert msgpack.unpackb(snapshot.to_bytes())["state"] == msgpack.unpackb(
        msgpack.packb(pack_state(state))
    )
