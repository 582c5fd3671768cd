"""A worker's contribution: what it learned since its last one, and from where.

``ranges`` maps each features partition to the half-open offset range
``[start, end)`` whose labeled events the delta learned. The merger applies a
contribution only if every range starts exactly where the global model's
offset for that partition stands, so no event is ever learned twice, and
advances those offsets to the ends, so none is skipped.

A partition the model has not learned from yet has no offset to check a start
against, so ``opens`` names the partitions whose range starts where this
worker's learning of the partition began (its beginning, or with ``--from
latest`` the offset committed before the first prediction): only such a range
opens a partition in the model. A later range of the same worker, sent while
the one before it was still undecided, would otherwise be accepted alone when
that one is rejected, and the events between them never learned.

The delta is sparse (only the features its events changed) and packed
(:func:`~stream.model.state.pack_state`), so its size follows the events it
covers, not the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from stream.errors import ContributionError
from stream.model.state import ModelState, pack_state
from stream.sync.records import MAX_OFFSET, Fields, Watermarks


@dataclass(frozen=True)
class Contribution:
    worker: str
    seq: int
    base_version: int
    ranges: dict[int, tuple[int, int]]
    delta: ModelState
    created_at: float
    # Partitions whose range starts at the worker's origin for them (see the
    # module docstring). None: written before the field existed; such a
    # contribution opens any partition, as it did then.
    opens: frozenset[int] | None = frozenset()

    def to_bytes(self) -> bytes:
        opens = {} if self.opens is None else {"opens": sorted(self.opens)}
        return msgpack.packb(
            {
                **opens,
                "worker": self.worker,
                "seq": self.seq,
                "base_version": self.base_version,
                "ranges": {str(p): [a, b] for p, (a, b) in self.ranges.items()},
                "delta": pack_state(self.delta),
                "created_at": self.created_at,
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, payload: bytes, watermarks: Watermarks | None = None) -> Contribution:
        """The contribution in ``payload``, checked field by field; raises
        :class:`~stream.errors.ContributionError` (naming the field and value) on
        anything malformed or impossible, and nothing else.

        Impossible, beyond the types: no range, or one ending before it starts; a delta
        that is not a possible learning state, or that counts more labeled events
        than its ranges hold. With ``watermarks`` (the merger's view of the
        features topic), a range of a partition that does not exist or ending
        past its high watermark: an event a worker learned was read, so it is
        below the high watermark; a range end beyond it would stop that
        partition's learning for ever.
        """
        try:
            data = msgpack.unpackb(payload, raw=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise ContributionError(f"contribution: not msgpack: {exc!r}") from exc
        head = Fields(data, "contribution", ContributionError)
        worker = head.text("worker")
        fields = Fields(data, f"contribution from worker {worker!r}", ContributionError)
        ranges = _ranges(fields, watermarks)
        delta = fields.state("delta")
        span = sum(end - start for start, end in ranges.values())
        if delta.n_learned > span:
            fields.fail("delta", f"learned {delta.n_learned} events from ranges of {span} offsets")
        return cls(
            worker=worker,
            seq=fields.integer("seq"),
            base_version=fields.integer("base_version"),
            ranges=ranges,
            delta=delta,
            created_at=fields.number("created_at"),
            opens=_opens(fields, ranges),
        )


def _opens(fields: Fields, ranges: dict[int, tuple[int, int]]) -> frozenset[int] | None:
    raw = fields.raw("opens", None)
    if raw is None:
        return None
    if not isinstance(raw, list):
        fields.fail("opens", "not a list of partitions", raw)
    opens = frozenset(fields.check_integer("opens", p) for p in raw)
    if not opens <= set(ranges):
        fields.fail("opens", "names a partition that has no range", sorted(opens - set(ranges)))
    return opens


def _ranges(fields: Fields, watermarks: Watermarks | None) -> dict[int, tuple[int, int]]:
    out = {}
    for key, value in fields.mapping("ranges").items():
        partition = fields.partition("ranges", key)
        name = f"ranges[{key}]"
        if not isinstance(value, list) or len(value) != 2:
            fields.fail(name, "not a [start, end] pair", value)
        start = fields.check_integer(name, value[0], MAX_OFFSET)
        end = fields.check_integer(name, value[1], MAX_OFFSET)
        if end < start:
            fields.fail(name, "ends before it starts", value)
        if watermarks is not None:
            high = watermarks.highwater(partition, end)
            if high is None:
                fields.fail(name, "the features topic has no such partition", partition)
            if end > high:
                fields.fail(name, f"ends past the high watermark {high}", value)
        out[partition] = (start, end)
    if not out:
        # A worker contributes only when it has read something; a delta from no
        # range would be learning from no event that the fence could ever check.
        fields.fail("ranges", "empty")
    return out
