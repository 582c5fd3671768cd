"""A model's learning state as plain data: what merges, checkpoints and the wire carry."""

from __future__ import annotations

import math
import sys
from array import array
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


# -- the compact wire form ---------------------------------------------------

# The wire form is little-endian; array() uses the machine's order.
if sys.byteorder != "little":  # pragma: no cover - every platform we run on
    raise ImportError("the packed model state assumes a little-endian machine")

# The per-feature maps of a ModelState, in wire order.
_MAPS = (
    "weights",
    "scaler_counts",
    "scaler_means",
    "scaler_vars",
    "ftrl_z",
    "ftrl_n",
)


def pack_state(state: ModelState) -> dict:
    """A compact, msgpack-ready form: every feature name once, then per map its
    values as packed little-endian float64 (and, where the map does not hold
    every name, the indices it holds as packed uint32).

    The maps of a model mostly share their keys, so a name costs its bytes
    once instead of once per map, and a value 8 bytes instead of msgpack's 9.
    """
    names = sorted(set().union(*(getattr(state, m) for m in _MAPS)))
    index = {name: i for i, name in enumerate(names)}
    maps = {}
    for m in _MAPS:
        values = getattr(state, m)
        if not values:
            continue
        if len(values) == len(names):
            maps[m] = {"v": array("d", (values[n] for n in names)).tobytes()}
        else:
            keys = sorted(values, key=index.__getitem__)
            maps[m] = {
                "i": array("I", (index[k] for k in keys)).tobytes(),
                "v": array("d", (values[k] for k in keys)).tobytes(),
            }
    return {
        "names": names,
        "maps": maps,
        "intercept": state.intercept,
        "n_learned": state.n_learned,
    }


def unpack_state(data: dict) -> ModelState:
    """The inverse of :func:`pack_state`; raises ValueError on a malformed form."""
    names = data["names"]
    fields_: dict[str, dict[str, float]] = {}
    for m, packed in data["maps"].items():
        if m not in _MAPS:
            raise ValueError(f"unknown model state map {m!r}")
        values = array("d")
        values.frombytes(packed["v"])
        if "i" in packed:
            indices = array("I")
            indices.frombytes(packed["i"])
            if len(indices) != len(values):
                raise ValueError(f"{m}: {len(indices)} indices for {len(values)} values")
            keys = [names[i] for i in indices]
        else:
            if len(values) != len(names):
                raise ValueError(f"{m}: {len(values)} values for {len(names)} names")
            keys = names
        fields_[m] = dict(zip(keys, values, strict=True))
    return ModelState(
        intercept=float(data["intercept"]), n_learned=int(data["n_learned"]), **fields_
    )


def non_finite(state: ModelState) -> str | None:
    """The first non-finite number in ``state``, named (``weights['f3'] = nan``); None
    if every number is finite. A NaN or infinity anywhere would spread to every model
    it is merged into and every prediction made with it."""
    if not math.isfinite(state.intercept):
        return f"intercept = {state.intercept!r}"
    for part in _MAPS:
        values: dict[str, float] = getattr(state, part)
        # One C-level pass in the usual case: the sum of finite numbers is finite
        # unless it overflows, and then the loop below finds nothing to name.
        if math.isfinite(sum(values.values())):
            continue
        for name, value in values.items():
            if not math.isfinite(value):
                return f"{part}[{name!r}] = {value!r}"
    return None
