"""The online model: river's ``[StandardScaler |] LogisticRegression``.

A thin wrapper so the worker does not depend on river's API shape, and so the
model's learning state can leave the process as plain data (for merging and
checkpoints) and come back: :meth:`OnlineModel.state` / :meth:`OnlineModel.load_state`.

Numeric safety: the model never becomes non-finite. A learning step that
leaves a touched weight, the intercept, or the scaler's or FTRL's state of a
touched feature non-finite, or a weight beyond ``max_abs_weight``, is undone
(:meth:`OnlineModel.learn` returns False and counts it); a prediction that is
not a finite probability raises :class:`~stream.errors.NumericError` instead of
returning NaN.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
from river import compose, linear_model, optim, preprocessing

from stream.config import ModelSettings
from stream.errors import NumericError
from stream.model.state import ModelState

logger = logging.getLogger(__name__)

_ABSENT = object()
# Refused steps are logged at most once per this many seconds (with a count).
_REFUSED_LOG_INTERVAL_S = 1.0


def build_pipeline(settings: ModelSettings) -> compose.Pipeline | linear_model.LogisticRegression:
    """The river estimator for ``settings``; exactly what a user would write by hand."""
    if settings.optimizer == "ftrl":
        optimizer = optim.FTRLProximal(
            alpha=settings.learning_rate,
            beta=settings.ftrl_beta,
            l1=settings.ftrl_l1,
            l2=settings.l2,
        )
        classifier = linear_model.LogisticRegression(optimizer=optimizer, l2=0.0)
    else:
        classifier = linear_model.LogisticRegression(
            optimizer=optim.SGD(settings.learning_rate), l2=settings.l2
        )
    if settings.scale:
        return compose.Pipeline(preprocessing.StandardScaler(), classifier)
    return classifier


class RefusalLog:
    """Counts refused learning steps and logs them at most once per
    ``_REFUSED_LOG_INTERVAL_S`` (the next line says how many were not logged):
    a stream of absurd events must not flood the log."""

    def __init__(self, max_abs_weight: float) -> None:
        self.max_abs_weight = max_abs_weight
        self.count = 0
        self._logged_at = 0.0
        self._unlogged = 0

    def refused(self, n: int, problem: str) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._logged_at < _REFUSED_LOG_INTERVAL_S:
            self._unlogged += n
            return
        logger.warning(
            "learning step refused: %s (limit +-%g); the event was predicted, not learned%s",
            problem,
            self.max_abs_weight,
            f" (+{self._unlogged} not logged)" if self._unlogged else "",
        )
        self._logged_at, self._unlogged = now, 0


class OnlineModel:
    """Predict-then-learn on one event at a time."""

    def __init__(self, settings: ModelSettings, max_abs_weight: float = 1e12) -> None:
        self.settings = settings
        self.max_abs_weight = max_abs_weight
        self.refusals = RefusalLog(max_abs_weight)
        self.estimator = build_pipeline(settings)
        if isinstance(self.estimator, compose.Pipeline):
            self._scaler: preprocessing.StandardScaler | None = self.estimator.steps[
                "StandardScaler"
            ]
            self._lr: linear_model.LogisticRegression = self.estimator.steps["LogisticRegression"]
        else:
            self._scaler = None
            self._lr = self.estimator
        self.n_learned = 0
        # Keys predicted or learned since clear_touched() (see touched_keys).
        self._touched: set[str] = set()

    def predict_proba(self, x: dict[str, float]) -> float:
        """Probability of class 1 (true); NumericError rather than NaN."""
        self._touched.update(x)  # river's scaler inserts a variance for an unseen name
        p = self.estimator.predict_proba_one(x).get(True, 0.0)
        if not 0.0 <= p <= 1.0:  # NaN fails both comparisons
            raise NumericError(f"prediction is p={p!r}, not a probability")
        return p

    def predict_proba_many(self, xs: Sequence[dict[str, float]]) -> list[float]:
        """``[self.predict_proba(x) for x in xs]``, bit for bit, in about half the time.

        Events are grouped by their feature names in order, and each group is
        scored a column at a time with numpy, doing river's arithmetic in
        river's order: ``(x - mean) / var ** 0.5`` (0 where the variance is 0),
        products with the weights summed in the event's key order from 0.0
        (how river's VectorDict dot product sums; names without a weight add
        nothing), plus the intercept, then river's own sigmoid. numpy's
        elementwise float64 operations round exactly as Python's, so the
        result is identical, not close (tests/unit/test_model.py checks it on
        arbitrary models and events). Unlike river's scaler it stores nothing
        about names it has not seen.
        """
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(tuple(x), []).append(i)
        out: list[float] = [0.0] * len(xs)
        lr = self._lr
        sigmoid, intercept, weights = lr.loss.mean_func, lr.intercept, lr._weights
        scaler = self._scaler
        for names, rows in groups.items():
            n = len(rows)
            matrix = np.array([list(xs[i].values()) for i in rows], dtype=np.float64)
            acc = np.zeros(n, dtype=np.float64)
            for j, name in enumerate(names):
                if name not in weights:
                    continue
                column = matrix[:, j]
                if scaler is not None:
                    var = scaler.vars.get(name, 0.0)
                    if not var:
                        continue  # scaled to 0.0: adds nothing to a sum that is never -0.0
                    column = (column - scaler.means.get(name, 0.0)) / var**0.5
                acc += weights[name] * column
            for i, logit in zip(rows, (acc + intercept).tolist(), strict=True):
                p = sigmoid(logit)
                if not 0.0 <= p <= 1.0:  # NaN fails both comparisons
                    raise NumericError(f"prediction is p={p!r}, not a probability")
                out[i] = p
        return out

    def learn(self, x: dict[str, float], y: bool) -> bool:
        """One SGD (or FTRL) step on this event; False if it was refused and undone
        (it would have made the model non-finite or a weight absurd)."""
        self._touched.update(x)
        saved = self._save(x)
        try:
            self.estimator.learn_one(x, y)
        except BaseException:
            self._restore(saved)
            raise
        problem = self._check(x)
        if problem is not None:
            self._restore(saved)
            self.refusals.refused(1, problem)
            return False
        self.n_learned += 1
        return True

    # -- the numeric guard ------------------------------------------------------
    # A step touches the weights of x's features (river masks its weights with
    # x while learning, so L2 decays those only), the intercept, the optimizer's
    # step count, and the scaler's and FTRL's state of x's features: that is
    # what is saved and put back, in time proportional to x, not to the model
    # (tests/unit/test_model.py checks that a step changes nothing else).

    def _save(self, x: dict[str, float]) -> tuple:
        lr, scaler = self._lr, self._scaler
        optimizer = lr.optimizer
        weights = lr._weights
        # A name the step adds is saved as absent, so that undoing the step removes it.
        saved_weights = {k: weights.get(k, _ABSENT) for k in x}
        stats = []
        if scaler is not None:
            stats += [scaler.counts, scaler.means, scaler.vars]
        if isinstance(optimizer, optim.FTRLProximal):
            stats += [optimizer.z, optimizer.n]
        saved_stats = [(d, {k: d.get(k, _ABSENT) for k in x}) for d in stats]
        return saved_weights, lr.intercept, optimizer.n_iterations, saved_stats

    def _restore(self, saved: tuple) -> None:
        saved_weights, intercept, n_iterations, saved_stats = saved
        lr = self._lr
        for key, value in saved_weights.items():
            if value is _ABSENT:
                lr._weights.pop(key, None)
            else:
                lr._weights[key] = value
        lr.intercept = intercept
        lr.optimizer.n_iterations = n_iterations
        for d, values in saved_stats:
            for key, value in values.items():
                if value is _ABSENT:
                    d.pop(key, None)
                else:
                    d[key] = value

    def _check(self, x: dict[str, float]) -> str | None:
        """What is wrong with the state of x's features after a step, or None."""
        bound = self.max_abs_weight
        lr, scaler = self._lr, self._scaler
        if not -bound <= lr.intercept <= bound:
            return f"intercept would be {lr.intercept!r}"
        weights = lr._weights
        for key in x:
            w = weights.get(key, 0.0)
            if not -bound <= w <= bound:
                return f"weight of {key!r} would be {w!r}"
        stats = []
        if scaler is not None:
            stats += [("scaler mean", scaler.means), ("scaler variance", scaler.vars)]
        optimizer = lr.optimizer
        if isinstance(optimizer, optim.FTRLProximal):
            stats += [("FTRL z", optimizer.z), ("FTRL n", optimizer.n)]
        for what, d in stats:
            for key in x:
                value = d.get(key, 0.0)
                if not math.isfinite(value):
                    return f"{what} of {key!r} would be {value!r}"
        return None

    @property
    def n_refused(self) -> int:
        return self.refusals.count

    def slots_used(self) -> int:
        """Features (a hashed model's slots) that have a weight."""
        return len(self._lr._weights)

    def state(self) -> ModelState:
        """A copy of the learning state; later learning does not change it."""
        scaler = self._scaler
        optimizer = self._lr.optimizer
        is_ftrl = isinstance(optimizer, optim.FTRLProximal)
        return ModelState(
            weights=dict(self._lr._weights.to_dict()),
            intercept=float(self._lr.intercept),
            scaler_counts={k: float(v) for k, v in scaler.counts.items()} if scaler else {},
            scaler_means=dict(scaler.means) if scaler else {},
            scaler_vars=dict(scaler.vars) if scaler else {},
            ftrl_z=dict(optimizer.z) if is_ftrl else {},
            ftrl_n=dict(optimizer.n) if is_ftrl else {},
            n_learned=self.n_learned,
        )

    # -- what changed -------------------------------------------------------------
    # As KernelModel's: a cut or a sync works on the keys that changed only.

    def touched_keys(self) -> list[str]:
        """Keys whose state may differ from what it was at :meth:`clear_touched`
        (or construction): every key predicted or learned since (a step
        touches only its event's keys, see the numeric guard below).
        :meth:`predict_proba_many` stores nothing, so it touches nothing."""
        return list(self._touched)

    def clear_touched(self) -> None:
        """Start tracking touched keys afresh."""
        self._touched = set()

    def _parts(self) -> list[tuple[str, dict]]:
        """The per-key maps of the learning state, by ModelState field."""
        parts: list[tuple[str, dict]] = [("weights", self._lr._weights)]
        scaler, optimizer = self._scaler, self._lr.optimizer
        if scaler is not None:
            parts += [
                ("scaler_counts", scaler.counts),
                ("scaler_means", scaler.means),
                ("scaler_vars", scaler.vars),
            ]
        if isinstance(optimizer, optim.FTRLProximal):
            parts += [("ftrl_z", optimizer.z), ("ftrl_n", optimizer.n)]
        return parts

    def state_of(self, keys: Iterable[str]) -> ModelState:
        """:meth:`state` restricted to ``keys`` (intercept and ``n_learned`` whole),
        in time proportional to ``keys``."""
        keys = list(keys)
        parts = {}
        for field, values in self._parts():
            # ``in`` first: a defaultdict's [] would insert the key.
            picked = {k: values[k] for k in keys if k in values}
            parts[field] = (
                {k: float(v) for k, v in picked.items()} if field == "scaler_counts" else picked
            )
        return ModelState(intercept=float(self._lr.intercept), n_learned=self.n_learned, **parts)

    def load_partial(self, state: ModelState, keys: Iterable[str]) -> None:
        """Replace the state of ``keys`` with theirs in ``state`` (a key missing
        from one of its maps is removed from that part), and the intercept and
        ``n_learned``; every other key keeps its state (see KernelModel's)."""
        keys = list(keys)
        for field, values in self._parts():
            source: dict[str, float] = getattr(state, field)
            for k in keys:
                if k in source:
                    values[k] = source[k]
                elif k in values:  # river's VectorDict.pop(k, None) raises on a missing k
                    values.pop(k)
        self._lr.intercept = state.intercept
        self.n_learned = state.n_learned

    def load_state(self, state: ModelState) -> None:
        """Replace the learning state with ``state`` (copied in)."""
        lr = self._lr
        lr._weights.clear()
        lr._weights.update(state.weights)
        lr.intercept = state.intercept
        if self._scaler is not None:
            self._scaler.counts = collections.Counter(state.scaler_counts)
            self._scaler.means = collections.defaultdict(float, state.scaler_means)
            self._scaler.vars = collections.defaultdict(float, state.scaler_vars)
        optimizer = lr.optimizer
        if isinstance(optimizer, optim.FTRLProximal):
            optimizer.z = collections.defaultdict(float, state.ftrl_z)
            optimizer.n = collections.defaultdict(float, state.ftrl_n)
        self.n_learned = state.n_learned
