"""learnstream: streaming online learning on Kafka.

Workers in one consumer group score every event with an online logistic
regression, publish the prediction, then learn from the event's label.

The Python API (docs/python.md): :func:`load_model` scores with the global
model in your own code, :func:`run_workers` starts workers. Both are
imported on first use, so ``import stream`` stays cheap (the CLI and every
worker process import this package).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The library only adds a NullHandler; entry points configure logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from stream.api import Model, load_model, run_workers

__all__ = ["Model", "__version__", "load_model", "run_workers"]

_API = frozenset({"Model", "load_model", "run_workers"})


def __getattr__(name: str) -> Any:
    """``stream.load_model`` and friends, imported from :mod:`stream.api` on first use."""
    if name in _API:
        from stream import api

        return getattr(api, name)
    raise AttributeError(f"module 'stream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
