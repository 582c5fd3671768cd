"""The worker's ledger: a contribution covers exactly the acknowledged learning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.sync.ledger import Ledger, LedgerError


def test_a_batch_counts_only_once_its_flush_succeeded():
    ledger = Ledger()
    ledger.assign(0, model_offset=10, committed=10)
    ledger.read(0, 10, 15)
    # Learned, not acknowledged: no contribution may cover it yet.
    with pytest.raises(LedgerError, match="acknowledged only"):
        ledger.open_ranges()
    assert ledger.acknowledge() == {0: 15}
    assert ledger.open_ranges() == {0: (10, 15)}


def test_a_failed_flush_taints_the_ledger_and_no_contribution_follows():
    ledger = Ledger()
    ledger.assign(0, model_offset=0, committed=None)
    ledger.read(0, 0, 5)
    ledger.acknowledge()
    ledger.read(0, 5, 9)
    ledger.taint("flush failed")
    with pytest.raises(LedgerError, match="tainted"):
        ledger.open_ranges()
    # A rebase onto the global model clears it; learning restarts at its offset.
    ledger.rebased()
    assert ledger.restart(0, model_offset=0) == 0
    assert ledger.open_ranges() == {}


def test_contributions_cut_the_acknowledged_stream_without_gap_or_overlap():
    ledger = Ledger()
    ledger.assign(0, model_offset=None, committed=None)
    ledger.assign(1, model_offset=7, committed=7)
    ledger.read(0, 3, 8)  # the model never learned from 0: starts at the first record
    ledger.read(1, 7, 9)
    ledger.acknowledge()
    first = ledger.open_ranges()
    assert first == {0: (3, 8), 1: (7, 9)}
    ledger.contributed(first)
    assert ledger.open_ranges() == {}
    ledger.read(0, 8, 12)
    ledger.acknowledge()
    assert ledger.open_ranges() == {0: (8, 12)}


def test_replayed_events_are_below_the_committed_offset_and_are_not_committed_again():
    ledger = Ledger()
    ledger.assign(0, model_offset=4, committed=10)
    assert ledger.replay_below(0) == 10
    ledger.read(0, 4, 8)  # replay only: predictions exist
    assert ledger.acknowledge() == {}
    ledger.read(0, 8, 12)
    assert ledger.acknowledge() == {0: 12}
    ledger.committed({0: 12})
    assert ledger.replay_below(0) == 12
    assert ledger.open_ranges() == {0: (4, 12)}


def test_a_refused_commit_leaves_the_committed_offset_but_not_the_prediction_boundary():
    ledger = Ledger()
    ledger.assign(0, model_offset=0, committed=0)
    ledger.read(0, 0, 5)
    assert ledger.acknowledge() == {0: 5}
    # commit refused: ledger.committed() is not called
    assert ledger.partitions[0].committed == 0
    assert ledger.replay_below(0) == 5  # acknowledged predictions are not repeated here
    ledger.read(0, 5, 6)
    assert ledger.acknowledge() == {0: 6}  # the next commit covers both batches


def test_reading_backwards_without_a_restart_is_refused():
    ledger = Ledger()
    ledger.assign(0, model_offset=0, committed=None)
    ledger.read(0, 0, 5)
    with pytest.raises(LedgerError, match="already learned"):
        ledger.read(0, 3, 6)


def test_a_restart_without_a_model_offset_goes_back_to_where_learning_began():
    ledger = Ledger()
    ledger.assign(2, model_offset=None, committed=None)
    ledger.read(2, 100, 110)
    ledger.acknowledge()
    assert ledger.restart(2, model_offset=None) == 100
    assert ledger.restart(2, model_offset=105) == 105


def test_a_contribution_must_start_at_the_open_segment():
    ledger = Ledger()
    ledger.assign(0, model_offset=0, committed=None)
    ledger.read(0, 0, 4)
    ledger.acknowledge()
    with pytest.raises(LedgerError, match="does not start"):
        ledger.contributed({0: (1, 4)})


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 20), st.booleans(), st.booleans()),
        max_size=60,
    )
)
def test_contributed_ranges_tile_exactly_the_acknowledged_offsets(steps):
    """For any sequence of batches (per partition, a length, flushed or not) and
    cuts, the contributed ranges plus the open segment cover each partition's
    acknowledged offsets exactly once, and never an unacknowledged one."""
    ledger = Ledger()
    for p in range(4):
        ledger.assign(p, model_offset=0, committed=None)
    next_offset = dict.fromkeys(range(4), 0)
    acknowledged = dict.fromkeys(range(4), 0)
    covered: dict[int, list[tuple[int, int]]] = {p: [] for p in range(4)}
    for partition, length, flushed, cut in steps:
        if ledger.tainted:
            break
        start = next_offset[partition]
        ledger.read(partition, start, start + length)
        next_offset[partition] = start + length
        if not flushed:
            ledger.taint("flush failed")
            with pytest.raises(LedgerError):
                ledger.open_ranges()
            break
        ledger.acknowledge()
        acknowledged = dict(next_offset)
        if cut:
            ranges = ledger.open_ranges()
            ledger.contributed(ranges)
            for p, r in ranges.items():
                covered[p].append(r)
    if not ledger.tainted:
        for p, r in ledger.open_ranges().items():
            covered[p].append(r)
    for p in range(4):
        offsets = [o for a, b in covered[p] for o in range(a, b)]
        assert sorted(offsets) == offsets
        if not ledger.tainted:
            assert offsets == list(range(acknowledged[p]))
        else:
            assert len(offsets) == len(set(offsets))
            assert all(o < acknowledged[p] for o in offsets)


def test_a_read_past_where_learning_stands_is_counted_and_said_once_per_partition(caplog):
    ledger = Ledger()
    ledger.assign(0, model_offset=10, committed=10)
    ledger.assign(1, model_offset=None, committed=None)
    ledger.read(1, 3, 5)  # where a partition new to the model begins is no gap
    ledger.read(0, 10, 12)
    assert ledger.gaps == 0 and caplog.text == ""
    ledger.read(0, 13, 15)  # offset 12 holds no record (a transaction marker)...
    ledger.read(0, 16, 18)  # ...nor 15
    ledger.acknowledge()
    ledger.restart(0, model_offset=18)
    ledger.read(0, 30, 31)  # resumes past the model's offset: a seek that did not happen?
    assert ledger.gaps == 3
    assert caplog.text.count("read resumes past where learning stands") == 1
    assert "partition=0 expected=12 first=13 skipped=1" in caplog.text
    # Learning is not refused: the open segment covers the offsets without records.
    assert ledger.acknowledge() == {0: 31, 1: 5}
    assert ledger.open_ranges() == {0: (18, 31), 1: (3, 5)}
