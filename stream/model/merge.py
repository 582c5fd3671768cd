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
from stream.model.state import ModelState

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


def _combine_stats(
    counts_a: dict[str, float],
    means_a: dict[str, float],
    vars_a: dict[str, float],
    counts_b: dict[str, float],
    means_b: dict[str, float],
    vars_b: dict[str, float],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    counts, means, vars_ = dict(counts_a), dict(means_a), dict(vars_a)
    for name, n_b in counts_b.items():
        if n_b == 0:
            continue
        n_a = counts.get(name, 0.0)
        if n_a == 0:
            counts[name], means[name], vars_[name] = n_b, means_b[name], vars_b[name]
            continue
        n = n_a + n_b
        mean_a, mean_b = means[name], means_b[name]
        delta = mean_b - mean_a
        m2 = vars_[name] * n_a + vars_b[name] * n_b + delta * delta * n_a * n_b / n
        counts[name] = n
        means[name] = mean_a + delta * n_b / n
        vars_[name] = m2 / n
    return counts, means, vars_


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


def _plus(a: dict[str, float], b: dict[str, float], scale: float = 1.0) -> dict[str, float]:
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) + scale * value
    return out


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
KEYED = (
    "weights",
    "scaler_counts",
    "scaler_means",
    "scaler_vars",
    "ftrl_z",
    "ftrl_n",
)


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


def add(
    base: ModelState,
    delta: ModelState,
    weight_scale: float = 1.0,
    ftrl: FtrlParams | None = None,
) -> ModelState:
    """``base`` with ``delta`` learned on top; ``weight_scale`` scales only the
    weight and intercept change (statistics and counts are always exact).
    With ``ftrl``, the weights of the coordinates ``delta`` touched are FTRL's
    closed form of the summed ``z`` and ``n``."""
    counts, means, vars_ = _combine_stats(
        base.scaler_counts,
        base.scaler_means,
        base.scaler_vars,
        delta.scaler_counts,
        delta.scaler_means,
        delta.scaler_vars,
    )
    ftrl_z = _plus(base.ftrl_z, delta.ftrl_z)
    ftrl_n = _plus(base.ftrl_n, delta.ftrl_n)
    if ftrl is None:
        weights = _plus(base.weights, delta.weights, weight_scale)
    else:
        weights = dict(base.weights)
        for name in set(delta.ftrl_z) | set(delta.ftrl_n):
            weights[name] = ftrl_weight(ftrl_z.get(name, 0.0), ftrl_n.get(name, 0.0), ftrl)
    return ModelState(
        weights=weights,
        intercept=base.intercept + weight_scale * delta.intercept,
        scaler_counts=counts,
        scaler_means=means,
        scaler_vars=vars_,
        ftrl_z=ftrl_z,
        ftrl_n=ftrl_n,
        n_learned=base.n_learned + delta.n_learned,
    )


def merge(
    base: ModelState,
    deltas: Iterable[ModelState],
    rule: MergeRule = "sum",
    ftrl: FtrlParams | None = None,
) -> ModelState:
    """Fold contributions into the global model. Order does not matter (up to
    floating-point rounding); merging nothing is the identity; merging them in
    one call or one by one gives the same model."""
    if rule != "sum":
        raise ValueError(f"merge rule must be 'sum', got {rule!r}")
    merged = base
    for delta in deltas:
        merged = add(merged, delta, ftrl=ftrl)
    return merged


def state_to_dict(state: ModelState) -> dict:
    return {f.name: getattr(state, f.name) for f in fields(ModelState)}


def state_from_dict(data: dict) -> ModelState:
    known = {f.name for f in fields(ModelState)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown model state fields {sorted(unknown)}")
    return ModelState(**data)
