"""The latest global model, wherever it is: model topic or checkpoint directory."""

from __future__ import annotations

import logging
from pathlib import Path

from stream.config import KafkaSettings, ModelSettings, TopicSettings
from stream.errors import StreamError
from stream.kafka import topics as kafka_topics
from stream.model.online import OnlineModel
from stream.sync.checkpoint import CheckpointStore, Snapshot
from stream.sync.feed import published_model
from stream.sync.fence import check_compatible, current_topic_ids

logger = logging.getLogger(__name__)


def pipeline_of(kafka: KafkaSettings, topics: TopicSettings) -> dict[str, str]:
    """This pipeline's checkpoint scope: its features topic and the cluster's id
    (left out when the broker is too old to report one)."""
    scope = {"features": topics.features}
    cluster = kafka_topics.cluster_id(kafka)
    if cluster:
        scope["cluster"] = cluster
    return scope


def load_latest(
    kafka: KafkaSettings | None, topics: TopicSettings, checkpoint_dir: Path | None
) -> Snapshot:
    """The newest of the model topic's last version (if ``kafka`` is given and
    answers) and the checkpoint directory's newest readable file of this
    pipeline (another pipeline's checkpoints in the same directory are refused;
    without a broker, the features topic alone tells them apart)."""
    candidates, elsewhere = [], []
    if checkpoint_dir is not None:
        scope, features_id = {"features": topics.features}, None
        if kafka is not None:
            try:
                scope = pipeline_of(kafka, topics)
                features_id = current_topic_ids(kafka, topics).get("features")
            except StreamError as exc:
                logger.warning(
                    "cluster id not readable; checkpoints matched by features topic only: %s",
                    exc,
                )
        store = CheckpointStore(checkpoint_dir, pipeline=scope)
        stored = store.latest(features_id)
        if stored is not None:
            candidates.append(stored)
        else:
            elsewhere = [t for t in store.features_topics() if t != topics.features]
    if kafka is not None:
        try:
            published = published_model(kafka, topics, "learnstream-model", timeout_s=5)
            if published is not None:
                candidates.append(published)
        except StreamError as exc:
            logger.warning("model topic not readable, using checkpoints only: %s", exc)
    if not candidates:
        hint = (
            f"; the directory holds checkpoints of features topic(s) {', '.join(elsewhere)}:"
            " name yours with --features-topic"
            if elsewhere
            else ""
        )
        raise StreamError(
            f"no global model found for features topic {topics.features!r} (model topic"
            f" {topics.model!r}, checkpoint dir {checkpoint_dir}){hint}"
        )
    return max(candidates, key=lambda s: s.order)


def refuse_other_model_settings(
    kafka: KafkaSettings | None,
    topics: TopicSettings,
    checkpoint_dir: Path | None,
    model: ModelSettings,
) -> None:
    """Raise ConfigError, naming both, when the newest global model (model topic
    or checkpoint) was learned with other model settings than ``model``.

    Called by ``work`` and ``merge`` before any process starts: each worker and
    merger refuses such a model too, but only at its first rebase, inside a
    process its supervisor would restart until it gave up; said once at start,
    the mistake is one clear error and exit status 2. No global model yet:
    nothing to disagree with.
    """
    try:
        latest = load_latest(kafka, topics, checkpoint_dir)
    except StreamError as exc:
        logger.debug("no global model to check the model settings against: %s", exc)
        return
    check_compatible(latest, model)


def model_of(snapshot: Snapshot) -> OnlineModel:
    """An OnlineModel holding the snapshot's state, configured as it was learned."""
    model = OnlineModel(
        ModelSettings(**snapshot.model_config) if snapshot.model_config else ModelSettings()
    )
    model.load_state(snapshot.state)
    return model


def export(snapshot: Snapshot) -> dict:
    """The global model as plain JSON-able data."""
    state = snapshot.state
    return {
        "version": snapshot.version,
        "n_learned": snapshot.n_learned,
        "created_at": snapshot.created_at,
        "model_config": snapshot.model_config,
        "intercept": state.intercept,
        "weights": state.weights,
        "scaler": {
            "counts": state.scaler_counts,
            "means": state.scaler_means,
            "vars": state.scaler_vars,
        },
        "ftrl": {"z": state.ftrl_z, "n": state.ftrl_n},
        "offsets": {str(p): o for p, o in sorted(snapshot.offsets.items())},
        "contributions_offset": snapshot.contributions_offset,
    }
