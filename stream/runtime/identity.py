"""Who a worker is: its name, and which life of that name.

A worker's name (host, supervisor pid, index) is stable across the restarts
of its process: the supervisor restarts ``w0`` under the name ``w0`` had, and
a restarted container (the supervisor is PID 1 again, the host name kept)
starts every worker under its old name. The protocol must not take a new
life for the old one: a life's contribution seqs start at 0, while the
merger remembers the highest seq it applied or rejected per contributor, so
a new life judged by its predecessor's record would think its contributions
applied while the merger rejects them, and stop learning without a word.

So each process life draws a fresh random *incarnation*, and everything the
protocol keys by contributor (the merger's applied/rejected seqs, the
worker's pending contributions) is keyed by the *life*: ``name~incarnation``.
It is made here, where processes start, and handed down; ``stream.sync``
only stores and compares it.
"""

from __future__ import annotations

import secrets

# Between a worker's name and its incarnation in a life id. Not used in the
# names this package makes (host, pid, index), so the name part can be read back.
SEPARATOR = "~"
# 12 hex characters (48 random bits): by the birthday bound, two lives of one
# name become likely to share an incarnation only after about 2**24 (16
# million) lives of that name.
INCARNATION_BYTES = 6


def new_incarnation() -> str:
    """A fresh random incarnation: one per process life, never reused."""
    return secrets.token_hex(INCARNATION_BYTES)


def life_id(name: str, incarnation: str) -> str:
    """The id a life's contributions carry, and its pending list is judged by."""
    if not name or not incarnation or SEPARATOR in incarnation:
        raise ValueError(
            f"a life needs a name and an incarnation without {SEPARATOR!r}: "
            f"name={name!r} incarnation={incarnation!r}"
        )
    return f"{name}{SEPARATOR}{incarnation}"
