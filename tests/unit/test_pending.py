"""A worker life's pending contributions, settled by one global version: by the
life's applied/rejected seqs while the version remembers them, by the
model's offsets always (issue 16.6: an evicted entry neither stalls a live
worker nor makes it count a merged delta twice)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.fence import apply_contributions
from stream.sync.pending import Pending, settle

LIFE = "host-1-w0~0123456789ab"


def _pending(seq: int, ranges: dict[int, tuple[int, int]], opens=frozenset()) -> Pending:
    n = sum(end - start for start, end in ranges.values())
    return Pending(seq, ranges, ModelState(weights={"a": 1.0}, n_learned=n), frozenset(opens))


def _version(offsets: dict[int, int], applied=None, rejected=None) -> Snapshot:
    return Snapshot(
        version=9,
        state=ModelState(),
        offsets=offsets,
        applied=applied or {},
        rejected=rejected or {},
    )


def _seqs(contributions: list[Pending]) -> list[int]:
    return [c.seq for c in contributions]


def _split(pending: list[Pending], version: Snapshot) -> tuple[list[int], list[int], list[int]]:
    settled = settle(pending, version, LIFE)
    return _seqs(settled.pending), _seqs(settled.applied), _seqs(settled.rejected)


# Three contributions of one life, in the order sent.
A = _pending(3, {0: (10, 15)})
B = _pending(4, {0: (15, 20), 1: (0, 4)}, opens={1})  # partition 1 starts here
C = _pending(5, {0: (20, 22)})


def test_the_applied_seq_settles_what_the_version_merged():
    version = _version({0: 20, 1: 4}, applied={LIFE: 4})
    assert _split([A, B, C], version) == ([5], [3, 4], [])


def test_an_evicted_life_is_settled_by_the_offsets_alone():
    version = _version({0: 20, 1: 4})  # the life's entry is gone
    assert _split([A, B, C], version) == ([5], [3, 4], [])


def test_contributions_that_continue_where_the_model_stops_stay_pending():
    assert _split([A, B, C], _version({0: 10})) == ([3, 4, 5], [], [])


def test_in_a_partition_new_to_the_model_only_the_opening_range_and_those_after_it_wait():
    opening, after = _pending(0, {2: (7, 9)}, opens={2}), _pending(1, {2: (9, 12)})
    assert _split([opening, after], _version({0: 10})) == ([0, 1], [], [])
    # Once the opening one is rejected (its entry evicted), the next cannot open
    # the partition past it: the fence would refuse it.
    assert _split([after], _version({0: 10})) == ([], [], [1])
    # A contribution from before ``opens`` existed opens any partition, as it did.
    legacy = Pending(1, {2: (9, 12)}, ModelState(), None)
    assert _split([legacy], _version({0: 10})) == ([1], [], [])


def test_a_range_the_models_offset_cuts_through_is_rejected_and_everything_after_it():
    # Someone else learned [10, 12): A can never be applied.
    assert _split([A, B, C], _version({0: 12})) == ([], [], [3, 4, 5])


def test_a_range_starting_past_the_models_offset_is_rejected():
    # The model is behind where A starts (an older version took over).
    assert _split([A, B, C], _version({0: 8})) == ([], [], [3, 4, 5])


def test_a_rejected_seq_rejects_from_that_contribution_on_and_pending_ones_with_it():
    version = _version({0: 15}, applied={LIFE: 3}, rejected={LIFE: 4})
    assert _split([A, B, C], version) == ([], [3], [4, 5])


def test_one_merged_after_one_still_pending_means_that_one_was_passed_over():
    first, second = _pending(0, {1: (0, 5)}), _pending(1, {0: (10, 15)})
    assert _split([first, second], _version({0: 15, 1: 0})) == ([], [1], [0])


def test_entries_of_plain_worker_names_from_before_lives_judge_nothing():
    # A checkpoint from before incarnations names its workers plainly; the
    # restarted life under that name is not judged by its predecessor's seqs.
    version = _version({0: 10}, applied={"host-1-w0": 57}, rejected={"host-1-w0": 58})
    assert _split([A, B, C], version) == ([3, 4, 5], [], [])


# -- properties -------------------------------------------------------------------


@st.composite
def _history(draw):
    """A life's contributions tiled from the model's offsets, some partitions new
    to the model; the merger applied the first ``k`` and the rest are in flight."""
    starts = draw(st.dictionaries(st.integers(0, 3), st.integers(0, 50), max_size=4))
    cursor = {p: starts.get(p, draw(st.integers(0, 50))) for p in range(4)}
    first_seq = draw(st.integers(0, 5))
    pending = []
    opened = set(starts)
    for i in range(draw(st.integers(0, 6))):
        partitions = draw(st.sets(st.integers(0, 3), min_size=1))
        ranges = {}
        for p in sorted(partitions):
            length = draw(st.integers(1, 10))
            ranges[p] = (cursor[p], cursor[p] + length)
            cursor[p] += length
        # The first range of a partition new to the model opens it.
        pending.append(_pending(first_seq + i, ranges, opens=set(ranges) - opened))
        opened |= set(ranges)
    k = draw(st.integers(0, len(pending)))
    return starts, pending, k


@given(_history(), st.booleans(), st.booleans())
def test_a_merged_prefix_is_applied_and_the_rest_pending_whether_or_not_the_life_is_remembered(
    history, remembered, noisy
):
    starts, pending, k = history
    offsets = dict(starts)
    for contribution in pending[:k]:
        offsets.update({p: end for p, (_, end) in contribution.ranges.items()})
    applied = {LIFE: pending[k - 1].seq} if remembered and k else {}
    rejected = {LIFE: pending[0].seq - 1} if remembered and pending and pending[0].seq else {}
    if noisy:  # other lives, and the plain name of this one from before lives
        applied |= {"host-1-w0": 10**6, "host-2-w0~ffffffffffff": 3}
        rejected |= {"host-1-w0": 10**6}
    settled = settle(pending, _version(offsets, applied, rejected), LIFE)
    assert settled.applied == pending[:k]
    assert settled.pending == pending[k:]
    assert settled.rejected == []


def _contribution(p: Pending) -> Contribution:
    return Contribution(LIFE, p.seq, 0, p.ranges, p.delta, 0.0, opens=p.opens)


@given(
    _history(),
    st.dictionaries(st.integers(0, 3), st.integers(0, 80), max_size=4),
    st.dictionaries(st.sampled_from(["applied", "rejected"]), st.integers(-1, 12), max_size=2),
)
def test_what_stays_pending_the_fence_would_apply_and_each_contribution_is_settled_once(
    history, offsets, seqs
):
    _, pending, _ = history
    version = _version(
        offsets,
        applied={LIFE: seqs["applied"]} if seqs.get("applied", -1) >= 0 else {},
        rejected={LIFE: seqs["rejected"]} if seqs.get("rejected", -1) >= 0 else {},
    )
    settled = settle(pending, version, LIFE)
    # Every contribution lands in exactly one list, each list in the order sent.
    assert sorted(_seqs(settled.pending + settled.applied + settled.rejected)) == _seqs(pending)
    for part in settled:
        assert _seqs(part) == sorted(_seqs(part))
    # A life either waits or rebases.
    assert not (settled.pending and settled.rejected)
    # Waiting is only for what the fence would apply next, every one of them.
    batch = [(i, _contribution(p)) for i, p in enumerate(settled.pending)]
    _, n_applied, n_rejected = apply_contributions(version, batch, "sum", next_offset=len(batch))
    assert (n_applied, n_rejected) == (len(batch), 0)
    # Applied means: merged by the version's own account, or its events are in the model.
    for p in settled.applied:
        assert p.seq <= version.applied.get(LIFE, -1) or all(
            end <= offsets.get(q, -1) for q, (_, end) in p.ranges.items()
        )
