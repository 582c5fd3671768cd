"""The worker's ledger: per features partition, what it predicted, had acknowledged,
learned, contributed and committed. Pure bookkeeping, no Kafka.

The protocol's vocabulary (offsets are always *next* offsets, Kafka's way):

- ``learned``: the local model has learned every labeled event below it (in
  the batch being processed, possibly not yet acknowledged);
- ``acknowledged``: learned, and every prediction and dead letter of the
  events below it acknowledged by the broker (the producer's flush succeeded);
- ``predicted``: events below it already have an acknowledged prediction (by
  this worker or a previous owner, as far as the committed offset tells), so
  reading them again only learns ("replay");
- ``contributed``: learning below it is covered by contributions already sent
  (or by the global model, at assignment); the open segment is
  ``[contributed, acknowledged)``. None: the model never learned from this
  partition, and the segment starts at the first record read;
- ``committed``: the group's committed offset, as far as this worker knows.

A contribution may cover only acknowledged events: a contribution whose delta
includes an event whose prediction was never acknowledged would make that
event learned but, after a crash, predicted again and learned again by the
next owner (the model's offsets say it was learned; the committed offset says
it was not predicted). So the ledger advances ``acknowledged`` only in
:meth:`acknowledge` (after a successful flush), and once a flush fails or a
batch is interrupted, the local model holds learning no range can describe:
the ledger is *tainted* and refuses every further contribution. The worker
then dies or rebases onto the global model, and the partitions are re-learned
from the model's offsets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stream.errors import StreamError

logger = logging.getLogger(__name__)

Ranges = dict[int, tuple[int, int]]


class LedgerError(StreamError):
    """The worker's bookkeeping was asked for something the protocol forbids."""


@dataclass
class PartitionLedger:
    """One partition's positions (see the module docstring)."""

    contributed: int | None = None
    # Where this worker's learning of the partition began when the global model
    # had not learned from it (the first record read): a restart goes back there.
    origin: int | None = None
    learned: int | None = None
    acknowledged: int | None = None
    predicted: int = -1
    committed: int | None = None

    @property
    def unacknowledged(self) -> bool:
        return self.learned != self.acknowledged


class Ledger:
    """Every assigned partition's :class:`PartitionLedger`, and whether the local
    model still matches them (not tainted)."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionLedger] = {}
        self.tainted: str | None = None
        # Reads that resumed past where learning of their partition stood (see
        # :meth:`read`), and the partitions already warned about (once each).
        self.gaps = 0
        self._gap_warned: set[int] = set()

    # -- assignment ---------------------------------------------------------

    def assign(self, partition: int, model_offset: int | None, committed: int | None) -> None:
        """Start (or restart) a partition where the global model stopped learning;
        events below ``committed`` already have their predictions."""
        self.partitions[partition] = PartitionLedger(
            contributed=model_offset,
            predicted=committed if committed is not None else -1,
            committed=committed,
        )

    def restart(self, partition: int, model_offset: int | None) -> int | None:
        """Learning of an assigned partition starts again at the global model's
        offset (un-merged learning was dropped); returns where to read from
        (None: nothing known, the caller's reset policy decides)."""
        part = self.partitions.setdefault(partition, PartitionLedger())
        start = model_offset if model_offset is not None else part.origin
        part.contributed = start
        part.learned = part.acknowledged = None
        return start

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def rebased(self) -> None:
        """The local model became exactly the global one: nothing un-merged is left,
        so a taint is gone (the caller restarts every partition it keeps)."""
        self.tainted = None

    # -- a batch ------------------------------------------------------------

    def replay_below(self, partition: int) -> int:
        """Events below this offset are only learned (their predictions exist)."""
        return self.partitions[partition].predicted

    def read(self, partition: int, first: int, end: int) -> None:
        """The batch's records ``[first, end)`` of ``partition`` were scored and learned
        (predictions sent, not yet acknowledged)."""
        if end <= first:
            raise LedgerError(f"partition {partition}: empty read [{first}, {end})")
        part = self.partitions.get(partition)
        if part is None:
            raise LedgerError(f"partition {partition}: read but not assigned")
        if part.learned is not None and first < part.learned:
            raise LedgerError(
                f"partition {partition}: read from {first}, but already learned up to "
                f"{part.learned} (a seek without a restart of the ledger)"
            )
        expected = part.learned if part.learned is not None else part.contributed
        if expected is not None and first > expected:
            # Offsets with no record (transaction markers, a compacted or
            # retention-truncated log) are skipped legitimately, so this is not
            # refused; but a seek that did not happen looks the same, and the
            # events in between would never be learned: counted, and said once
            # per partition (a transactional producer leaves a marker per batch).
            self.gaps += 1
            if partition not in self._gap_warned:
                self._gap_warned.add(partition)
                logger.warning(
                    "read resumes past where learning stands partition=%d expected=%d "
                    "first=%d skipped=%d (offsets without records, or a missed seek; "
                    "counted in learnstream_read_gaps_total, said once per partition)",
                    partition,
                    expected,
                    first,
                    first - expected,
                )
        if part.contributed is None:
            part.contributed = first
            if part.origin is None:
                part.origin = first
        part.learned = end

    def acknowledge(self) -> dict[int, int]:
        """The flush succeeded: everything learned is acknowledged. Returns the
        offsets to commit (partitions that moved since the last commit)."""
        moved = {}
        for partition, part in self.partitions.items():
            if part.learned is None:
                continue
            part.acknowledged = part.learned
            part.predicted = max(part.predicted, part.learned)
            if part.committed is None or part.learned > part.committed:
                moved[partition] = part.learned
        return moved

    def committed(self, offsets: dict[int, int]) -> None:
        """The group accepted these offsets."""
        for partition, offset in offsets.items():
            part = self.partitions.get(partition)
            if part is not None:
                part.committed = offset

    def taint(self, reason: str) -> None:
        """The local model learned events that no range can describe (a failed
        flush, an interrupted batch): no contribution may be sent any more."""
        if self.tainted is None:
            logger.warning("ledger tainted, no more contributions until a rebase reason=%s", reason)
            self.tainted = reason

    # -- contributions ------------------------------------------------------

    def open_ranges(self) -> Ranges:
        """What the next contribution covers: per partition, ``[contributed,
        acknowledged)`` where that is not empty. Raises when the model holds
        learning that is not acknowledged (tainted, or mid-batch)."""
        if self.tainted is not None:
            raise LedgerError(f"no contribution from a tainted ledger ({self.tainted})")
        ranges: Ranges = {}
        for partition, part in self.partitions.items():
            if part.unacknowledged:
                raise LedgerError(
                    f"partition {partition}: learned up to {part.learned}, acknowledged only "
                    f"up to {part.acknowledged}"
                )
            start, end = part.contributed, part.acknowledged
            if start is not None and end is not None and end > start:
                ranges[partition] = (start, end)
        return ranges

    def opening(self, ranges: Ranges) -> frozenset[int]:
        """The partitions of ``ranges`` whose range starts at the origin: where
        this worker's learning of a partition the global model had not learned
        from began (see :attr:`Contribution.opens <stream.sync.contribution.Contribution>`)."""
        return frozenset(
            p
            for p, (start, _) in ranges.items()
            if p in self.partitions and self.partitions[p].origin == start
        )

    def has_open_segment(self) -> bool:
        return any(
            part.contributed is not None
            and part.acknowledged is not None
            and part.acknowledged > part.contributed
            for part in self.partitions.values()
        )

    def contributed(self, ranges: Ranges) -> None:
        """A contribution covering ``ranges`` was sent."""
        for partition, (start, end) in ranges.items():
            part = self.partitions.get(partition)
            if part is None or part.contributed != start:
                raise LedgerError(
                    f"partition {partition}: contribution [{start}, {end}) does not start "
                    f"at the open segment ({None if part is None else part.contributed})"
                )
            part.contributed = end

    def unplaced(self) -> list[int]:
        """Partitions that neither the group (no committed offset) nor the global
        model (no offset) place anywhere yet: with ``--from latest``, a successor
        would start at the end of such a partition."""
        return [
            p
            for p, part in self.partitions.items()
            if part.committed is None and part.contributed is None
        ]

    def unannounced(self) -> list[int]:
        """Partitions whose learning began at an origin the global model does not
        know (it had not learned from them) with acknowledged learning past it that
        no contribution covers yet: a successor that found only the committed
        offset would start there, and never learn the events from the origin on."""
        return [
            p
            for p, part in self.partitions.items()
            if part.origin is not None
            and part.contributed == part.origin
            and part.acknowledged is not None
            and part.acknowledged > part.origin
        ]

    def positions(self) -> dict[int, int]:
        """Per partition, the next offset to read (what was learned), for lag."""
        return {p: part.learned for p, part in self.partitions.items() if part.learned is not None}
