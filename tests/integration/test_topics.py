"""learnstream owns its topics: on a broker that auto-creates topics (the embedded
one makes 4 partitions), nobody has to run `learnstream topics create` first."""

from __future__ import annotations

import signal
import subprocess

import pytest

from stream.events.sources import SyntheticStream
from stream.kafka import clients
from stream.kafka.topics import INTERNAL_MAX_MESSAGE_BYTES, _configs, ensure_pipeline
from stream.tools.produce import ProduceSettings, produce

from .helpers import (
    assert_learned_exactly_once,
    final_model,
    read_predictions,
    send_raw,
    synthetic_features,
    wait_for_learned,
    work_command,
)

pytestmark = pytest.mark.integration


def test_missing_topics_are_created_with_what_the_protocol_needs(kafka, topics):
    counts = ensure_pipeline(kafka, topics)
    assert counts == {
        topics.features: 4,
        topics.predictions: 4,
        topics.dead_letter: 1,
        topics.contributions: 1,
        topics.model: 1,
    }
    # Idempotent: a second call finds them right.
    assert ensure_pipeline(kafka, topics) == counts


def test_internal_topics_are_created_compacted_and_large_enough_for_a_model(kafka, topics):
    """What the broker reports for the topics learnstream created (the configs
    requested: tests/unit/test_topic_configs.py)."""
    ensure_pipeline(kafka, topics)
    admin = clients.admin(kafka, client_id="test-topic-configs")
    try:
        reported = _configs(admin, [topics.contributions, topics.model])
    finally:
        admin.close()
    if not any(reported.values()):
        pytest.skip("this broker (the embedded tansu) reports no topic configs")
    size = INTERNAL_MAX_MESSAGE_BYTES
    assert reported[topics.model]["cleanup.policy"] == "compact"
    assert int(reported[topics.model]["max.message.bytes"]) == size
    # Not compacted (every contribution counts): nothing asked, the broker's default.
    assert reported[topics.contributions].get("cleanup.policy", "delete") == "delete"
    assert int(reported[topics.contributions]["max.message.bytes"]) == size


def test_predictions_topic_follows_an_existing_features_topic(kafka, topics):
    send_raw(kafka, topics.features, [(b"k", b"{}")])  # auto-created: 4 partitions
    counts = ensure_pipeline(kafka, topics, partitions=2)
    assert counts[topics.features] == 4 and counts[topics.predictions] == 4


def test_work_refuses_an_auto_created_contributions_topic_and_says_how_to_fix_it(kafka, topics):
    send_raw(kafka, topics.contributions, [(b"k", b"x")])  # the broker makes 4 partitions
    done = subprocess.run(
        work_command(kafka, topics, processes=None, fast_group=False),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"topic '{topics.contributions}' has 4 partitions" in done.stderr
    assert "needs exactly 1" in done.stderr
    assert "learnstream topics create" in done.stderr


@pytest.mark.slow
def test_two_work_commands_without_topics_create_learn_every_event_exactly_once(
    kafka, topics, tmp_path
):
    """The issue's first scenario: no `topics create`, an auto-creating broker,
    two `learnstream work --processes 2`, 20,000 labeled events."""
    n_events = 20_000
    command = work_command(kafka, topics, processes=2, checkpoint_dir=tmp_path / "checkpoints")
    works = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    try:
        produce(
            iter(SyntheticStream(seed=10)),
            ProduceSettings(kafka=kafka, topic=topics.features, limit=n_events),
        )
        predictions = read_predictions(
            kafka, topics.predictions, {str(i) for i in range(n_events)}, settle_s=0.5
        )
        wait_for_learned(kafka, topics, n_events)
    finally:
        for work in works:
            work.send_signal(signal.SIGTERM)
        for work in works:
            work.wait(timeout=60)
    assert [w.returncode for w in works] == [0, 0]
    assert {p["id"] for p in predictions} == {str(i) for i in range(n_events)}
    # Read once both have exited: contributions sent at stop count too.
    assert_learned_exactly_once(final_model(kafka, topics), n_events, synthetic_features())
