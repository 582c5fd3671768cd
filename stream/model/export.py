"""Portable model files: compact JSON/msgpack and an ONNX graph, optionally quantized.

Pure: plain data in, bytes out; no Kafka, no files. Every format holds the
same thing: the feature names in a fixed order, the linear weights in that
order, the intercept, and (with a scaler) each feature's mean and variance.

Scoring a dense row ``x`` (one value per feature, in ``features`` order) is
``sigmoid(sum_j w_j * s_j(x_j) + b)`` with ``s_j(v) = (v - mean_j) / sqrt(var_j)``
(0 where ``var_j`` is 0) or ``s_j(v) = v`` without a scaler. Our model skips a
feature an event does not carry; in a dense row, give it its mean (the scaler
then makes it 0) or 0 without a scaler, which is the same.

The ONNX graph takes ``x``: double [N, K] and gives ``p``: double [N], with
operators every runtime has (Sub, Div, MatMul, Add, Reshape, Sigmoid, Cast,
DequantizeLinear; opset 13). Quantized weights are stored as float16 or int8
initializers and widened inside the graph, so the file is small and the
input and output stay double.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import numpy as np

from stream.config import Quantize
from stream.errors import optional
from stream.model.quantize import quantize_int8, round_weights
from stream.model.state import ModelState

ExportFormat = Literal["json", "msgpack", "onnx"]
FORMAT_NAME = "learnstream-linear/1"
ONNX_OPSET = 13


@dataclass(frozen=True)
class Linear:
    """A model's scoring parameters as dense arrays in one feature order."""

    features: list[str]
    weights: np.ndarray  # float64 [K]
    intercept: float
    means: np.ndarray | None  # float64 [K], None without a scaler
    vars: np.ndarray | None

    @classmethod
    def of(cls, state: ModelState, scale: bool) -> Linear:
        names = sorted(set(state.weights) | (set(state.scaler_vars) if scale else set()))
        weights = np.array([state.weights.get(n, 0.0) for n in names], dtype=np.float64)
        if not scale:
            return cls(names, weights, float(state.intercept), None, None)
        means = np.array([state.scaler_means.get(n, 0.0) for n in names], dtype=np.float64)
        variances = np.array([state.scaler_vars.get(n, 0.0) for n in names], dtype=np.float64)
        return cls(names, weights, float(state.intercept), means, variances)

    def state(self) -> ModelState:
        """Back to a model state that scores as this file does."""
        weights = dict(zip(self.features, self.weights.tolist(), strict=True))
        if self.means is None or self.vars is None:
            return ModelState(weights=weights, intercept=self.intercept)
        return ModelState(
            weights=weights,
            intercept=self.intercept,
            scaler_means=dict(zip(self.features, self.means.tolist(), strict=True)),
            scaler_vars=dict(zip(self.features, self.vars.tolist(), strict=True)),
            scaler_counts={n: 1.0 for n in self.features},
        )


def _header(meta: dict[str, Any], quantize: Quantize) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": meta.get("version", 0),
        "n_learned": meta.get("n_learned", 0),
        "model_config": meta.get("model_config", {}),
        "quantize": quantize,
    }


def _stats_dtype(quantize: Quantize):
    return np.float64 if quantize == "none" else np.float32


def to_json(linear: Linear, meta: dict[str, Any], quantize: Quantize) -> bytes:
    """Compact JSON: arrays in feature order; float16 weights in their shortest form."""
    doc = _header(meta, quantize)
    doc["features"] = linear.features
    if quantize == "int8":
        q, scale = quantize_int8(linear.weights)
        doc["weights"], doc["weight_scale"] = q.tolist(), scale
    elif quantize == "float16":
        # str() of a float16 is the shortest decimal that reads back to the same half.
        doc["weights"] = [float(str(v)) for v in linear.weights.astype(np.float16)]
    else:
        doc["weights"] = linear.weights.tolist()
    stats = _stats_dtype(quantize)
    doc["intercept"] = float(stats(linear.intercept))
    if linear.means is not None and linear.vars is not None:
        doc["scaler"] = {
            "means": [float(str(v)) for v in linear.means.astype(stats)],
            "vars": [float(str(v)) for v in linear.vars.astype(stats)],
        }
    return json.dumps(doc, separators=(",", ":")).encode()


def to_msgpack(linear: Linear, meta: dict[str, Any], quantize: Quantize) -> bytes:
    """Compact msgpack: arrays as little-endian binary (float64, float32, float16, int8)."""
    doc = _header(meta, quantize)
    doc["features"] = linear.features
    if quantize == "int8":
        q, scale = quantize_int8(linear.weights)
        doc["weights"], doc["weight_dtype"], doc["weight_scale"] = q.tobytes(), "int8", scale
    elif quantize == "float16":
        doc["weights"], doc["weight_dtype"] = linear.weights.astype("<f2").tobytes(), "float16"
    else:
        doc["weights"], doc["weight_dtype"] = linear.weights.astype("<f8").tobytes(), "float64"
    stats = _stats_dtype(quantize)
    doc["intercept"] = float(stats(linear.intercept))
    if linear.means is not None and linear.vars is not None:
        dtype = "<f8" if stats is np.float64 else "<f4"
        doc["scaler"] = {
            "dtype": "float64" if stats is np.float64 else "float32",
            "means": linear.means.astype(dtype).tobytes(),
            "vars": linear.vars.astype(dtype).tobytes(),
        }
    return msgpack.packb(doc, use_bin_type=True)


_DTYPES = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "int8": "i1"}


def read_portable(payload: bytes) -> Linear:
    """A JSON or msgpack export back to dense arrays (dequantized to float64)."""
    doc = msgpack.unpackb(payload, raw=False) if payload[:1] != b"{" else json.loads(payload)
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"not a {FORMAT_NAME} export (format {doc.get('format')!r})")
    raw = doc["weights"]
    if isinstance(raw, bytes):
        weights = np.frombuffer(raw, dtype=_DTYPES[doc["weight_dtype"]]).astype(np.float64)
    else:
        weights = np.array(raw, dtype=np.float64)
    quantize = doc["quantize"]
    if quantize == "int8":
        weights = weights * np.float64(doc["weight_scale"])
    elif quantize == "float16":
        # JSON holds the shortest decimal of each half; read it back as that half.
        weights = weights.astype(np.float16).astype(np.float64)
    means = variances = None
    scaler = doc.get("scaler")
    if scaler is not None:
        if isinstance(scaler["means"], bytes):
            dtype = _DTYPES[scaler["dtype"]]
            means = np.frombuffer(scaler["means"], dtype=dtype).astype(np.float64)
            variances = np.frombuffer(scaler["vars"], dtype=dtype).astype(np.float64)
        else:
            means = np.array(scaler["means"], dtype=np.float64)
            variances = np.array(scaler["vars"], dtype=np.float64)
    intercept = float(doc["intercept"])
    if quantize != "none":
        narrow = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
        intercept = float(np.float32(intercept))
        if means is not None and variances is not None:
            means, variances = narrow(means), narrow(variances)
    return Linear(list(doc["features"]), weights, intercept, means, variances)


def to_onnx(linear: Linear, meta: dict[str, Any], quantize: Quantize) -> bytes:
    """A standard ONNX graph: ``x`` double [N, K] -> ``p`` double [N]."""
    onnx = optional("onnx", "onnx", "model export --format onnx")
    from onnx import TensorProto, helper, numpy_helper

    k = len(linear.features)
    nodes, inits = [], []

    def init(name: str, array: np.ndarray) -> None:
        inits.append(numpy_helper.from_array(array, name))

    def widen(name: str, array: np.ndarray) -> str:
        """Store ``array`` as it is and cast it to double inside the graph."""
        if array.dtype == np.float64:
            init(name, array)
            return name
        init(f"{name}_stored", array)
        nodes.append(helper.make_node("Cast", [f"{name}_stored"], [name], to=TensorProto.DOUBLE))
        return name

    stats = _stats_dtype(quantize)
    current = "x"
    if linear.means is not None and linear.vars is not None:
        variances = linear.vars.astype(stats).astype(np.float64)
        # river's scaler gives 0 where the variance is 0; a finite difference
        # divided by infinity is exactly 0, so no mask is needed.
        std = np.where(variances > 0, np.sqrt(variances), np.inf).astype(stats)
        nodes.append(
            helper.make_node("Sub", [current, widen("mean", linear.means.astype(stats))], ["c"])
        )
        nodes.append(helper.make_node("Div", ["c", widen("std", std)], ["z"]))
        current = "z"
    column = linear.weights.reshape(k, 1)
    if quantize == "int8":
        q, scale = quantize_int8(linear.weights)
        init("w_q", q.reshape(k, 1))
        init("w_scale", np.array(scale, dtype=np.float32))
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_f32"]))
        nodes.append(helper.make_node("Cast", ["w_f32"], ["w"], to=TensorProto.DOUBLE))
    elif quantize == "float16":
        widen("w", column.astype(np.float16))
    else:
        init("w", column.astype(np.float64))
    nodes.append(helper.make_node("MatMul", [current, "w"], ["dot"]))
    init("b", np.array([stats(linear.intercept)], dtype=np.float64))
    nodes.append(helper.make_node("Add", ["dot", "b"], ["logit2d"]))
    init("flat", np.array([-1], dtype=np.int64))
    nodes.append(helper.make_node("Reshape", ["logit2d", "flat"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["p"]))
    graph = helper.make_graph(
        nodes,
        "learnstream_logistic_regression",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", k])],
        [helper.make_tensor_value_info("p", TensorProto.DOUBLE, ["N"])],
        inits,
    )
    model = helper.make_model(
        graph,
        producer_name="learnstream",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10 and most other runtimes
    header = _header(meta, quantize)
    header["features"] = linear.features
    for key, value in header.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_bytes(
    state: ModelState, scale: bool, meta: dict[str, Any], fmt: ExportFormat, quantize: Quantize
) -> bytes:
    """The model in ``fmt``, its weights quantized as ``quantize`` says."""
    linear = Linear.of(state, scale)
    if quantize != "none":
        round_weights(linear.weights, quantize)  # raises on float16 overflow
    if fmt == "json":
        return to_json(linear, meta, quantize)
    if fmt == "msgpack":
        return to_msgpack(linear, meta, quantize)
    if fmt == "onnx":
        return to_onnx(linear, meta, quantize)
    raise ValueError(f"format must be json, msgpack or onnx, got {fmt!r}")
