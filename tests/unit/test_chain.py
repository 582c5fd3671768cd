"""Versions that cost what changed: the in-place fold is the pure merge bit for
bit; delta records round-trip and hostile ones are refused; the merger publishes
a snapshot at takeover, deltas, and a snapshot at its cadence; a feed starting
cold reads one snapshot and the chain after it (compacted or not), follows
deltas in place, goes back on a gap, ignores a zombie's records, and says which
keys changed."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream.sync.feed as feed_module
from stream.config import KafkaSettings, MergerSettings, MergeSettings, TopicSettings
from stream.errors import CheckpointError
from stream.kafka.transport import Record
from stream.model.merge import FtrlParams, Undo, add, copy_state, fold, ftrl_weight
from stream.model.state import ModelState
from stream.runtime.merger import Merger
from stream.sync.chain import (
    KIND_DELTA,
    KIND_SNAPSHOT,
    Cadence,
    DeltaVersion,
    apply_delta,
    delta_key,
    peek,
)
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import apply_contributions, merge_records
from tests.fakes import FakeKafka

# -- the fold ------------------------------------------------------------------


def _reference_add(base: ModelState, delta: ModelState, ftrl: FtrlParams | None) -> ModelState:
    """``add`` as it was before the in-place fold (copies of whole dicts)."""
    counts, means, vars_ = dict(base.scaler_counts), dict(base.scaler_means), dict(base.scaler_vars)
    for name, n_b in delta.scaler_counts.items():
        if n_b == 0:
            continue
        n_a = counts.get(name, 0.0)
        if n_a == 0:
            counts[name], means[name], vars_[name] = (
                n_b,
                delta.scaler_means[name],
                delta.scaler_vars[name],
            )
            continue
        n = n_a + n_b
        mean_a, mean_b = means[name], delta.scaler_means[name]
        d = mean_b - mean_a
        m2 = vars_[name] * n_a + delta.scaler_vars[name] * n_b + d * d * n_a * n_b / n
        counts[name] = n
        means[name] = mean_a + d * n_b / n
        vars_[name] = m2 / n

    def plus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        out = dict(a)
        for name, value in b.items():
            out[name] = out.get(name, 0.0) + 1.0 * value
        return out

    z, n_ = plus(base.ftrl_z, delta.ftrl_z), plus(base.ftrl_n, delta.ftrl_n)
    if ftrl is None:
        weights = plus(base.weights, delta.weights)
    else:
        weights = dict(base.weights)
        for name in set(delta.ftrl_z) | set(delta.ftrl_n):
            weights[name] = ftrl_weight(z.get(name, 0.0), n_.get(name, 0.0), ftrl)
    return ModelState(
        weights, base.intercept + delta.intercept, counts, means, vars_, z, n_,
        base.n_learned + delta.n_learned,
    )  # fmt: skip


_NAMES = st.sampled_from([f"f{i}" for i in range(12)])
_VALUE = st.floats(-1e3, 1e3, allow_nan=False)


@st.composite
def _states(draw) -> ModelState:
    counted = draw(st.lists(_NAMES, unique=True, max_size=8))
    return ModelState(
        weights=draw(st.dictionaries(_NAMES, _VALUE, max_size=8)),
        intercept=draw(_VALUE),
        scaler_counts={k: float(draw(st.integers(0, 50))) for k in counted},
        scaler_means={k: draw(_VALUE) for k in counted},
        scaler_vars={k: draw(st.floats(0, 1e3)) for k in counted},
        ftrl_z=draw(st.dictionaries(_NAMES, _VALUE, max_size=8)),
        ftrl_n=draw(st.dictionaries(_NAMES, st.floats(0, 1e3), max_size=8)),
        n_learned=draw(st.integers(0, 1000)),
    )


def _bits(state: ModelState) -> tuple:
    """Every number as its exact bits, map by map, keys sorted."""

    def exact(values: dict[str, float]) -> list:
        return sorted((k, float(v).hex()) for k, v in values.items())

    return (
        exact(state.weights),
        state.intercept.hex(),
        exact(state.scaler_counts),
        exact(state.scaler_means),
        exact(state.scaler_vars),
        exact(state.ftrl_z),
        exact(state.ftrl_n),
        state.n_learned,
    )


@settings(max_examples=300, deadline=None)
@given(base=_states(), deltas=st.lists(_states(), max_size=4), use_ftrl=st.booleans())
def test_folding_in_place_is_the_merge_by_copies_bit_for_bit(base, deltas, use_ftrl):
    ftrl = FtrlParams(0.1, 1.0, 0.5, 0.01) if use_ftrl else None
    expected = base
    for delta in deltas:
        expected = _reference_add(expected, delta, ftrl)
    folded = copy_state(base)
    touched: set[str] = set()
    for delta in deltas:
        folded = fold(folded, delta, ftrl=ftrl, touched=touched)
    assert _bits(folded) == _bits(expected)
    pure = base
    for delta in deltas:
        pure = add(pure, delta, ftrl=ftrl)
    assert _bits(pure) == _bits(expected)
    # Only the touched keys differ from the base.
    for part in ("weights", "scaler_counts", "ftrl_z", "ftrl_n"):
        before, after = getattr(base, part), getattr(folded, part)
        assert {k for k in after if before.get(k) != after[k]} <= touched


@given(base=_states(), delta=_states())
def test_an_undone_fold_leaves_the_maps_as_they_were(base, delta):
    state = copy_state(base)
    undo = Undo()
    fold(state, delta, undo=undo)
    undo.revert()
    assert _bits(state) == _bits(base)


def _contribution(worker: str, seq: int, start: int, end: int, delta: ModelState) -> Contribution:
    opens = frozenset({0} if start == 0 else ())
    return Contribution(worker, seq, 0, {0: (start, end)}, delta, 1.0, opens)


def test_a_fold_that_would_overflow_is_undone_and_rejected_in_place():
    start = Snapshot(version=0, state=ModelState(weights={"a": 1e308, "b": 1.0}, n_learned=1))
    overflow = _contribution("w", 0, 0, 1, ModelState(weights={"a": 1e308, "b": 5.0}, n_learned=1))
    fine = _contribution("w", 1, 0, 1, ModelState(weights={"b": 2.0}, n_learned=1))
    pure, applied, rejected = apply_contributions(start, [(0, overflow), (1, fine)], "sum", 2)
    assert (applied, rejected) == (1, 1)
    assert pure.state.weights == {"a": 1e308, "b": 3.0} and math.isfinite(pure.state.intercept)
    assert start.state.weights == {"a": 1e308, "b": 1.0}  # the pure step copied


# -- the records ---------------------------------------------------------------


def _delta(**overrides) -> DeltaVersion:
    fields = dict(
        epoch=7,
        version=5,
        follows=4,
        changed=ModelState(
            weights={"a": 0.5},
            scaler_counts={"a": 2.0},
            scaler_means={"a": 1.0},
            scaler_vars={"a": 0.25},
            intercept=0.1,
            n_learned=9,
        ),
        offsets={0: 9},
        contributions_offset=3,
        applied={"w~1": 2},
        created_at=1.0,
    )
    fields.update(overrides)
    return DeltaVersion(**fields)  # type: ignore[arg-type]


def test_a_delta_version_round_trips_and_its_header_is_read_without_the_rest():
    delta = _delta()
    assert DeltaVersion.from_bytes(delta.to_bytes()) == delta
    assert peek(delta.to_bytes()) == (KIND_DELTA, 7, 5, 4)
    snapshot = Snapshot(version=4, epoch=7, state=ModelState(weights={"b": 1.0}))
    assert peek(snapshot.to_bytes()) == (KIND_SNAPSHOT, 7, 4, None)


@pytest.mark.parametrize(
    "change",
    [
        {"follows": 5},  # not below its version
        {"kind": "snapshot"},
        {"n_learned": 3},  # not the state's
        {"changed": {"names": ["a"], "maps": {"weights": {"v": b"\x00" * 3}}}},
        {"applied": {"w~1": -1}},
        {"offsets": {"0": "x"}},
        {"epoch": -1},
    ],
)
def test_a_hostile_delta_is_refused_naming_the_field(change):
    fields = msgpack.unpackb(_delta().to_bytes())
    fields.update(change)
    with pytest.raises(CheckpointError, match=next(iter(change))):
        DeltaVersion.from_bytes(msgpack.packb(fields, use_bin_type=True))


def test_a_delta_whose_state_is_impossible_is_refused():
    bad = _delta(changed=ModelState(weights={"a": float("nan")}))
    with pytest.raises(CheckpointError, match="not finite"):
        DeltaVersion.from_bytes(bad.to_bytes())


@given(st.binary(max_size=200))
def test_any_bytes_are_a_delta_or_the_documented_error(payload):
    with contextlib.suppress(CheckpointError):
        DeltaVersion.from_bytes(payload)
    peek(payload)  # never raises


def test_a_snapshot_is_not_read_as_a_delta_nor_a_delta_as_a_snapshot():
    with pytest.raises(CheckpointError, match="kind"):
        Snapshot.from_bytes(_delta().to_bytes())
    with pytest.raises(CheckpointError, match="kind"):
        DeltaVersion.from_bytes(Snapshot(version=1, state=ModelState()).to_bytes())


def test_a_delta_applies_only_to_the_version_it_follows():
    held = Snapshot(version=3, epoch=7, state=ModelState())
    with pytest.raises(ValueError, match="follows"):
        apply_delta(held, _delta())


# -- the merger's cadence and the feed -----------------------------------------

TOPICS = TopicSettings()


class _Highs:
    def highwater(self, partition: int, at_least: int) -> int | None:
        return 10**9


class Pipeline:
    """A merger publishing on an in-memory model topic, fed contributions by hand."""

    def __init__(
        self,
        every: int = 3,
        epoch: int = 1 << 20,
        vocabulary: int = 300,
        kafka: FakeKafka | None = None,
    ) -> None:
        """``vocabulary``: names the starting model knows (so that its snapshot
        outweighs a few small deltas); ``kafka``: another pipeline's, to share
        its model topic (a zombie merger's)."""
        self.kafka = kafka or FakeKafka()
        settings = MergerSettings(merge=MergeSettings(snapshot_every_versions=every))
        self.merger = Merger(settings, "m", producer=self.kafka.producer())
        self.merger._watermarks = _Highs()
        start = Snapshot(
            version=0,
            epoch=epoch,
            state=ModelState(weights={f"v{i}": 1.0 for i in range(vocabulary)}),
        )
        self.merger.snapshot, self.merger.active = start, True
        self.merger._publish(start)  # the takeover's snapshot
        self.offset = 0  # on the partition, learned up to
        self.seq = 0

    def merge(self, names: list[str], worker: str = "w~1") -> None:
        """One version of one contribution touching ``names``."""
        delta = ModelState(
            weights={n: 0.5 + self.seq for n in names},
            scaler_counts={n: 1.0 for n in names},
            scaler_means={n: float(self.seq) for n in names},
            scaler_vars={n: 0.0 for n in names},
            intercept=0.25,
            n_learned=1,
        )
        c = _contribution(worker, self.seq, self.offset, self.offset + 1, delta)
        self.merger._merge([Record(self.seq, worker.encode(), c.to_bytes(), 0)])
        self.offset += 1
        self.seq += 1

    def kinds(self) -> list[str]:
        return [peek(s.value).kind for s in self.kafka.log(TOPICS.model)]  # type: ignore[union-attr]

    def feed(self) -> ModelFeed:
        reader = self.kafka.reader(TOPICS.model)
        return ModelFeed(KafkaSettings(), TOPICS, "test", reader=reader)


def test_the_merger_publishes_a_snapshot_at_takeover_then_deltas_and_a_snapshot_every_k():
    pipeline = Pipeline(every=3)
    for i in range(7):
        pipeline.merge([f"f{i}"])
    s, d = KIND_SNAPSHOT, KIND_DELTA
    assert pipeline.kinds() == [s, d, d, d, s, d, d, d, s, d]
    keys = [stored.key for stored in pipeline.kafka.log(TOPICS.model)]
    epoch = 1 << 20
    assert keys[:5] == [
        b"epoch-%d" % epoch,
        delta_key(epoch, 1, 3),
        delta_key(epoch, 2, 3),
        delta_key(epoch, 3, 3),
        b"epoch-%d" % epoch,
    ]


def test_a_snapshot_follows_as_soon_as_the_deltas_outweigh_the_last_one():
    pipeline = Pipeline(every=100, vocabulary=10)
    pipeline.merge(["a"])
    pipeline.merge([f"g{i}" for i in range(200)])  # far bigger than the model was
    assert pipeline.kinds() == [KIND_SNAPSHOT, KIND_DELTA, KIND_DELTA, KIND_SNAPSHOT]
    cadence = Cadence(2)
    cadence.snapshot_published(100)
    cadence.delta_published(60)
    assert not cadence.snapshot_due()
    cadence.delta_published(41)
    assert cadence.snapshot_due()


@pytest.mark.parametrize("compacted", [False, True])
def test_a_cold_reader_gets_the_mergers_version_from_one_snapshot_and_the_chain(
    compacted, monkeypatch
):
    pipeline = Pipeline(every=4)
    for i in range(10):
        pipeline.merge([f"f{i % 3}", f"g{i}"])
    if compacted:
        pipeline.kafka.compact(TOPICS.model)
        assert len(pipeline.kafka.compacted[(TOPICS.model, 0)]) > 0
    decoded = []
    real = Snapshot.from_bytes.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        feed_module.Snapshot,
        "from_bytes",
        classmethod(lambda cls, payload: decoded.append(1) or real(cls, payload)),
    )
    latest = pipeline.feed().initial()
    merger = pipeline.merger.snapshot
    assert latest is not None and latest.order == merger.order
    assert _bits(latest.state) == _bits(merger.state)
    assert (latest.offsets, latest.applied) == (merger.offsets, merger.applied)
    assert len(decoded) == 1  # the newest snapshot only


def test_a_following_reader_applies_deltas_skips_their_snapshots_and_says_what_changed(
    monkeypatch,
):
    pipeline = Pipeline(every=2)
    feed = pipeline.feed()
    first = feed.poll()
    assert first is not None and first.order == (1 << 20, 0)
    pipeline.merge(["a", "b"])
    pipeline.merge(["b", "c"])  # version 2: a delta, then its snapshot
    pipeline.merge(["d"])
    decoded = []
    real = Snapshot.from_bytes.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        feed_module.Snapshot,
        "from_bytes",
        classmethod(lambda cls, payload: decoded.append(1) or real(cls, payload)),
    )
    latest = feed.poll()
    assert latest is not None and latest.version == 3 and decoded == []
    assert _bits(latest.state) == _bits(pipeline.merger.snapshot.state)
    epoch = 1 << 20
    assert feed.changed_since((epoch, 3)) == frozenset()
    assert feed.changed_since((epoch, 2)) == {"d"}
    assert feed.changed_since((epoch, 0)) == {"a", "b", "c", "d"}
    assert feed.changed_since((epoch - 1, 3)) is None  # another epoch
    assert feed.changed_since((epoch, 4)) is None  # not a version held


def test_a_gap_in_the_chain_is_not_applied_and_the_next_snapshot_heals_it(caplog):
    pipeline = Pipeline(every=3)
    feed = pipeline.feed()
    feed.poll()
    pipeline.merge(["a"])
    # Version 2's delta arrives damaged: the reader skips it, and version 3's
    # delta does not follow what it holds.
    pipeline.merge(["b"])
    log = pipeline.kafka.log(TOPICS.model)
    log[-1] = log[-1]._replace(value=b"\xc1")
    pipeline.merge(["c"])  # version 3: delta and snapshot
    latest = feed.poll()
    assert feed.n_invalid == 1 and feed.n_gaps == 1
    assert latest is not None and latest.order == pipeline.merger.snapshot.order
    assert _bits(latest.state) == _bits(pipeline.merger.snapshot.state)
    assert feed.changed_since((1 << 20, 1)) is None  # a snapshot replaced the chain
    pipeline.merge(["d"])
    assert feed.poll().version == 4 and feed.changed_since((1 << 20, 3)) == {"d"}


def test_a_gap_with_no_newer_snapshot_keeps_the_version_held_until_the_next():
    pipeline = Pipeline(every=5)
    feed = pipeline.feed()
    feed.poll()
    pipeline.merge(["a"])
    pipeline.merge(["b"])
    log = pipeline.kafka.log(TOPICS.model)
    log[-1] = log[-1]._replace(value=b"\xc1")
    pipeline.merge(["c"])
    held = feed.poll()
    assert held is not None and held.version == 1 and feed.n_gaps == 1
    pipeline.merge(["d"])
    assert feed.poll().version == 1  # deltas wait for the next snapshot
    pipeline.merge(["e"])  # version 5: its snapshot
    latest = feed.poll()
    assert latest.version == 5
    assert _bits(latest.state) == _bits(pipeline.merger.snapshot.state)


def test_a_zombie_mergers_older_epoch_records_are_ignored():
    pipeline = Pipeline(every=3, epoch=2 << 20)
    pipeline.merge(["a"])
    zombie = Pipeline(every=3, epoch=1 << 20, kafka=pipeline.kafka)
    zombie.merge(["z"])  # a delta of the old epoch, after the active merger's
    zombie.merge(["z"])
    latest = pipeline.feed().initial()
    assert latest is not None and latest.order == (2 << 20, 1)
    assert "z" not in latest.state.weights


def test_a_merged_version_from_records_in_place_is_the_pure_one():
    start = Snapshot(version=0, state=ModelState(weights={"a": 1.0}))
    c = _contribution("w~1", 0, 0, 3, ModelState(weights={"a": 2.0, "b": 1.0}, n_learned=3))
    records = [Record(0, b"w~1", c.to_bytes(), 0)]
    pure = merge_records(start, records, "sum", None, None)
    assert start.state.weights == {"a": 1.0}
    own = Snapshot(version=0, state=copy_state(start.state))
    in_place = merge_records(own, records, "sum", None, None, in_place=True)
    assert _bits(in_place.snapshot.state) == _bits(pure.snapshot.state)
    assert own.state.weights is in_place.snapshot.state.weights
    assert in_place.changes.keys == {"a", "b"} and in_place.changes.applied == {"w~1": 0}
