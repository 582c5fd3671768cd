"""The event contract: what is accepted, and the reason for everything that is not."""

from __future__ import annotations

import json
import math

import msgpack
import pytest

from stream.errors import BadEvent
from stream.events import codec

LIMIT = 10_000


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_event_round_trips_in_both_encodings(encoding):
    sent = codec.event_to_map("e-1", {"a": 1.5, "b": -2.0}, True, 1_700_000_000.25)
    event = codec.decode_event(codec.encode(sent, encoding), LIMIT)
    assert event == codec.Event("e-1", {"a": 1.5, "b": -2.0}, True, 1_700_000_000.25, encoding)


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_label_and_timestamp_are_optional(encoding):
    event = codec.decode_event(codec.encode({"id": 7, "x": {"a": 1}}, encoding), LIMIT)
    assert (event.id, event.x, event.y, event.ts) == (7, {"a": 1.0}, None, None)


@pytest.mark.parametrize(
    "raw, expected",
    [(0, False), (1, True), (True, True), (False, False), (0.0, False), (1.0, True)],
)
def test_labels_accepted(raw, expected):
    value = json.dumps({"id": 1, "x": {}, "y": raw}).encode()
    assert codec.decode_event(value, LIMIT).y is expected


def test_both_encodings_share_one_topic():
    assert codec.detect_encoding(msgpack.packb({"id": 1})) == "msgpack"
    assert codec.detect_encoding(b' {"id": 1}') == "json"


def test_prediction_maps_round_trip():
    prediction = {"id": "a", "p": 0.25, "y_pred": 0, "model_version": 3, "offset": 9}
    for encoding in ("msgpack", "json"):
        assert codec.decode_map(codec.encode(prediction, encoding)) == (prediction, encoding)


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_INPUT = [
    (b"\xff\xfe garbage", codec.UNDECODABLE),
    (b'{"id": 1, "x": ', codec.UNDECODABLE),
    (b"\x81\xa2id", codec.UNDECODABLE),  # msgpack map cut short
    (None, codec.UNDECODABLE),
    (_json([1, 2, 3]), codec.NOT_A_MAP),
    (msgpack.packb("hello"), codec.UNDECODABLE),  # a msgpack string is not JSON either
    (_json({"x": {"a": 1}}), codec.MISSING_ID),
    (_json({"id": [1], "x": {"a": 1}}), codec.INVALID_ID),
    (_json({"id": True, "x": {"a": 1}}), codec.INVALID_ID),
    (_json({"id": 1}), codec.MISSING_FEATURES),
    (_json({"id": 1, "x": [1, 2]}), codec.INVALID_FEATURES),
    (msgpack.packb({"id": 1, "x": {3: 1.0}}), codec.INVALID_FEATURES),
    (_json({"id": 1, "x": {"a": "high"}}), codec.NON_NUMERIC_FEATURE),
    (_json({"id": 1, "x": {"a": None}}), codec.NON_NUMERIC_FEATURE),
    (_json({"id": 1, "x": {"a": True}}), codec.NON_NUMERIC_FEATURE),
    (b'{"id": 1, "x": {"a": NaN}}', codec.NON_FINITE_FEATURE),
    (b'{"id": 1, "x": {"a": Infinity}}', codec.NON_FINITE_FEATURE),
    (msgpack.packb({"id": 1, "x": {"a": math.inf}}), codec.NON_FINITE_FEATURE),
    (_json({"id": 1, "x": {"a": 1}, "y": 2}), codec.INVALID_LABEL),
    (_json({"id": 1, "x": {"a": 1}, "y": "yes"}), codec.INVALID_LABEL),
    (_json({"id": 1, "x": {"a": 1}, "y": 0.5}), codec.INVALID_LABEL),
    (_json({"id": 1, "x": {"a": 1}, "ts": "yesterday"}), codec.INVALID_TS),
    (_json({"id": 1, "x": {f"f{i}": 1.0 for i in range(2000)}}), codec.OVERSIZED),
]


@pytest.mark.parametrize("value, reason", BAD_INPUT, ids=[r for _, r in BAD_INPUT])
def test_bad_input_is_rejected_with_its_reason(value, reason):
    with pytest.raises(BadEvent) as caught:
        codec.decode_event(value, LIMIT)
    assert caught.value.reason == reason
    assert caught.value.reason in codec.REASONS
    assert caught.value.message  # says what was wrong, not just the token


def test_error_message_names_the_offending_value():
    with pytest.raises(BadEvent, match="feature 'temp' is 'hot'"):
        codec.decode_event(_json({"id": "e9", "x": {"temp": "hot"}}), LIMIT)
