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

# The per-feature maps of a ModelState, in wire order (intercept and
# n_learned are whole-model): every module that walks a state's maps uses this.
STATE_MAPS = (
    "weights",
    "scaler_counts",
    "scaler_means",
    "scaler_vars",
    "ftrl_z",
    "ftrl_n",
)
_MAPS = STATE_MAPS


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


# Every count in a model state is below this: it grows by one per labeled event,
# so no real model reaches it, and up to it a float64 (and JSON) holds it exactly.
MAX_COUNT = 2**53


def _show(value: object) -> str:
    """``repr(value)``, cut short: a hostile value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unpack_state(data: object) -> ModelState:
    """The inverse of :func:`pack_state`. Raises ValueError naming the field and
    value on a form that :func:`pack_state` cannot have written: wrong types,
    a name twice, packed arrays of mismatched lengths, an index outside
    ``names`` or twice. (Whether the numbers make sense is :func:`impossible`'s
    question.)"""
    if not isinstance(data, dict):
        raise ValueError(f"model state: not a map but {_show(data)}")
    names = data.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"model state 'names': not a list of strings: {_show(names)}")
    if len(set(names)) != len(names):
        raise ValueError("model state 'names': a name appears twice")
    maps = data.get("maps")
    if not isinstance(maps, dict):
        raise ValueError(f"model state 'maps': not a map: {_show(maps)}")
    fields_: dict[str, dict[str, float]] = {}
    for m, packed in maps.items():
        if m not in _MAPS:
            raise ValueError(f"unknown model state map {_show(m)}")
        fields_[m] = _unpack_map(m, packed, names)
    intercept = data.get("intercept")
    if isinstance(intercept, bool) or not isinstance(intercept, (int, float)):
        raise ValueError(f"model state 'intercept': not a number: {_show(intercept)}")
    n_learned = data.get("n_learned")
    if isinstance(n_learned, bool) or not isinstance(n_learned, int):
        raise ValueError(f"model state 'n_learned': not an integer: {_show(n_learned)}")
    if not -MAX_COUNT < n_learned < MAX_COUNT:
        raise ValueError(f"model state 'n_learned': out of range: {n_learned}")
    return ModelState(intercept=float(intercept), n_learned=n_learned, **fields_)


def _unpack_map(m: str, packed: object, names: list[str]) -> dict[str, float]:
    if not isinstance(packed, dict) or not isinstance(packed.get("v"), bytes):
        raise ValueError(f"{m}: not a map with packed values 'v': {_show(packed)}")
    raw_values, raw_indices = packed["v"], packed.get("i")
    if len(raw_values) % 8:
        raise ValueError(f"{m}: {len(raw_values)} value bytes, not a whole number of float64")
    values = array("d")
    values.frombytes(raw_values)
    if raw_indices is None:
        if len(values) != len(names):
            raise ValueError(f"{m}: {len(values)} values for {len(names)} names")
        return dict(zip(names, values, strict=True))
    if not isinstance(raw_indices, bytes) or len(raw_indices) % 4:
        raise ValueError(f"{m}: indices 'i' are not packed uint32: {_show(raw_indices)}")
    indices = array("I")
    indices.frombytes(raw_indices)
    if len(indices) != len(values):
        raise ValueError(f"{m}: {len(indices)} indices for {len(values)} values")
    if indices and max(indices) >= len(names):
        raise ValueError(f"{m}: index {max(indices)} out of range for {len(names)} names")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{m}: an index appears twice")
    return {names[i]: v for i, v in zip(indices, values, strict=True)}


def impossible(state: ModelState) -> str | None:
    """What makes ``state`` a state no learning can produce, named
    (``scaler_vars['f3'] = -1.0``); None if it is possible.

    Any number not finite; a negative scaler count or variance, or FTRL ``n``
    (a sum of squared gradients); a scaler count without its mean and
    variance (merging would fail on the missing one); a negative
    ``n_learned``. The same holds for a delta (what a worker learned since its
    last cut), whose counts, variances and ``n`` are those of its own events.
    """
    bad = non_finite(state)
    if bad is not None:
        return f"not finite: {bad}"
    if state.n_learned < 0:
        return f"n_learned = {state.n_learned} (negative)"
    for part in ("scaler_counts", "scaler_vars", "ftrl_n"):
        values: dict[str, float] = getattr(state, part)
        if values and min(values.values()) < 0:
            name = next(k for k, v in values.items() if v < 0)
            return f"{part}[{name!r}] = {values[name]!r} (negative)"
    for part in ("scaler_means", "scaler_vars"):
        # A C-level containment walk; the set of what is missing only on failure.
        if state.scaler_counts.keys() <= getattr(state, part).keys():
            continue
        missing = state.scaler_counts.keys() - getattr(state, part).keys()
        if missing:
            return f"scaler_counts[{_show(min(missing))}] without {part}"
    return None


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
