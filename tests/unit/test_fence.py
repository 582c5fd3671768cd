"""The merger's offset fence: every labeled event is learned once, none skipped."""

from __future__ import annotations

import random
from dataclasses import replace

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from stream.kafka.transport import Record
from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.fence import apply_contributions, merge_records, model_key, next_epoch


def _contribution(worker: str, seq: int, ranges: dict, n: int) -> Contribution:
    """A contribution whose ranges from offset 0 open their partitions (its worker
    read them from their beginning)."""
    delta = ModelState(weights={"a": float(n)}, n_learned=n)
    opens = frozenset(p for p, (start, _) in ranges.items() if start == 0)
    return Contribution(worker, seq, 0, ranges, delta, 0.0, opens)


def test_contiguous_contributions_are_applied_and_advance_the_offsets():
    start = Snapshot(version=4, state=ModelState())
    snapshot, applied, rejected = apply_contributions(
        start,
        [
            (0, _contribution("w0", 0, {0: (0, 10), 1: (0, 5)}, 12)),
            (1, _contribution("w1", 0, {2: (0, 8)}, 6)),
            (2, _contribution("w0", 1, {0: (10, 20)}, 9)),
        ],
        "sum",
        next_offset=3,
    )
    assert (applied, rejected) == (3, 0)
    assert snapshot.version == 5
    assert snapshot.offsets == {0: 20, 1: 5, 2: 8}
    assert snapshot.n_learned == 27
    assert snapshot.applied == {"w0": 1, "w1": 0}
    assert snapshot.contributions_offset == 3


def test_overlapping_or_gapped_contributions_are_rejected():
    start = Snapshot(version=1, state=ModelState(n_learned=10), offsets={0: 10})
    snapshot, applied, rejected = apply_contributions(
        start,
        [
            (7, _contribution("old-owner", 3, {0: (5, 10)}, 4)),  # already learned
            (8, _contribution("new-owner", 0, {0: (12, 20)}, 6)),  # skips 10..12
            (9, _contribution("w2", 0, {0: (10, 15)}, 5)),  # exactly next
        ],
        "sum",
        next_offset=10,
    )
    assert (applied, rejected) == (1, 2)
    assert snapshot.offsets == {0: 15}
    assert snapshot.n_learned == 15
    assert snapshot.rejected == {"old-owner": 3, "new-owner": 0}
    assert snapshot.applied == {"w2": 0}


def test_replaying_the_same_contributions_changes_nothing():
    start = Snapshot(version=0, state=ModelState())
    batch = [(0, _contribution("w0", 0, {0: (0, 10)}, 10))]
    once, _, _ = apply_contributions(start, batch, "sum", next_offset=1)
    twice, applied, rejected = apply_contributions(once, batch, "sum", next_offset=1)
    assert (applied, rejected) == (0, 1)
    assert twice.state == once.state and twice.offsets == once.offsets


def test_a_non_finite_contribution_is_rejected_naming_its_worker(caplog):
    start = Snapshot(version=2, state=ModelState(weights={"a": 1.0}), offsets={0: 10})
    poisoned = Contribution(
        "w-bad", 4, 2, {0: (10, 20)}, ModelState(weights={"a": float("nan")}, n_learned=10), 0.0
    )
    good = _contribution("w-good", 0, {1: (0, 5)}, 5)
    snapshot, applied, rejected = apply_contributions(
        start, [(0, poisoned), (1, good)], "sum", next_offset=2
    )
    assert (applied, rejected) == (1, 1)
    assert snapshot.state.weights == {"a": 6.0}
    assert snapshot.offsets == {0: 10, 1: 5}  # the poisoned range stays unlearned
    assert snapshot.rejected == {"w-bad": 4}
    assert "w-bad" in caplog.text and "weights['a'] = nan" in caplog.text


def test_a_merge_that_would_overflow_keeps_the_model_and_rejects_the_round():
    start = Snapshot(version=1, state=ModelState(weights={"a": 1e308}), offsets={0: 0})
    big = Contribution("w0", 0, 1, {0: (0, 5)}, ModelState(weights={"a": 1e308}, n_learned=5), 0)
    snapshot, applied, rejected = apply_contributions(start, [(0, big)], "sum", next_offset=1)
    assert (applied, rejected) == (0, 1)
    assert snapshot.state == start.state and snapshot.offsets == {0: 0}
    assert snapshot.rejected == {"w0": 0}


def test_eviction_keeps_the_workers_heard_from_most_recently(monkeypatch):
    import stream.sync.fence as fence_module

    monkeypatch.setattr(fence_module, "MAX_TRACKED_WORKERS", 3)
    start = Snapshot(version=0, state=ModelState())
    # "old" contributes first and keeps contributing; three others come and go.
    first = [
        (0, _contribution("old", 0, {0: (0, 1)}, 1)),
        (1, _contribution("a", 0, {1: (0, 1)}, 1)),
        (2, _contribution("b", 0, {2: (0, 1)}, 1)),
    ]
    second = [
        (3, _contribution("old", 1, {0: (1, 2)}, 1)),
        (4, _contribution("c", 0, {3: (0, 1)}, 1)),
    ]
    middle, _, _ = apply_contributions(start, first, "sum", next_offset=3)
    snapshot, applied, _ = apply_contributions(middle, second, "sum", next_offset=5)
    assert applied == 2
    assert snapshot.applied == {"b": 0, "old": 1, "c": 0}


def test_a_version_keeps_every_life_it_decided_beyond_the_bound(monkeypatch):
    import stream.sync.fence as fence_module

    monkeypatch.setattr(fence_module, "MAX_TRACKED_WORKERS", 3)
    start = Snapshot(version=0, state=ModelState(), applied={"gone": 7}, rejected={"gone": 8})
    contributions = [(i, _contribution(f"life{i}", 0, {i: (0, 1)}, 1)) for i in range(4)]
    contributions.append((4, _contribution("late", 0, {0: (0, 1)}, 1)))  # fenced out
    snapshot, applied, rejected = apply_contributions(start, contributions, "sum", next_offset=5)
    assert (applied, rejected) == (4, 1)
    assert snapshot.applied == {"life0": 0, "life1": 0, "life2": 0, "life3": 0}
    assert snapshot.rejected == {"gone": 8, "late": 0}


def test_a_new_version_keeps_its_mergers_epoch():
    start = Snapshot(version=7, epoch=3, state=ModelState())
    snapshot, _, _ = apply_contributions(
        start, [(0, _contribution("w", 0, {0: (0, 4)}, 4))], "sum", next_offset=1
    )
    assert snapshot.order == (3, 8)


def test_versions_order_by_epoch_first_so_a_zombies_higher_version_is_older():
    active = Snapshot(version=5, epoch=2, state=ModelState())
    zombie = Snapshot(version=50, epoch=1, state=ModelState())
    assert max([zombie, active], key=lambda s: s.order) is active


def test_a_good_contribution_is_not_rejected_for_the_overflow_of_another_in_its_round():
    start = Snapshot(version=1, state=ModelState(weights={"a": 1e308}), offsets={0: 0, 1: 0})
    good = Contribution("good", 0, 1, {0: (0, 5)}, ModelState(weights={"b": 1.0}, n_learned=5), 0)
    big = Contribution("big", 0, 1, {1: (0, 5)}, ModelState(weights={"a": 1e308}, n_learned=5), 0)
    snapshot, applied, rejected = apply_contributions(
        start, [(0, good), (1, big)], "sum", next_offset=2
    )
    assert (applied, rejected) == (1, 1)
    assert snapshot.state.weights == {"a": 1e308, "b": 1.0}
    assert snapshot.offsets == {0: 5, 1: 0} and snapshot.n_learned == 5
    assert snapshot.applied == {"good": 0} and snapshot.rejected == {"big": 0}


@given(
    st.lists(st.sampled_from([1e308, -1e308, 5e307, 1.0]), min_size=1, max_size=6),
    st.integers(1, 6),
)
def test_the_outcome_does_not_depend_on_how_contributions_are_grouped(deltas, size):
    start = Snapshot(version=0, state=ModelState(weights={"a": 1e308}))
    contributions = [
        (
            i,
            Contribution(
                f"w{i}", 0, 0, {i: (0, 1)}, ModelState(weights={"a": d}, n_learned=1), 0, {i}
            ),
        )
        for i, d in enumerate(deltas)
    ]
    once, _, _ = apply_contributions(start, contributions, "sum", len(contributions))
    grouped = start
    for first in range(0, len(contributions), size):
        group = contributions[first : first + size]
        grouped, _, _ = apply_contributions(grouped, group, "sum", group[-1][0] + 1)
    assert (grouped.state, grouped.offsets) == (once.state, once.offsets)
    assert (grouped.applied, grouped.rejected) == (once.applied, once.rejected)


def test_epochs_are_unique_and_order_takeovers():
    seen = [3]  # an epoch from before epochs carried a tie-break
    first = next_epoch(seen, now_s=1_800_000_000, rng=random.Random(1))
    twin = next_epoch(seen, now_s=1_800_000_000, rng=random.Random(2))
    assert first != twin and min(first, twin) > 3
    # A later takeover that did not see either still orders after both.
    later = next_epoch(seen, now_s=1_800_000_001, rng=random.Random(3))
    assert later > max(first, twin)
    # One that saw them orders after them whatever its clock says.
    assert next_epoch([first, twin], now_s=0) > max(first, twin)
    assert max(first, twin, later) < 2**53


class _Highs:
    def highwater(self, partition: int, at_least: int) -> int | None:
        return {0: 100}.get(partition)


def test_the_merge_step_skips_invalid_records_and_applies_the_rest():
    good = [_contribution("w", s, {0: (10 * s, 10 * s + 10)}, 10) for s in range(2)]
    records = [
        Record(0, b"w", good[0].to_bytes(), 0),
        Record(1, b"x", b"not msgpack \xc1", 0),
        Record(2, b"y", msgpack.packb({"worker": "y", "ranges": [[0, 1]]}), 0),
        Record(3, b"z", replace(good[1], ranges={5: (0, 1)}).to_bytes(), 0),
        Record(4, b"w", good[1].to_bytes(), 0),
    ]
    merged = merge_records(Snapshot(version=0, state=ModelState()), records, "sum", None, _Highs())
    assert (merged.applied, merged.rejected, merged.invalid) == (2, 0, 3)
    assert merged.snapshot.n_learned == 20 and merged.snapshot.offsets == {0: 20}
    assert merged.snapshot.contributions_offset == 5


def test_model_records_are_keyed_by_epoch():
    assert model_key(Snapshot(version=4, epoch=7, state=ModelState())) == b"epoch-7"
