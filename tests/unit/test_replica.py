"""A replica cuts and adopts in time proportional to what changed, with the
same floats as over the whole model (issue 17.4, the worker's half).

For both model implementations (the compiled kernel and river), with SGD or
FTRL, with or without the scaler, hashed or by name, and with a weight bound
that refuses some steps:

- a cut over the keys the model touched since the last cut gives exactly the
  delta ``subtract(state, cut_state)`` gives, and the cut state it keeps is
  the model's state;
- adopting a new version at the keys it changed (plus the pending deltas')
  gives exactly the model adopting the whole version gives, round after
  round of learning, cutting, merging some pending deltas and others', and
  syncing.

"Exactly" is bit for bit: every float compared by its bytes.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import ModelSettings
from stream.model.factory import build_model
from stream.model.merge import add, ftrl_params, keys_of, restrict, subtract
from stream.model.state import ModelState
from stream.sync.pending import Pending, Settled
from stream.sync.replica import adopt_changed, adopt_whole, cut_touched, cut_whole
from tests.fakes import Pipeline, changed_keys, events, read_and_cut

MAPS = ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n")
NAMES = tuple("abcdefgh")
SLOTS = tuple(str(j) for j in range(8))  # --hash-bits 3


def bits(state: ModelState) -> tuple:
    """``state`` with every float as its bytes: equal iff bit for bit equal."""

    def b(x: float) -> bytes:
        return struct.pack("<d", x)

    return (
        b(state.intercept),
        state.n_learned,
        *({k: b(v) for k, v in getattr(state, m).items()} for m in MAPS),
    )


@st.composite
def configs(draw) -> tuple[str, ModelSettings, float]:
    impl = draw(st.sampled_from(["kernel", "river"]))
    model = ModelSettings(
        optimizer=draw(st.sampled_from(["sgd", "ftrl"])),
        scale=draw(st.booleans()),
        hash_bits=draw(st.sampled_from([None, 3])),
    )
    # A tight bound refuses (and undoes) some steps.
    max_abs_weight = draw(st.sampled_from([1e12, 0.3]))
    return impl, model, max_abs_weight


def event_lists(keys: tuple[str, ...], max_size: int = 8):
    x = st.dictionaries(
        st.sampled_from(keys), st.floats(-4.0, 4.0, allow_nan=False), min_size=1, max_size=4
    )
    return st.lists(st.tuples(x, st.sampled_from([None, True, False])), max_size=max_size)


def new_model(impl: str, model: ModelSettings, max_abs_weight: float):
    return build_model(model, impl, max_abs_weight)


def see(model, events) -> None:
    """Score and learn as the worker does: river per event, the kernel per batch."""
    if not events:
        return
    if hasattr(model, "score_and_learn_dicts"):
        model.score_and_learn_dicts([x for x, _ in events], [y for _, y in events])
        return
    for x, y in events:
        model.predict_proba(x)
        if y is not None:
            model.learn(x, y)


def keys_for(model: ModelSettings) -> tuple[str, ...]:
    return SLOTS if model.hash_bits is not None else NAMES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), data=st.data())
def test_a_cut_over_the_touched_keys_is_the_whole_subtraction(config, data):
    impl, model_settings, bound = config
    model = new_model(impl, model_settings, bound)
    keys = keys_for(model_settings)
    whole_cut = model.state()
    cut_state = model.state()
    model.clear_touched()
    for _ in range(data.draw(st.integers(1, 4))):
        see(model, data.draw(event_lists(keys)))
        expected = subtract(model.state(), whole_cut)
        whole_cut = model.state()
        delta, cut_state, _ = cut_touched(model, cut_state)
        assert bits(delta) == bits(expected)
        assert bits(cut_state) == bits(model.state())
        assert model.touched_keys() == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), data=st.data())
def test_adopting_what_changed_gives_the_model_adopting_the_whole_version_gives(config, data):
    impl, model_settings, bound = config
    ftrl = ftrl_params(model_settings)
    keys = keys_for(model_settings)
    # Two locals that see the same events: one cuts and adopts over the whole
    # model (as before), the other over what changed.
    whole = new_model(impl, model_settings, bound)
    changed = new_model(impl, model_settings, bound)
    version = ModelState()
    cut_whole_state, cut_changed_state = whole.state(), changed.state()
    changed.clear_touched()
    pending: list[Pending] = []
    unsynced: set[str] = set()  # keys touched since the last sync, up to the last cut
    seq = 0
    for _ in range(data.draw(st.integers(1, 4))):
        # Learn and cut some segments: contributions sent, pending.
        for _ in range(data.draw(st.integers(0, 3))):
            events = data.draw(event_lists(keys))
            see(whole, events)
            see(changed, events)
            delta, cut_whole_state = cut_whole(whole, cut_whole_state)
            delta_changed, cut_changed_state, touched = cut_touched(changed, cut_changed_state)
            unsynced.update(touched)
            assert bits(delta_changed) == bits(delta)
            pending.append(Pending(seq, {0: (seq, seq + 1)}, delta))
            seq += 1
        # Predictions between segments touch keys (a scaler variance) unlearned.
        unlabeled = [(x, None) for x, _ in data.draw(event_lists(keys, max_size=3))]
        see(whole, unlabeled)
        see(changed, unlabeled)
        # The merger applies the first few pending deltas, with others' (learned
        # by other workers from the version) in between.
        n_applied = data.draw(st.integers(0, len(pending)))
        others = []
        for _ in range(data.draw(st.integers(0, 2))):
            other = new_model(impl, model_settings, bound)
            other.load_state(version)
            see(other, data.draw(event_lists(keys)))
            others.append(subtract(other.state(), version))
        merged = [p.delta for p in pending[:n_applied]] + others
        order = data.draw(st.permutations(range(len(merged))))
        new_version = version
        for i in order:
            new_version = add(new_version, merged[i], ftrl=ftrl)
        # What a feed of deltas says changed (every key the merged deltas hold),
        # or what a diff of the two versions shows, plus keys that did not change.
        if data.draw(st.booleans()):
            said = set().union(set(), *(keys_of(d) for d in merged))
        else:
            said = set(changed_keys(version, new_version))
        said |= set(data.draw(st.lists(st.sampled_from(keys), max_size=2)))
        settled = Settled(pending=pending[n_applied:], applied=pending[:n_applied], rejected=[])
        cut_whole_state = adopt_whole(whole, new_version, settled.pending, ftrl)
        cut_changed_state = adopt_changed(
            changed, cut_changed_state, new_version, settled, frozenset(said), unsynced, ftrl
        )
        unsynced = set()
        assert bits(changed.state()) == bits(whole.state())
        assert bits(cut_changed_state) == bits(cut_whole_state)
        assert bits(cut_changed_state) == bits(changed.state())
        pending, version = settled.pending, new_version


@pytest.mark.parametrize("impl", ["kernel", "river"])
def test_a_model_restricted_to_some_keys_is_its_state_at_those_keys(impl):
    model = new_model(impl, ModelSettings(optimizer="ftrl", scale=True), 1e12)
    see(model, [({"a": 1.0, "b": 2.0}, True), ({"b": -1.0, "c": 0.5}, False), ({"d": 1.0}, None)])
    for some in (["a"], ["b", "c", "z"], [], list("abcd")):
        assert bits(model.state_of(some)) == bits(restrict(model.state(), set(some)))


@pytest.mark.parametrize("impl", ["kernel", "river"])
def test_loading_some_keys_leaves_the_others_as_they_were(impl):
    model = new_model(impl, ModelSettings(optimizer="sgd", scale=True), 1e12)
    see(model, [({"a": 1.0, "b": 2.0}, True), ({"b": -1.0, "c": 0.5}, False)])
    before = model.state()
    other = ModelState(
        weights={"b": 7.0, "e": 1.0},
        intercept=0.25,
        scaler_counts={"b": 3.0},
        scaler_means={"b": 0.5},
        scaler_vars={"b": 1.0},
        n_learned=9,
    )
    model.load_partial(other, ["b", "c", "e"])
    after = model.state()
    assert after.weights == {"a": before.weights["a"], "b": 7.0, "e": 1.0}
    assert after.scaler_counts == {"a": before.scaler_counts["a"], "b": 3.0}
    assert (after.intercept, after.n_learned) == (0.25, 9)


@pytest.mark.parametrize("model", [ModelSettings(), ModelSettings(optimizer="ftrl", hash_bits=4)])
def test_a_worker_that_adopts_what_changed_sends_and_holds_what_one_adopting_whole_versions_does(
    model,
):
    """Through the real Worker and fence: the same events, merges and syncs, one
    feed telling what changed and one that cannot; every contribution and the
    model at the end are the same (seqs, ranges and deltas, bit for bit)."""
    runs = []
    for whole in (False, True):
        pipeline = Pipeline(events(90), model)
        worker = pipeline.start_life("w0", whole=whole)
        for n in (4, 7, 0, 5, 3, 0, 9, 6, 0, 2, 8, 0):
            read_and_cut(worker, n)
            if n % 2:  # some versions merge only part of what is pending
                pipeline.merge(up_to=len(pipeline.contributions) - 1)
            elif n:
                pipeline.merge()
        pipeline.merge()
        read_and_cut(worker, 0)
        assert pipeline.latest.offsets == {0: 44}  # every event read: 4 + 7 + ... + 8
        assert bits(worker.model.state()) == bits(pipeline.latest.state)
        sent = [(c.seq, c.ranges, bits(c.delta)) for c in pipeline.contributed()]
        runs.append((sent, worker.model.state()))
    (sent, state), (sent_whole, state_whole) = runs
    assert sent == sent_whole
    assert bits(state) == bits(state_whole)


def test_a_model_replaced_after_drift_is_cut_whole():
    """``--on-drift reset`` gives the worker a new model: its state is not the
    cut state plus what it touched, so the next contribution is the whole
    subtraction, as before (it takes back everything the old model held)."""
    pipeline = Pipeline(events(40))
    worker = pipeline.start_life("w0")
    read_and_cut(worker, 10)
    pipeline.merge()
    read_and_cut(worker, 0)
    cut_state = worker.replica.cut_state
    cut_state = replace(cut_state, **{m: dict(getattr(cut_state, m)) for m in MAPS})
    worker.model = build_model(pipeline.model, worker.settings.model_impl)
    worker._process(worker._consumer.poll_batch(0, 5))
    expected = subtract(worker.model.state(), cut_state)
    assert worker.replica.cut(sync=False)
    assert bits(worker.replica.pending[-1].delta) == bits(expected)


def test_every_event_scored_with_a_global_version_records_that_versions_age():
    """The freshness metric: one observation per event scored, once the worker
    holds a published version (the empty version 0 has no age)."""
    pipeline = Pipeline(events(40))
    worker = pipeline.start_life("w0", every_events=10)
    read_and_cut(worker, 10)  # scored with version 0: no age to record
    assert worker.monitor.model_age.n == 0
    pipeline.merge()
    read_and_cut(worker, 0)  # adopts version 1
    assert worker.model_version == 1
    read_and_cut(worker, 10)
    read_and_cut(worker, 10)
    assert worker.monitor.model_age.n == 20
    # Version 1 was published moments ago: every event saw it under 10 s old.
    assert worker.monitor.model_age.cumulative()[6] == ("10.0", 20)
