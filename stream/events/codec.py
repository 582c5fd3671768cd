"""The wire contracts: events in, predictions out, both msgpack or JSON.

An event is a map ``{"id": str|int, "x": {name: value}, "y": 0|1|true|false,
"ts": epoch seconds}``; ``y`` and ``ts`` are optional. A value in ``x`` is a
number, a string (categorical: ``{"site": "a"}`` is the feature ``site=a`` with
value 1.0) or a list of strings (``{"tags": ["a", "b"]}`` is ``tags=a`` and
``tags=b``, each 1.0); :func:`features` turns ``x`` into the model's features,
for every reader of events alike. Both encodings may share
one topic: a msgpack map starts with a byte in 0x80-0x8f, 0xde or 0xdf, which
can never begin a JSON text, so the first byte tells them apart.

:func:`decode_event` is total: for every byte string it returns an
:class:`Event` or raises :class:`~stream.errors.BadEvent` with one of
:data:`REASONS` and a message naming the offending value; it raises nothing
else (tests/unit/test_codec_properties.py checks this with Hypothesis over
arbitrary bytes and trees). The work one record may cause is bounded by
:class:`~stream.config.EventLimits`: size, nesting depth (checked before a JSON
text is parsed, so no record can exhaust the parser's stack), number of
features (after the ``name=value`` step), name, string value and id lengths,
list lengths, and the range of feature values.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack

from stream.config import Encoding, EventLimits
from stream.errors import BadEvent

UNDECODABLE = "undecodable"
NOT_A_MAP = "not_a_map"
MISSING_ID = "missing_id"
INVALID_ID = "invalid_id"
MISSING_FEATURES = "missing_features"
INVALID_FEATURES = "invalid_features"
NON_NUMERIC_FEATURE = "non_numeric_feature"
NON_FINITE_FEATURE = "non_finite_feature"
INVALID_LABEL = "invalid_label"
INVALID_TS = "invalid_ts"
OVERSIZED = "oversized"
TOO_DEEP = "too_deep"
TOO_MANY_FEATURES = "too_many_features"
FEATURE_NAME_TOO_LONG = "feature_name_too_long"
ID_TOO_LONG = "id_too_long"
FEATURE_OUT_OF_RANGE = "feature_out_of_range"
VALUE_TOO_LONG = "value_too_long"
LIST_TOO_LONG = "list_too_long"
INVALID_LIST = "invalid_list"
DUPLICATE_FEATURE = "duplicate_feature"
# Not the decoder's: whatever else raised while the worker handled one record
# (scoring, learning, encoding its prediction); the exception is the message.
PROCESSING_ERROR = "processing_error"

REASONS = (
    UNDECODABLE,
    NOT_A_MAP,
    MISSING_ID,
    INVALID_ID,
    MISSING_FEATURES,
    INVALID_FEATURES,
    NON_NUMERIC_FEATURE,
    NON_FINITE_FEATURE,
    INVALID_LABEL,
    INVALID_TS,
    OVERSIZED,
    TOO_DEEP,
    TOO_MANY_FEATURES,
    FEATURE_NAME_TOO_LONG,
    ID_TOO_LONG,
    FEATURE_OUT_OF_RANGE,
    VALUE_TOO_LONG,
    LIST_TOO_LONG,
    INVALID_LIST,
    DUPLICATE_FEATURE,
    PROCESSING_ERROR,
)

DEFAULT_LIMITS = EventLimits()

_MSGPACK_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_LABELS = {0: False, 1: True}
# Integer ids must survive msgpack (the predictions may be msgpack): 64 bits.
_ID_MIN, _ID_MAX = -(2**63), 2**64 - 1
# Event time: what datetime can represent (year 1 to year 9999), in epoch seconds.
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799
# JSON string literals, so brackets inside them are not counted as nesting. An
# unterminated one runs to the end (as far as the parser would read it); the
# possessive quantifier keeps the scan linear whatever the input.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")

# Values shown in error messages: bounded in length and depth, whatever the input.
_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 40
for _name in ("maxdict", "maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _name, 4)


def show(value: Any) -> str:
    """A short, safe repr for messages (never raises, never long)."""
    try:
        return _repr.repr(value)
    except Exception as exc:  # a repr that fails must not hide the reason
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. ``y`` is None when unlabeled; ``ts`` None when not given."""

    id: str | int
    x: dict[str, float]
    y: bool | None
    ts: float | None
    encoding: Encoding


def detect_encoding(value: bytes) -> Encoding:
    return "msgpack" if value and value[0] in _MSGPACK_MAP_FIRST_BYTES else "json"


def encode(obj: dict[str, Any], encoding: Encoding) -> bytes:
    if encoding == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_map(value: bytes, max_depth: int = DEFAULT_LIMITS.max_depth) -> tuple[dict, Encoding]:
    """Bytes to a map nested at most ``max_depth`` deep, or BadEvent(undecodable |
    too_deep | not_a_map)."""
    encoding = detect_encoding(value)
    if encoding == "json":
        depth = _json_depth(value, max_depth)
        if depth > max_depth:
            raise BadEvent(TOO_DEEP, f"JSON nested {depth} deep, limit is {max_depth}")
    try:
        if encoding == "msgpack":
            obj = msgpack.unpackb(value, raw=False, strict_map_key=False)
        else:
            # UTF-8 only (the contract's, and what makes the depth scan exact:
            # in UTF-8 no byte of a multibyte character is a bracket or a quote).
            obj = json.loads(value.decode("utf-8"))
    except msgpack.StackError as exc:
        raise BadEvent(TOO_DEEP, "msgpack nested deeper than its parser's stack") from exc
    except Exception as exc:
        # The parser's boundary: anything it raises (ValueError, msgpack's own
        # errors, TypeError for an unhashable map key, ...) means "not parsable".
        raise BadEvent(UNDECODABLE, f"not valid {encoding}: {show(str(exc))}") from exc
    if encoding == "msgpack" and _depth_exceeds(obj, max_depth):
        raise BadEvent(TOO_DEEP, f"msgpack nested more than {max_depth} deep")
    if not isinstance(obj, dict):
        raise BadEvent(NOT_A_MAP, f"expected a map, got {type(obj).__name__}")
    return obj, encoding


def _json_depth(value: bytes, max_depth: int) -> int:
    """An upper bound of the JSON text's nesting depth (exact for valid JSON).

    Counting brackets is a C-level pass; only a text with more brackets than
    ``max_depth`` is scanned, outside its string literals.
    """
    if value.count(b"[") + value.count(b"{") <= max_depth:
        return 0
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', value)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return deepest
        else:
            depth -= 1
    return deepest


def _depth_exceeds(obj: Any, max_depth: int) -> bool:
    """Whether a decoded msgpack tree nests deeper than ``max_depth`` (the root is 1)."""
    if type(obj) is not dict and type(obj) is not list:
        return False
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def decode_event(value: bytes | None, limits: EventLimits = DEFAULT_LIMITS) -> Event:
    """Decode and validate one record value into an :class:`Event`.

    Total: raises :class:`~stream.errors.BadEvent` (reason in :data:`REASONS`)
    for anything that is not a valid event, and nothing else.
    """
    if value is None:
        raise BadEvent(UNDECODABLE, "record has no value (tombstone)")
    if len(value) > limits.max_event_bytes:
        raise BadEvent(
            OVERSIZED, f"record is {len(value)} bytes, limit is {limits.max_event_bytes}"
        )
    obj, encoding = decode_map(value, limits.max_depth)

    if "id" not in obj:
        raise BadEvent(MISSING_ID, "no 'id' field")
    event_id = _id(obj["id"], limits)
    if "x" not in obj:
        raise BadEvent(MISSING_FEATURES, f"event {event_id!r} has no 'x' field")
    x = features(obj["x"], event_id, limits)
    y = _label(obj.get("y"), event_id)
    ts = _timestamp(obj.get("ts"), event_id)
    return Event(event_id, x, y, ts, encoding)


def _id(raw: Any, limits: EventLimits) -> str | int:
    if type(raw) is str:
        if len(raw) > limits.max_id_chars:
            raise BadEvent(
                ID_TOO_LONG,
                f"'id' is {len(raw)} characters, limit is {limits.max_id_chars}: {show(raw)}",
            )
        if not _is_unicode(raw):
            raise BadEvent(INVALID_ID, f"'id' {show(raw)} is not valid Unicode (lone surrogate)")
        return raw
    if type(raw) is int:
        if not _ID_MIN <= raw <= _ID_MAX:
            raise BadEvent(INVALID_ID, f"'id' {show(raw)} is outside the 64-bit integer range")
        return raw
    raise BadEvent(INVALID_ID, f"'id' must be a string or integer, got {show(raw)}")


def _is_unicode(text: str) -> bool:
    """False if ``text`` holds a lone surrogate (JSON "\\ud800" decodes to one): it
    could not be written back as UTF-8 or msgpack."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def features(
    raw: Any, event_id: str | int, limits: EventLimits = DEFAULT_LIMITS
) -> dict[str, float]:
    """The model's features of an event's ``x`` (as decoded), or BadEvent naming
    the offending value.

    The one place ``x`` becomes features, for the worker (both of its paths
    take the general decoder's verdict on categorical events), ``serve`` and
    ``score``, so that all of them give the same event the same probability.
    A number stays as it is (a float); a string ``v`` under ``name`` is the
    one-hot feature ``name=v`` with value 1.0; a list of strings is one such
    feature per string, in the list's order (a repeated string is the same
    feature once: it is present, not counted). An empty list adds no feature:
    an event with no tags is still an event. Two entries that make the same
    feature (``"a=b": 2.0`` beside ``"a": "b"``) are dead-lettered rather
    than one silently chosen.
    """
    if type(raw) is not dict:
        raise BadEvent(INVALID_FEATURES, f"event {event_id!r}: 'x' must be a map, got {show(raw)}")
    if len(raw) > limits.max_features:
        raise BadEvent(
            TOO_MANY_FEATURES,
            f"event {event_id!r} has {len(raw)} features, limit is {limits.max_features}",
        )
    bound = limits.max_abs_feature
    # Fast path, the usual case: string names and float values whose sum is
    # finite (so none is NaN or infinite), all within the bound. C-level passes
    # instead of a Python loop; anything else takes the checking loop below.
    values = raw.values()
    if (
        values
        and all(type(v) is float for v in values)
        and math.isfinite(sum(values))
        and -bound <= min(values)
        and max(values) <= bound
        and all(type(k) is str for k in raw)
        and max(map(len, raw)) <= limits.max_feature_name_chars
        and _is_unicode("".join(raw))
    ):
        return raw
    x: dict[str, float] = {}
    categorical = False
    for name, value in raw.items():
        name = _name(name, event_id, limits)
        kind = type(value)
        if kind is str:
            categorical = True
            _add(x, _category(value, name, event_id, limits), event_id)
        elif kind is list:
            categorical = True
            if len(value) > limits.max_list_values:
                raise BadEvent(
                    LIST_TOO_LONG,
                    f"event {event_id!r}: feature {show(name)} is a list of {len(value)} "
                    f"values, limit is {limits.max_list_values}: {show(value)}",
                )
            seen: set[str] = set()
            for index, item in enumerate(value):
                if type(item) is not str:
                    raise BadEvent(
                        INVALID_LIST,
                        f"event {event_id!r}: feature {show(name)} holds {show(item)} at index "
                        f"{index}; a list holds strings only: {show(value)}",
                    )
                if item not in seen:
                    seen.add(item)
                    _add(x, _category(item, name, event_id, limits), event_id)
        else:
            if name in x:
                _duplicate(name, event_id)
            x[name] = _value(value, name, event_id, bound)
    if categorical and len(x) > limits.max_features:
        raise BadEvent(
            TOO_MANY_FEATURES,
            f"event {event_id!r} has {len(x)} features once its strings are one-hot, "
            f"limit is {limits.max_features}",
        )
    return x


def _category(value: str, name: str, event_id: str | int, limits: EventLimits) -> str:
    """The feature name of the string ``value`` under ``name``: ``name=value``."""
    if len(value) > limits.max_value_chars:
        raise BadEvent(
            VALUE_TOO_LONG,
            f"event {event_id!r}: feature {show(name)} has a string value of {len(value)} "
            f"characters, limit is {limits.max_value_chars}: {show(value)}",
        )
    if not _is_unicode(value):
        raise BadEvent(
            INVALID_FEATURES,
            f"event {event_id!r}: feature {show(name)} is {show(value)}, "
            "not valid Unicode (lone surrogate)",
        )
    return f"{name}={value}"


def _add(x: dict[str, float], feature: str, event_id: str | int) -> None:
    if feature in x:
        _duplicate(feature, event_id)
    x[feature] = 1.0


def _duplicate(feature: str, event_id: str | int) -> None:
    raise BadEvent(
        DUPLICATE_FEATURE,
        f"event {event_id!r}: feature {show(feature)} is given twice "
        "(a 'name=value' key beside the string value it spells)",
    )


def _name(name: Any, event_id: str | int, limits: EventLimits) -> str:
    if type(name) is not str:
        raise BadEvent(
            INVALID_FEATURES, f"event {event_id!r}: feature name {show(name)} is not a string"
        )
    if len(name) > limits.max_feature_name_chars:
        raise BadEvent(
            FEATURE_NAME_TOO_LONG,
            f"event {event_id!r}: feature name of {len(name)} characters, limit is "
            f"{limits.max_feature_name_chars}: {show(name)}",
        )
    if not _is_unicode(name):
        raise BadEvent(
            INVALID_FEATURES,
            f"event {event_id!r}: feature name {show(name)} is not valid Unicode (lone surrogate)",
        )
    return name


def _value(value: Any, name: str, event_id: str | int, bound: float) -> float:
    kind = type(value)
    # bool is not int here (type(), not isinstance): true/false is not a number in the contract.
    if kind is not float and kind is not int:
        raise BadEvent(
            NON_NUMERIC_FEATURE,
            f"event {event_id!r}: feature {show(name)} is {show(value)}, "
            "not a number, a string or a list of strings",
        )
    if kind is float and not math.isfinite(value):
        raise BadEvent(NON_FINITE_FEATURE, f"event {event_id!r}: feature {show(name)} is {value!r}")
    # Compared before any conversion: an int of hundreds of digits compares exactly
    # with a float, where float() of it would overflow.
    if not -bound <= value <= bound:
        raise BadEvent(
            FEATURE_OUT_OF_RANGE,
            f"event {event_id!r}: feature {show(name)} is {show(value)}, beyond +-{bound:g}",
        )
    return float(value)


def _label(raw: Any, event_id: str | int) -> bool | None:
    if raw is None:
        return None
    if type(raw) is bool:
        return raw
    # 1.0 / 0.0 come out of many dataframe tools; accept exactly those.
    if (type(raw) is int or type(raw) is float) and raw in _LABELS:
        return _LABELS[int(raw)]
    raise BadEvent(
        INVALID_LABEL, f"event {event_id!r}: 'y' must be 0, 1, true or false, got {show(raw)}"
    )


def _timestamp(raw: Any, event_id: str | int) -> float | None:
    if raw is None:
        return None
    if (type(raw) is int or type(raw) is float) and TS_MIN <= raw <= TS_MAX:
        return float(raw)
    raise BadEvent(
        INVALID_TS,
        f"event {event_id!r}: 'ts' must be epoch seconds between year 1 and 9999, got {show(raw)}",
    )


def event_to_map(
    event_id: str | int, x: dict[str, float], y: bool | None, ts: float | None
) -> dict:
    """The contract's map for an event (what producers send)."""
    obj: dict[str, Any] = {"id": event_id, "x": x}
    if y is not None:
        obj["y"] = int(y) if isinstance(y, bool) else y
    if ts is not None:
        obj["ts"] = ts
    return obj


def prediction_record(
    event_id: str | int,
    p: float,
    model_version: int,
    y: bool | int | None = None,
    worker: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    ts_event: float | None = None,
    ts_record: float | None = None,
    ts_scored: float | None = None,
) -> dict[str, Any]:
    """The contract's map for a prediction (docs/contracts.md): the one place its
    fields are named, for the worker (both paths), ``serve`` and ``score``.

    Without ``worker`` it is an answer (``serve``, ``score``): ``id``, ``p``,
    ``y_pred`` (1 if ``p >= 0.5``), ``model_version``, then ``y`` (0 or 1) when
    the event had a label (``y`` is a bool or 0/1; None: no label). With
    ``worker`` it is a published prediction, which also says where the event
    was (``partition``, ``offset``) and when: ``ts_event`` (the event's ``ts``,
    None falls back to ``ts_record``), ``ts_record`` and ``ts_scored``, seconds.

    One dict literal per form, the answer's keys being the published record's
    first four (tests/unit/test_prediction_record.py holds them to the
    contract's order): the worker calls this once per event on its hot path,
    where adding the six published keys one by one to the answer cost 3-5% of
    the compiled path's throughput; positional arguments for the same reason.
    """
    if worker is None:
        record = {
            "id": event_id,
            "p": p,
            "y_pred": 1 if p >= 0.5 else 0,
            "model_version": model_version,
        }
    else:
        record = {
            "id": event_id,
            "p": p,
            "y_pred": 1 if p >= 0.5 else 0,
            "model_version": model_version,
            "worker": worker,
            "partition": partition,
            "offset": offset,
            "ts_event": ts_event if ts_event is not None else ts_record,
            "ts_record": ts_record,
            "ts_scored": ts_scored,
        }
    if y is not None:
        record["y"] = 1 if y else 0
    return record
