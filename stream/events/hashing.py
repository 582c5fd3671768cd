"""Feature hashing: every feature name into one of 2^B slots, the same everywhere.

With ``--hash-bits B`` the model does not learn names but slots: the feature
``name`` (after the contract's ``name=value`` step, :func:`stream.events.codec.features`)
goes to slot ``murmurhash3_x86_32(utf8(name), seed=0) mod 2^B``, unsigned, and the
model's key for it is that slot number written in decimal (``"70345"``). So
the model holds at most 2^B features whatever the vocabulary (memory bounded
by B, not by the stream), and a slot is the same in every process, on every
machine and in every language: MurmurHash3 x86 32-bit is what Vowpal Wabbit,
scikit-learn's ``FeatureHasher`` and river's hash features use, and
``mmh3.hash(name.encode(), 0, signed=False) % 2**B`` in Python,
``MurmurHash3_x86_32(name, len, 0, &h); h & ((1 << B) - 1)`` in C.

Two features of one event in the same slot are one feature whose value is
their sum, in the event's order (as Vowpal Wabbit and river's hashers do): the
model then sees each slot once per event, which the compiled kernel requires,
and river and the kernel stay bit-identical. Hashing has no sign trick: a
collision adds values, so a slot's weight serves every name that lands in it.

:class:`Hasher` is the one place a name becomes a slot; the worker (both
paths), ``serve`` and ``score`` call it, with the bits the model was learned
with (``hash_bits`` in the model's settings, stored with every global version).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mmh3

from stream.config import MAX_HASH_BITS, MIN_HASH_BITS

# The documented seed: a slot depends on nothing else than the name and B.
SEED = 0


def slot(name: str, bits: int) -> int:
    """The slot of feature ``name``: MurmurHash3 x86 32-bit of its UTF-8 bytes,
    seed :data:`SEED`, unsigned, modulo 2^bits."""
    return mmh3.hash(name.encode("utf-8"), SEED, signed=False) & ((1 << bits) - 1)


class Hasher:
    """Features to slot features for a model of 2^``bits`` slots; counts, over
    its life, the features that landed in a slot another feature of the same
    event already held (``in_event_collisions``)."""

    def __init__(self, bits: int) -> None:
        if not MIN_HASH_BITS <= bits <= MAX_HASH_BITS:
            raise ValueError(f"hash bits must be in [{MIN_HASH_BITS}, {MAX_HASH_BITS}], got {bits}")
        self.bits = bits
        self.n_slots = 1 << bits
        self.in_event_collisions = 0
        self._keys: dict[str, str] = {}

    def key(self, name: str) -> str:
        """The model's key (the slot, in decimal) for feature ``name``.

        Names seen recently are remembered (a bounded cache: hashing is a C
        call, the str of an int is not free), so a stream of a few hot names
        pays once for each.
        """
        key = self._keys.get(name)
        if key is None:
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            key = self._keys[name] = str(slot(name, self.bits))
        return key

    def __call__(self, x: dict[str, float]) -> dict[str, float]:
        """``x`` with each name replaced by its slot; two names of ``x`` in one
        slot are one feature, the sum of their values in ``x``'s order."""
        key = self.key
        out: dict[str, float] = {}
        for name, value in x.items():
            k = key(name)
            if k in out:
                self.in_event_collisions += 1
                out[k] = out[k] + value
            else:
                out[k] = value
        return out


# Names whose slot is remembered: bounded, so a vocabulary of millions costs
# no more than this many strings.
_MAX_CACHED = 1 << 16


def describe(bits: int) -> dict[str, object]:
    """How a feature becomes a slot, as data an exported model carries, so a
    reader in another language can compute the slots our model learned on
    without reading this code (``model export`` writes it as ``hashing``)."""
    return {
        "hash": "murmurhash3_x86_32",
        "seed": SEED,
        "bits": bits,
        "slots": 1 << bits,
        "feature": "a number under name is the feature name with that value; a string v "
        "under name is the feature 'name=v' with value 1.0, and a list of strings one "
        "such feature per distinct string",
        "slot": "murmurhash3_x86_32(utf8(feature), seed) as an unsigned 32-bit integer, "
        "modulo slots",
        "same_slot": "features of one event in one slot are one, the sum of their values",
    }


def featurizer(bits: int | None) -> Callable[[dict[str, float]], dict[str, float]]:
    """The step from the contract's features to the model's: a :class:`Hasher`
    with ``bits``, or the features as they are when the model is not hashed."""
    return Hasher(bits) if bits is not None else unhashed


def unhashed(x: dict[str, float]) -> dict[str, float]:
    """The features of a model by name: as they are."""
    return x


def estimated_collisions(slots_used: int, n_slots: int) -> float:
    """How many distinct features share a slot with another, estimated from how
    many of the ``n_slots`` slots are in use (linear counting: with n features
    hashed uniformly, n_slots * (1 - exp(-n / n_slots)) slots are in use, so
    n is about -n_slots * ln(1 - used / n_slots); the estimate is n - used).
    Needs no memory beyond the model's; infinite when every slot is in use
    (the vocabulary is too large for B to tell)."""
    if slots_used <= 0:
        return 0.0
    if slots_used >= n_slots:
        return math.inf
    return -n_slots * math.log1p(-slots_used / n_slots) - slots_used
