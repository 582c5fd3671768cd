"""The wire contracts: events in, predictions out, both msgpack or JSON.

An event is a map ``{"id": str|int, "x": {name: number}, "y": 0|1|true|false,
"ts": epoch seconds}``; ``y`` and ``ts`` are optional. Both encodings may share
one topic: a msgpack map starts with a byte in 0x80-0x8f, 0xde or 0xdf, which
can never begin a JSON text, so the first byte tells them apart.

Anything that does not meet the contract raises :class:`~stream.errors.BadEvent`
with one of :data:`REASONS`, so the worker can dead-letter it and go on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from stream.config import Encoding
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
)

_MSGPACK_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_LABELS = {0: False, 1: True}


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


def decode_map(value: bytes) -> tuple[dict[Any, Any], Encoding]:
    """Bytes to a map, or BadEvent(undecodable | not_a_map)."""
    encoding = detect_encoding(value)
    try:
        if encoding == "msgpack":
            obj = msgpack.unpackb(value, raw=False, strict_map_key=False)
        else:
            obj = json.loads(value)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BadEvent(UNDECODABLE, f"not valid {encoding}: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadEvent(NOT_A_MAP, f"expected a map, got {type(obj).__name__}")
    return obj, encoding


def decode_event(value: bytes | None, max_bytes: int) -> Event:
    """Decode and validate one record value into an :class:`Event`."""
    if value is None:
        raise BadEvent(UNDECODABLE, "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise BadEvent(OVERSIZED, f"record is {len(value)} bytes, limit is {max_bytes}")
    obj, encoding = decode_map(value)

    if "id" not in obj:
        raise BadEvent(MISSING_ID, "no 'id' field")
    event_id = obj["id"]
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        raise BadEvent(INVALID_ID, f"'id' must be a string or integer, got {event_id!r}")

    if "x" not in obj:
        raise BadEvent(MISSING_FEATURES, f"event {event_id!r} has no 'x' field")
    x = _features(obj["x"], event_id)
    y = _label(obj.get("y"), event_id)
    ts = _timestamp(obj.get("ts"), event_id)
    return Event(event_id, x, y, ts, encoding)


def _features(raw: Any, event_id: str | int) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise BadEvent(INVALID_FEATURES, f"event {event_id!r}: 'x' must be a map, got {raw!r:.80}")
    # Fast path, the usual case: string names and float values whose sum is
    # finite (a NaN or an infinity makes it not so). Three C-level passes instead
    # of a Python loop; anything else takes the checking loop below.
    values = raw.values()
    if (
        all(type(v) is float for v in values)
        and math.isfinite(sum(values))
        and all(type(k) is str for k in raw)
    ):
        return raw
    x: dict[str, float] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            raise BadEvent(
                INVALID_FEATURES, f"event {event_id!r}: feature name {name!r} is not a string"
            )
        # bool is an int subclass, but true/false is not a number in the contract.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadEvent(
                NON_NUMERIC_FEATURE,
                f"event {event_id!r}: feature {name!r} is {value!r:.80}, not a number",
            )
        value = float(value)
        if not math.isfinite(value):
            raise BadEvent(NON_FINITE_FEATURE, f"event {event_id!r}: feature {name!r} is {value!r}")
        x[name] = value
    return x


def _label(raw: Any, event_id: str | int) -> bool | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return raw
    # 1.0 / 0.0 come out of many dataframe tools; accept exactly those.
    if isinstance(raw, int | float) and raw in _LABELS:
        return _LABELS[int(raw)]
    raise BadEvent(
        INVALID_LABEL, f"event {event_id!r}: 'y' must be 0, 1, true or false, got {raw!r:.80}"
    )


def _timestamp(raw: Any, event_id: str | int) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise BadEvent(
            INVALID_TS, f"event {event_id!r}: 'ts' must be epoch seconds, got {raw!r:.80}"
        )
    return float(raw)


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
