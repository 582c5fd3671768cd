"""The event contract: what is accepted, and the reason for everything that is not."""

from __future__ import annotations

import json
import math

import msgpack
import pytest

from stream.config import EventLimits
from stream.errors import BadEvent
from stream.events import codec

LIMIT = EventLimits(max_event_bytes=10_000)


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
    (b"[" * 5000 + b"]" * 5000, codec.TOO_DEEP),
    (b'{"id": 1, "x": {"a": 1}, "meta": ' + b"[" * 20 + b"]" * 20 + b"}", codec.TOO_DEEP),
    (
        msgpack.packb({"id": 1, "x": {"a": 1}, "m": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}),
        codec.TOO_DEEP,
    ),
    (b'{"id": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "x": {"a": 1}}', None),  # not nesting
    (_json({"id": 1, "x": {f"f{i}": 1.0 for i in range(30)}}), codec.TOO_MANY_FEATURES),
    (_json({"id": 1, "x": {"f" * 300: 1.0}}), codec.FEATURE_NAME_TOO_LONG),
    (_json({"id": "e" * 300, "x": {"a": 1.0}}), codec.ID_TOO_LONG),
    (b'{"id": 1' + b"0" * 300 + b', "x": {"a": 1}}', codec.INVALID_ID),
    (b'{"id": "\\ud800", "x": {"a": 1}}', codec.INVALID_ID),
    (b'{"id": 1, "x": {"\\udfff": 1}}', codec.INVALID_FEATURES),
    (b'{"id": 1, "x": {"a": 1' + b"0" * 400 + b"}}", codec.FEATURE_OUT_OF_RANGE),
    (_json({"id": 1, "x": {"a": 1e308}}), codec.FEATURE_OUT_OF_RANGE),
    (_json({"id": 1, "x": {"a": -1e151, "b": 1e151}}), codec.FEATURE_OUT_OF_RANGE),
    (msgpack.packb({"id": 1, "x": {"a": 2**64 - 1}}), None),
    (msgpack.packb({"id": 2**64 - 1, "x": {"a": 1.0}, "ts": 2**64 - 1}), codec.INVALID_TS),
    (b'{"id": 1, "x": {"a": 1}, "ts": 1' + b"0" * 300 + b"}", codec.INVALID_TS),
    (_json({"id": 1, "x": {"a": 1}, "ts": math.nan}), codec.INVALID_TS),
    (b'{"id": 1, "x": {"a": 1e400}}', codec.NON_FINITE_FEATURE),
    (b'\xef\xbb\xbf{"id": 1, "x": {"a": 1}}', codec.UNDECODABLE),  # a BOM is not JSON
    (b'{"id": "\xff", "x": {"a": 1}}', codec.UNDECODABLE),  # invalid UTF-8
    (msgpack.packb({"id": 1, "x": {"a": msgpack.ExtType(5, b"z")}}), codec.NON_NUMERIC_FEATURE),
    (msgpack.packb({"id": 1, "x": {b"a": 1.0}}), codec.INVALID_FEATURES),
    (b"\x81\x91\x01\x02", codec.UNDECODABLE),  # an array as a map key: unhashable
]


@pytest.mark.parametrize("value, reason", BAD_INPUT, ids=[str(r) for _, r in BAD_INPUT])
def test_bad_input_is_rejected_with_its_reason(value, reason):
    limits = EventLimits(max_event_bytes=10_000, max_features=20, max_depth=16)
    if reason is None:  # an edge that is fine
        codec.decode_event(value, limits)
        return
    with pytest.raises(BadEvent) as caught:
        codec.decode_event(value, limits)
    assert caught.value.reason == reason
    assert caught.value.reason in codec.REASONS
    assert caught.value.message  # says what was wrong, not just the token


def test_error_message_names_the_offending_value():
    with pytest.raises(BadEvent, match="feature 'temp' is 'hot'"):
        codec.decode_event(_json({"id": "e9", "x": {"temp": "hot"}}), LIMIT)
