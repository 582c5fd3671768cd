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
    (_json({"id": 1, "x": {"a": "high"}}), None),  # categorical: the feature a=high
    (_json({"id": 1, "x": {"a": None}}), codec.NON_NUMERIC_FEATURE),
    (_json({"id": 1, "x": {"a": {"b": 1.0}}}), codec.NON_NUMERIC_FEATURE),
    (msgpack.packb({"id": 1, "x": {"a": b"bytes"}}, use_bin_type=True), codec.NON_NUMERIC_FEATURE),
    (_json({"id": 1, "x": {"a": "v" * 300}}), codec.VALUE_TOO_LONG),
    (_json({"id": 1, "x": {"tags": ["a", "v" * 300]}}), codec.VALUE_TOO_LONG),
    (_json({"id": 1, "x": {"tags": [f"t{i}" for i in range(1001)]}}), codec.LIST_TOO_LONG),
    (_json({"id": 1, "x": {"tags": ["a", 1.0]}}), codec.INVALID_LIST),
    (_json({"id": 1, "x": {"tags": ["a", ["b"]]}}), codec.INVALID_LIST),
    (_json({"id": 1, "x": {"tags": [None]}}), codec.INVALID_LIST),
    (_json({"id": 1, "x": {"tags": [True]}}), codec.INVALID_LIST),
    (_json({"id": 1, "x": {"tags": [{"a": 1}]}}), codec.INVALID_LIST),
    (_json({"id": 1, "x": {"tags": [f"t{i}" for i in range(21)]}}), codec.TOO_MANY_FEATURES),
    (_json({"id": 1, "x": {"a": "b", "a=b": 2.0}}), codec.DUPLICATE_FEATURE),
    (_json({"id": 1, "x": {"a=b": 2.0, "a": ["b"]}}), codec.DUPLICATE_FEATURE),
    (_json({"id": 1, "x": {"a": "b=c", "a=b": "c"}}), codec.DUPLICATE_FEATURE),
    (b'{"id": 1, "x": {"a": "\\ud800"}}', codec.INVALID_FEATURES),
    (b'{"id": 1, "x": {"a": ["ok", "\\udfff"]}}', codec.INVALID_FEATURES),
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
    with pytest.raises(BadEvent, match="feature 'temp' is None"):
        codec.decode_event(_json({"id": "e9", "x": {"temp": None}}), LIMIT)


# -- categorical values --------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_a_string_value_is_the_one_hot_feature_name_equals_value(encoding):
    sent = {"id": "e-1", "x": {"age": 31, "site": "news.example", "score": -0.5}}
    event = codec.decode_event(codec.encode(sent, encoding), LIMIT)
    assert event.x == {"age": 31.0, "site=news.example": 1.0, "score": -0.5}
    assert list(event.x) == ["age", "site=news.example", "score"]  # the event's order


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_a_list_of_strings_is_one_feature_per_string_in_order(encoding):
    sent = {"id": 1, "x": {"tags": ["sports", "a=b", ""], "n": 2.0}}
    event = codec.decode_event(codec.encode(sent, encoding), LIMIT)
    assert list(event.x.items()) == [
        ("tags=sports", 1.0),
        ("tags=a=b", 1.0),
        ("tags=", 1.0),
        ("n", 2.0),
    ]


def test_a_repeated_string_in_a_list_is_one_feature():
    event = codec.decode_event(_json({"id": 1, "x": {"q": ["new", "york", "new"]}}), LIMIT)
    assert event.x == {"q=new": 1.0, "q=york": 1.0}


def test_an_empty_list_adds_no_feature():
    event = codec.decode_event(_json({"id": 1, "x": {"tags": [], "a": 1.0}, "y": 1}), LIMIT)
    assert (event.x, event.y) == ({"a": 1.0}, True)


def test_strings_of_any_content_are_features():
    for value in ("", " ", "=", "ü日本", "a\u0000b", "\n", "x" * 256):
        event = codec.decode_event(_json({"id": 1, "x": {"k": value}}), LIMIT)
        assert event.x == {f"k={value}": 1.0}


def test_value_and_list_limits_are_settings():
    limits = EventLimits(max_value_chars=3, max_list_values=2)
    assert codec.decode_event(_json({"id": 1, "x": {"k": ["abc", "de"]}}), limits).x == {
        "k=abc": 1.0,
        "k=de": 1.0,
    }
    for x, reason in (
        ({"k": "abcd"}, codec.VALUE_TOO_LONG),
        ({"k": ["a", "b", "c"]}, codec.LIST_TOO_LONG),
    ):
        with pytest.raises(BadEvent) as caught:
            codec.decode_event(_json({"id": 1, "x": x}), limits)
        assert caught.value.reason == reason


@pytest.mark.parametrize(
    "x, message",
    [
        (
            {"tags": ["a", 7]},
            "event 1: feature 'tags' holds 7 at index 1; a list holds strings only",
        ),
        ({"tags": [["b"]]}, "feature 'tags' holds ['b'] at index 0"),
        ({"k": "v" * 300}, "feature 'k' has a string value of 300 characters, limit is 256: 'vvv"),
        ({"tags": ["t"] * 1001}, "feature 'tags' is a list of 1001 values, limit is 1000"),
        ({"a": "b", "a=b": 1.0}, "feature 'a=b' is given twice"),
        ({"k": {"a": 1}}, "feature 'k' is {'a': 1}, not a number, a string or a list of strings"),
    ],
)
def test_categorical_errors_name_the_offending_value(x, message):
    with pytest.raises(BadEvent) as caught:
        codec.decode_event(_json({"id": 1, "x": x}), LIMIT)
    assert message in caught.value.message


def test_features_is_the_contracts_one_function_for_x():
    """What serve and score call on a row's x: the decoder's own verdict."""
    raw = {"site": "a", "tags": ["x", "y"], "n": 3}
    assert (
        codec.features(raw, "r1", LIMIT)
        == codec.decode_event(_json({"id": "r1", "x": raw}), LIMIT).x
    )
    with pytest.raises(BadEvent) as caught:
        codec.features({"tags": [1]}, "r1", LIMIT)
    assert caught.value.reason == codec.INVALID_LIST
