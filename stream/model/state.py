"""A model's learning state as plain data: what merges, checkpoints and the wire carry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelState:
    """Everything the model has learned, as plain data.

    ``scaler_*`` are StandardScaler's per-feature count, mean and population
    variance; ``ftrl_z``/``ftrl_n`` are FTRL-Proximal's per-coordinate state (empty
    for SGD, which has none). ``n_learned`` counts labeled events learned.
    """

    weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0
    scaler_counts: dict[str, float] = field(default_factory=dict)
    scaler_means: dict[str, float] = field(default_factory=dict)
    scaler_vars: dict[str, float] = field(default_factory=dict)
    ftrl_z: dict[str, float] = field(default_factory=dict)
    ftrl_n: dict[str, float] = field(default_factory=dict)
    n_learned: int = 0


_PARTS = ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n")


def non_finite(state: ModelState) -> str | None:
    """The first non-finite number in ``state``, named (``weights['f3'] = nan``); None
    if every number is finite. A NaN or infinity anywhere would spread to every model
    it is merged into and every prediction made with it."""
    if not math.isfinite(state.intercept):
        return f"intercept = {state.intercept!r}"
    for part in _PARTS:
        values: dict[str, float] = getattr(state, part)
        # One C-level pass in the usual case: the sum of finite numbers is finite
        # unless it overflows, and then the loop below finds nothing to name.
        if math.isfinite(sum(values.values())):
            continue
        for name, value in values.items():
            if not math.isfinite(value):
                return f"{part}[{name!r}] = {value!r}"
    return None
