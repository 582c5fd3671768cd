"""The decoder is total: for any bytes it returns a valid event or a reason, never raises else.

Hypothesis feeds it arbitrary bytes, arbitrary JSON and msgpack trees, event-shaped
maps with hostile fields, deep nesting, big and special numbers, odd key types,
extension types, invalid UTF-8 and lone surrogates. Whatever comes out as an
event must be safe for everything downstream: its prediction encodes in both
encodings, and the model can score and learn it without becoming non-finite.
"""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import EventLimits, ModelSettings
from stream.errors import BadEvent
from stream.events import codec
from stream.model.online import OnlineModel

# Hypothesis warns when a strategy's repr is large (the nested event strategies are).
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

LIMITS = EventLimits(
    max_event_bytes=20_000, max_features=50, max_depth=8, max_value_chars=260, max_list_values=20
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_checked(value: bytes | None, limits: EventLimits = LIMITS) -> codec.Event | None:
    """Decode; assert the outcome is an event that meets the contract or a known reason."""
    try:
        event = codec.decode_event(value, limits)
    except BadEvent as exc:
        assert exc.reason in codec.REASONS
        assert exc.message
        assert len(exc.message) < 2000  # bounded, whatever the input
        exc.message.encode("utf-8", "backslashreplace")
        return None
    assert_valid(event, limits)
    return event


def assert_valid(event: codec.Event, limits: EventLimits) -> None:
    assert type(event.id) in (str, int)
    if type(event.id) is str:
        assert len(event.id) <= limits.max_id_chars
    assert len(event.x) <= limits.max_features
    for name, value in event.x.items():
        # A categorical feature is ``name=value``: both parts within their limits.
        longest = limits.max_feature_name_chars + 1 + limits.max_value_chars
        assert type(name) is str and len(name) <= longest
        assert type(value) is float and abs(value) <= limits.max_abs_feature
        name.encode()  # valid Unicode: it can be a model key in every encoding
    assert event.y in (None, True, False)
    assert event.ts is None or math.isfinite(event.ts)
    prediction = {"id": event.id, "p": 0.5, "ts_event": event.ts, "x": event.x}
    for encoding in ("msgpack", "json"):
        codec.encode(prediction, encoding)


# -- building blocks ----------------------------------------------------------------

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.text(alphabet=st.characters() | surrogates, max_size=12)
utf8_texts = st.text(max_size=12)  # msgpack cannot carry a lone surrogate
big_ints = st.integers(min_value=-(10**400), max_value=10**400)
msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e308, -1e308, 1e150, -1e150, 1.0000001e150, 5e-324, -0.0]
)
json_scalars = st.none() | st.booleans() | big_ints | floats | texts
msgpack_scalars = (
    st.none()
    | st.booleans()
    | msgpack_ints
    | floats
    | utf8_texts
    | st.binary(max_size=8)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
json_trees = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=30,
)
msgpack_keys = msgpack_scalars.filter(lambda k: not isinstance(k, float) or not math.isnan(k))
msgpack_trees = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(msgpack_keys, inner, max_size=4),
    max_leaves=30,
)


def event_maps(scalars, trees, keys, ints, strings):
    """Maps shaped like events, each field possibly hostile, so validation runs deep."""
    ids = st.one_of(
        st.integers(-5, 5), strings, st.text(min_size=250, max_size=300), scalars, trees
    )
    categorical = st.one_of(
        strings,
        st.text(min_size=250, max_size=300),
        st.lists(strings, max_size=6),
        st.lists(st.one_of(strings, scalars, trees), max_size=4),  # non-strings, nested lists
        st.lists(
            st.just("t"), min_size=LIMITS.max_list_values, max_size=LIMITS.max_list_values + 2
        ),
    )
    feature_values = st.one_of(floats, ints, scalars, trees, categorical)
    xs = st.one_of(
        st.dictionaries(st.text(max_size=5), floats, max_size=10),
        st.dictionaries(keys, feature_values, max_size=10),
        st.dictionaries(st.text(min_size=250, max_size=300), floats, max_size=2),
        trees,
    )
    fields = {
        "id": ids,
        "x": xs,
        "y": st.one_of(st.sampled_from([0, 1, True, False, 0.0, 1.0, 2, 0.5]), scalars),
        "ts": st.one_of(ints, floats, scalars),
        "extra": trees,
    }
    return st.fixed_dictionaries({}, optional=fields)


def to_json(obj) -> bytes:
    # ensure_ascii=False + surrogatepass: lone surrogates come out as invalid UTF-8 too.
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def to_json_ascii(obj) -> bytes:
    return json.dumps(obj).encode()


def json_safe(obj) -> bool:
    try:
        json.dumps(obj)
    except (TypeError, ValueError):
        return False
    return True


# -- properties -------------------------------------------------------------------


@FAST
@given(st.binary(max_size=3000))
def test_any_bytes_give_an_event_or_a_reason(value):
    decode_checked(value)


@FAST
@given(
    st.binary(max_size=200).map(lambda b: b"\x82" + b)
    | st.binary(max_size=200).map(lambda b: b"{" + b)
)
def test_bytes_that_look_like_a_map_give_an_event_or_a_reason(value):
    decode_checked(value)


@FAST
@given(json_trees)
def test_any_json_tree_gives_an_event_or_a_reason(tree):
    decode_checked(to_json(tree))
    decode_checked(to_json_ascii(tree))


@FAST
@given(msgpack_trees)
def test_any_msgpack_tree_gives_an_event_or_a_reason(tree):
    decode_checked(msgpack.packb(tree, use_bin_type=True))


@FAST
@given(event_maps(json_scalars, json_trees, texts, big_ints, texts))
def test_event_shaped_json_gives_an_event_or_a_reason(obj):
    decode_checked(to_json(obj))
    decode_checked(to_json_ascii(obj))


@FAST
@given(event_maps(msgpack_scalars, msgpack_trees, msgpack_keys, msgpack_ints, utf8_texts))
def test_event_shaped_msgpack_gives_an_event_or_a_reason(obj):
    decode_checked(msgpack.packb(obj, use_bin_type=True))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(LIMITS.max_depth + 1, 20_000),
    st.sampled_from([b"[", b"{", b'{"a":', b'{"id":1,"x":', b"\x91", b"\x81\x00"]),
    st.booleans(),
)
def test_deep_nesting_is_too_deep_or_undecodable_never_a_crash(depth, opener, closed):
    limits = EventLimits(max_event_bytes=200_000, max_depth=LIMITS.max_depth)
    closer = {b"[": b"]", b"\x91": b"", b"\x81\x00": b""}.get(opener, b"}")
    value = opener * depth + (b"0" + closer * depth if closed else b"")
    event = decode_checked(value, limits)
    assert event is None


def test_deep_nesting_names_its_reason():
    deep_msgpack = b"\x81\xa1x" + b"\x91" * 90_000 + b"\x00"  # {"x": [[[...]]]}
    for value in (b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, deep_msgpack):
        try:
            codec.decode_event(value, EventLimits(max_event_bytes=1_000_000))
        except BadEvent as exc:
            assert exc.reason == codec.TOO_DEEP, exc
        else:
            raise AssertionError("a deep record was accepted")


@FAST
@given(st.one_of(big_ints, floats, st.sampled_from(["1e999", "-1e999", "1E-400", "-0"])))
def test_big_and_special_numbers_in_every_field(number):
    text = number if isinstance(number, str) else json.dumps(number)
    for template in (
        '{"id": 1, "x": {"a": %s}}',
        '{"id": %s, "x": {"a": 1.0}}',
        '{"id": 1, "x": {"a": 1.0}, "ts": %s}',
        '{"id": 1, "x": {"a": 1.0}, "y": %s}',
    ):
        decode_checked((template % text).encode())
    if isinstance(number, float) or (isinstance(number, int) and -(2**63) <= number < 2**64):
        for obj in (
            {"id": 1, "x": {"a": number}},
            {"id": number, "x": {}},
            {"id": 1, "x": {}, "ts": number},
        ):
            decode_checked(msgpack.packb(obj))


def one_hot(x: dict) -> dict[str, float] | None:
    """The contract's categorical rule, written out plainly: numbers as they are,
    ``name=value`` 1.0 per string (a list's repeats once); None if two entries
    make the same feature."""
    out: dict[str, float] = {}
    for name, value in x.items():
        if isinstance(value, str | list):
            for item in dict.fromkeys([value] if isinstance(value, str) else value):
                if f"{name}={item}" in out:
                    return None
                out[f"{name}={item}"] = 1.0
        else:
            if name in out:
                return None
            out[name] = float(value)
    return out


small_texts = st.text(alphabet="ab=", max_size=3) | st.text(max_size=4)
categorical_xs = st.dictionaries(
    small_texts,
    st.one_of(
        st.floats(-1e6, 1e6),
        st.integers(-5, 5),
        small_texts,
        st.lists(small_texts, max_size=5),
    ),
    max_size=8,
)


@FAST
@given(categorical_xs, st.sampled_from(["msgpack", "json"]))
def test_categorical_x_decodes_to_its_one_hot_features_or_a_duplicate(x, encoding):
    expected = one_hot(x)
    try:
        event = codec.decode_event(codec.encode({"id": 1, "x": x}, encoding), LIMITS)
    except BadEvent as exc:
        if expected is not None and len(expected) > LIMITS.max_features:
            assert exc.reason == codec.TOO_MANY_FEATURES
        else:
            assert (exc.reason, expected) == (codec.DUPLICATE_FEATURE, None)
        return
    assert list(event.x.items()) == list(expected.items())


@FAST
@given(
    st.text(max_size=3),
    st.lists(st.one_of(texts, json_scalars, json_trees), min_size=1, max_size=5),
)
def test_a_list_holding_anything_but_strings_names_the_value(name, items):
    """Non-strings, nested lists and maps in a list: invalid_list, naming the item."""
    event_id = "e"
    try:
        x = codec.features({name: items}, event_id, LIMITS)
    except BadEvent as exc:
        assert exc.reason in codec.REASONS
        first_bad = next((i for i, v in enumerate(items) if type(v) is not str), None)
        if exc.reason == codec.INVALID_LIST:
            assert f"holds {codec.show(items[first_bad])} at index {first_bad}" in exc.message
        else:  # a string before the first non-string broke its own rule
            assert exc.reason in (codec.INVALID_FEATURES, codec.VALUE_TOO_LONG)
        return
    assert all(type(v) is str for v in items)
    assert set(x) == {f"{name}={v}" for v in items}


MODELS = [
    ModelSettings(),
    ModelSettings(scale=False),
    ModelSettings(optimizer="ftrl"),
    ModelSettings(optimizer="ftrl", scale=False),
    ModelSettings(l2=0.01, learning_rate=1.0),
]

extreme = st.sampled_from([1e150, -1e150, 1e149, -3e140, 1e-300, 0.0, 5.0, -2.0])
extreme_events = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), extreme | floats, max_size=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS), extreme_events)
def test_decoded_events_never_make_the_model_non_finite(model_settings, events):
    """Whatever passes the decoder, scoring gives a probability and learning keeps
    every number of the model finite (a step that would not is refused)."""
    model = OnlineModel(model_settings, max_abs_weight=1e12)
    for x, y in events:
        event = decode_checked(msgpack.packb({"id": 1, "x": x, "y": int(y)}))
        if event is None:
            continue
        p = model.predict_proba(event.x)
        assert 0.0 <= p <= 1.0
        model.learn(event.x, event.y)
        state = model.state()
        numbers = [state.intercept]
        for part in (
            state.weights,
            state.scaler_means,
            state.scaler_vars,
            state.ftrl_z,
            state.ftrl_n,
        ):
            numbers.extend(part.values())
        assert all(math.isfinite(v) for v in numbers), state
        assert all(abs(w) <= 1e12 for w in state.weights.values())
