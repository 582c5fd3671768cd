"""A stream of good events mixed with every class of hostile record, as an
independent client (confluent-kafka, not our producer) would write it.

Each record's key says what it is: ``g-<n>`` a good event whose id is the key,
``h-<class>-<n>`` a hostile record of ``class``. :data:`EXPECTED` gives each
hostile class the dead-letter reasons it may get.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator

import msgpack

from stream.config import EventLimits
from stream.errors import BadEvent
from stream.events import codec
from stream.events.sources import SyntheticStream

LIMITS = EventLimits()


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _deep_json(rng: random.Random, n: int) -> bytes:
    depth = rng.randint(2000, 5000)
    return b'{"id": "h%d", "x": ' % n + b"[" * depth + b"]" * depth + b"}"


def _deep_json_open(rng: random.Random, n: int) -> bytes:
    return b"[" * rng.randint(2000, 5000)


def _deep_msgpack(rng: random.Random, n: int) -> bytes:
    return b"\x82\xa2id\x01\xa1x" + b"\x91" * rng.randint(20, 3000) + b"\x00"


def _random_bytes(rng: random.Random, n: int) -> bytes:
    while True:
        value = rng.randbytes(rng.randint(0, 300))
        try:
            codec.decode_event(value, LIMITS)
        except BadEvent:
            return value


HOSTILE = {
    # class: (how to make one, the reasons it may get, relative frequency)
    "deep_json": (_deep_json, {codec.TOO_DEEP}, 10),
    "deep_json_open": (_deep_json_open, {codec.TOO_DEEP}, 5),
    "deep_msgpack": (_deep_msgpack, {codec.TOO_DEEP}, 10),
    "bigint_x": (
        lambda r, n: b'{"id": "h%d", "x": {"a": %s}}' % (n, b"9" * r.randint(300, 4000)),
        {codec.FEATURE_OUT_OF_RANGE},
        10,
    ),
    "bigint_ts": (
        lambda r, n: b'{"id": "h%d", "x": {"a": 1.0}, "ts": 1%s}' % (n, b"0" * 400),
        {codec.INVALID_TS},
        10,
    ),
    "bigint_id": (
        lambda r, n: b'{"id": 1%s, "x": {"a": 1.0}}' % (b"0" * 300),
        {codec.INVALID_ID},
        5,
    ),
    "u64_ts": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {"a": 1.0}, "ts": 2**64 - 1}),
        {codec.INVALID_TS},
        5,
    ),
    "u64_id": (
        lambda r, n: _json({"id": 2**64 + n, "x": {"a": 1.0}}),
        {codec.INVALID_ID},
        3,
    ),
    "huge_finite": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {"f0": 1e308, "f1": -1e308}, "y": 1}),
        {codec.FEATURE_OUT_OF_RANGE},
        20,
    ),
    "huge_finite_json": (
        lambda r, n: _json({"id": f"h{n}", "x": {"f0": r.choice([1e300, -1e200, 2e150])}, "y": 0}),
        {codec.FEATURE_OUT_OF_RANGE},
        10,
    ),
    "nan": (
        lambda r, n: (
            b'{"id": "h%d", "x": {"f0": %s}, "y": 1}'
            % (n, r.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        ),
        {codec.NON_FINITE_FEATURE},
        10,
    ),
    "surrogate_id": (
        lambda r, n: b'{"id": "\\ud800%d", "x": {"a": 1.0}}' % n,
        {codec.INVALID_ID},
        3,
    ),
    "surrogate_name": (
        lambda r, n: b'{"id": "h%d", "x": {"\\udfff": 1.0}}' % n,
        {codec.INVALID_FEATURES},
        3,
    ),
    "invalid_utf8": (
        lambda r, n: b'{"id": "h\xff\xfe%d", "x": {"a": 1.0}}' % n,
        {codec.UNDECODABLE},
        3,
    ),
    "ext_type": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {"a": msgpack.ExtType(42, b"boom")}}),
        {codec.NON_NUMERIC_FEATURE},
        3,
    ),
    "odd_keys": (
        lambda r, n: msgpack.packb(
            {"id": f"h{n}", "x": r.choice([{7: 1.0}, {b"a": 1.0}, {None: 1.0}, {1.5: 2.0}])},
            use_bin_type=True,
        ),
        {codec.INVALID_FEATURES},
        3,
    ),
    "array_key": (lambda r, n: b"\x81\x91\x01\x02", {codec.UNDECODABLE}, 2),
    # Categorical shapes: a string is a feature, but not every list or string is.
    "list_non_string": (
        lambda r, n: _json({"id": f"h{n}", "x": {"tags": ["a", r.choice([1.0, None, True, {}])]}}),
        {codec.INVALID_LIST},
        3,
    ),
    "list_nested": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {"tags": [["a"], "b"]}}),
        {codec.INVALID_LIST},
        3,
    ),
    "list_too_long": (
        lambda r, n: _json({"id": f"h{n}", "x": {"tags": [f"t{i}" for i in range(1001)]}}),
        {codec.LIST_TOO_LONG},
        1,
    ),
    "value_too_long": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {"site": "s" * r.randint(257, 5000)}}),
        {codec.VALUE_TOO_LONG},
        3,
    ),
    "surrogate_value": (
        lambda r, n: b'{"id": "h%d", "x": {"site": ["ok", "\\udfff"]}}' % n,
        {codec.INVALID_FEATURES},
        3,
    ),
    "duplicate_feature": (
        lambda r, n: _json({"id": f"h{n}", "x": {"site": "a", "site=a": 1.0}}),
        {codec.DUPLICATE_FEATURE},
        2,
    ),
    "one_hot_too_many": (
        lambda r, n: msgpack.packb(
            {"id": f"h{n}", "x": {f"k{j}": [f"v{i}" for i in range(1000)] for j in range(11)}}
        ),
        {codec.TOO_MANY_FEATURES},
        1,
    ),
    "null_value": (
        lambda r, n: _json({"id": f"h{n}", "x": {"f0": None}}),
        {codec.NON_NUMERIC_FEATURE},
        2,
    ),
    "too_many_features": (
        lambda r, n: msgpack.packb({"id": f"h{n}", "x": {f"{i:x}": 0 for i in range(10_001)}}),
        {codec.TOO_MANY_FEATURES},
        1,
    ),
    "long_name": (
        lambda r, n: _json({"id": f"h{n}", "x": {"n" * 300: 1.0}}),
        {codec.FEATURE_NAME_TOO_LONG},
        3,
    ),
    "long_id": (
        lambda r, n: _json({"id": "i" * 300 + str(n), "x": {"a": 1.0}}),
        {codec.ID_TOO_LONG},
        3,
    ),
    "oversized": (lambda r, n: b" " * 150_000 + _json({"id": n, "x": {}}), {codec.OVERSIZED}, 1),
    "tombstone": (lambda r, n: None, {codec.UNDECODABLE}, 2),
    "not_a_map": (lambda r, n: _json([n, {"x": 1}]), {codec.NOT_A_MAP}, 2),
    "missing_id": (lambda r, n: _json({"x": {"a": 1.0}}), {codec.MISSING_ID}, 2),
    "bool_label_text": (
        lambda r, n: _json({"id": f"h{n}", "x": {"a": 1.0}, "y": "yes"}),
        {codec.INVALID_LABEL},
        2,
    ),
    "random_bytes": (_random_bytes, set(codec.REASONS) - {codec.PROCESSING_ERROR}, 20),
}

EXPECTED = {name: reasons for name, (_, reasons, _) in HOSTILE.items()}


def good_events(n: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``n`` labeled synthetic events, msgpack and JSON alternating."""
    out = []
    for i, (_, x, y) in enumerate(itertools.islice(SyntheticStream(seed=seed), n)):
        event_id = f"g-{i}"
        value = codec.encode(codec.event_to_map(event_id, x, y, None), ("msgpack", "json")[i % 2])
        out.append((event_id.encode(), value))
    return out


def mixed(good: list[tuple[bytes, bytes]], n_hostile: int, seed: int = 5) -> Iterator[tuple]:
    """The good events in their order, with ``n_hostile`` hostile records spread among
    them at random places: (key, value) pairs."""
    rng = random.Random(seed)
    names = list(HOSTILE)
    weights = [HOSTILE[name][2] for name in names]
    # Every class at least once, then by weight.
    classes = names + rng.choices(names, weights, k=max(0, n_hostile - len(names)))
    rng.shuffle(classes)
    slots = sorted(rng.randrange(len(good) + 1) for _ in classes)
    g = 0
    for n, (slot, name) in enumerate(zip(slots, classes, strict=True)):
        while g < slot:
            yield good[g]
            g += 1
        yield f"h-{name}-{n}".encode(), HOSTILE[name][0](rng, n)
    yield from good[g:]


def hostile_class(key: bytes) -> str:
    return key.decode().split("-")[1]


def produce_independently(bootstrap: str, topic: str, records: Iterator[tuple]) -> int:
    """Write (key, value) pairs with confluent-kafka's own Producer: another client
    than ours, as a user's would be. Returns how many were acknowledged."""
    from confluent_kafka import Producer

    acked, failed = [0], []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked[0] += 1

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "message.max.bytes": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_000_000,
        }
    )
    for key, value in records:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        producer.poll(0)
    producer.flush(120)
    assert not failed, failed[:5]
    return acked[0]
