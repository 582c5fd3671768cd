"""The online model: river's ``[StandardScaler |] LogisticRegression``.

A thin wrapper so the worker does not depend on river's API shape, and so the
model's learning state can leave the process as plain data (for merging and
checkpoints) and come back: :meth:`OnlineModel.state` / :meth:`OnlineModel.load_state`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
from river import compose, linear_model, optim, preprocessing

from stream.config import ModelSettings
from stream.model.state import ModelState


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


class OnlineModel:
    """Predict-then-learn on one event at a time."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
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

    def predict_proba(self, x: dict[str, float]) -> float:
        """Probability of class 1 (true)."""
        return self.estimator.predict_proba_one(x).get(True, 0.0)

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
                out[i] = sigmoid(logit)
        return out

    def learn(self, x: dict[str, float], y: bool) -> None:
        """One SGD (or FTRL) step on this event."""
        self.estimator.learn_one(x, y)
        self.n_learned += 1

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
