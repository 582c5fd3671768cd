"""Model settings that differ from the global model's are refused before any
process starts (the broker-side path: tests/integration/test_protocol_paths.py)."""

from __future__ import annotations

import pytest

from stream.config import ModelSettings, TopicSettings
from stream.errors import ConfigError
from stream.model.state import ModelState
from stream.sync.checkpoint import CheckpointStore, Snapshot
from stream.sync.globalmodel import refuse_other_model_settings

TOPICS = TopicSettings(features="events", predictions="preds", group_id="g")
LEARNED_WITH = ModelSettings()


def _checkpoint(directory) -> None:
    snapshot = Snapshot(
        version=3,
        state=ModelState(weights={"a": 0.5}, n_learned=10),
        model_config=LEARNED_WITH.as_dict(),
        pipeline={"features": TOPICS.features},
    )
    CheckpointStore(directory, pipeline={"features": TOPICS.features}).write(snapshot)


def test_other_model_settings_are_refused_naming_both(tmp_path):
    _checkpoint(tmp_path)
    other = ModelSettings(optimizer="ftrl", learning_rate=0.1)
    with pytest.raises(ConfigError) as refused:
        refuse_other_model_settings(None, TOPICS, tmp_path, other)
    message = str(refused.value)
    assert f"global model version 3 was learned with {LEARNED_WITH.as_dict()}" in message
    assert f"not {other.as_dict()}" in message


def test_the_same_settings_or_no_model_yet_are_accepted(tmp_path):
    refuse_other_model_settings(None, TOPICS, tmp_path, ModelSettings(optimizer="ftrl"))
    _checkpoint(tmp_path)
    refuse_other_model_settings(None, TOPICS, tmp_path, LEARNED_WITH)
