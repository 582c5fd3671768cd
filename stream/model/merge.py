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
  deltas add exactly.
- ``n_learned``: counts add.
- Linear weights and intercept, by ``rule``:
  ``"sum"`` adds every delta (each SGD step counts once, as in one model that
  took all the steps); ``"average"`` is federated averaging: the base plus the
  deltas' mean weighted by each contribution's labeled-event count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Literal

from stream.model.state import ModelState

MergeRule = Literal["sum", "average"]


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
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) - value
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


def add(base: ModelState, delta: ModelState, weight_scale: float = 1.0) -> ModelState:
    """``base`` with ``delta`` learned on top; ``weight_scale`` scales only the
    weight and intercept change (statistics and counts are always exact)."""
    counts, means, vars_ = _combine_stats(
        base.scaler_counts,
        base.scaler_means,
        base.scaler_vars,
        delta.scaler_counts,
        delta.scaler_means,
        delta.scaler_vars,
    )
    return ModelState(
        weights=_plus(base.weights, delta.weights, weight_scale),
        intercept=base.intercept + weight_scale * delta.intercept,
        scaler_counts=counts,
        scaler_means=means,
        scaler_vars=vars_,
        ftrl_z=_plus(base.ftrl_z, delta.ftrl_z),
        ftrl_n=_plus(base.ftrl_n, delta.ftrl_n),
        n_learned=base.n_learned + delta.n_learned,
    )


def merge(base: ModelState, deltas: Iterable[ModelState], rule: MergeRule = "sum") -> ModelState:
    """Fold contributions into the global model. Order does not matter (up to
    floating-point rounding); merging nothing is the identity."""
    deltas = list(deltas)
    total = sum(d.n_learned for d in deltas)
    merged = base
    for delta in deltas:
        if rule == "average":
            scale = delta.n_learned / total if total else 0.0
        elif rule == "sum":
            scale = 1.0
        else:
            raise ValueError(f"merge rule must be 'sum' or 'average', got {rule!r}")
        merged = add(merged, delta, scale)
    return merged


def state_to_dict(state: ModelState) -> dict:
    return {f.name: getattr(state, f.name) for f in fields(ModelState)}


def state_from_dict(data: dict) -> ModelState:
    known = {f.name for f in fields(ModelState)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown model state fields {sorted(unknown)}")
    return ModelState(**data)
