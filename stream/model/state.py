"""A model's learning state as plain data: what merges, checkpoints and the wire carry."""

from __future__ import annotations

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
