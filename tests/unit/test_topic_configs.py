"""The topic configs learnstream asks for when it creates its internal topics,
and the check of existing ones (what a real broker reports back:
tests/integration/test_topics.py)."""

from __future__ import annotations

import pytest

from stream.config import TopicSettings
from stream.errors import TopicError
from stream.kafka.topics import INTERNAL_MAX_MESSAGE_BYTES, check_configs, pipeline_specs

TOPICS = TopicSettings(features="f", predictions="p", group_id="g")
SIZE = str(INTERNAL_MAX_MESSAGE_BYTES)


def _specs() -> dict:
    return {spec.name: spec for spec in pipeline_specs(TOPICS, 4)}


def test_the_model_topic_is_compacted_and_both_internal_topics_hold_a_whole_model():
    specs = _specs()
    assert specs[TOPICS.model].configs == {"cleanup.policy": "compact", "max.message.bytes": SIZE}
    assert specs[TOPICS.contributions].configs == {"max.message.bytes": SIZE}
    assert (specs[TOPICS.model].partitions, specs[TOPICS.model].exact) == (1, True)
    assert (specs[TOPICS.contributions].partitions, specs[TOPICS.contributions].exact) == (1, True)
    assert INTERNAL_MAX_MESSAGE_BYTES == 64 * 1024 * 1024


def test_the_events_topics_are_created_with_the_brokers_defaults():
    specs = _specs()
    for name in (TOPICS.features, TOPICS.predictions, TOPICS.dead_letter):
        assert specs[name].configs == {} and specs[name].required == ()


@pytest.mark.parametrize(
    "found",
    [
        {"cleanup.policy": "compact", "max.message.bytes": SIZE},
        {"cleanup.policy": "compact,delete", "max.message.bytes": str(2 * int(SIZE))},
        {},  # the broker reports no configs: nothing to check
    ],
)
def test_a_model_topic_with_what_it_needs_is_accepted(found):
    check_configs(_specs()[TOPICS.model], found)


@pytest.mark.parametrize(
    "found, named",
    [
        ({"cleanup.policy": "delete", "max.message.bytes": SIZE}, "cleanup.policy=delete"),
        (
            {"cleanup.policy": "compact", "max.message.bytes": "1048588"},
            "max.message.bytes=1048588",
        ),
    ],
)
def test_a_model_topic_without_compaction_or_room_is_refused_naming_the_config(found, named):
    with pytest.raises(TopicError, match=f"has {named}; learnstream needs"):
        check_configs(_specs()[TOPICS.model], found)
