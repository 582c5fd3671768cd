"""Per-record isolation: what one record makes raise costs that record, not its batch.

The compiled path hands a partition's records to the batch decoder and the
kernel in one call each. If either raises, the fault may be in any one record,
and nothing tells which: :func:`whole_or_each` then runs the records one at a
time, so that every record that does not raise is processed, and each record
that raises on its own is returned with its exception (the worker turns it
into a ``processing_error`` dead letter).

Running a record again is safe only if the failed call left nothing behind:
the batch decoder has no side effect but its caches, and
:meth:`stream.model.kernel.KernelModel.score_and_learn` is all or nothing
(it restores the learning state when it raises), so each record is learned at
most once, and exactly once if it is labeled, valid and does not raise alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def whole_or_each(
    items: Sequence[T], run: Callable[[Sequence[T]], R], what: str = "batch"
) -> Iterator[tuple[Sequence[T], R | Exception]]:
    """``run(items)`` in one call; if it raises, ``run([item])`` for each item in order.

    Yields ``(items run, result)`` pairs, in order, covering every item once;
    the result is the exception an item raised when it was run alone. ``run``
    must leave no trace when it raises (see the module docstring). Only
    ``Exception`` is caught: an interrupt or a ``SystemExit`` still stops the
    batch.
    """
    try:
        result: R | Exception = run(items)
    except Exception as exc:
        result = exc
    if len(items) <= 1 or not isinstance(result, Exception):
        yield items, result
        return
    logger.warning(
        "%s of %d records raised %r; processing them one by one", what, len(items), result
    )
    for item in items:
        one = [item]
        try:
            result = run(one)
        except Exception as exc:
            result = exc
        yield one, result
