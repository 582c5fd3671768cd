"""Settings refuse bad values at construction, naming the value."""

from __future__ import annotations

import math

import pytest

from stream.config import (
    EventLimits,
    GroupTimeouts,
    KafkaSettings,
    ModelSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.errors import ConfigError


def test_dead_letter_topic_follows_features_topic():
    assert TopicSettings(features="clicks").dead_letter == "clicks.dlq"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ModelSettings(optimizer="adam"), "'adam'"),
        (lambda: ModelSettings(learning_rate=0), "learning_rate must be > 0, got 0"),
        (lambda: ModelSettings(l2=-1.0), "l2 must be >= 0, got -1.0"),
        (lambda: TopicSettings(features="t", predictions="t"), "same topic 't'"),
        (lambda: TopicSettings(features="my topic"), "'my topic' is not a valid Kafka topic name"),
        (lambda: EventLimits(max_event_bytes=0), "max_event_bytes must be >= 1, got 0"),
        (lambda: EventLimits(max_depth=1), "max_depth must be >= 2"),
        (lambda: EventLimits(max_abs_feature=1e200), "max_abs_feature must be in (0, 1e150]"),
        (lambda: WorkerSettings(max_abs_weight=math.inf), "max_abs_weight must be in"),
        (
            lambda: GroupTimeouts(heartbeat_interval_ms=5000, session_timeout_ms=5000),
            "must be below session_timeout_ms",
        ),
        (lambda: WorkerSettings(output_encoding="xml"), "'xml'"),
        (lambda: KafkaSettings(client_options=(("sasl_pasword", "x"),)), "'sasl_pasword'"),
        (lambda: KafkaSettings(bootstrap_servers=" "), "bootstrap_servers is empty"),
        (
            lambda: WorkerSettings(
                client="confluent", kafka=KafkaSettings(client_options=(("api_version", "2.0"),))
            ),
            "Kafka options \\['api_version'\\] have no confluent-kafka equivalent",
        ),
    ],
)
def test_invalid_settings_are_refused(build, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build()


def test_settings_are_frozen():
    settings = WorkerSettings()
    with pytest.raises(AttributeError):
        settings.max_poll_records = 5  # type: ignore[misc]


def test_cli_flags_fall_back_to_environment(monkeypatch):
    from stream.cli import parse_args
    from stream.cliargs import kafka_settings, topic_settings

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("LEARNSTREAM_FEATURES_TOPIC", "events")
    monkeypatch.setenv("LEARNSTREAM_GROUP_ID", "scorers")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    args = parse_args(
        ["work", "--sasl-username", "me", "--kafka-option", "ssl_check_hostname=false"]
    )
    kafka = kafka_settings(args)
    assert kafka.bootstrap_servers == "k1:9093,k2:9093"
    assert kafka.options == {
        "security_protocol": "SASL_SSL",
        "sasl_plain_username": "me",
        "ssl_check_hostname": False,
    }
    topics = topic_settings(args)
    assert (topics.features, topics.predictions, topics.group_id) == (
        "events",
        "predictions",
        "scorers",
    )


def test_a_cooperative_assignor_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="cooperative"):
        KafkaSettings(client_options=(("partition_assignment_strategy", "cooperative-sticky"),))


def test_an_unknown_crash_point_is_refused():
    with pytest.raises(ConfigError, match=r"unknown crash point 'worker\.nowhere'"):
        WorkerSettings(crash_at="worker.nowhere")
    assert WorkerSettings(crash_at="worker.after_commit:3").crash_at == "worker.after_commit:3"
