"""A worker's contribution: what it learned since its last one, and from where.

``ranges`` maps each features partition to the half-open offset range
``[start, end)`` whose labeled events the delta learned. The merger applies a
contribution only if every range starts exactly where the global model's
offset for that partition stands, so no event is ever learned twice, and
advances those offsets to the ends, so none is skipped.

The delta is sparse (only the features its events changed) and packed
(:func:`~stream.model.state.pack_state`), so its size follows the events it
covers, not the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from stream.model.state import ModelState, pack_state, unpack_state


@dataclass(frozen=True)
class Contribution:
    worker: str
    seq: int
    base_version: int
    ranges: dict[int, tuple[int, int]]
    delta: ModelState
    created_at: float

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
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
    def from_bytes(cls, payload: bytes) -> Contribution:
        data = msgpack.unpackb(payload, raw=False)
        return cls(
            worker=data["worker"],
            seq=int(data["seq"]),
            base_version=int(data["base_version"]),
            ranges={int(p): (int(a), int(b)) for p, (a, b) in data["ranges"].items()},
            delta=unpack_state(data["delta"]),
            created_at=float(data["created_at"]),
        )
