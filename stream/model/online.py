"""The online model: river's ``[StandardScaler |] LogisticRegression``.

A thin wrapper so the worker does not depend on river's API shape, and so the
model's learning state can leave the process as plain data (for merging and
checkpoints) and come back: :meth:`OnlineModel.state` / :meth:`OnlineModel.load_state`.
"""

from __future__ import annotations

import collections

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
