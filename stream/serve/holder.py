"""The model being served, swapped whole when a new global version arrives.

A :class:`Served` is immutable once published: the snapshot, the model built
from it, and the facts ``GET /v1/model`` reports. :class:`ModelHolder` keeps
one reference to the current one; a swap builds the next model completely and
then replaces that reference in one assignment. A request reads the reference
once and scores everything with what it got, so it is scored by exactly one
version, never by a half-updated one, and swaps never wait for requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from stream.config import Quantize
from stream.events.hashing import featurizer, unhashed
from stream.model.online import OnlineModel
from stream.model.quantize import quantize_state
from stream.sync.checkpoint import Snapshot
from stream.sync.globalmodel import model_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One global version, ready to score."""

    version: int
    snapshot: Snapshot
    model: OnlineModel
    quantize: Quantize
    loaded_at: float
    known: frozenset[str]
    # The contract's features to the model's, as the worker takes them: slots
    # when the version was learned with hash_bits (its model_config says so).
    featurize: Callable[[dict[str, float]], dict[str, float]] = unhashed

    def predict_proba(self, x: dict[str, float]) -> float:
        """The one scoring function: the worker's and ``score --offline``'s
        :meth:`OnlineModel.predict_proba` on this version's model.

        A feature the model has never seen adds exactly nothing to p (the
        scaler makes it 0 and there is no weight for it), but river's scaler
        would insert it into its statistics, which a client sending fresh names
        could grow without bound. Such features are left out first; p is the
        same bit for bit (tests/unit/test_serve_holder.py).
        """
        x = self.featurize(x)
        if not x.keys() <= self.known:
            known = self.known
            x = {name: value for name, value in x.items() if name in known}
        return self.model.predict_proba(x)

    def predict_proba_many(self, xs: list[dict[str, float]]) -> list[float]:
        """The same p for each event, computed a column at a time
        (:meth:`OnlineModel.predict_proba_many`, identical bit for bit)."""
        featurize = self.featurize
        return self.model.predict_proba_many([featurize(x) for x in xs])


def serving(snapshot: Snapshot, quantize: Quantize = "none") -> Served:
    """The model for ``snapshot``, built as ``score --offline`` builds it.

    With ``quantize`` the weights and scaler statistics are rounded as the
    quantized export stores them, then scored the same way.
    """
    if quantize != "none":
        snapshot = replace(snapshot, state=quantize_state(snapshot.state, quantize))
    state = snapshot.state
    known = frozenset(state.weights) | frozenset(state.scaler_vars)
    featurize = featurizer(snapshot.model_config.get("hash_bits"))
    return Served(
        snapshot.version, snapshot, model_of(snapshot), quantize, time.time(), known, featurize
    )


class ModelHolder:
    """The current :class:`Served`, or None before any model was found."""

    def __init__(self, quantize: Quantize = "none") -> None:
        self.quantize: Quantize = quantize
        self.current: Served | None = None
        self.swaps = 0
        self._lock = threading.Lock()  # serialises writers only; readers never take it

    def offer(self, snapshot: Snapshot) -> bool:
        """Serve ``snapshot`` if it is newer than the current version; True if swapped."""
        with self._lock:
            current = self.current
            if current is not None and snapshot.version <= current.version:
                return False
            served = serving(snapshot, self.quantize)
            self.current = served  # the swap: one reference assignment
            if current is not None:
                self.swaps += 1
        logger.info(
            "model swapped in version=%d n_learned=%d previous=%s quantize=%s",
            served.version,
            snapshot.n_learned,
            current.version if current else None,
            self.quantize,
        )
        return True
