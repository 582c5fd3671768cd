"""A hashed CTR model gives one p for one categorical event wherever it is read.

The spec (issue 17, item 6): the worker (both paths), ``serve`` (``/v1/predict``,
one event and a batch), ``score --offline``, the whole-state JSON of ``model
export`` computed by hand from its documented formula, and the ONNX graph of
``model export --format onnx`` run in onnxruntime give the same p for the same
categorical events: the first three bit for bit (they share the featurizer and
the scoring function), the JSON formula and ONNX to 1e-6 (another summation
order, another sigmoid). Events are generated: numbers, strings and lists of
strings (repeats included), unicode names and values, and a 2^6-slot model so
that features of one event share slots. No broker.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import mmh3
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from stream.cli import main
from stream.config import ModelSettings, ServeSettings
from stream.events.codec import decode_event, encode
from stream.events.hashing import featurizer
from stream.model.kernel import KernelModel
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.sync.checkpoint import CheckpointStore, Snapshot
from tests.unit.test_categorical_paths import SITES, TAGS, categorical_rows, worker_ps

MODELS = {
    # 64 slots for ~50 names: features of one event collide.
    "ftrl-hash6": ModelSettings(optimizer="ftrl", learning_rate=0.1, hash_bits=6),
    # The recommended CTR model: FTRL on unscaled one-hot slots.
    "ftrl-hash18-unscaled": ModelSettings(
        optimizer="ftrl", learning_rate=0.2, ftrl_l1=1.0, scale=False, hash_bits=18
    ),
    "sgd-hash10-unscaled": ModelSettings(hash_bits=10, scale=False, learning_rate=0.05),
    # Not hashed: the features keep their names, the ONNX input is a dense row.
    "ftrl-by-name-unscaled": ModelSettings(optimizer="ftrl", learning_rate=0.1, scale=False),
}


class Exported:
    """One learned model and every reader of it, built once per model."""

    def __init__(self, name: str, root: Path) -> None:
        model_settings = MODELS[name]
        model = KernelModel(model_settings)
        featurize = featurizer(model_settings.hash_bits)
        for row in categorical_rows(2000, seed=1):
            event = decode_event(encode(row, "msgpack"))
            model.learn(featurize(event.x), event.y)
        self.snapshot = Snapshot(
            version=4, state=model.state(), model_config=model_settings.as_dict()
        )
        self.ckpt = root / "ckpt"
        CheckpointStore(self.ckpt, pipeline={"features": "features"}).write(self.snapshot)
        self.whole = json.loads(self._export("--format", "json"))
        onnx_file = root / "model.onnx"
        self._export("--format", "onnx", "--out", str(onnx_file))
        self.onnx = ort.InferenceSession(onnx_file.read_bytes(), providers=["CPUExecutionProvider"])
        holder = ModelHolder("none")
        holder.offer(self.snapshot)
        self.app = create_app(ServeSettings(), Backend(holder, None, None))

    def _export(self, *flags: str) -> bytes:
        out = io.TextIOWrapper(io.BytesIO())
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(["model", "export", "--offline", "--checkpoint-dir", str(self.ckpt),
                         "--log-level", "WARNING", *flags]) == 0  # fmt: skip
        out.flush()
        return out.buffer.getvalue()


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory) -> Exported:
    return Exported(request.param, tmp_path_factory.mktemp(request.param))


# -- what another language does with the export, written from the docs only ---


def contract_features(x: dict) -> dict[str, float]:
    """The contract's features of ``x``: a number as it is, ``name=v`` (1.0) for
    a string, one per distinct string of a list, in order."""
    out: dict[str, float] = {}
    for name, value in x.items():
        if isinstance(value, str):
            out[f"{name}={value}"] = 1.0
        elif isinstance(value, list):
            for v in value:
                out[f"{name}={v}"] = 1.0
        else:
            out[name] = float(value)
    return out


def slot_values(x: dict, hashing: dict) -> dict[int, float]:
    """Each slot the event touches and its value, features in one slot summed."""
    assert (hashing["hash"], hashing["seed"]) == ("murmurhash3_x86_32", 0)
    slots: dict[int, float] = {}
    for name, value in contract_features(x).items():
        s = mmh3.hash(name.encode("utf-8"), hashing["seed"], signed=False) % hashing["slots"]
        slots[s] = slots.get(s, 0.0) + value
    return slots


def model_features(doc: dict, x: dict) -> dict[str, float]:
    """The model's features of an event: slots in decimal when the export has a
    ``hashing`` block, else the contract's features by name."""
    if "hashing" in doc:
        return {str(s): v for s, v in slot_values(x, doc["hashing"]).items()}
    return contract_features(x)


def p_from_whole_json(doc: dict, x: dict) -> float:
    """sigmoid(intercept + sum over the event's features of w * (v - mean) / sqrt(var)),
    a feature's term 0 where it has no weight or (with the scaler) no variance."""
    logit = doc["intercept"]
    scale = doc["model_config"]["scale"]
    for name, v in model_features(doc, x).items():
        w = doc["weights"].get(name, 0.0)
        if scale:
            var = doc["scaler"]["vars"].get(name, 0.0)
            v = (v - doc["scaler"]["means"][name]) / math.sqrt(var) if var else 0.0
        logit += w * v
    return 1.0 / (1.0 + math.exp(-logit))


def onnx_inputs(xs: list[dict], hashing: dict) -> dict[str, np.ndarray]:
    """``slots`` int64 [N, M] and ``values`` double [N, M], padded with slot 2^B."""
    rows = [slot_values(x, hashing) for x in xs]
    width = max(1, *(len(r) for r in rows))
    slots = np.full((len(rows), width), hashing["slots"], dtype=np.int64)
    values = np.zeros((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        slots[i, : len(row)] = list(row)
        values[i, : len(row)] = list(row.values())
    return {"slots": slots, "values": values}


def onnx_dense(xs: list[dict], session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """``x`` double [N, K] of a model by name: the columns are the ``features`` of
    the graph's metadata; a feature an event lacks is 0 (the model has no scaler)."""
    names = json.loads(session.get_modelmeta().custom_metadata_map["features"])
    rows = [contract_features(x) for x in xs]
    return {"x": np.array([[row.get(n, 0.0) for n in names] for row in rows], dtype=np.float64)}


# -- the events ------------------------------------------------------------------

NAMES = ["n", "site", "tags", "ü", "城市", "x y"]  # none is "id", "y" or "ts", none has "="
strings = st.one_of(st.sampled_from([*SITES, *TAGS]), st.text(max_size=8))
values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-100, 100),
    strings,
    st.lists(strings, max_size=5),  # repeats and empty lists included
)
events = st.lists(
    st.dictionaries(st.sampled_from(NAMES), values, max_size=5), min_size=1, max_size=8
)


def score_offline(ckpt: Path, queries: list[dict]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.jsonl"
        rows.write_text("".join(json.dumps({"id": q["id"], **q["x"]}) + "\n" for q in queries))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(["score", str(rows), "--offline", "--checkpoint-dir", str(ckpt),
                         "--id-column", "id", "--log-level", "WARNING"]) == 0  # fmt: skip
    return {line["id"]: line["p"] for line in map(json.loads, out.getvalue().splitlines())}


@settings(max_examples=25, deadline=None)
@given(xs=events)
def test_worker_serve_score_export_and_onnx_give_one_p(exported: Exported, xs: list[dict]) -> None:
    queries = [{"id": f"q-{i}", "x": x} for i, x in enumerate(xs)]
    ids = [q["id"] for q in queries]
    worker = worker_ps(exported.snapshot, "kernel", queries)
    assert list(worker) == ids

    # Bit for bit: the worker's other path, serve one by one and in a batch, score --offline.
    assert worker_ps(exported.snapshot, "river", queries) == worker
    with TestClient(exported.app) as client:
        one = {q["id"]: client.post("/v1/predict", json=q).json()["p"] for q in queries}
        batch = {p["id"]: p["p"] for p in client.post("/v1/predict", json=queries).json()}
    assert one == batch == worker
    assert score_offline(exported.ckpt, queries) == worker

    # To 1e-6: the exported JSON's formula and the ONNX graph.
    want = np.array([worker[i] for i in ids])
    by_formula = np.array([p_from_whole_json(exported.whole, x) for x in xs])
    assert np.max(np.abs(by_formula - want)) <= 1e-6
    hashing = exported.whole.get("hashing")
    inputs = onnx_inputs(xs, hashing) if hashing else onnx_dense(xs, exported.onnx)
    (by_onnx,) = exported.onnx.run(["p"], inputs)
    assert by_onnx.shape == (len(xs),)
    assert np.max(np.abs(by_onnx - want)) <= 1e-6
