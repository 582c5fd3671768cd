"""Topic identity: only a known, different id means "recreated"; anything the
broker did not report changes nothing and is asked again (issue 16, finding 2)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.errors import TopicError
from stream.kafka.topics import TopicIds, known_topic_id
from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.fence import rebind_topics, resolve_topic_ids

FEATURES_ID = "01a2309a-942e-7863-99f1-250d45b2afd4"
CONTRIBUTIONS_ID = "5c1f0e2a-1111-4222-8333-444455556666"
NAMES = {"features": "events", "contributions": "events.contributions"}
# What a broker's answer holds for a topic it reports no id for.
NO_ID = [None, "", str(uuid.UUID(int=0)), uuid.UUID(int=0), "AAAAAAAAAAAAAAAAAAAAAA"]


def _snapshot(topic_ids: dict[str, str]) -> Snapshot:
    return Snapshot(
        version=7,
        state=ModelState(weights={"a": 1.0}, n_learned=40),
        offsets={0: 25, 1: 15},
        contributions_offset=12,
        topic_ids=topic_ids,
    )


RECORDED = {"features": FEATURES_ID, "contributions": CONTRIBUTIONS_ID}


def test_the_same_ids_change_nothing():
    snapshot = _snapshot(RECORDED)
    assert rebind_topics(snapshot, dict(RECORDED)) is snapshot


def test_a_different_known_features_id_restarts_learning_of_that_topic():
    new = str(uuid.uuid4())
    rebound = rebind_topics(_snapshot(RECORDED), {**RECORDED, "features": new})
    assert rebound.offsets == {}
    assert rebound.contributions_offset == 12
    assert rebound.topic_ids == {**RECORDED, "features": new}
    assert rebound.n_learned == 40  # what it learned stays


def test_a_different_known_contributions_id_reads_the_new_topic_from_zero():
    new = str(uuid.uuid4())
    rebound = rebind_topics(_snapshot(RECORDED), {**RECORDED, "contributions": new})
    assert rebound.offsets == {0: 25, 1: 15}
    assert rebound.contributions_offset == 0
    assert rebound.topic_ids == {**RECORDED, "contributions": new}


@pytest.mark.parametrize("role", ["features", "contributions"])
@pytest.mark.parametrize("reported", [*NO_ID, "missing"], ids=repr)
def test_an_id_the_broker_did_not_report_is_not_a_recreated_topic(role, reported):
    """The bug: a metadata error's None (or zero UUID) cleared the offsets, and
    the merger re-applied retained contributions: every event learned twice."""
    snapshot = _snapshot(RECORDED)
    answer = dict(RECORDED)
    if reported == "missing":
        del answer[role]
    else:
        answer[role] = reported
    assert rebind_topics(snapshot, answer) is snapshot


def test_a_snapshot_without_ids_adopts_the_brokers_and_keeps_its_offsets():
    snapshot = _snapshot({})
    rebound = rebind_topics(snapshot, dict(RECORDED))
    assert rebound.topic_ids == RECORDED
    assert (rebound.offsets, rebound.contributions_offset) == ({0: 25, 1: 15}, 12)


def test_a_snapshot_without_ids_and_a_broker_without_ids_stays_as_it_is():
    snapshot = _snapshot({})
    assert rebind_topics(snapshot, {"features": None}) is snapshot


@given(st.uuids())
def test_any_non_zero_uuid_is_a_known_id(value):
    if value.int == 0:
        assert known_topic_id(value) is None
    else:
        assert known_topic_id(value) == known_topic_id(str(value)) == str(value)


@pytest.mark.parametrize("value", NO_ID, ids=repr)
def test_no_id_forms_of_both_clients_are_unknown(value):
    assert known_topic_id(value) is None


class _Broker:
    """Answers with no ids for the first ``unknown_for`` requests, then with ids."""

    def __init__(self, unknown_for: int) -> None:
        self.unknown_for = unknown_for
        self.requests = 0
        self.sleeps: list[float] = []

    def read(self) -> TopicIds:
        self.requests += 1
        if self.requests <= self.unknown_for:
            # UNKNOWN_TOPIC_OR_PARTITION while the topic's metadata propagates.
            return TopicIds({NAMES["contributions"]: CONTRIBUTIONS_ID}, {NAMES["features"]: 3})
        return TopicIds(
            {NAMES["features"]: FEATURES_ID, NAMES["contributions"]: CONTRIBUTIONS_ID}, {}
        )


def test_a_required_id_not_reported_yet_is_asked_again_until_known():
    broker = _Broker(unknown_for=3)
    ids = resolve_topic_ids(broker.read, NAMES, required=["features"], sleep=broker.sleeps.append)
    assert ids == RECORDED
    assert broker.requests == 4 and len(broker.sleeps) == 3


def test_an_id_not_required_is_not_waited_for():
    broker = _Broker(unknown_for=3)
    ids = resolve_topic_ids(broker.read, NAMES, required=(), sleep=broker.sleeps.append)
    assert ids == {"contributions": CONTRIBUTIONS_ID}
    assert broker.requests == 1


def test_a_required_id_that_never_comes_is_a_clear_error_not_a_recreated_topic():
    broker = _Broker(unknown_for=10**9)
    with pytest.raises(TopicError, match=r"features topic 'events' \(error code 3\)"):
        resolve_topic_ids(
            broker.read, NAMES, required=["features"], wait_s=0.0, sleep=broker.sleeps.append
        )
    assert broker.requests == 1


def test_a_takeover_asks_again_for_the_ids_its_version_records(monkeypatch):
    """The merger's takeover: ids not reported at first are asked for again
    (required), and the version continues with its offsets and its pipeline."""
    from stream.config import MergerSettings
    from stream.runtime import merger as merger_module

    seen = _snapshot(RECORDED)
    asked: list[tuple[str, ...]] = []

    def ids(kafka, topics, required=()):
        asked.append(tuple(required))
        return dict(RECORDED) if required else {}

    pipeline = {"features": "events", "cluster": "c1"}
    monkeypatch.setattr(merger_module, "published_model", lambda *a, **k: seen)
    monkeypatch.setattr(merger_module, "current_topic_ids", ids)
    monkeypatch.setattr(merger_module, "pipeline_of", lambda *a: pipeline)
    start = merger_module.Merger(MergerSettings(), "m1").latest_known()
    assert asked == [(), ("features", "contributions")]
    assert (start.offsets, start.contributions_offset) == ({0: 25, 1: 15}, 12)
    assert (start.n_learned, start.topic_ids, start.pipeline) == (40, RECORDED, pipeline)
