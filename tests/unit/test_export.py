"""Portable exports score as our model does: ONNX to 1e-6 in onnxruntime, JSON and
msgpack exactly (after the same rounding the quantized state has)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stream.config import ModelSettings
from stream.model.export import Linear, export_bytes, read_portable
from stream.model.online import OnlineModel
from stream.model.quantize import quantize_state
from stream.model.state import ModelState
from stream.sync.globalmodel import model_of
from tests.unit.serve_fixtures import FEATURES, event, snapshot

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
