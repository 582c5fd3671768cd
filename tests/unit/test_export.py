"""Portable exports score as our model does: ONNX to 1e-6 in onnxruntime, JSON and
msgpack exactly (after the same rounding the quantized state has)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stream.config import ModelSettings
from stream.events.codec import features
from stream.events.hashing import describe, featurizer
from stream.model.export import Linear, export_bytes, read_portable
from stream.model.online import OnlineModel
from stream.model.quantize import quantize_state
from stream.model.state import ModelState
from stream.serve.holder import serving
from stream.sync.checkpoint import Snapshot
from stream.sync.globalmodel import model_of
from tests.unit.serve_fixtures import FEATURES, event, snapshot
from tests.unit.test_categorical_paths import categorical_rows
from tests.unit.test_ctr_parity import onnx_inputs

SETTINGS = [ModelSettings(), ModelSettings(scale=False), ModelSettings(optimizer="ftrl")]
MODES = ["none", "float16", "int8"]


def _events(n: int = 200, drop: bool = False) -> list[dict[str, float]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        x = event(i, rng)["x"]
        if drop:
            x = {k: v for k, v in x.items() if rng.random() < 0.7}
        out.append(x)
    return out


def _dense(linear: Linear, xs: list[dict[str, float]]) -> np.ndarray:
    """A missing feature is given its mean (0 without a scaler): the documented rule."""
    fill = linear.means if linear.means is not None else np.zeros(len(linear.features))
    return np.array(
        [[x.get(name, fill[j]) for j, name in enumerate(linear.features)] for x in xs],
        dtype=np.float64,
    )


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
def test_onnx_matches_our_scoring_to_1e6(settings, mode):
    snap = snapshot(5, settings=settings)
    reference = model_of(replace(snap, state=quantize_state(snap.state, mode)))
    payload = export_bytes(snap.state, settings.scale, {"version": 5}, "onnx", mode)
    onnx.checker.check_model(onnx.load_from_string(payload))
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    linear = Linear.of(snap.state, settings.scale)
    for drop in (False, True):
        xs = _events(drop=drop)
        (p,) = session.run(["p"], {"x": _dense(linear, xs)})
        expected = np.array([reference.predict_proba(x) for x in xs])
        assert p.shape == (len(xs),)
        assert np.max(np.abs(p - expected)) <= 1e-6


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_json_and_msgpack_read_back_to_the_same_scores(settings, mode, fmt):
    snap = snapshot(5, settings=settings)
    reference = model_of(replace(snap, state=quantize_state(snap.state, mode)))
    payload = export_bytes(snap.state, settings.scale, {"version": 5}, fmt, mode)
    back = OnlineModel(settings)
    back.load_state(read_portable(payload).state())
    xs = _events(drop=True)
    assert [back.predict_proba(x) for x in xs] == [reference.predict_proba(x) for x in xs]


@pytest.mark.parametrize("fmt", ["json", "msgpack", "onnx"])
def test_quantized_exports_are_smaller(fmt):
    rng = random.Random(1)
    names = [f"feature_{i}" for i in range(200)]
    state = ModelState(
        weights={n: rng.gauss(0, 1) for n in names},
        intercept=0.5,
        scaler_means={n: rng.gauss(0, 9) for n in names},
        scaler_vars={n: rng.uniform(0.5, 9) for n in names},
    )
    sizes = {m: len(export_bytes(state, True, {}, fmt, m)) for m in MODES}
    assert sizes["float16"] < sizes["none"]
    assert sizes["int8"] < sizes["none"]
    if fmt != "json":  # JSON spends a few bytes on the int8 scale
        assert sizes["int8"] < sizes["float16"]


def test_quantized_state_rounds_weights_only_as_stored():
    state = snapshot(5).state
    half = quantize_state(state, "float16")
    assert all(np.float16(w) == w for w in half.weights.values())
    q8 = quantize_state(state, "int8")
    scale = max(abs(w) for w in state.weights.values()) / 127
    for name, w in state.weights.items():
        assert abs(q8.weights[name] - w) <= scale / 2 * 1.001
    assert set(q8.weights) == set(FEATURES)
    assert quantize_state(state, "none") is state


def test_float16_overflow_is_refused():
    state = replace(snapshot(1).state, weights={"a": 1e6})
    with pytest.raises(ValueError, match="overflows float16"):
        export_bytes(state, False, {}, "onnx", "float16")


def test_onnx_feature_without_variance_scores_zero_as_river_does():
    snap = snapshot(5)
    state = replace(snap.state, scaler_vars={**snap.state.scaler_vars, "f2": 0.0})
    model = OnlineModel(ModelSettings())
    model.load_state(state)
    payload = export_bytes(state, True, {}, "onnx", "none")
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    linear = Linear.of(state, True)
    xs = _events()
    (p,) = session.run(["p"], {"x": _dense(linear, xs)})
    expected = np.array([model.predict_proba(x) for x in xs])
    assert np.max(np.abs(p - expected)) <= 1e-6


def test_export_command_writes_the_file_and_reports_size_and_holdout(tmp_path, capsys):
    import csv

    from stream import cli
    from stream.sync.checkpoint import CheckpointStore

    snap = snapshot(9)
    CheckpointStore(tmp_path / "ckpt").write(snap)
    holdout = tmp_path / "holdout.csv"
    with holdout.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*FEATURES, "y"])
        writer.writeheader()
        for i, x in enumerate(_events(50)):
            writer.writerow({**x, "y": i % 2})
    out = tmp_path / "model.onnx"
    code = cli.main(
        ["model", "export", "--offline", "--checkpoint-dir", str(tmp_path / "ckpt"),
         "--format", "onnx", "--quantize", "int8", "--holdout", str(holdout),
         "--out", str(out), "--log-level", "WARNING"]
    )  # fmt: skip
    assert code == 0
    report = capsys.readouterr().err
    assert f"exported version 9 as onnx quantize=int8: {out.stat().st_size:,} bytes" in report
    assert "holdout" in report and "(50 labeled rows), full -> int8: accuracy" in report
    session = ort.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    linear = Linear.of(snap.state, True)
    (p,) = session.run(["p"], {"x": _dense(linear, _events(5))})
    reference = model_of(replace(snap, state=quantize_state(snap.state, "int8")))
    assert np.max(np.abs(p - [reference.predict_proba(x) for x in _events(5)])) <= 1e-6


# -- hashed models: slots, not names -------------------------------------------


def _hashed_snapshot(bits: int, scale: bool) -> Snapshot:
    """FTRL on the categorical rows, hashed into 2^bits slots."""
    settings = ModelSettings(optimizer="ftrl", learning_rate=0.1, hash_bits=bits, scale=scale)
    model = OnlineModel(settings)
    featurize = featurizer(bits)
    for row in categorical_rows(500, seed=3):
        model.learn(featurize(features(row["x"], row["id"])), bool(row["y"]))
    return Snapshot(version=2, state=model.state(), model_config=settings.as_dict())


def _hashed_meta(snap: Snapshot) -> dict:
    bits = snap.model_config["hash_bits"]
    return {"version": 2, "model_config": snap.model_config, "hashing": describe(bits)}


def test_a_hashed_export_lists_slots_in_numeric_order_and_says_how_to_compute_them():
    snap = _hashed_snapshot(8, scale=True)
    doc = json.loads(export_bytes(snap.state, True, _hashed_meta(snap), "json", "int8"))
    assert doc["hashing"] == {
        "hash": "murmurhash3_x86_32",
        "seed": 0,
        "bits": 8,
        "slots": 256,
        "feature": "a number under name is the feature name with that value; a string v "
        "under name is the feature 'name=v' with value 1.0, and a list of strings one "
        "such feature per distinct string",
        "slot": "murmurhash3_x86_32(utf8(feature), seed) as an unsigned 32-bit integer, "
        "modulo slots",
        "same_slot": "features of one event in one slot are one, the sum of their values",
    }
    slots = [int(f) for f in doc["features"]]
    assert slots == sorted(slots) and len(slots) == len(set(snap.state.weights))


@pytest.mark.parametrize("scale", [True, False], ids=["scaled", "unscaled"])
@pytest.mark.parametrize("mode", MODES)
def test_a_hashed_onnx_takes_slots_and_values_and_scores_as_serve_to_1e6(scale, mode):

    snap = _hashed_snapshot(6, scale)
    meta = _hashed_meta(snap)
    session = ort.InferenceSession(
        export_bytes(snap.state, scale, meta, "onnx", mode), providers=["CPUExecutionProvider"]
    )
    inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    assert inputs == [
        ("slots", "tensor(int64)", ["N", "M"]),
        ("values", "tensor(double)", ["N", "M"]),
    ]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("p", "tensor(double)", ["N"])
    ]
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["hashing"]) == meta["hashing"]
    rows = categorical_rows(300, seed=9)
    (p,) = session.run(["p"], onnx_inputs([r["x"] for r in rows], meta["hashing"]))
    served = serving(snap, mode)
    expected = [served.predict_proba(features(r["x"], r["id"])) for r in rows]
    assert np.max(np.abs(p - expected)) <= 1e-6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_a_hashed_compact_export_reads_back_to_the_same_scores(mode, fmt):

    snap = _hashed_snapshot(6, scale=True)
    payload = export_bytes(snap.state, True, _hashed_meta(snap), fmt, mode)
    back = OnlineModel(ModelSettings(**snap.model_config))
    back.load_state(read_portable(payload).state())
    served, featurize = serving(snap, mode), featurizer(6)
    xs = [features(r["x"], r["id"]) for r in categorical_rows(300, seed=9)]
    assert [back.predict_proba(featurize(x)) for x in xs] == [served.predict_proba(x) for x in xs]
