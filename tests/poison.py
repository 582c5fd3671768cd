"""Faults that one record sets off, as a bug in the batch decoder or the kernel would.

Shared by the unit tests (which install them with ``monkeypatch``) and the end
to end tests, where ``tests/integration/poisoned/sitecustomize.py`` installs
them in every process of ``learnstream work`` (the supervisor spawns its
workers, so a patch made in the test process would not reach them) when
``LEARNSTREAM_TEST_POISON`` names one.

- The kernel raises on an event with a feature equal to :data:`KERNEL_POISON`,
  *after* learning, in place, every event of the batch before it and part of
  it: a half-learned model, unless the kernel undoes the batch.
- The batch decoder raises on a batch holding a record whose bytes contain
  :data:`DECODER_POISON` (a record the general decoder accepts: the dead letter
  can only come from the batch decoder raising).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

ENV = "LEARNSTREAM_TEST_POISON"
KERNEL_POISON = 4242.5
DECODER_POISON = b"decoder-poison"


class KernelPoisoned(ZeroDivisionError):
    """What the poisoned kernel raises."""


class DecoderPoisoned(KeyError):
    """What the poisoned batch decoder raises."""


def raising_run(real: Callable[..., int]) -> Callable[..., int]:
    """``stream.model.kernel._run``, raising on a poisoned event half-way through."""

    def run(idx, val, off, lab, out, w, cnt, mean, var, fz, fn, has, intercept, *rest):
        for e in range(off.shape[0] - 1):
            if np.any(val[off[e] : off[e + 1]] == KERNEL_POISON):
                # The events before it, learned for real; then part of this one.
                real(idx, val, off[: e + 1], lab[:e], out[:e],
                     w, cnt, mean, var, fz, fn, has, intercept, *rest)  # fmt: skip
                w[idx[off[e] : off[e + 1]]] += 1.0
                intercept[0] += 1.0
                raise KernelPoisoned(f"kernel poisoned by event {e}")
        return real(idx, val, off, lab, out, w, cnt, mean, var, fz, fn, has, intercept, *rest)

    return run


def raising_decode(real: Callable) -> Callable:
    """``BatchDecoder.decode``, raising on a batch that holds a poisoned record."""

    def decode(self, records):
        if any(value is not None and DECODER_POISON in value for value in records):
            raise DecoderPoisoned("batch decoder poisoned")
        return real(self, records)

    return decode


def install(which: str) -> None:
    """Poison ``"kernel"``, ``"decoder"`` or both (``"kernel,decoder"``) in this process."""
    from stream.events import batch
    from stream.model import kernel

    names = set(which.split(","))
    unknown = names - {"kernel", "decoder"}
    if unknown:
        raise ValueError(f"{ENV}={which!r}: unknown {sorted(unknown)}")
    if "kernel" in names:
        kernel._run = raising_run(kernel._run)
    if "decoder" in names:
        batch.BatchDecoder.decode = raising_decode(batch.BatchDecoder.decode)


def install_from_environment() -> None:
    which = os.environ.get(ENV)
    if which:
        install(which)
