"""Decoding a whole batch of records at once, for the compiled model.

The general decoder (:func:`stream.events.codec.decode_event`) builds a dict per
event and per ``x``: 1-2 us per event at 10 features, 5-7 us at 50, several
times the model's cost once the model is compiled. Here the usual record (a
msgpack map ``{"id", "x", "y"?, "ts"?}`` with float or int features) is parsed
by a compiled scanner over the batch's bytes; feature values go straight into
the flat arrays the kernel reads, and feature names are turned into columns
once per *layout* (a run of records whose names, in order, repeat the previous
record's), not once per event.

Categorical values (a string, or an array of strings) are scanned too: a
record holding one has no layout, and its ``name=value`` keys are resolved for
the whole batch at once, through a bounded cache keyed by their bytes.

Anything the scanner is not sure about (JSON, tombstones, oversized, other
keys, duplicate keys, booleans, NaN, uint64, str8-encoded keys, names or values
that are not UTF-8 or repeat, lists holding anything but strings or a string
twice, features sharing a hashed slot, anything truncated or with extra
bytes...) is handed to the general decoder, in exactly one place
(:meth:`BatchDecoder._general`), so every verdict, dead-letter reason
included, is the general decoder's own.
tests/unit/test_batch_decoder.py checks that with Hypothesis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np

from stream.config import Encoding, EventLimits
from stream.errors import BadEvent
from stream.events.codec import DEFAULT_LIMITS, TS_MAX, TS_MIN, decode_event
from stream.events.hashing import Hasher

try:
    import numba
except ImportError:  # pragma: no cover - numba is a default dependency
    numba = None

# Scanner verdicts per record.
_FAST, _DEFER = 0, 1
# Layouts remembered across batches (each costs its names and columns).
_MAX_LAYOUTS = 4096
# Categorical feature keys (name=value bytes) remembered with their columns.
_MAX_CACHED_KEYS = 1 << 17


def _str_header(buf, p, end):
    """(length, position of the first byte) of a msgpack str at ``p``, or (-1, p)."""
    if p >= end:
        return -1, p
    b = np.int64(buf[p])
    if 0xA0 <= b <= 0xBF:
        return b & 0x1F, p + 1
    if b == 0xD9 and p + 1 < end:
        return np.int64(buf[p + 1]), p + 2
    if b == 0xDA and p + 2 < end:
        return (np.int64(buf[p + 1]) << 8) | np.int64(buf[p + 2]), p + 3
    return np.int64(-1), p


def _uint(buf, p, n):
    u = np.uint64(0)
    for i in range(n):
        u = (u << np.uint64(8)) | np.uint64(buf[p + i])
    return u


def _number(buf, p, end, u64, f64, u32, f32):
    """(ok, value, next position) for a msgpack int or float at ``p``.

    uint64 is refused (a Python int beyond int64 would need care to convert).
    """
    if p >= end:
        return False, 0.0, p
    b = np.int64(buf[p])
    if b <= 0x7F:
        return True, float(b), p + 1
    if b >= 0xE0:
        return True, float(np.int64(b) - 256), p + 1
    if b == 0xCB and p + 9 <= end:
        u64[0] = _uint(buf, p + 1, 8)
        return True, f64[0], p + 9
    if b == 0xCA and p + 5 <= end:
        u32[0] = np.uint32(_uint(buf, p + 1, 4))
        return True, np.float64(f32[0]), p + 5
    if 0xCC <= b <= 0xCE:
        n = 1 << (b - 0xCC)
        if p + 1 + n <= end:
            return True, float(_uint(buf, p + 1, n)), p + 1 + n
        return False, 0.0, p
    if 0xD0 <= b <= 0xD3:
        n = 1 << (b - 0xD0)
        if p + 1 + n <= end:
            u = _uint(buf, p + 1, n)
            bits = 8 * n
            v = np.int64(u)
            if bits < 64 and (u >> np.uint64(bits - 1)) & np.uint64(1):
                v = np.int64(u) - (np.int64(1) << np.int64(bits))
            return True, float(v), p + 1 + n
    return False, 0.0, p


def _int_id(buf, p, end):
    """(ok, value, next position) for a msgpack integer id (not uint64 > int64)."""
    if p >= end:
        return False, np.int64(0), p
    b = np.int64(buf[p])
    if b <= 0x7F:
        return True, np.int64(b), p + 1
    if b >= 0xE0:
        return True, np.int64(b) - 256, p + 1
    if 0xCC <= b <= 0xCF:
        n = 1 << (b - 0xCC)
        if p + 1 + n <= end:
            u = _uint(buf, p + 1, n)
            if u <= np.uint64(0x7FFFFFFFFFFFFFFF):
                return True, np.int64(u), p + 1 + n
        return False, np.int64(0), p
    if 0xD0 <= b <= 0xD3:
        n = 1 << (b - 0xD0)
        if p + 1 + n <= end:
            u = _uint(buf, p + 1, n)
            bits = 8 * n
            v = np.int64(u)
            if bits < 64 and (u >> np.uint64(bits - 1)) & np.uint64(1):
                v = np.int64(u) - (np.int64(1) << np.int64(bits))
            return True, v, p + 1 + n
    return False, np.int64(0), p


def _scan(
    buf,
    starts,
    ends,
    status,
    id_kind,
    id_int,
    id_a,
    id_b,
    label,
    ts,
    feat_off,
    name_a,
    name_b,
    values,
    same_layout,
    cat,
    value_a,
    value_b,
    entry_a,
    entry_b,
    entry_off,
    u64,
    f64,
    u32,
    f32,
    max_features,
    max_name_bytes,
    max_id_bytes,
    max_abs,
    ts_min,
    ts_max,
    max_value_bytes,
    max_list,
):
    """Parse the usual records; mark every other one _DEFER. Fills the outputs.

    A record near any of the decoder's limits (feature count, name, value and
    id length in bytes, which bound the length in characters from above,
    feature range, event time range, list length) is deferred too: the general
    decoder rules on it.

    Categorical values (a str, or an array of str) are taken as features of
    value 1.0 whose value bytes are ``value_a/value_b`` (-1 for a number);
    such a record is marked ``cat`` and has no layout (its names differ from
    event to event). ``entry_a/entry_b`` are the spans of the names of the x
    map's entries (one per entry, a list's included), from ``entry_off[r]``:
    whether two entries repeat a name is checked once names are decoded. A
    list holding a repeated string is deferred (the general decoder keeps one).
    ``max_list`` < 0: lists are deeper than the nesting limit allows, deferred."""
    nf = 0
    ne = 0
    prev = -1  # the last record taken, for layout comparison
    for r in range(starts.shape[0]):
        p = starts[r]
        end = ends[r]
        feat_off[r] = nf
        entry_off[r] = ne
        status[r] = _DEFER
        same_layout[r] = 0
        cat[r] = 0
        if p >= end:
            continue
        b = np.int64(buf[p])
        if b < 0x82 or b > 0x84:  # fixmap of 2 to 4 entries: id, x, y?, ts?
            continue
        entries = b & 0x0F
        p += 1
        seen = 0
        ok = True
        first = nf
        label[r] = -1
        ts[r] = math.nan
        for _ in range(entries):
            if p + 2 > end:
                ok = False
                break
            k0 = np.int64(buf[p])
            k1 = np.int64(buf[p + 1])
            if k0 == 0xA2 and p + 3 <= end and k1 == 0x69 and buf[p + 2] == 0x64:  # "id"
                if seen & 1:
                    ok = False
                    break
                seen |= 1
                p += 3
                n, q = _str_header(buf, p, end)
                if n >= 0:
                    if q + n > end or n > max_id_bytes:
                        ok = False
                        break
                    id_kind[r] = 1
                    id_a[r] = q
                    id_b[r] = q + n
                    p = q + n
                else:
                    good, v, p = _int_id(buf, p, end)
                    if not good:
                        ok = False
                        break
                    id_kind[r] = 0
                    id_int[r] = v
            elif k0 == 0xA1 and k1 == 0x78:  # "x"
                if seen & 2:
                    ok = False
                    break
                seen |= 2
                p += 2
                if p >= end:
                    ok = False
                    break
                h = np.int64(buf[p])
                if 0x80 <= h <= 0x8F:
                    count = h & 0x0F
                    p += 1
                elif h == 0xDE and p + 3 <= end:
                    count = (np.int64(buf[p + 1]) << 8) | np.int64(buf[p + 2])
                    p += 3
                else:
                    ok = False
                    break
                if nf + count > values.shape[0] or count > max_features:
                    ok = False
                    break
                for _f in range(count):
                    n, q = _str_header(buf, p, end)
                    if n < 0 or q + n > end or n > max_name_bytes:
                        ok = False
                        break
                    entry_a[ne] = q
                    entry_b[ne] = q + n
                    ne += 1
                    p = q + n
                    m, v0 = _str_header(buf, p, end)
                    if m >= 0:  # a string: the feature name=value
                        if v0 + m > end or m > max_value_bytes or nf >= values.shape[0]:
                            ok = False
                            break
                        name_a[nf] = q
                        name_b[nf] = q + n
                        value_a[nf] = v0
                        value_b[nf] = v0 + m
                        values[nf] = 1.0
                        nf += 1
                        cat[r] = 1
                        p = v0 + m
                        continue
                    h = np.int64(buf[p]) if p < end else np.int64(0)
                    if 0x90 <= h <= 0x9F or (h == 0xDC and p + 3 <= end):
                        # A list of strings: one feature per string.
                        if h == 0xDC:
                            items = (np.int64(buf[p + 1]) << 8) | np.int64(buf[p + 2])
                            p += 3
                        else:
                            items = h & 0x0F
                            p += 1
                        if items > max_list:
                            ok = False
                            break
                        first_item = nf
                        for _i in range(items):
                            m, v0 = _str_header(buf, p, end)
                            if m < 0 or v0 + m > end or m > max_value_bytes:
                                ok = False
                                break
                            if nf >= values.shape[0]:
                                ok = False
                                break
                            for other in range(first_item, nf):  # a repeat: deferred
                                if value_b[other] - value_a[other] == m:
                                    dup = True
                                    for i in range(m):
                                        if buf[value_a[other] + i] != buf[v0 + i]:
                                            dup = False
                                            break
                                    if dup:
                                        ok = False
                                        break
                            if not ok:
                                break
                            name_a[nf] = q
                            name_b[nf] = q + n
                            value_a[nf] = v0
                            value_b[nf] = v0 + m
                            values[nf] = 1.0
                            nf += 1
                            p = v0 + m
                        if not ok:
                            break
                        cat[r] = 1
                        continue
                    name_a[nf] = q
                    name_b[nf] = q + n
                    value_a[nf] = -1
                    good, v, p = _number(buf, p, end, u64, f64, u32, f32)
                    if not good or not -max_abs <= v <= max_abs:  # NaN fails
                        ok = False
                        break
                    values[nf] = v
                    nf += 1
                if not ok or nf - first > max_features:
                    ok = False
                    break
            elif k0 == 0xA1 and k1 == 0x79:  # "y"
                if seen & 4:
                    ok = False
                    break
                seen |= 4
                p += 2
                if p >= end:
                    ok = False
                    break
                yb = np.int64(buf[p])
                if yb == 0x00 or yb == 0xC2:
                    label[r] = 0
                elif yb == 0x01 or yb == 0xC3:
                    label[r] = 1
                elif yb != 0xC0:  # nil: unlabeled
                    ok = False
                    break
                p += 1
            elif k0 == 0xA2 and p + 3 <= end and k1 == 0x74 and buf[p + 2] == 0x73:  # "ts"
                if seen & 8:
                    ok = False
                    break
                seen |= 8
                p += 3
                if p < end and buf[p] == 0xC0:
                    p += 1
                else:
                    good, v, p = _number(buf, p, end, u64, f64, u32, f32)
                    if not good or not ts_min <= v <= ts_max:  # NaN fails
                        ok = False
                        break
                    ts[r] = v
            else:
                ok = False
                break
        if not ok or p != end or (seen & 3) != 3:
            nf = first
            ne = entry_off[r]
            cat[r] = 0
            continue
        status[r] = _FAST
        if cat[r]:
            prev = -1  # no layout: the next record's names are resolved afresh
            continue
        # Same names, in the same order, as the last record taken?
        if prev >= 0:
            a0 = feat_off[prev]
            a1 = feat_off[prev + 1] if prev + 1 < r else first
            if a1 - a0 == nf - first:
                same = 1
                for f in range(nf - first):
                    x0 = name_a[a0 + f]
                    x1 = name_b[a0 + f]
                    y0 = name_a[first + f]
                    if name_b[first + f] - y0 != x1 - x0:
                        same = 0
                        break
                    for i in range(x1 - x0):
                        if buf[x0 + i] != buf[y0 + i]:
                            same = 0
                            break
                    if same == 0:
                        break
                same_layout[r] = same
        prev = r
    feat_off[starts.shape[0]] = nf
    entry_off[starts.shape[0]] = ne
    return nf


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The indices ``starts[i]:stops[i]`` for every i, concatenated; which i
    each index comes from; and the sizes."""
    sizes = stops - starts
    total = int(sizes.sum())
    owner = np.repeat(np.arange(len(sizes)), sizes)
    first = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=first[1:])
    index = np.repeat(starts, sizes) + np.arange(total) - np.repeat(first[:-1], sizes)
    return index, owner, sizes


def _repeats_or_missing(owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per owner ``0..n-1``: whether two of its values are equal or one is -1."""
    bad = np.zeros(n, bool)
    if len(values):
        bad[owner[values < 0]] = True
        order = np.lexsort((values, owner))
        o, v = owner[order], values[order]
        same = (o[1:] == o[:-1]) & (v[1:] == v[:-1])
        bad[o[1:][same]] = True
    return bad


def _utf8_ok(buf, a, b):
    """Whether ``buf[a:b]`` is strict UTF-8 (what Python's decoder accepts: no
    overlong forms, no surrogates, nothing beyond U+10FFFF)."""
    i = a
    while i < b:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n = 1
            lo, hi = 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F  # D800-DFFF: surrogates
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if i + n >= b:  # its continuation bytes run past the end
            return False
        if not lo <= buf[i + 1] <= hi:
            return False
        for k in range(2, n + 1):
            if not 0x80 <= buf[i + k] <= 0xBF:
                return False
        i += n + 1
    return True


def _key_byte(buf, na, nb, va, vb, i):
    """Byte ``i`` of the feature key: the name, or ``name=value`` when va >= 0."""
    n = nb - na
    if i < n:
        return np.uint64(buf[na + i])
    if i == n:
        return np.uint64(0x3D)  # "="
    return np.uint64(buf[va + i - n - 1])


_M32 = 0xFFFFFFFF


def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & np.uint64(_M32)


def _murmur3(buf, na, nb, va, vb):
    """MurmurHash3 x86 32-bit, seed 0, of the feature key's UTF-8 bytes (as
    :func:`stream.events.hashing.slot`; tests/unit/test_batch_decoder.py checks
    the two agree). 32-bit arithmetic in 64-bit integers, masked after each
    product (numba widens unsigned products)."""
    m = np.uint64(_M32)
    length = nb - na if va < 0 else nb - na + 1 + vb - va
    h = np.uint64(0)
    c1 = np.uint64(0xCC9E2D51)
    c2 = np.uint64(0x1B873593)
    blocks = length // 4
    for blk in range(blocks):
        i = 4 * blk
        k = (
            _key_byte(buf, na, nb, va, vb, i)
            | (_key_byte(buf, na, nb, va, vb, i + 1) << np.uint64(8))
            | (_key_byte(buf, na, nb, va, vb, i + 2) << np.uint64(16))
            | (_key_byte(buf, na, nb, va, vb, i + 3) << np.uint64(24))
        )
        k = _rotl32((k * c1) & m, 15)
        k = (k * c2) & m
        h = _rotl32(h ^ k, 13)
        h = (h * np.uint64(5) + np.uint64(0xE6546B64)) & m
    tail = length - 4 * blocks
    if tail > 0:
        k = np.uint64(0)
        for t in range(tail - 1, -1, -1):
            k = (k << np.uint64(8)) | _key_byte(buf, na, nb, va, vb, 4 * blocks + t)
        k = _rotl32((k * c1) & m, 15)
        k = (k * c2) & m
        h = h ^ k
    h = h ^ np.uint64(length)
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & m
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & m
    h = h ^ (h >> np.uint64(16))
    return h


def _hash_categorical(
    buf, status, cat, feat_off, name_a, name_b, value_a, value_b, entry_a, entry_b, entry_off,
    slots, mask,
):  # fmt: skip
    """The slots of every taken categorical record's features, for a hashed
    model; a record is deferred (status _DEFER) if a name or value is not strict
    UTF-8, two entries share a name, or two features share a slot (which covers
    two features that are one, ``"a=b": 1`` beside ``"a": "b"``)."""
    for r in range(status.shape[0]):
        if status[r] != _FAST or cat[r] == 0:
            continue
        ok = True
        e0 = entry_off[r]
        e1 = entry_off[r + 1]
        for e in range(e0, e1):
            if not _utf8_ok(buf, entry_a[e], entry_b[e]):
                ok = False
                break
            for o in range(e0, e):
                if entry_b[o] - entry_a[o] == entry_b[e] - entry_a[e]:
                    same = True
                    for i in range(entry_b[e] - entry_a[e]):
                        if buf[entry_a[o] + i] != buf[entry_a[e] + i]:
                            same = False
                            break
                    if same:
                        ok = False
                        break
            if not ok:
                break
        a = feat_off[r]
        b = feat_off[r + 1]
        if ok:
            for f in range(a, b):
                if value_a[f] >= 0 and not _utf8_ok(buf, value_a[f], value_b[f]):
                    ok = False
                    break
                slots[f] = np.int64(
                    _murmur3(buf, name_a[f], name_b[f], value_a[f], value_b[f]) & np.uint64(mask)
                )
        if ok and b - a > 32:
            ordered = np.sort(slots[a:b])
            for i in range(1, b - a):
                if ordered[i] == ordered[i - 1]:
                    ok = False
                    break
        elif ok:  # few features: compared pairwise, no sort (no allocation)
            for i in range(a + 1, b):
                for j in range(a, i):
                    if slots[i] == slots[j]:
                        ok = False
                        break
                if not ok:
                    break
        if not ok:
            status[r] = _DEFER


def _fill_columns(status, layout_of, feat_off, layout_cols, layout_off, columns, slotted, slots):
    """Each taken record's columns: its layout's, or, for a record ``slotted``
    (hashed categorical), its own ``slots``."""
    for r in range(status.shape[0]):
        if status[r] != _FAST:
            continue
        if slotted[r]:
            for f in range(feat_off[r], feat_off[r + 1]):
                columns[f] = slots[f]
            continue
        a = layout_off[layout_of[r]]
        for f in range(feat_off[r + 1] - feat_off[r]):
            columns[feat_off[r] + f] = layout_cols[a + f]


if numba is not None:
    _jit = numba.njit(cache=True, nogil=True)
    _str_header = _jit(_str_header)
    _uint = _jit(_uint)
    _number = _jit(_number)
    _int_id = _jit(_int_id)
    _scan = _jit(_scan)
    _fill_columns = _jit(_fill_columns)
    _utf8_ok = _jit(_utf8_ok)
    _key_byte = _jit(_key_byte)
    _rotl32 = _jit(_rotl32)
    _murmur3 = _jit(_murmur3)
    _hash_categorical = _jit(_hash_categorical)


@dataclass
class DecodedBatch:
    """The events of a batch, in record order, ready for the kernel.

    ``positions[i]`` is the record (index in the batch) of event ``i``; its
    features are ``columns/values[offsets[i]:offsets[i+1]]``; ``labels[i]`` is
    -1 (unlabeled), 0 or 1; ``ts[i]`` is None when not given. ``errors`` holds
    ``(record index, BadEvent)`` for every record to dead-letter.
    """

    positions: list[int] = field(default_factory=list)
    ids: list[str | int] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    ts: list[float | None] = field(default_factory=list)
    encodings: list[Encoding] = field(default_factory=list)
    columns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    errors: list[tuple[int, BadEvent]] = field(default_factory=list)


class BatchDecoder:
    """Decode a batch of record values into :class:`DecodedBatch`.

    ``column`` gives a feature name its model column (the kernel's
    :meth:`~stream.model.kernel.KernelModel.column`); ``limits`` are the
    general decoder's (a record near any of them is deferred to it). With a
    ``hasher`` (a hashed model, whose column of a slot is the slot), a name's
    column is its slot's (computed by the compiled code for a categorical
    record): a record or layout whose
    names share a slot is deferred, and every event the general decoder
    returns goes through the hasher, which sums the values sharing a slot,
    exactly as the river path does.
    """

    def __init__(
        self, column: Callable[[str], int], limits: EventLimits, hasher: Hasher | None = None
    ) -> None:
        if numba is None:
            raise RuntimeError("numba is not importable; use the general decoder")
        # A name's column; the model's own ``column`` takes the hasher's keys.
        self._column = column if hasher is None else (lambda name: column(hasher.key(name)))
        last = hasher.n_slots - 1 if hasher is not None else 0
        if hasher is not None and (column("0"), column(str(last))) != (0, last):
            # The compiled code gives categorical features their slots as columns.
            raise ValueError("with a hasher, the model's column of a slot must be the slot")
        self._model_column = column
        self._hasher = hasher
        self.limits = limits
        self._layouts: dict[tuple[str, ...], np.ndarray | None] = {}
        self._key_columns: dict[bytes, int] = {}  # categorical records' feature keys
        self._entry_names: dict[bytes, int] = {}
        self._u64 = np.zeros(1, np.uint64)
        self._f64 = self._u64.view(np.float64)
        self._u32 = np.zeros(1, np.uint32)
        self._f32 = self._u32.view(np.float32)
        self.n_fast = 0
        self.n_general = 0
        self._bounds = (
            limits.max_features,
            limits.max_feature_name_chars,
            limits.max_id_chars,
            float(limits.max_abs_feature),
            float(TS_MIN),
            float(TS_MAX),
            limits.max_value_chars,
            # A list in x is nested 3 deep: beyond a limit of 2, the general decoder's.
            limits.max_list_values if limits.max_depth >= 3 else -1,
        )

    def _general(self, value: bytes | None) -> object:
        """The one call of the general decoder: an Event, or the BadEvent raised."""
        try:
            return decode_event(value, self.limits)
        except BadEvent as exc:
            return exc

    def decode(self, records: Sequence[bytes | None]) -> DecodedBatch:
        n = len(records)
        lengths = np.fromiter(
            (
                len(v) if v is not None and len(v) <= self.limits.max_event_bytes else 0
                for v in records
            ),
            np.int64,
            n,
        )
        data = b"".join(v for v, size in zip(records, lengths.tolist(), strict=True) if size)
        buf = np.frombuffer(data, np.uint8)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        status = np.empty(n, np.uint8)
        id_kind = np.zeros(n, np.uint8)
        id_int = np.zeros(n, np.int64)
        id_a = np.zeros(n, np.int64)
        id_b = np.zeros(n, np.int64)
        label = np.full(n, -1, np.int8)
        ts = np.empty(n)
        feat_off = np.zeros(n + 1, np.int64)
        capacity = len(data) // 2 + 1  # a feature takes at least 2 bytes
        name_a = np.empty(capacity, np.int64)
        name_b = np.empty(capacity, np.int64)
        values = np.empty(capacity)
        same = np.zeros(n, np.uint8)
        cat = np.zeros(n, np.uint8)
        value_a = np.empty(capacity, np.int64)
        value_b = np.empty(capacity, np.int64)
        entry_a = np.empty(capacity, np.int64)
        entry_b = np.empty(capacity, np.int64)
        entry_off = np.zeros(n + 1, np.int64)
        _scan(
            buf,
            starts,
            ends,
            status,
            id_kind,
            id_int,
            id_a,
            id_b,
            label,
            ts,
            feat_off,
            name_a,
            name_b,
            values,
            same,
            cat,
            value_a,
            value_b,
            entry_a,
            entry_b,
            entry_off,
            self._u64,
            self._f64,
            self._u32,
            self._f32,
            *self._bounds,
        )
        spans = (cat, value_a, value_b, entry_a, entry_b, entry_off)
        slots = None
        if self._hasher is not None and cat.any():
            # Hashed: categorical records' slots computed by the compiled code.
            slots = np.empty(capacity, np.int64)
            mask = self._hasher.n_slots - 1
            _hash_categorical(buf, status, cat, feat_off, name_a, name_b, value_a, value_b,
                              entry_a, entry_b, entry_off, slots, mask)  # fmt: skip
        self._resolve(data, status, same, feat_off, name_a, name_b, spans, slots)
        return self._assemble(records, data, status, id_kind, id_int, id_a, id_b, label, ts,
                              feat_off, values)  # fmt: skip

    def _resolve(self, data, status, same, feat_off, name_a, name_b, spans, slots=None):
        """Give each taken record its layout's columns (a categorical record its
        own: with ``slots``, its hashed slots); defer the doubtful ones."""
        fast = np.flatnonzero(status == _FAST).tolist()
        layout_of = np.zeros(len(status), np.int64)
        tables: list[np.ndarray] = []
        current = -1
        same_list = same.tolist()
        cat = spans[0]
        rows = [r for r in np.flatnonzero(cat).tolist() if status[r] == _FAST] if cat.any() else []
        # Hashed: categorical records take their slots straight from the scanner.
        self._slotted = cat if slots is not None else np.zeros(len(status), np.uint8)
        self._slots = slots if slots is not None else np.zeros(0, np.int64)
        if slots is not None:
            categorical = {}
        elif rows:
            categorical = self._categorical_tables(data, rows, feat_off, name_a, name_b, spans)
        else:
            categorical = {}
        slotted = self._slotted
        for r in fast:
            if slotted[r]:
                current = -1
                continue
            if r in categorical:
                table = categorical[r]
                if table is None:
                    status[r] = _DEFER
                else:
                    layout_of[r] = len(tables)
                    tables.append(table)
                current = -1
                continue
            if not same_list[r] or current < 0:
                a, b = int(feat_off[r]), int(feat_off[r + 1])
                current = self._layout_index(
                    data, name_a[a:b].tolist(), name_b[a:b].tolist(), tables
                )
            if current < 0 or tables[current] is None:
                status[r] = _DEFER
                continue
            layout_of[r] = current
        self._layout_of = layout_of
        self._tables = tables

    def _categorical_tables(self, data: bytes, rows: list[int], feat_off, name_a, name_b, spans):
        """The columns of each categorical record's features (``name=value`` for
        a string, the name for a number), or None to defer it: a name or value
        that is not UTF-8, two entries with one name, two features that are one
        (``"a=b": 1`` beside ``"a": "b"``), or, hashed, two in one slot.

        One pass over all of the batch's categorical records: feature keys are
        looked up by their bytes in a bounded cache (a key is decoded, so
        checked, once, when it enters it), repeats found by sorting."""
        _, value_a, value_b, entry_a, entry_b, entry_off = spans
        rows_arr = np.asarray(rows, np.int64)
        features = _ranges(feat_off[rows_arr], feat_off[rows_arr + 1])
        entries = _ranges(entry_off[rows_arr], entry_off[rows_arr + 1])
        keys = [
            data[na:nb] if va < 0 else data[na:nb] + b"=" + data[va:vb]
            for na, nb, va, vb in zip(
                name_a[features[0]].tolist(),
                name_b[features[0]].tolist(),
                value_a[features[0]].tolist(),
                value_b[features[0]].tolist(),
                strict=True,
            )
        ]
        columns = self._cached(self._key_columns, keys, self._column)
        names = [
            data[a:b]
            for a, b in zip(entry_a[entries[0]].tolist(), entry_b[entries[0]].tolist(), strict=True)
        ]
        name_ids = self._cached(self._entry_names, names, self._entry_id)
        n = len(rows)
        bad = _repeats_or_missing(features[1], columns, n) | _repeats_or_missing(
            entries[1], name_ids, n
        )
        tables: dict[int, np.ndarray | None] = {}
        splits = np.split(columns, np.cumsum(features[2])[:-1]) if rows else []
        bad_rows = set(rows_arr[bad].tolist()) if bad.any() else ()
        for r, table in zip(rows, splits, strict=True):
            tables[r] = None if r in bad_rows else table
        return tables

    @staticmethod
    def _cached(cache: dict, keys: list[bytes], make) -> np.ndarray:
        """``make(key.decode())`` for each key, through ``cache``; -1 where a key
        is not UTF-8 (its record is deferred)."""
        if len(cache) >= _MAX_CACHED_KEYS:
            cache.clear()  # values that vary per event: bound the memory
        out = [cache.get(k) for k in keys]
        for i, value in enumerate(out):
            if value is None:
                key = keys[i]
                value = cache.get(key)  # met earlier in this call
                if value is None:
                    try:
                        value = make(key.decode())
                    except UnicodeDecodeError:
                        value = -1
                    cache[key] = value
                out[i] = value
        return np.asarray(out, np.int64)

    def _entry_id(self, name: str) -> int:
        """A number per distinct entry name (the names were checked UTF-8)."""
        return len(self._entry_names)

    def _layout_index(self, data: bytes, starts, ends, tables: list) -> int:
        try:
            names = tuple(data[a:b].decode() for a, b in zip(starts, ends, strict=True))
        except UnicodeDecodeError:
            tables.append(None)
            return len(tables) - 1
        if names not in self._layouts:
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()  # names that vary per event: bound the memory
            if len(set(names)) != len(names):
                self._layouts[names] = None  # repeated names: the general decoder decides
            else:
                columns = np.fromiter((self._column(name) for name in names), np.int64, len(names))
                # Names sharing a hashed slot: the general path sums them.
                shared = self._hasher is not None and len(np.unique(columns)) != len(columns)
                self._layouts[names] = None if shared else columns
        tables.append(self._layouts[names])
        return len(tables) - 1

    def _assemble(
        self, records, data, status, id_kind, id_int, id_a, id_b, label, ts, feat_off, values
    ) -> DecodedBatch:
        tables = self._tables
        layout_off = np.zeros(len(tables) + 1, np.int64)
        for i, t in enumerate(tables):
            layout_off[i + 1] = layout_off[i] + (0 if t is None else len(t))
        layout_cols = (
            np.concatenate([t for t in tables if t is not None])
            if any(t is not None for t in tables)
            else np.zeros(0, np.int64)
        )
        columns = np.zeros(int(feat_off[-1]), np.int64)
        _fill_columns(status, self._layout_of, feat_off, layout_cols, layout_off, columns,
                      self._slotted, self._slots)  # fmt: skip

        out = DecodedBatch()
        status_list = status.tolist()
        deferred = [r for r, s in enumerate(status_list) if s != _FAST]
        kinds, ints = id_kind.tolist(), id_int.tolist()
        id_a_list, id_b_list = id_a.tolist(), id_b.tolist()
        ts_list = ts.tolist()
        feat = feat_off.tolist()
        keep: list[int] = []
        ids = out.ids
        for r in range(len(status_list)):
            if status_list[r] == _FAST and kinds[r] == 1:
                try:
                    ids_value: str | int = data[id_a_list[r] : id_b_list[r]].decode()
                except UnicodeDecodeError:
                    status_list[r] = _DEFER
                    deferred.append(r)
                    continue
            elif status_list[r] == _FAST:
                ids_value = ints[r]
            else:
                continue
            keep.append(r)
            ids.append(ids_value)
        deferred.sort()
        self.n_fast += len(keep)
        self.n_general += len(deferred)
        if not deferred:
            # The usual batch: every record taken by the scanner.
            out.positions = keep
            out.labels = label[keep] if len(keep) != len(status_list) else label
            out.ts = [None if v != v else v for v in (ts_list[r] for r in keep)]
            out.encodings = ["msgpack"] * len(keep)
            if len(keep) == len(status_list):
                out.columns, out.values, out.offsets = columns, values[: feat[-1]], feat_off
            else:
                self._gather(out, keep, columns, values, feat)
            return out
        # Mixed: merge the scanner's records and the general decoder's, in order.
        general = {r: self._general(records[r]) for r in deferred}
        fast_ids = dict(zip(keep, ids, strict=True))
        out.ids = []
        labels: list[int] = []
        col_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        offsets = [0]
        hasher = self._hasher
        column = self._column if hasher is None else self._model_column
        for r in range(len(status_list)):
            if r in fast_ids:
                a, b = feat[r], feat[r + 1]
                col_parts.append(columns[a:b])
                val_parts.append(values[a:b])
                out.ids.append(fast_ids[r])
                labels.append(int(label[r]))
                v = ts_list[r]
                out.ts.append(None if v != v else v)
                out.encodings.append("msgpack")
                offsets.append(offsets[-1] + (b - a))
            else:
                verdict = general[r]
                if isinstance(verdict, BadEvent):
                    out.errors.append((r, verdict))
                    continue
                x = verdict.x if hasher is None else hasher(verdict.x)
                col_parts.append(np.fromiter((column(k) for k in x), np.int64, len(x)))
                val_parts.append(np.fromiter(x.values(), np.float64, len(x)))
                out.ids.append(verdict.id)
                labels.append(-1 if verdict.y is None else int(verdict.y))
                out.ts.append(verdict.ts)
                out.encodings.append(verdict.encoding)
                offsets.append(offsets[-1] + len(x))
            out.positions.append(r)
        out.labels = np.asarray(labels, np.int8)
        out.columns = np.concatenate(col_parts) if col_parts else np.zeros(0, np.int64)
        out.values = np.concatenate(val_parts) if val_parts else np.zeros(0)
        out.offsets = np.asarray(offsets, np.int64)
        return out

    @staticmethod
    def _gather(out: DecodedBatch, keep: list[int], columns, values, feat) -> None:
        starts = np.asarray([feat[r] for r in keep], np.int64)
        stops = np.asarray([feat[r + 1] for r in keep], np.int64)
        sizes = stops - starts
        offsets = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        index = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1])
        out.columns, out.values, out.offsets = columns[index], values[index], offsets


def warm_up() -> float:
    """Compile (or load from the on-disk cache) the scanner, with its categorical
    and hashed parts; seconds it took. A part first compiled inside a worker's
    batch can take longer than the group's poll interval on a loaded machine."""
    started = time.perf_counter()
    numeric = msgpack.packb({"id": 1, "x": {"a": 1.0, "b": 2}, "y": 1, "ts": 1.0})
    categorical = msgpack.packb({"id": 2, "x": {"a": 1.0, "site": "s", "tags": ["t", "u"]}})
    BatchDecoder(lambda name: 0, DEFAULT_LIMITS).decode([numeric, numeric, categorical])
    BatchDecoder(int, DEFAULT_LIMITS, Hasher(4)).decode([numeric, categorical, categorical])
    return time.perf_counter() - started


def packer() -> Callable[[object], bytes]:
    """A reused msgpack Packer's ``pack`` (half the cost of ``msgpack.packb``),
    bytes identical to :func:`stream.events.codec.encode`'s."""
    return msgpack.Packer(use_bin_type=True, autoreset=True).pack
