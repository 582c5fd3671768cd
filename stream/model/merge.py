"""Merging learning state: pure functions over :class:`~stream.model.state.ModelState`.

A worker's contribution is a *delta*: what its model learned since its last
cut (``subtract(after, before)``). The merger folds deltas into the global
model (``merge``); a worker carries its own un-merged deltas on top of a new
global version (``add``).

What is merged, and how:

- StandardScaler statistics (count, mean, population variance per feature):
  combined exactly (Chan et al.'s parallel formulas), so the merged scaler is
  the one that saw every event, whatever the split.
- FTRL-Proximal's per-coordinate ``z`` and ``n``: sums of per-step terms, so
  deltas add exactly; its weights are not merged at all but recomputed from
  the merged ``z`` and ``n`` (FTRL's closed form, :func:`ftrl_weight`), since
  for FTRL they are a function of that state, not a sum of steps.
- ``n_learned``: counts add.
- SGD's linear weights and the intercept (rule ``"sum"``, the only one): every
  delta is added, so each SGD step counts once, as in one model that took all
  the steps. The result does not depend on how the merger batches
  contributions into versions. (An ``"average"`` rule, federated averaging
  over the contributions of one version, was removed: which contributions share
  a version depends on timing, so its result did too.)

Deltas are sparse: a feature whose value did not change is left out, so a
contribution's size follows what its events touched, not the vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from typing import Literal

from stream.config import ModelSettings
from stream.model.state import STATE_MAPS, ModelState

MergeRule = Literal["sum"]


@dataclass(frozen=True)
class FtrlParams:
    """FTRL-Proximal's hyperparameters: what maps ``(z, n)`` to a weight."""

    alpha: float
    beta: float
    l1: float
    l2: float


def ftrl_params(model: ModelSettings) -> FtrlParams | None:
    """The FTRL parameters of ``model`` (None: it learns by SGD)."""
    if model.optimizer != "ftrl":
        return None
    return FtrlParams(model.learning_rate, model.ftrl_beta, model.ftrl_l1, model.l2)


def ftrl_weight(z: float, n: float, p: FtrlParams) -> float:
    """FTRL-Proximal's weight for one coordinate (McMahan et al. 2013): zero
    inside the L1 ball, else the closed form, written as river's
    ``FTRLProximal`` writes it (a reciprocal, then a product), so a merged
    weight is bit for bit the one river computes from the same ``z`` and ``n``
    at its next step. (Inside the L1 ball river leaves a coordinate's weight as
    it was; the paper's zero is what a merge can know.)"""
    if abs(z) <= p.l1:
        return 0.0
    return -(((p.beta + n**0.5) / p.alpha + p.l2) ** -1) * (z - math.copysign(p.l1, z))


def _remove_stats(
    counts: dict[str, float],
    means: dict[str, float],
    vars_: dict[str, float],
    counts_a: dict[str, float],
    means_a: dict[str, float],
    vars_a: dict[str, float],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Statistics of the events in (counts, means, vars) that are not in the ``_a`` part."""
    out_counts: dict[str, float] = {}
    out_means: dict[str, float] = {}
    out_vars: dict[str, float] = {}
    for name, n in counts.items():
        n_a = counts_a.get(name, 0.0)
        n_b = n - n_a
        if n_b <= 0:
            continue
        if n_a == 0:
            out_counts[name], out_means[name], out_vars[name] = n, means[name], vars_[name]
            continue
        mean_a = means_a[name]
        mean_b = (n * means[name] - n_a * mean_a) / n_b
        delta = mean_b - mean_a
        m2_b = vars_[name] * n - vars_a[name] * n_a - delta * delta * n_a * n_b / n
        out_counts[name] = n_b
        out_means[name] = mean_b
        out_vars[name] = max(m2_b / n_b, 0.0)  # cancellation can dip a hair below 0
    return out_counts, out_means, out_vars


def _minus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``a - b``, only where they differ (sparse)."""
    out = {name: value - b.get(name, 0.0) for name, value in a.items() if value != b.get(name, 0.0)}
    for name, value in b.items():
        if name not in a and value != 0.0:
            out[name] = -value
    return out


def subtract(after: ModelState, before: ModelState) -> ModelState:
    """The delta learned between ``before`` and ``after`` (same model, later)."""
    counts, means, vars_ = _remove_stats(
        after.scaler_counts,
        after.scaler_means,
        after.scaler_vars,
        before.scaler_counts,
        before.scaler_means,
        before.scaler_vars,
    )
    return ModelState(
        weights=_minus(after.weights, before.weights),
        intercept=after.intercept - before.intercept,
        scaler_counts=counts,
        scaler_means=means,
        scaler_vars=vars_,
        ftrl_z=_minus(after.ftrl_z, before.ftrl_z),
        ftrl_n=_minus(after.ftrl_n, before.ftrl_n),
        n_learned=after.n_learned - before.n_learned,
    )


# The per-key maps of a ModelState (intercept and n_learned are whole-model).
KEYED = STATE_MAPS


def keys_of(state: ModelState) -> set[str]:
    """Every key any per-key map of ``state`` holds: what a delta touches."""
    out: set[str] = set()
    for m in KEYED:
        out.update(getattr(state, m))
    return out


def restrict(state: ModelState, keys: Collection[str]) -> ModelState:
    """``state`` at ``keys`` only (with its intercept and ``n_learned``).

    :func:`subtract` and :func:`add` work key by key (the intercept and the
    count aside), so on restricted states they give exactly the restriction of
    what they give on whole ones: how a cut or a sync costs what changed."""
    keyset = keys if isinstance(keys, (set, frozenset)) else set(keys)
    parts = {}
    for m in KEYED:
        values: dict[str, float] = getattr(state, m)
        common = values.keys() & keyset if values else ()
        parts[m] = {k: values[k] for k in common}
    return ModelState(intercept=state.intercept, n_learned=state.n_learned, **parts)


class Undo:
    """What :func:`fold` overwrote, so a refused fold can be taken back in
    time proportional to the delta: per map, the previous value of each key
    it wrote (None: the key was absent). Saved a map at a time (one C-level
    comprehension each), since nearly every fold is kept."""

    __slots__ = ("_saved",)

    def __init__(self) -> None:
        self._saved: list[tuple[str, dict[str, float], dict[str, float | None]]] = []

    def save(self, part: str, values: dict[str, float], keys: Iterable[str]) -> None:
        get = values.get
        self._saved.append((part, values, {k: get(k) for k in keys}))

    def revert(self) -> None:
        """Put every saved value back, newest first (a key saved twice ends as it began)."""
        for _, values, old in reversed(self._saved):
            for name, value in old.items():
                if value is None:
                    values.pop(name, None)
                else:
                    values[name] = value
        self._saved.clear()

    def non_finite(self) -> str | None:
        """The first written value that is not finite, named
        (``weights['f3'] = inf``); None if all are. A fold into a finite model
        can make only the values it wrote (and the intercept) not finite."""
        for part, values, old in self._saved:
            # One C-level pass in the usual case: a sum of finite numbers is
            # finite unless it overflows, and then the loop finds nothing.
            if math.isfinite(sum(map(values.__getitem__, old))):
                continue
            for name in old:
                if not math.isfinite(values[name]):
                    return f"{part}[{name!r}] = {values[name]!r}"
        return None


def fold(
    state: ModelState,
    delta: ModelState,
    weight_scale: float = 1.0,
    ftrl: FtrlParams | None = None,
    touched: set[str] | None = None,
    undo: Undo | None = None,
) -> ModelState:
    """Learn ``delta`` on top of ``state`` IN PLACE, in time proportional to the
    delta: ``state``'s maps are updated, and the result is a ModelState that
    shares them, with the new intercept and count (``state`` itself keeps its
    old intercept and count, so do not use it afterwards).

    The keys written go into ``touched``, and the values they had into
    ``undo``. The arithmetic is :func:`add`'s, operation for operation (add is
    a copy and then this fold), so a model folded in place is bit for bit the
    one merged by copies. Keys are only ever added or overwritten, never
    removed: a delta of a version is the touched keys' new values.
    """
    counts, means, vars_ = state.scaler_counts, state.scaler_means, state.scaler_vars
    written = touched if touched is not None else set()
    stats = [name for name, n_b in delta.scaler_counts.items() if n_b != 0]
    if ftrl is None:
        weight_keys: Iterable[str] = delta.weights
    else:
        weight_keys = set(delta.ftrl_z) | set(delta.ftrl_n)
    if undo is not None:
        undo.save("scaler_counts", counts, stats)
        undo.save("scaler_means", means, stats)
        undo.save("scaler_vars", vars_, stats)
        undo.save("ftrl_z", state.ftrl_z, delta.ftrl_z)
        undo.save("ftrl_n", state.ftrl_n, delta.ftrl_n)
        undo.save("weights", state.weights, weight_keys)
    written.update(stats, delta.ftrl_z, delta.ftrl_n, weight_keys)
    b_means, b_vars = delta.scaler_means, delta.scaler_vars
    for name in stats:
        n_b = delta.scaler_counts[name]
        n_a = counts.get(name, 0.0)
        if n_a == 0:
            counts[name], means[name], vars_[name] = n_b, b_means[name], b_vars[name]
            continue
        n = n_a + n_b
        mean_a, mean_b = means[name], b_means[name]
        diff = mean_b - mean_a
        m2 = vars_[name] * n_a + b_vars[name] * n_b + diff * diff * n_a * n_b / n
        counts[name] = n
        means[name] = mean_a + diff * n_b / n
        vars_[name] = m2 / n
    _plus_in_place(state.ftrl_z, delta.ftrl_z, 1.0)
    _plus_in_place(state.ftrl_n, delta.ftrl_n, 1.0)
    weights = state.weights
    if ftrl is None:
        _plus_in_place(weights, delta.weights, weight_scale)
    else:
        z, n_ = state.ftrl_z, state.ftrl_n
        for name in weight_keys:
            weights[name] = ftrl_weight(z.get(name, 0.0), n_.get(name, 0.0), ftrl)
    return ModelState(
        weights=weights,
        intercept=state.intercept + weight_scale * delta.intercept,
        scaler_counts=counts,
        scaler_means=means,
        scaler_vars=vars_,
        ftrl_z=state.ftrl_z,
        ftrl_n=state.ftrl_n,
        n_learned=state.n_learned + delta.n_learned,
    )


def _plus_in_place(out: dict[str, float], b: dict[str, float], scale: float) -> None:
    """``out += scale * b`` key by key (``out.get(name, 0.0) + scale * value``,
    as the merge has always computed it)."""
    get = out.get
    for name, value in b.items():
        out[name] = get(name, 0.0) + scale * value


def copy_state(state: ModelState) -> ModelState:
    """A copy whose maps can be folded into without changing ``state``'s: O(model)."""
    return ModelState(
        weights=dict(state.weights),
        intercept=state.intercept,
        scaler_counts=dict(state.scaler_counts),
        scaler_means=dict(state.scaler_means),
        scaler_vars=dict(state.scaler_vars),
        ftrl_z=dict(state.ftrl_z),
        ftrl_n=dict(state.ftrl_n),
        n_learned=state.n_learned,
    )


def add(
    base: ModelState,
    delta: ModelState,
    weight_scale: float = 1.0,
    ftrl: FtrlParams | None = None,
) -> ModelState:
    """``base`` with ``delta`` learned on top (pure: ``base`` is left as it was);
    ``weight_scale`` scales only the weight and intercept change (statistics and
    counts are always exact). With ``ftrl``, the weights of the coordinates
    ``delta`` touched are FTRL's closed form of the summed ``z`` and ``n``.
    A copy of ``base`` (O(model)), then :func:`fold` (O(delta))."""
    return fold(copy_state(base), delta, weight_scale, ftrl)


def merge(
    base: ModelState,
    deltas: Iterable[ModelState],
    rule: MergeRule = "sum",
    ftrl: FtrlParams | None = None,
) -> ModelState:
    """Fold contributions into the global model (pure: one copy of ``base``,
    then each delta folded in place). Order does not matter (up to
    floating-point rounding); merging nothing is the identity; merging them in
    one call or one by one gives the same model."""
    if rule != "sum":
        raise ValueError(f"merge rule must be 'sum', got {rule!r}")
    merged = copy_state(base)
    for delta in deltas:
        merged = fold(merged, delta, ftrl=ftrl)
    return merged


def state_to_dict(state: ModelState) -> dict:
    return {f.name: getattr(state, f.name) for f in fields(ModelState)}


def state_from_dict(data: dict) -> ModelState:
    known = {f.name for f in fields(ModelState)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown model state fields {sorted(unknown)}")
    return ModelState(**data)
