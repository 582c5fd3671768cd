"""Decode-and-learn rates of categorical and hashed events, off the broker.

What a worker's compiled path does to a batch of records, without Kafka: the
batch decoder (numeric records through its compiled scanner; records with
strings deferred to the general decoder and its ``name=value`` step; hashed
into slots with ``--hash-bits``), then the kernel's predict-then-learn. Two
measurements:

- :func:`rates`: events/s for numeric features, categorical fields by name and
  hashed, at the same number of fields per event, and twice as many
  categorical fields hashed (against the numeric rate);
- :func:`vocabulary_growth`: events/s per quarter of one stream whose distinct
  features keep growing (every event brings new values), by name and hashed:
  whether the per-event cost grows with the features seen;
- :func:`hashing_quality`: progressive log loss on the synthetic click stream
  (:class:`~stream.events.sources.CtrStream`, 20 categorical fields) of the
  model by name and hashed, for SGD and FTRL-Proximal: what hashing costs in
  quality;
- :func:`sync_cost`: what merging costs a worker once the model is large
  (1M distinct features at ``--hash-bits 20``): the time to cut (the delta of
  one merge period's events) and to adopt a version that changed 1,000
  slots, over the whole model (as before issue 17.4) and over what changed,
  in the same run; and events/s with a cut and a sync every merge period
  (``every_events`` labeled events), each way, against no merging at all.

``learnstream bench --categorical`` (or ``python -m stream.tools.featurebench
[--events N] [--growth-events N] [--quality-events N] [--sync-features N] [--json]``)
prints all four.
Figures are events per second on this machine, best of ``repeats`` passes
for :func:`rates` (the machine is shared); ratios matter more than figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream.config import EventLimits, MergeSettings, ModelSettings
from stream.events.batch import BatchDecoder
from stream.events.codec import encode
from stream.events.hashing import Hasher
from stream.events.sources import CtrStream
from stream.model.kernel import KernelModel
from stream.model.merge import add, keys_of
from stream.model.state import ModelState
from stream.observe.quality import entropy
from stream.sync.contribution import Contribution
from stream.sync.pending import Pending, Settled
from stream.sync.replica import adopt_changed, adopt_whole, cut_touched, cut_whole

BATCH = 1000


def _numeric(n: int, fields: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        encode(
            {"id": i, "x": {f"f{j}": rng.gauss(0, 1) for j in range(fields)}, "y": i % 2},
            "msgpack",
        )
        for i in range(n)
    ]


def _categorical(n: int, fields: int, vocabulary: int, seed: int) -> list[bytes]:
    """``fields`` string fields per event, each value one of ``vocabulary`` per field."""
    rng = random.Random(seed)
    return [
        encode(
            {
                "id": i,
                "x": {f"c{j}": f"v{rng.randrange(vocabulary)}" for j in range(fields)},
                "y": i % 2,
            },
            "msgpack",
        )
        for i in range(n)
    ]


def _run(records: list[bytes], hash_bits: int | None) -> tuple[float, KernelModel, Hasher | None]:
    """Seconds to decode, score and learn ``records`` in batches as the worker does."""
    model = KernelModel(ModelSettings(hash_bits=hash_bits))
    hasher = Hasher(hash_bits) if hash_bits is not None else None
    decoder = BatchDecoder(model.column, EventLimits(), hasher)
    start = time.perf_counter()
    for i in range(0, len(records), BATCH):
        d = decoder.decode(records[i : i + BATCH])
        model.score_and_learn(d.columns, d.values, d.offsets, d.labels)
    return time.perf_counter() - start, model, hasher


def rates(n: int = 50_000, fields: int = 10, repeats: int = 3, hash_bits: int = 20) -> dict:
    """Events/s, decode + kernel, for ``fields`` numeric features, string fields
    by name, and string fields hashed into 2^``hash_bits`` slots."""
    numeric = _numeric(n, fields, seed=1)
    categorical = _categorical(n, fields, vocabulary=1000, seed=1)
    # The yardstick: twice as many categorical fields, hashed, against the numbers.
    wide = _categorical(n, 2 * fields, vocabulary=100_000, seed=2)
    out = {"events": n, "fields": fields}
    for name, records, bits in (
        ("numeric", numeric, None),
        ("numeric_hashed", numeric, hash_bits),
        ("categorical", categorical, None),
        ("categorical_hashed", categorical, hash_bits),
        (f"categorical{2 * fields}_hashed", wide, hash_bits),
    ):
        best = min(_run(records, bits)[0] for _ in range(repeats))
        out[f"{name}_eps"] = round(n / best)
    for name in ("categorical", "categorical_hashed", f"categorical{2 * fields}_hashed"):
        out[f"{name}_to_numeric"] = round(out[f"{name}_eps"] / out["numeric_eps"], 3)
    return out


def vocabulary_growth(n: int = 200_000, fields: int = 20, hash_bits: int = 20) -> dict:
    """One stream of ``fields`` string fields whose distinct values keep growing
    (each event: half its fields bring a never-seen value), timed per quarter:
    by name and hashed. ``last_to_first``: the last quarter's rate over the
    first's (1.0: the cost per event does not grow with the vocabulary)."""
    rng = random.Random(7)
    records = []
    fresh = 0
    for i in range(n):
        x = {}
        for j in range(fields):
            if j % 2:
                x[f"c{j}"] = f"n{fresh}"
                fresh += 1
            else:
                x[f"c{j}"] = f"v{rng.randrange(100)}"
        records.append(encode({"id": i, "x": x, "y": i % 2}, "msgpack"))
    out: dict = {"events": n, "fields": fields, "distinct_features": fresh + (fields // 2) * 100}
    for name, bits in (("by_name", None), ("hashed", hash_bits)):
        model = KernelModel(ModelSettings(hash_bits=bits))
        hasher = Hasher(bits) if bits is not None else None
        decoder = BatchDecoder(model.column, EventLimits(), hasher)
        quarters = []
        q = n // 4
        for k in range(4):
            start = time.perf_counter()
            for i in range(k * q, (k + 1) * q, BATCH):
                d = decoder.decode(records[i : min(i + BATCH, (k + 1) * q)])
                model.score_and_learn(d.columns, d.values, d.offsets, d.labels)
            quarters.append(round(q / (time.perf_counter() - start)))
        out[f"{name}_eps_by_quarter"] = quarters
        out[f"{name}_last_to_first"] = round(quarters[-1] / quarters[0], 3)
        out[f"{name}_features_held"] = len(model.state().weights)
    return out


# The models hashing_quality compares: the defaults (StandardScaler and SGD),
# and FTRL-Proximal on the raw one-hot values, as click-through models learn.
QUALITY_MODELS = {
    "sgd": ModelSettings(),
    "ftrl": ModelSettings(optimizer="ftrl", learning_rate=0.2, scale=False, ftrl_l1=1.0),
}


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def _progressive(records: list[bytes], settings: ModelSettings) -> tuple[np.ndarray, KernelModel]:
    """Each record's p, predicted before it is learned, as a worker's batches
    do it; and the model after the last."""
    model = KernelModel(settings)
    bits = settings.hash_bits
    decoder = BatchDecoder(model.column, EventLimits(), Hasher(bits) if bits is not None else None)
    p = np.concatenate(
        [
            model.score_and_learn(d.columns, d.values, d.offsets, d.labels)
            for d in (decoder.decode(records[i : i + BATCH]) for i in range(0, len(records), BATCH))
        ]
    )
    return p, model


def _click_stream(n: int, seed: int) -> tuple[CtrStream, list[bytes], np.ndarray, float]:
    """The click stream's records and labels, and the entropy of its click rate."""
    stream = CtrStream(n_events=n, seed=seed)
    records = [encode({"id": i, "x": x, "y": y}, "msgpack") for i, x, y in stream]
    labels = np.array([y for _, _, y in stream], dtype=np.int8)
    rate = float(labels.mean())
    return stream, records, labels, entropy(rate)


# The click models compared by click_models: the defaults, SGD unscaled at three
# rates, FTRL (unscaled) around the recommended alpha 0.2, beta 1, L1 1, L2 0.
CLICK_MODELS = {
    "defaults (scaler, SGD 0.01)": ModelSettings(),
    **{
        f"SGD --no-scaler, rate {rate}": ModelSettings(scale=False, learning_rate=rate)
        for rate in (0.01, 0.05, 0.1)
    },
    **{
        f"FTRL alpha {a}, L1 {l1}, L2 {l2}": ModelSettings(
            optimizer="ftrl", scale=False, learning_rate=a, ftrl_l1=l1, l2=l2
        )
        for a, l1, l2 in ((0.1, 1.0, 1.0), (0.2, 1.0, 0.0), (0.2, 1.0, 1.0), (0.2, 0.0, 0.0))
    },
}


def click_models(n: int = 200_000, hash_bits: int = 20, seed: int = 42) -> dict:
    """Progressive log loss, normalized entropy and nonzero weights of each of
    :data:`CLICK_MODELS` on ``n`` events of the click stream hashed into
    2^``hash_bits`` slots: which model for clicks."""
    _, records, labels, label_entropy = _click_stream(n, seed)
    out: dict = {"events": n}
    for name, settings in CLICK_MODELS.items():
        p, model = _progressive(records, replace(settings, hash_bits=hash_bits))
        loss = _log_loss(p, labels)
        nonzero = sum(1 for w in model.state().weights.values() if w != 0.0)
        out[name] = {
            "log_loss": round(loss, 5),
            "ne": round(loss / label_entropy, 4),
            "nonzero": nonzero,
        }
    return out


def hashing_quality(n: int = 200_000, hash_bits: int = 20, seed: int = 42) -> dict:
    """Progressive (predict, then learn) log loss on ``n`` events of the click
    stream, by name and hashed into 2^``hash_bits`` slots, per model of
    :data:`QUALITY_MODELS`; ``<model>_hashed_to_exact``: the hashed log loss
    over the exact one (the issue's bound: within 1%). ``ne``: normalized
    entropy, log loss over the entropy of the stream's click rate (below 1:
    better than predicting the base rate); ``true_model_ne``: the floor, the
    stream's own probabilities."""
    stream, records, labels, label_entropy = _click_stream(n, seed)
    rate = float(labels.mean())
    out: dict = {
        "events": n,
        "click_rate": round(rate, 4),
        "true_model_ne": round(_log_loss(stream.true_probabilities(), labels) / label_entropy, 4),
    }
    for name, settings in QUALITY_MODELS.items():
        for suffix, bits in (("exact", None), ("hashed", hash_bits)):
            p, _ = _progressive(records, replace(settings, hash_bits=bits))
            loss = _log_loss(p, labels)
            out[f"{name}_{suffix}_log_loss"] = round(loss, 5)
            out[f"{name}_{suffix}_ne"] = round(loss / label_entropy, 4)
        ratio = out[f"{name}_hashed_log_loss"] / out[f"{name}_exact_log_loss"]
        out[f"{name}_hashed_to_exact"] = round(ratio, 4)
    return out


def _batch(rng: np.random.Generator, n: int, fields: int, slots: np.ndarray) -> tuple:
    """``n`` labeled events of ``fields`` distinct slots each, drawn from ``slots``."""
    columns = np.concatenate([rng.choice(slots, fields, replace=False) for _ in range(n)])
    values = rng.normal(size=n * fields)
    offsets = np.arange(0, n * fields + 1, fields, dtype=np.int64)
    labels = rng.integers(0, 2, n).astype(np.int8)
    return columns.astype(np.int64), values, offsets, labels


def _timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def _version_changing(version: ModelState, slots: np.ndarray, rng) -> ModelState:
    """``version`` plus one other worker's delta over ``slots`` (what the merger
    publishes after merging it)."""
    keys = [str(j) for j in slots.tolist()]
    g = rng.normal(size=len(keys)) * 1e-3
    delta = ModelState(
        weights=dict(zip(keys, g.tolist(), strict=True)),
        intercept=1e-3,
        scaler_counts=dict.fromkeys(keys, 1.0),
        scaler_means=dict(zip(keys, rng.normal(size=len(keys)).tolist(), strict=True)),
        scaler_vars=dict.fromkeys(keys, 0.0),
        n_learned=len(keys),
    )
    return add(version, delta)


def sync_cost(
    distinct: int = 1_000_000,
    hash_bits: int = 20,
    changed: int = 1000,
    fields: int = 20,
    periods: int = 20,
) -> dict:
    """Cut and adopt at ``distinct`` features, whole and by what changed.

    A hashed kernel model first learns events until ``distinct`` slots hold
    state. Then, per merge period (``MergeSettings().every_events`` labeled
    events of ``fields`` random slots), a worker cuts (the delta, packed as a
    contribution is) and syncs onto a version in which the merger applied its
    contribution and another worker's, over ``changed`` slots. ``cut_ms`` and
    ``adopt_ms`` time one of each way; ``adopt_idle_ms`` adopts a version
    with ``changed`` slots and nothing pending (the brief's yardstick).
    ``*_eps``: events/s over ``periods`` merge periods, with no merging, and
    cutting and syncing each way (the whole way over fewer periods: it takes
    seconds each)."""
    rng = np.random.default_rng(5)
    every = MergeSettings().every_events
    model = KernelModel(ModelSettings(hash_bits=hash_bits))
    n_slots = 1 << hash_bits
    if distinct > n_slots:
        raise ValueError(f"{distinct} distinct features do not fit in 2^{hash_bits} slots")
    filled = rng.permutation(n_slots)[:distinct].astype(np.int64)
    # Warm-up: every one of ``distinct`` slots learned once (events of ``fields`` slots).
    for start in range(0, distinct, 50_000 * fields):
        part = filled[start : start + 50_000 * fields]
        k = part.shape[0] // fields * fields
        n = k // fields
        offsets = np.arange(0, k + 1, fields, dtype=np.int64)
        labels = rng.integers(0, 2, n).astype(np.int8)
        model.score_and_learn(part[:k], rng.normal(size=k), offsets, labels)
    version = model.state()  # as if the merger had it all: the worker is in sync
    model.clear_touched()
    cut_state = model.state()
    out: dict = {
        "distinct_features": int(model.slots_used()),
        "hash_bits": hash_bits,
        "changed_slots": changed,
        "merge_every": every,
        "fields": fields,
    }

    def period(cut, adopt) -> tuple[float, float, float, int]:
        """One merge period: learn, cut (and pack), then adopt the version that
        applied this contribution and another worker's ``changed`` slots.
        Seconds learning, cutting, adopting; keys the cut's delta holds."""
        nonlocal cut_state, version
        batch = _batch(rng, every, fields, filled)
        learn_s, _ = _timed(lambda: model.score_and_learn(*batch))
        cut_s, (delta, cut_state) = _timed(lambda: cut(model, cut_state))
        contribution = Contribution("bench", 0, 0, {0: (0, every)}, delta, 0.0)
        pack_s, _ = _timed(contribution.to_bytes)
        # The merger's side, not timed: the version after this contribution
        # and another worker's over ``changed`` slots.
        others = rng.choice(filled, changed, replace=False)
        version = _version_changing(add(version, delta), others, rng)
        pending = Pending(0, {0: (0, every)}, delta)
        said = keys_of(delta) | {str(j) for j in others.tolist()}
        adopt_s, cut_state = _timed(lambda: adopt(version, pending, said))
        return learn_s, cut_s + pack_s, adopt_s, len(keys_of(delta))

    def cut_new(m, c):
        delta, state, _ = cut_touched(m, c)
        return delta, state

    def adopt_new(v, pending, said):
        applied = Settled(pending=[], applied=[pending], rejected=[])
        return adopt_changed(model, cut_state, v, applied, said, (), None)

    def adopt_old(v, pending, said):
        return adopt_whole(model, v, [], None)

    def run(cut, adopt, n: int) -> tuple[float, float, float, int]:
        """Median cut and adopt seconds over ``n`` periods, and the merging cost:
        the share of the worker's time (learning, cutting, adopting) not learning."""
        timed = [period(cut, adopt) for _ in range(n)]
        learn = sum(t[0] for t in timed)
        cuts = sorted(t[1] for t in timed)
        adopts = sorted(t[2] for t in timed)
        merging = sum(cuts) + sum(adopts)
        return cuts[n // 2], adopts[n // 2], merging / (learn + merging), timed[-1][3]

    cut_s, adopt_s, cost, touched = run(cut_new, adopt_new, periods)
    out["touched_per_cut"] = touched
    out["cut_ms_changed"] = round(1000 * cut_s, 2)
    out["adopt_ms_changed"] = round(1000 * adopt_s, 2)
    out["merging_cost_changed"] = round(cost, 4)
    # The whole way: seconds per period at this size, so only a few.
    cut_s, adopt_s, cost, _ = run(cut_whole, adopt_old, 3)
    out["cut_ms_whole"] = round(1000 * cut_s, 1)
    out["adopt_ms_whole"] = round(1000 * adopt_s, 1)
    out["merging_cost_whole"] = round(cost, 4)
    # The yardstick: a version with ``changed`` slots, nothing pending, idle.
    nothing = Settled(pending=[], applied=[], rejected=[])
    idle = []
    for _ in range(periods):
        others = rng.choice(filled, changed, replace=False)
        version = _version_changing(version, others, rng)
        said = {str(j) for j in others.tolist()}
        start = time.perf_counter()
        cut_state = adopt_changed(model, cut_state, version, nothing, said, (), None)
        idle_s = time.perf_counter() - start
        idle.append(idle_s)
    out["adopt_idle_ms_changed"] = round(1000 * sorted(idle)[periods // 2], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.tools.featurebench")
    parser.add_argument("--events", type=int, default=50_000, help="events per rate run")
    parser.add_argument(
        "--growth-events", type=int, default=200_000, help="events of the vocabulary run"
    )
    parser.add_argument(
        "--quality-events", type=int, default=200_000, help="click-stream events of the quality run"
    )
    parser.add_argument("--hash-bits", type=int, default=20, help="bits of the hashed runs")
    parser.add_argument(
        "--sync-features",
        type=int,
        default=1_000_000,
        help="distinct features of the model whose cut and adoption are timed",
    )
    parser.add_argument(
        "--click-models",
        type=int,
        default=0,
        help="also compare the click models on this many click-stream events (0: not run)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = {
        "rates": rates(args.events, hash_bits=args.hash_bits),
        "vocabulary_growth": vocabulary_growth(args.growth_events, hash_bits=args.hash_bits),
        "hashing_quality": hashing_quality(args.quality_events, hash_bits=args.hash_bits),
        "sync_cost": sync_cost(args.sync_features, hash_bits=args.hash_bits),
    }
    if args.click_models:
        result["click_models"] = click_models(args.click_models, hash_bits=args.hash_bits)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for section, values in result.items():
            print(section)
            for key, value in values.items():
                print(f"  {key:<28} {value}")
        if args.out is not None:
            print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
