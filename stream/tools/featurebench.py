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
  quality.

``learnstream bench --categorical`` (or ``python -m stream.tools.featurebench
[--events N] [--growth-events N] [--json]``) prints both.
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

from stream.config import EventLimits, ModelSettings
from stream.events.batch import BatchDecoder
from stream.events.codec import encode
from stream.events.hashing import Hasher
from stream.events.sources import CtrStream
from stream.model.kernel import KernelModel

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


def hashing_quality(n: int = 200_000, hash_bits: int = 20, seed: int = 42) -> dict:
    """Progressive (predict, then learn) log loss on ``n`` events of the click
    stream, by name and hashed into 2^``hash_bits`` slots, per model of
    :data:`QUALITY_MODELS`; ``<model>_hashed_to_exact``: the hashed log loss
    over the exact one (the issue's bound: within 1%). ``ne``: normalized
    entropy, log loss over the entropy of the stream's click rate (below 1:
    better than predicting the base rate); ``true_model_ne``: the floor, the
    stream's own probabilities."""
    stream = CtrStream(n_events=n, seed=seed)
    records = [encode({"id": i, "x": x, "y": y}, "msgpack") for i, x, y in stream]
    labels = np.array([y for _, _, y in stream], dtype=np.int8)
    rate = float(labels.mean())
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    out: dict = {
        "events": n,
        "click_rate": round(rate, 4),
        "true_model_ne": round(_log_loss(stream.true_probabilities(), labels) / entropy, 4),
    }
    for name, settings in QUALITY_MODELS.items():
        for suffix, bits in (("exact", None), ("hashed", hash_bits)):
            model = KernelModel(replace(settings, hash_bits=bits))
            hasher = Hasher(bits) if bits is not None else None
            decoder = BatchDecoder(model.column, EventLimits(), hasher)
            p = np.concatenate(
                [
                    model.score_and_learn(d.columns, d.values, d.offsets, d.labels)
                    for d in (decoder.decode(records[i : i + BATCH]) for i in range(0, n, BATCH))
                ]
            )
            loss = _log_loss(p, labels)
            out[f"{name}_{suffix}_log_loss"] = round(loss, 5)
            out[f"{name}_{suffix}_ne"] = round(loss / entropy, 4)
        ratio = out[f"{name}_hashed_log_loss"] / out[f"{name}_exact_log_loss"]
        out[f"{name}_hashed_to_exact"] = round(ratio, 4)
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
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = {
        "rates": rates(args.events, hash_bits=args.hash_bits),
        "vocabulary_growth": vocabulary_growth(args.growth_events, hash_bits=args.hash_bits),
        "hashing_quality": hashing_quality(args.quality_events, hash_bits=args.hash_bits),
    }
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
