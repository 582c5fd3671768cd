"""What became of a worker life's pending contributions, judged from one version.

A worker keeps each contribution it sent until a global version settles it:
*applied* (its events are in the model: drop it, the model carries its
delta), *rejected* (it can never be applied: drop all local learning and
re-learn from the model's offsets), or *still pending* (its delta is added
onto the version, so the local model stays "global + not yet merged").

The version's ``applied``/``rejected`` seqs per life answer exactly, but only
while they remember the life: they are bounded (see
:data:`stream.sync.fence.MAX_TRACKED_WORKERS`), and a life that went quiet
while many others contributed is evicted. So the version's *offsets* judge
too: they say which events the model holds, whoever learned them. A
contribution whose every range ends at or below the model's offset is in the
model; one whose ranges continue exactly where the model (or the pending
contribution before it) stops may still be applied; anything else (a range
the model's offset cuts through, one starting past where the model stops, or
one following a contribution that cannot be applied) never will be: the
fence admits a range only at the model's offset. Judged this way an evicted
life neither keeps a merged delta (which it would count twice, on every
sync, for ever) nor waits on a rejected one (learning nothing meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot


@dataclass(frozen=True)
class Pending:
    """A contribution sent but not yet settled by a global version."""

    seq: int
    ranges: dict[int, tuple[int, int]]
    delta: ModelState
    # The partitions it opens in the model (Contribution.opens); None: any.
    opens: frozenset[int] | None = frozenset()


class Settled(NamedTuple):
    """:func:`settle`'s answer; each list in the order the contributions were sent."""

    pending: list[Pending]
    applied: list[Pending]
    rejected: list[Pending]


def settle(pending: list[Pending], version: Snapshot, life: str) -> Settled:
    """Split ``pending`` (one life's contributions, in the order sent) by what
    ``version`` says became of them.

    In order, each contribution is:

    1. applied if every range ends at or below the model's offset for its
       partition: the model holds those events (had someone else learned
       them, this one is rejected when it arrives), and the local model must
       not keep its delta on top of them;
    2. rejected if the version records a rejected seq of ``life`` at or above
       its seq (the merger decides a life's contributions in order);
    3. applied if the version records an applied seq at or above its seq;
    4. still pending if every range starts exactly where the model's offset
       stands, the still pending ones before it counted as applied (or, in a
       partition new to the model, if it is the range that opens it);
    5. otherwise rejected: the fence admits a range only at the model's offset.

    Anything after a rejected one is rejected too, and so is a still pending
    one followed by an applied one (the merger decides in order: it was
    passed over). A life either waits or rebases: whenever ``rejected`` is
    not empty, ``pending`` is, and the worker re-learns from the offsets.
    """
    rejected_seq = version.rejected.get(life, -1)
    applied_seq = version.applied.get(life, -1)
    # Where the model would stand once the still pending ones so far are applied.
    cursor: dict[int, int] = dict(version.offsets)
    out = Settled([], [], [])
    for contribution in pending:
        seq = contribution.seq
        if out.rejected:
            out.rejected.append(contribution)
        elif _covered(contribution, version.offsets) or rejected_seq < seq <= applied_seq:
            out.rejected.extend(out.pending)
            out.pending.clear()
            out.applied.append(contribution)
        elif seq <= rejected_seq:
            out.rejected.append(contribution)
        elif _continues(contribution, cursor):
            out.pending.append(contribution)
            cursor.update({p: end for p, (_, end) in contribution.ranges.items()})
        else:
            out.rejected.append(contribution)
    if out.rejected:
        # A rebase drops them all; the ones still pending were sent first.
        out.rejected[:0] = out.pending
        out.pending.clear()
    return out


def _covered(contribution: Pending, offsets: dict[int, int]) -> bool:
    return all(p in offsets and end <= offsets[p] for p, (_, end) in contribution.ranges.items())


def _continues(contribution: Pending, cursor: dict[int, int]) -> bool:
    opens = contribution.opens
    return all(
        cursor[p] == start if p in cursor else opens is None or p in opens
        for p, (start, _) in contribution.ranges.items()
    )
