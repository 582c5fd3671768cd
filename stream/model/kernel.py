"""A compiled learning kernel: river's ``[StandardScaler |] LogisticRegression``
(SGD with L2, or FTRL-Proximal), the same arithmetic in the same order, in numba.

Why: river costs 10-36 us per event (dicts, Python floats, its Rust VectorDict
behind Python calls); this kernel runs the same operations on arrays for a
whole batch in one call, well under a microsecond per event at 10 features.

Exactness: every operation of river 0.26 is reproduced with the same operands
in the same order, so probabilities, weights and statistics come out
bit-identical (tests/unit/test_kernel.py checks them against river itself):

- the dot product runs over the event's features in the event's order, then
  adds the intercept (river's ``VectorDict.dot`` iterates over its argument);
- powers (``v ** 0.5``, FTRL's ``** -1`` and ``g ** 2``) go through ``pow`` with the exponent
  passed as a runtime value: a constant exponent lets LLVM turn ``x ** 0.5``
  into ``sqrt``, which differs from CPython's ``pow`` in the last bit for some
  inputs; ``fastmath`` stays off (it would reassociate sums);
- the sigmoid returns exactly 0 or 1 beyond ``|z| > 30``, the log-loss gradient
  switches formula beyond ``|z| > 18``, as river's do;
- which names each state dict holds follows river's defaultdict side effects:
  predicting through the scaler inserts a 0.0 variance for an unseen name;
  learning inserts the name into every dict of the learning state.

Features are columns in growing arrays; a name gets its column the first time
it is seen (``columns``), so events may bring new names at any time. A hashed
model (``hash_bits`` B, see :mod:`stream.events.hashing`) has no names: its
keys are slot numbers, a slot is its own column, and the arrays hold all 2^B
slots from the start (memory bounded by B, no dictionary of names).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from stream.config import ModelSettings
from stream.errors import NumericError
from stream.model.online import RefusalLog
from stream.model.state import ModelState

logger = logging.getLogger(__name__)

try:  # numba is a default dependency; without it the factory falls back to river.
    import numba

    NUMBA_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only without numba
    numba = None
    NUMBA_ERROR = f"numba not importable: {exc}"

# river's LogisticRegression defaults, which ModelSettings does not change.
INTERCEPT_LR = 0.01
CLIP_GRADIENT = 1e12

# Bits of ``_State.has``: which of river's state dicts hold a name.
HAS_WEIGHT, HAS_COUNT, HAS_MEAN, HAS_VAR, HAS_Z, HAS_N = 1, 2, 4, 8, 16, 32

# Passed at run time so that LLVM cannot constant-fold pow into sqrt or 1/x.
_HALF = 0.5
_MINUS_ONE = -1.0
_TWO = 2.0

_INITIAL_CAPACITY = 64


def _run(
    idx,
    val,
    off,
    lab,
    out,
    w,
    cnt,
    mean,
    var,
    fz,
    fn,
    has,
    intercept,
    scratch,
    saved,
    saved_has,
    bound,
    scale,
    ftrl,
    lr,
    l2,
    alpha,
    beta,
    l1,
    intercept_lr,
    clip,
    half,
    minus_one,
    two,
):
    """Predict then learn each event of a batch, in order; returns events learned.

    Event ``e`` has columns ``idx[off[e]:off[e+1]]`` with values ``val[...]`` and
    label ``lab[e]`` (-1: none, 0, 1); its probability goes to ``out[e]``.
    ``intercept`` is a one-element array (updated in place).

    The numeric guard of :class:`stream.model.online.OnlineModel`, the same
    checks on the same state: a step that leaves the intercept or a touched
    weight beyond ``bound`` (or not finite), or a touched scaler or FTRL value
    not finite, is undone from ``saved``/``saved_has`` and not counted.
    """
    learned = 0
    for e in range(off.shape[0] - 1):
        start = off[e]
        stop = off[e + 1]
        k = stop - start
        # --- predict: scaler transform (no learning), then sigmoid(w . x + b)
        if scale:
            for t in range(k):
                j = idx[start + t]
                has[j] |= 8  # vars_[i] on a defaultdict inserts 0.0
                v = var[j]
                if v != 0.0:
                    has[j] |= 4
                    scratch[t] = (val[start + t] - mean[j]) / v**half
                else:
                    scratch[t] = 0.0
        else:
            for t in range(k):
                scratch[t] = val[start + t]
        dot = 0.0
        for t in range(k):
            dot += w[idx[start + t]] * scratch[t]
        zz = dot + intercept[0]
        if zz < -30.0:
            p = 0.0
        elif zz > 30.0:
            p = 1.0
        else:
            p = 1.0 / (1.0 + math.exp(-zz))
        out[e] = p
        y = lab[e]
        if y < 0:
            continue
        # --- learn: the scaler first, then one step on the re-transformed x
        saved_intercept = intercept[0]
        for t in range(k):
            j = idx[start + t]
            saved[t, 0] = w[j]
            saved[t, 1] = cnt[j]
            saved[t, 2] = mean[j]
            saved[t, 3] = var[j]
            saved[t, 4] = fz[j]
            saved[t, 5] = fn[j]
            saved_has[t] = has[j]
        if scale:
            for t in range(k):
                j = idx[start + t]
                xi = val[start + t]
                c = cnt[j] + 1.0
                cnt[j] = c
                old_mean = mean[j]
                m = old_mean + (xi - old_mean) / c
                mean[j] = m
                var[j] = var[j] + ((xi - old_mean) * (xi - m) - var[j]) / c
                has[j] |= 14
            for t in range(k):
                j = idx[start + t]
                v = var[j]
                if v != 0.0:
                    scratch[t] = (val[start + t] - mean[j]) / v**half
                else:
                    scratch[t] = 0.0
        dot = 0.0
        for t in range(k):
            j = idx[start + t]
            has[j] |= 1
            dot += w[j] * scratch[t]
        raw = dot + intercept[0]
        # optim.losses.Log.gradient with y in {-1, 1}, weight 1.0
        sign = 1.0 if y == 1 else -1.0
        zl = raw * sign
        if zl > 18.0:
            g = math.exp(-zl) * -sign
        elif zl < -18.0:
            g = -sign
        else:
            g = -sign / (math.exp(zl) + 1.0)
        g = max(min(g, clip), -clip)
        intercept[0] = intercept[0] - intercept_lr * g
        if ftrl:
            # FTRLProximal._step_with_dict: weights from the old z, n; then z, n.
            for t in range(k):
                j = idx[start + t]
                has[j] |= 16
                zj = fz[j]
                if abs(zj) > l1:
                    sgn = 1.0 if zj > 0.0 else -1.0
                    w[j] = -(((beta + fn[j] ** half) / alpha + l2) ** minus_one) * (zj - sgn * l1)
            for t in range(k):
                j = idx[start + t]
                gi = scratch[t] * g
                gi2 = gi**two  # CPython's gi**2 is pow(), not gi*gi: they can differ
                s = ((fn[j] + gi2) ** half - fn[j] ** half) / alpha
                fz[j] = fz[j] + (gi - s * w[j])
                fn[j] = fn[j] + gi2
                has[j] |= 48
        else:
            for t in range(k):
                j = idx[start + t]
                gi = scratch[t] * g
                if l2 != 0.0:
                    gi = gi + l2 * w[j]
                w[j] = w[j] - lr * gi
        ok = -bound <= intercept[0] <= bound  # NaN fails
        for t in range(k):
            j = idx[start + t]
            if not (
                -bound <= w[j] <= bound
                and math.isfinite(mean[j])
                and math.isfinite(var[j])
                and math.isfinite(fz[j])
                and math.isfinite(fn[j])
            ):
                ok = False
        if ok:
            learned += 1
            continue
        intercept[0] = saved_intercept
        for t in range(k - 1, -1, -1):  # backwards: a repeated column gets its first value
            j = idx[start + t]
            w[j] = saved[t, 0]
            cnt[j] = saved[t, 1]
            mean[j] = saved[t, 2]
            var[j] = saved[t, 3]
            fz[j] = saved[t, 4]
            fn[j] = saved[t, 5]
            has[j] = saved_has[t]
    return learned


def _save(idx, w, cnt, mean, var, fz, fn, has, saved, saved_has):
    """Copy the learning state of columns ``idx`` (repeats allowed) into ``saved``."""
    for t in range(idx.shape[0]):
        j = idx[t]
        saved[t, 0] = w[j]
        saved[t, 1] = cnt[j]
        saved[t, 2] = mean[j]
        saved[t, 3] = var[j]
        saved[t, 4] = fz[j]
        saved[t, 5] = fn[j]
        saved_has[t] = has[j]


if numba is not None:
    # cache=True: compiled once per machine into __pycache__ (or NUMBA_CACHE_DIR);
    # fastmath off: it would reorder sums and change results.
    _run = numba.njit(cache=True, nogil=True, fastmath=False)(_run)
    _save = numba.njit(cache=True, nogil=True)(_save)


class KernelModel:
    """Predict-then-learn like :class:`stream.model.online.OnlineModel`, compiled.

    Same surface (``predict_proba``, ``learn``, ``state``, ``load_state``,
    ``n_learned``) plus :meth:`score_and_learn` for a whole batch.
    """

    def __init__(self, settings: ModelSettings, max_abs_weight: float = 1e12) -> None:
        if numba is None:
            raise RuntimeError(NUMBA_ERROR)
        self.settings = settings
        self.max_abs_weight = max_abs_weight
        self.refusals = RefusalLog(max_abs_weight)
        self._scale = bool(settings.scale)
        self._ftrl = settings.optimizer == "ftrl"
        self._params = (
            float(max_abs_weight),
            self._scale,
            self._ftrl,
            float(settings.learning_rate),
            float(settings.l2),
            float(settings.learning_rate),  # FTRL's alpha
            float(settings.ftrl_beta),
            float(settings.ftrl_l1),
            INTERCEPT_LR,
            CLIP_GRADIENT,
            _HALF,
            _MINUS_ONE,
            _TWO,
        )
        self.n_learned = 0
        # Hashed: 2^B slots, each its own column; else 0 (columns by name).
        self.n_slots = 1 << settings.hash_bits if settings.hash_bits is not None else 0
        self._reset()

    # -- columns ----------------------------------------------------------------

    def _reset(self) -> None:
        self.names: list[str] = []
        self.columns: dict[str, int] = {}
        capacity = self.n_slots or _INITIAL_CAPACITY
        self._w = np.zeros(capacity)
        self._cnt = np.zeros(capacity)
        self._mean = np.zeros(capacity)
        self._var = np.zeros(capacity)
        self._z = np.zeros(capacity)
        self._n = np.zeros(capacity)
        self._has = np.zeros(capacity, dtype=np.uint8)
        self._intercept = np.zeros(1)
        self._scratch = np.zeros(16)
        self._saved = np.zeros((16, 6))
        self._saved_has = np.zeros(16, dtype=np.uint8)
        self._undo = np.zeros((_INITIAL_CAPACITY, 6))
        self._undo_has = np.zeros(_INITIAL_CAPACITY, dtype=np.uint8)
        # Columns scored since clear_touched(): a mask, and the newly set ones
        # per batch, so that touched_keys() costs what was touched.
        self._dirty = np.zeros(capacity, dtype=bool)
        self._fresh: list[np.ndarray] = []

    def column(self, name: str) -> int:
        """The column of ``name``, given one if it is new; for a hashed model,
        the slot ``name`` spells (ValueError if it spells none)."""
        if self.n_slots:
            return self._slot(name)
        j = self.columns.get(name)
        if j is None:
            j = len(self.names)
            if j == self._w.shape[0]:
                self._grow(2 * j)
            self.columns[name] = j
            self.names.append(name)
        return j

    def _slot(self, key: str) -> int:
        if not (key.isascii() and key.isdigit() and int(key) < self.n_slots):
            raise ValueError(f"a model of {self.n_slots} hashed slots has no slot {key!r}")
        return int(key)

    def slots_used(self) -> int:
        """Features (a hashed model's slots) that have a weight."""
        return int(np.count_nonzero(self._has & HAS_WEIGHT))

    def columns_of(self, names: Iterable[str]) -> np.ndarray:
        """Columns of a layout of names (new names get columns), as an int64 array."""
        return np.fromiter((self.column(n) for n in names), dtype=np.int64)

    def _grow(self, capacity: int) -> None:
        for attr in ("_w", "_cnt", "_mean", "_var", "_z", "_n", "_has", "_dirty"):
            old = getattr(self, attr)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, attr, new)

    # -- the hot path -------------------------------------------------------------

    def score_and_learn(
        self,
        columns: np.ndarray,
        values: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """Predict each event, then learn it if labeled, in order; probabilities out.

        Event ``e`` is ``columns[offsets[e]:offsets[e+1]]`` (int64, from
        :meth:`column`) with ``values`` (float64, finite) and ``labels[e]``
        (int8: -1 unlabeled, 0 or 1). Names must be unique within an event.

        All or nothing: if the call raises, the learning state is what it was
        before it (the kernel learns in place, event after event, so a raise
        mid-batch would otherwise leave the events before it learned and the
        one it raised on half learned). The caller can then score the events
        again, one by one, without learning any of them twice.
        """
        n_events = offsets.shape[0] - 1
        out = np.empty(n_events)
        self.last_learned = 0
        if n_events <= 0:
            return out
        widest = int(np.max(np.diff(offsets)))
        if widest > self._scratch.shape[0]:
            size = max(widest, 2 * self._scratch.shape[0])
            self._scratch = np.zeros(size)
            self._saved = np.zeros((size, 6))
            self._saved_has = np.zeros(size, dtype=np.uint8)
        self._track(columns)
        undo = self._save(columns)
        try:
            learned = _run(
                columns,
                values,
                offsets,
                labels,
                out,
                self._w,
                self._cnt,
                self._mean,
                self._var,
                self._z,
                self._n,
                self._has,
                self._intercept,
                self._scratch,
                self._saved,
                self._saved_has,
                *self._params,
            )
        except BaseException:
            self._restore(columns, undo)
            raise
        self.n_learned += learned
        refused = int(np.count_nonzero(labels >= 0)) - learned
        if refused:
            self.refusals.refused(refused, "a learning step would make the model non-finite "
                                  "or a weight absurd")  # fmt: skip
        self.last_learned = learned
        return out

    def _track(self, columns: np.ndarray) -> None:
        """Remember ``columns`` as touched: predicting inserts a scaler variance,
        learning changes every part of a column's state."""
        fresh = columns[~self._dirty[columns]]
        if fresh.shape[0]:
            self._dirty[fresh] = True
            self._fresh.append(fresh)

    def _save(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """What :meth:`_restore` needs to undo a batch over ``columns``: their
        learning state and the intercept (about a tenth of the kernel's time)."""
        n = columns.shape[0]
        if n > self._undo.shape[0]:
            self._undo = np.zeros((max(n, 2 * self._undo.shape[0]), 6))
            self._undo_has = np.zeros(self._undo.shape[0], dtype=np.uint8)
        _save(columns, self._w, self._cnt, self._mean, self._var, self._z, self._n, self._has,
              self._undo, self._undo_has)  # fmt: skip
        return self._undo[:n], self._undo_has[:n], float(self._intercept[0])

    def _restore(self, columns: np.ndarray, undo: tuple[np.ndarray, np.ndarray, float]) -> None:
        """Put back the state :meth:`_save` copied (a repeated column was saved
        with the same value each time, so the order does not matter)."""
        saved, saved_has, intercept = undo
        for i, attr in enumerate(("_w", "_cnt", "_mean", "_var", "_z", "_n")):
            getattr(self, attr)[columns] = saved[:, i]
        self._has[columns] = saved_has
        self._intercept[0] = intercept

    def score_and_learn_dicts(
        self, xs: Sequence[dict[str, float]], ys: Sequence[bool | None]
    ) -> np.ndarray:
        """:meth:`score_and_learn` for events as dicts (the general decoder's output)."""
        column = self.column
        cols: list[int] = []
        vals: list[float] = []
        offsets = [0]
        for x in xs:
            cols.extend(column(name) for name in x)
            vals.extend(x.values())
            offsets.append(len(cols))
        labels = np.fromiter((-1 if y is None else int(y) for y in ys), np.int8, len(ys))
        return self.score_and_learn(
            np.asarray(cols, dtype=np.int64),
            np.asarray(vals, dtype=np.float64),
            np.asarray(offsets, dtype=np.int64),
            labels,
        )

    # -- OnlineModel's surface --------------------------------------------------------

    @property
    def n_refused(self) -> int:
        return self.refusals.count

    def predict_proba(self, x: dict[str, float]) -> float:
        """Probability of class 1 (true), without learning; NumericError rather than NaN."""
        p = float(self.score_and_learn_dicts([x], [None])[0])
        if not 0.0 <= p <= 1.0:  # NaN fails both comparisons
            raise NumericError(f"prediction is p={p!r}, not a probability")
        return p

    def learn(self, x: dict[str, float], y: bool) -> bool:
        """One step on this event (its prediction is computed and dropped, as
        it has no side effect beyond river's own on a scaler variance); False if
        it was refused and undone."""
        self.score_and_learn_dicts([x], [y])
        return self.last_learned == 1

    def _state_by(self, pick: Callable[[int, np.ndarray], dict[str, float]]) -> ModelState:
        """A ModelState whose maps ``pick(bit, values)`` fills: from the rows that
        hold ``bit``, the keys and values it chooses (all rows, or some)."""
        scale, ftrl = self._scale, self._ftrl
        return ModelState(
            weights=pick(HAS_WEIGHT, self._w),
            intercept=float(self._intercept[0]),
            scaler_counts=pick(HAS_COUNT, self._cnt) if scale else {},
            scaler_means=pick(HAS_MEAN, self._mean) if scale else {},
            scaler_vars=pick(HAS_VAR, self._var) if scale else {},
            ftrl_z=pick(HAS_Z, self._z) if ftrl else {},
            ftrl_n=pick(HAS_N, self._n) if ftrl else {},
            n_learned=self.n_learned,
        )

    def state(self) -> ModelState:
        """A copy of the learning state, with exactly river's names in each dict."""
        names = self.names
        has = self._has if self.n_slots else self._has[: len(names)]

        def pick(bit: int, values: np.ndarray) -> dict[str, float]:
            rows = np.flatnonzero(has & bit)
            keys = map(str, rows.tolist()) if self.n_slots else [names[j] for j in rows]
            return dict(zip(keys, values[rows].tolist(), strict=True))

        return self._state_by(pick)

    # -- what changed -------------------------------------------------------------
    # A merging worker cuts (sends what it learned since its last cut) and syncs
    # (adopts a new global version) often; at 2^20 slots, the whole state as
    # dicts takes seconds. These let it work on the keys that changed only.

    def touched_keys(self) -> list[str]:
        """Keys whose state may differ from what it was at :meth:`clear_touched`
        (or construction): every key scored since, learned or not. Costs what
        was touched, not the model."""
        if not self._fresh:
            return []
        rows = np.unique(np.concatenate(self._fresh)).tolist()
        names = self.names
        return [str(j) for j in rows] if self.n_slots else [names[j] for j in rows]

    def clear_touched(self) -> None:
        """Start tracking touched keys afresh."""
        for fresh in self._fresh:
            self._dirty[fresh] = False
        self._fresh = []

    def _known(self, keys: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """Those of ``keys`` that have a column, and their columns (no new ones)."""
        if self.n_slots:
            known = list(keys)
            return known, np.fromiter(map(self._slot, known), np.int64, len(known))
        columns = self.columns
        known = [k for k in keys if k in columns]
        return known, np.fromiter((columns[k] for k in known), np.int64, len(known))

    def state_of(self, keys: Iterable[str]) -> ModelState:
        """:meth:`state` restricted to ``keys`` (intercept and ``n_learned`` whole):
        equal to ``restrict(self.state(), keys)``, in time proportional to ``keys``."""
        known, rows = self._known(keys)
        has = self._has[rows]

        def pick(bit: int, values: np.ndarray) -> dict[str, float]:
            at = np.flatnonzero(has & bit).tolist()
            return dict(zip([known[i] for i in at], values[rows[at]].tolist(), strict=True))

        return self._state_by(pick)

    def load_partial(self, state: ModelState, keys: Iterable[str]) -> None:
        """Replace the state of ``keys`` with theirs in ``state`` (a key missing
        from one of its maps is removed from that part), and the intercept and
        ``n_learned``; every other key keeps its state. So ``load_state(whole)``
        and ``load_partial(restrict(whole, keys), keys)`` give the same model
        when the model already holds ``whole``'s state outside ``keys``."""
        keys = list(keys)
        rows = self.columns_of(keys)  # new names get columns (the arrays may grow)
        for attr in ("_w", "_cnt", "_mean", "_var", "_z", "_n", "_has"):
            getattr(self, attr)[rows] = 0
        parts: list[tuple[dict[str, float], int]] = [(state.weights, HAS_WEIGHT)]
        if self._scale:
            parts += [
                (state.scaler_counts, HAS_COUNT),
                (state.scaler_means, HAS_MEAN),
                (state.scaler_vars, HAS_VAR),
            ]
        if self._ftrl:
            parts += [(state.ftrl_z, HAS_Z), (state.ftrl_n, HAS_N)]
        for values, bit in parts:
            if not values:
                continue
            at = [i for i, k in enumerate(keys) if k in values]
            if not at:
                continue
            picked = rows[at]
            getattr(self, _ARRAY_OF_BIT[bit])[picked] = np.fromiter(
                (values[keys[i]] for i in at), np.float64, len(at)
            )
            self._has[picked] |= bit
        self._intercept[0] = state.intercept
        self.n_learned = state.n_learned

    def load_state(self, state: ModelState) -> None:
        """Replace the learning state with ``state``; columns of known names stay."""
        for attr in ("_w", "_cnt", "_mean", "_var", "_z", "_n", "_has"):
            getattr(self, attr)[:] = 0
        parts: list[tuple[dict[str, float], np.ndarray, int]] = [(state.weights, self._w, 1)]
        if self._scale:
            parts += [
                (state.scaler_counts, self._cnt, HAS_COUNT),
                (state.scaler_means, self._mean, HAS_MEAN),
                (state.scaler_vars, self._var, HAS_VAR),
            ]
        if self._ftrl:
            parts += [(state.ftrl_z, self._z, HAS_Z), (state.ftrl_n, self._n, HAS_N)]
        for values, array, bit in parts:
            if not values:
                continue
            rows = self.columns_of(values)
            array = getattr(self, _ARRAY_OF_BIT[bit])  # may have grown
            array[rows] = np.fromiter(values.values(), np.float64, len(values))
            self._has[rows] |= bit
        self._intercept[0] = state.intercept
        self.n_learned = state.n_learned


_ARRAY_OF_BIT = {
    HAS_WEIGHT: "_w",
    HAS_COUNT: "_cnt",
    HAS_MEAN: "_mean",
    HAS_VAR: "_var",
    HAS_Z: "_z",
    HAS_N: "_n",
}


def covers(settings: ModelSettings) -> str | None:
    """None when the kernel reproduces ``settings`` exactly, else why not."""
    if numba is None:
        return NUMBA_ERROR
    if settings.optimizer not in ("sgd", "ftrl"):
        return f"optimizer {settings.optimizer!r} has no kernel"
    return None


def warm_up() -> float:
    """Compile (or load from the on-disk cache) the kernel; seconds it took.

    Called at worker start so that the first batch does not pay for it.
    """
    started = time.perf_counter()
    for optimizer in ("sgd", "ftrl"):
        model = KernelModel(ModelSettings(optimizer=optimizer))
        model.score_and_learn_dicts([{"a": 1.0}, {"a": 2.0}], [True, None])
    return time.perf_counter() - started
