"""The batch decoder's verdict on every record is the general decoder's.

Whatever the record (the usual msgpack map, JSON, odd types, NaN, repeated or
non-UTF-8 names, categorical strings and lists, lists holding non-strings,
truncated or padded bytes, tombstones, oversized), the batch
decoder yields the same event (same id, same features in the same order, same
label, timestamp and encoding) or the same dead-letter reason.
"""

from __future__ import annotations

import json

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import EventLimits
from stream.errors import BadEvent
from stream.events.batch import BatchDecoder, packer
from stream.events.codec import decode_event, encode
from stream.events.hashing import Hasher, slot

LIMITS = EventLimits(max_event_bytes=2000, max_value_chars=4, max_list_values=3)
NAMES = ["a", "b", "c", "ü", "long_feature_name_" * 3]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32),
    st.integers(-(2**64), 2**64 - 1),
)
odd = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.binary(max_size=3))
# Categorical values, within the limits and beyond (too long, too many, not strings).
categorical = st.one_of(
    st.text(max_size=6),
    st.lists(st.text(alphabet="ab=ü", max_size=5), max_size=4),
    st.lists(
        st.one_of(st.text(max_size=2), st.floats(), st.lists(st.text(max_size=1))), max_size=3
    ),
)
names = st.one_of(
    st.sampled_from(NAMES), st.text(max_size=5), st.integers(0, 3), st.binary(max_size=2)
)
features = st.one_of(
    st.dictionaries(st.sampled_from(NAMES), st.floats(-1e300, 1e300), max_size=5),
    st.dictionaries(st.sampled_from(NAMES), st.integers(-(2**63), 2**63 - 1), max_size=5),
    st.dictionaries(names, st.one_of(numbers, odd), max_size=5),
    st.dictionaries(st.sampled_from([*NAMES, "a=b"]), st.one_of(numbers, categorical), max_size=5),
    odd,
    st.lists(st.floats(), max_size=2),
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=6), odd, st.floats()),
        "x": features,
        "y": st.one_of(st.sampled_from([0, 1, True, False, 0.0, 1.0, 2, -1, None, "1"]), odd),
        "ts": st.one_of(numbers, odd),
        "extra": odd,
    },
)


usual = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=6)),
        "x": st.dictionaries(
            st.sampled_from(NAMES),
            st.one_of(
                st.floats(-1e300, 1e300),
                st.integers(-(2**64), 2**64 - 1),
                st.sampled_from([float("nan"), float("inf"), True, None]),
                categorical,
            ),
            max_size=5,
        ),
    },
    optional={
        "y": st.sampled_from([0, 1, True, False, None, 1.0]),
        "ts": st.one_of(st.floats(), st.integers(-(2**63), 2**63), st.none()),
    },
)


@st.composite
def records(draw) -> bytes | None:
    kind = draw(
        st.sampled_from(["usual"] * 8 + ["msgpack"] * 4 + ["json", "bytes", "none", "mangled"])
    )
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    obj = draw(usual if kind == "usual" else fields)
    keys = draw(st.permutations(list(obj)))
    obj = {k: obj[k] for k in keys}
    if kind == "json":
        try:
            return json.dumps(obj).encode()
        except (TypeError, ValueError):
            return b"{}"
    single = draw(st.booleans())
    try:
        value = msgpack.packb(obj, use_bin_type=True, use_single_float=single)
    except (OverflowError, TypeError, ValueError):
        return b"\x80"
    if kind == "mangled":
        cut = draw(st.integers(0, len(value)))
        value = value[:cut] + draw(st.binary(max_size=3))
    return value


def general_verdicts(values, limits: EventLimits = LIMITS, hasher: Hasher | None = None):
    """What the general (per-event) decoder makes of each value: the verdict
    the batch decoder must match, features through ``hasher`` when given."""
    out = []
    for value in values:
        try:
            e = decode_event(value, limits)
        except BadEvent as exc:
            out.append(("dead", exc.reason))
        else:
            x = e.x if hasher is None else hasher(e.x)
            out.append(("event", e.id, list(x.items()), e.y, e.ts, e.encoding))
    return out


def batch_verdicts(decoder: BatchDecoder, names_of: list[str], values):
    decoded = decoder.decode(values)
    out: list = [None] * len(values)
    for r, exc in decoded.errors:
        out[r] = ("dead", exc.reason)
    labels = decoded.labels.tolist()
    for i, r in enumerate(decoded.positions):
        a, b = decoded.offsets[i], decoded.offsets[i + 1]
        x = [
            (names_of[c], v)
            for c, v in zip(
                decoded.columns[a:b].tolist(), decoded.values[a:b].tolist(), strict=True
            )
        ]
        y = None if labels[i] < 0 else bool(labels[i])
        out[r] = ("event", decoded.ids[i], x, y, decoded.ts[i], decoded.encodings[i])
    return out


def new_decoder(limits: EventLimits = LIMITS) -> tuple[BatchDecoder, list[str]]:
    names_of: list[str] = []
    columns: dict[str, int] = {}

    def column(name: str) -> int:
        if name not in columns:
            columns[name] = len(names_of)
            names_of.append(name)
        return columns[name]

    return BatchDecoder(column, limits), names_of


@settings(max_examples=400, deadline=None)
@given(st.lists(records(), max_size=12))
def test_any_batch_gets_the_general_decoders_verdicts(values) -> None:
    decoder, names_of = new_decoder()
    assert batch_verdicts(decoder, names_of, values) == general_verdicts(values)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(records(), max_size=6), max_size=4))
def test_verdicts_hold_across_batches(batches) -> None:
    """Layouts are remembered between batches; that changes no verdict."""
    decoder, names_of = new_decoder()
    for values in batches:
        assert batch_verdicts(decoder, names_of, values) == general_verdicts(values)


def test_usual_records_take_the_fast_path_and_equal_the_general_decoder() -> None:
    rng = np.random.default_rng(0)
    values = []
    for i in range(500):
        x = {f"f{j}": float(v) for j, v in enumerate(rng.normal(size=10))}
        if i % 100 == 7:
            x["new"] = 3  # a layout change, an int value
        obj = {"id": f"e-{i}" if i % 2 else i, "x": x}
        if i % 3:
            obj["y"] = i % 2
        if i % 5:
            obj["ts"] = 1.7e9 + i
        values.append(encode(obj, "msgpack"))
    values[250] = b"\x81\xa2id\x01"  # missing x: dead-lettered by the general decoder
    decoder, names_of = new_decoder()
    assert batch_verdicts(decoder, names_of, values) == general_verdicts(values)
    assert decoder.n_fast == 499
    assert decoder.n_general == 1
    assert names_of == [f"f{j}" for j in range(10)] + ["new"]


def test_categorical_records_take_the_scanner_and_equal_the_general_decoder() -> None:
    """Strings and lists of strings are parsed by the compiled scanner (their
    features resolved per record, not per layout); a list holding anything but
    strings is the general decoder's to judge."""
    values = [
        encode({"id": 1, "x": {"a": 1.0}, "y": 1}, "msgpack"),
        encode({"id": 2, "x": {"a": 2.0, "site": "s1", "tags": ["t", "u"]}, "y": 0}, "msgpack"),
        encode({"id": 3, "x": {"a": 3.0}}, "msgpack"),
        encode({"id": 4, "x": {"tags": ["t", 5]}}, "msgpack"),
        encode({"id": 5, "x": {"a": 2.0, "site": "s2", "tags": []}}, "msgpack"),
    ]
    decoder, names_of = new_decoder()
    assert batch_verdicts(decoder, names_of, values) == [
        ("event", 1, [("a", 1.0)], True, None, "msgpack"),
        ("event", 2, [("a", 2.0), ("site=s1", 1.0), ("tags=t", 1.0), ("tags=u", 1.0)], False,
         None, "msgpack"),
        ("event", 3, [("a", 3.0)], None, None, "msgpack"),
        ("dead", "invalid_list"),
        ("event", 5, [("a", 2.0), ("site=s2", 1.0)], None, None, "msgpack"),
    ]  # fmt: skip
    assert (decoder.n_fast, decoder.n_general) == (4, 1)


def _replace(value: bytes, old: bytes, new: bytes) -> bytes:
    assert value.count(old) == 1
    return value.replace(old, new)


CATEGORICAL_EDGES = [
    # not UTF-8 in a value, in a list item, in the name of an empty list
    _replace(encode({"id": 1, "x": {"a": "\u00e9"}}, "msgpack"), b"\xc3\xa9", b"\xc3\x28"),
    _replace(encode({"id": 1, "x": {"a": ["ok", "\u00e9"]}}, "msgpack"), b"\xc3\xa9", b"\xff\xfe"),
    _replace(encode({"id": 1, "x": {"\u00e9": [], "b": "c"}}, "msgpack"), b"\xc3\xa9", b"\xc3\x28"),
    # a lone surrogate, as UTF-8 would spell it
    _replace(
        encode({"id": 1, "x": {"a": "\u00e9\u00e9"}}, "msgpack"),
        b"\xc3\xa9\xc3\xa9",
        b"a\xed\xa0\x80",
    ),
    # repeated map keys: the last one wins in the general decoder
    b"\x82\xa2id\x01\xa1x\x82\xa1t\x91\xa1a\xa1t\x90",
    b"\x82\xa2id\x01\xa1x\x82\xa1t\x90\xa1t\xa1a",
    b"\x82\xa2id\x01\xa1x\x82\xa1t\xa1a\xa1t\xcb" + b"\x3f\xf0" + b"\x00" * 6,
    # a repeated list item (one feature), a name=value key beside its string
    encode({"id": 1, "x": {"q": ["new", "york", "new"]}}, "msgpack"),
    encode({"id": 1, "x": {"a": "b", "a=b": 1.0}}, "msgpack"),
    encode({"id": 1, "x": {"a": "b=c", "a=b": "c"}}, "msgpack"),
    # limits: too long a value, too long a list, too many features once one-hot
    encode({"id": 1, "x": {"a": "abcde"}}, "msgpack"),
    encode({"id": 1, "x": {"a": ["a", "b", "c", "d"]}}, "msgpack"),
    encode({"id": 1, "x": {f"k{i}": ["a", "b", "c"] for i in range(3500)}}, "msgpack"),
    # str8, str16 values; a bin value; an empty string; a list of 16 (array 16)
    encode({"id": 1, "x": {"a": "v" * 4, "b": ""}}, "msgpack"),
    msgpack.packb({"id": 1, "x": {"a": b"v"}}, use_bin_type=True),
]


def test_categorical_edges_get_the_general_decoders_verdicts() -> None:
    limits = EventLimits(max_event_bytes=50_000, max_value_chars=4, max_list_values=3)
    for values in ([v] for v in CATEGORICAL_EDGES):
        decoder, names_of = new_decoder(limits)
        general = general_verdicts(values, limits)
        assert batch_verdicts(decoder, names_of, values) == general, values


def test_packer_bytes_equal_encode() -> None:
    pack = packer()
    obj = {"id": "e-1", "p": 0.25, "y_pred": 0, "model_version": 3, "worker": "w"}
    assert pack(obj) == encode(obj, "msgpack")
    assert pack(obj) == encode(obj, "msgpack")  # reused


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), max_size=12), st.sampled_from([1, 3, 8, 20]))
def test_hashed_batches_get_the_general_decoders_verdicts_in_slots(values, bits) -> None:
    """With --hash-bits: the same events, their features in the same slots with
    the same sums (the compiled MurmurHash3 of a categorical record's keys is
    mmh3's), and the same count of features that shared a slot in an event."""
    decoder_hasher, general_hasher = Hasher(bits), Hasher(bits)
    decoder = BatchDecoder(int, LIMITS, decoder_hasher)  # a hashed kernel's columns
    slot_names = [str(i) for i in range(2**bits)]
    want = general_verdicts(values, hasher=general_hasher)
    assert batch_verdicts(decoder, slot_names, values) == want
    assert decoder_hasher.in_event_collisions == general_hasher.in_event_collisions


def test_hashed_categorical_records_take_the_compiled_path() -> None:
    values = [
        encode({"id": i, "x": {"site": f"s{i}", "tags": ["a", "b=c", "ü"], "n": 1.5}}, "msgpack")
        for i in range(50)
    ]
    hasher = Hasher(20)
    decoder = BatchDecoder(int, LIMITS, hasher)
    got = batch_verdicts(decoder, [str(i) for i in range(2**20)], values)
    assert got == general_verdicts(values, hasher=Hasher(20))
    assert (decoder.n_fast, decoder.n_general) == (50, 0)
    assert got[7][2][0] == (str(slot("site=s7", 20)), 1.0)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(
    st.binary(max_size=12)
    | st.text(max_size=6).map(str.encode)
    | st.lists(
        st.sampled_from(
            [
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\xc0\xaf",
                b"\xe0\x80",
                b"\xf0\x9f\x98\x80",
                b"\xef\xbf\xbf",
                b"a",
                b"\xc3",
            ]
        ),
        max_size=4,
    ).map(b"".join)
)
def test_the_compiled_utf8_check_is_pythons(data: bytes) -> None:
    """Surrogates, overlong forms, beyond U+10FFFF, cut sequences: refused alike."""
    from stream.events.batch import _utf8_ok

    padded = np.frombuffer(b"\xc3" + data + b"\xa9", np.uint8)  # bytes around: not read
    assert _utf8_ok(padded, 1, 1 + len(data)) == _decodes(data)
