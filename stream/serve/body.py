"""Request bodies to events: one event or an array of them, JSON or msgpack.

Every event goes through :func:`validate`, the one call of the contract's
validator (:func:`stream.events.codec.decode_event`, the dead-letter topic's
too), on the event's own bytes: a single event's body as it came, an array's
elements as they came (msgpack) or re-encoded (JSON arrays: as msgpack, the
contract's other encoding, which holds the same values and decodes twice as
fast; as JSON where only Python's parser reads them: NaN, huge integers).
So the API rejects exactly what a worker would dead-letter, with the same
reason and message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgpack
import orjson

from stream.config import EventLimits
from stream.errors import BadEvent, StreamError
from stream.events.codec import UNDECODABLE, Event, decode_event

# First bytes of a msgpack array (fixarray, array 16, array 32).
_MSGPACK_ARRAY = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}
_JSON_SPACE = b" \t\r\n"


class MalformedBody(StreamError):
    """The body is not JSON or msgpack at all (HTTP 400)."""


class TooManyEvents(StreamError):
    """An array longer than the batch limit (HTTP 413)."""


@dataclass(frozen=True)
class Parsed:
    """Events (or why each is invalid), in body order; ``batch``: the body was an array."""

    items: list[Event | BadEvent]
    raw: list[bytes]
    batch: bool

    @property
    def errors(self) -> list[tuple[int, BadEvent]]:
        return [(i, item) for i, item in enumerate(self.items) if isinstance(item, BadEvent)]


def validate(raw: bytes, limits: EventLimits) -> Event:
    """The contract's validator on one event's bytes (the dead-letter topic's:
    total, so BadEvent is all it raises)."""
    return decode_event(raw, limits)


def parse(body: bytes, limits: EventLimits, max_batch: int) -> Parsed:
    """Split ``body`` into events and validate each one."""
    stripped = body.lstrip(_JSON_SPACE)
    if not stripped:
        raise MalformedBody("empty body: expected one event or an array of events")
    first = stripped[0]
    if first == 0x5B:  # '['
        parts = _json_elements(body, max_batch)
    elif first in _MSGPACK_ARRAY:
        parts = _msgpack_elements(body, max_batch)
    else:
        try:
            event: Event | BadEvent = validate(body, limits)
        except BadEvent as exc:
            if exc.reason == UNDECODABLE:
                raise MalformedBody(exc.message) from exc
            event = exc
        return Parsed([event], [body], batch=False)
    items: list[Event | BadEvent] = []
    for part in parts:
        try:
            items.append(validate(part, limits))
        except BadEvent as exc:
            items.append(exc)
    return Parsed(items, parts, batch=True)


def _json_elements(body: bytes, max_batch: int) -> list[bytes]:
    try:
        array = orjson.loads(body)

        # Elements go to the validator as msgpack: the contract's other encoding,
        # holding the same values, and about twice as fast to decode as JSON.
        # (A msgpack map is told from JSON by its first byte; other values are not,
        # so they stay JSON and the validator says what they are: not a map.)
        def dumps(obj):
            return msgpack.packb(obj) if type(obj) is dict else orjson.dumps(obj)

    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity and integers beyond 64 bits, which Python's
        # json (the validator's parser) reads; let the validator judge those.
        try:
            array = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise MalformedBody(f"not valid JSON: {exc}") from exc

        def dumps(obj):
            return json.dumps(obj, separators=(",", ":")).encode()

    if not isinstance(array, list):  # pragma: no cover - '[' always opens a list
        raise MalformedBody(f"expected an array, got {type(array).__name__}")
    if len(array) > max_batch:
        raise TooManyEvents(f"{len(array)} events in one request, limit is {max_batch}")
    try:
        return [dumps(element) for element in array]
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise MalformedBody(f"not valid JSON: {exc}") from exc


def _msgpack_elements(body: bytes, max_batch: int) -> list[bytes]:
    """Each element's own bytes, cut out of the body without decoding it twice."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(body) + 1)
    unpacker.feed(body)
    try:
        n = unpacker.read_array_header()
        if n > max_batch:
            raise TooManyEvents(f"{n} events in one request, limit is {max_batch}")
        parts = []
        for _ in range(n):
            start = unpacker.tell()
            unpacker.skip()
            parts.append(body[start : unpacker.tell()])
    except TooManyEvents:
        raise
    except (msgpack.OutOfData, ValueError, msgpack.UnpackException) as exc:
        raise MalformedBody(f"not valid msgpack: {exc!r}") from exc
    if unpacker.tell() != len(body):
        raise MalformedBody(f"not valid msgpack: {len(body) - unpacker.tell()} bytes of extra data")
    return parts
