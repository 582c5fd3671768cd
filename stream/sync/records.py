"""The one reader of internal records: every field is checked before it is used.

Contributions, model versions and checkpoint files are written by our own
processes, but what comes back from Kafka or disk is trusted no more than an
event: a bug, a version skew, a stray producer or a damaged file can put
anything there, and a reader that trusts it crash-loops on it for ever (the
record is still there after a restart). So :meth:`Contribution.from_bytes
<stream.sync.contribution.Contribution.from_bytes>` and
:meth:`Snapshot.from_bytes <stream.sync.checkpoint.Snapshot.from_bytes>` read
their fields only through :class:`Fields`, and either return a record that is
well-typed and possible or raise the record's
:class:`~stream.errors.RecordError` subclass, naming the field and its value.
Their callers skip, count and log; nothing else escapes.

"Possible" means what the protocol can produce: counts and offsets are
non-negative integers below :data:`MAX_COUNT` / :data:`MAX_OFFSET`, numbers
are finite, a model state passes :func:`~stream.model.state.impossible`, and
(where the reader knows the features topic) a contribution's ranges lie
inside ``[0, high watermark]`` of an existing partition.
"""

from __future__ import annotations

import math
from typing import NoReturn, Protocol

from stream.errors import RecordError
from stream.model.state import MAX_COUNT, ModelState, impossible, unpack_state

# Kafka offsets are int64.
MAX_OFFSET = 2**63 - 1
# Kafka partition numbers are int32.
MAX_PARTITION = 2**31 - 1
# Worker names are a host name, a pid and an incarnation; 256 is generous.
MAX_NAME_CHARS = 256

_MISSING = object()


def show(value: object) -> str:
    """``repr(value)``, cut short: a hostile value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Watermarks(Protocol):
    """Where the features topic ends, for checking a contribution's ranges."""

    def highwater(self, partition: int, at_least: int) -> int | None:
        """``partition``'s high watermark, read again if the one known is below
        ``at_least``; None if the features topic has no such partition."""
        ...


class Fields:
    """Typed access to a decoded msgpack map; every failure raises ``error``
    with a message naming ``what``, the field and the value."""

    def __init__(self, data: object, what: str, error: type[RecordError]) -> None:
        self.what, self.error = what, error
        if not isinstance(data, dict):
            raise error(f"{what}: not a map but {show(data)}")
        self.data = data

    def fail(self, name: str, problem: str, value: object = _MISSING) -> NoReturn:
        shown = "" if value is _MISSING else f": {show(value)}"
        raise self.error(f"{self.what} field {name}: {problem}{shown}")

    def raw(self, name: str, default: object = _MISSING) -> object:
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            self.fail(name, "missing")
        return default

    def integer(self, name: str, high: int = MAX_COUNT, default: object = _MISSING) -> int:
        return self.check_integer(name, self.raw(name, default), high)

    def check_integer(self, name: str, value: object, high: int = MAX_COUNT) -> int:
        """A non-negative int (not a bool, not a float) below ``high``."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "not an integer", value)
        if not 0 <= value < high:
            self.fail(name, f"outside [0, {high})", value)
        return value

    def number(self, name: str, default: object = _MISSING) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, "not a number", value)
        if not math.isfinite(value):
            self.fail(name, "not finite", value)
        return float(value)

    def text(self, name: str, max_chars: int = MAX_NAME_CHARS) -> str:
        return self.check_text(name, self.raw(name), max_chars)

    def check_text(self, name: str, value: object, max_chars: int = MAX_NAME_CHARS) -> str:
        if not isinstance(value, str) or not value:
            self.fail(name, "not a non-empty string", value)
        if len(value) > max_chars:
            self.fail(name, f"longer than {max_chars} characters", value)
        return value

    def mapping(self, name: str, default: object = _MISSING) -> dict:
        value = self.raw(name, default)
        if not isinstance(value, dict):
            self.fail(name, "not a map", value)
        return value

    def text_map(self, name: str, default: object = _MISSING) -> dict[str, str]:
        """str -> str (topic ids, a pipeline's identity)."""
        value = self.mapping(name, default)
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                self.fail(name, "not a map of strings to strings", {key: item})
        return dict(value)

    def seq_map(self, name: str) -> dict[str, int]:
        """Worker life (or, in versions from before lives, worker name) -> contribution seq."""
        out = {}
        for key, item in self.mapping(name).items():
            worker = self.check_text(f"{name} key", key)
            out[worker] = self.check_integer(f"{name}[{worker!r}]", item)
        return out

    def partition(self, name: str, key: object) -> int:
        """A partition number as the wire writes it: ``str(p)``, canonical."""
        if not isinstance(key, str) or not key.isascii() or not key.isdigit():
            self.fail(name, "partition key is not a decimal string", key)
        partition = int(key)
        if str(partition) != key or partition > MAX_PARTITION:
            self.fail(name, "partition key out of range or not canonical", key)
        return partition

    def offset_map(self, name: str) -> dict[int, int]:
        """Partition -> offset."""
        out = {}
        for key, item in self.mapping(name).items():
            partition = self.partition(name, key)
            out[partition] = self.check_integer(f"{name}[{key}]", item, MAX_OFFSET)
        return out

    def state(self, name: str) -> ModelState:
        """A packed model state (:func:`~stream.model.state.pack_state`) that is possible."""
        try:
            state = unpack_state(self.raw(name))
        except ValueError as exc:
            raise self.error(f"{self.what} field {name}: {exc}") from exc
        return self.possible(name, state)

    def possible(self, name: str, state: ModelState) -> ModelState:
        bad = impossible(state)
        if bad is not None:
            raise self.error(f"{self.what} field {name}: impossible model state: {bad}")
        return state
