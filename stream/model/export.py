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

A hashed model (``meta["hashing"]``, from :func:`stream.events.hashing.describe`)
has slots, not names: its features are slot numbers in decimal, listed in
numeric order, and every export carries ``hashing`` (function, seed, bits,
how a feature is named) so a reader anywhere computes the same slots. Its ONNX
graph takes an event as the slots it touches, not as a row of 2^B values:
``slots``: int64 [N, M] and ``values``: double [N, M], each row an event's
distinct slots and their values (features in one slot summed), padded to M
with the slot 2^B, which holds nothing. Only the slots given are scaled and
weighted, which is what our model does with an event (a feature it lacks adds
nothing), so there is no mean to fill in; a dense row of 2^B values would
cost megabytes per event and could not tell an absent feature from a 0. The
graph looks each slot up in ``column`` (int32 [2^B + 1]: the slot's index in
the compact arrays, or the empty last index for a slot without a weight and
for the padding) and gathers its weight, mean and standard deviation there
(Gather, Sub, Div, Mul, ReduceSum, Add, Sigmoid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from stream.config import ExportFormat, Quantize
from stream.errors import optional
from stream.model.quantize import quantize_int8, round_weights
from stream.model.state import ModelState

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
    def of(cls, state: ModelState, scale: bool, hashed: bool = False) -> Linear:
        """``hashed``: the names are slot numbers, listed in numeric order."""
        names = set(state.weights) | (set(state.scaler_vars) if scale else set())
        names = sorted(names, key=int) if hashed else sorted(names)
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
        **({"hashing": meta["hashing"]} if meta.get("hashing") else {}),
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
    """A standard ONNX graph: ``x`` double [N, K] -> ``p`` double [N]; for a
    hashed model ``slots`` int64 [N, M] and ``values`` double [N, M] -> ``p``."""
    onnx = optional("onnx", "onnx", "model export --format onnx")
    from onnx import helper

    hashing = meta.get("hashing")
    if hashing:
        graph = _sparse_graph(linear, int(hashing["bits"]), quantize)
    else:
        graph = _dense_graph(linear, quantize)
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


class _Graph:
    """Nodes and initializers of a graph being built."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], **attrs))
        return output

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(array, name))
        return name

    def widen(self, name: str, array: np.ndarray) -> str:
        """Store ``array`` as it is and cast it to double inside the graph."""
        from onnx import TensorProto

        if array.dtype == np.float64:
            return self.init(name, array)
        self.init(f"{name}_stored", array)
        return self.node("Cast", [f"{name}_stored"], name, to=TensorProto.DOUBLE)

    def weights(self, weights: np.ndarray, quantize: Quantize) -> str:
        """``w`` as double, stored as ``quantize`` says."""
        from onnx import TensorProto

        if quantize == "int8":
            q, scale = quantize_int8(weights.reshape(-1))
            self.init("w_q", q.reshape(weights.shape))
            self.init("w_scale", np.array(scale, dtype=np.float32))
            self.node("DequantizeLinear", ["w_q", "w_scale"], "w_f32")
            return self.node("Cast", ["w_f32"], "w", to=TensorProto.DOUBLE)
        if quantize == "float16":
            return self.widen("w", weights.astype(np.float16))
        return self.init("w", weights.astype(np.float64))


def _std(variances: np.ndarray, stats) -> np.ndarray:
    """Each feature's standard deviation as stored; river's scaler gives 0 where
    the variance is 0, and a finite difference divided by infinity is exactly
    0, so no mask is needed."""
    variances = variances.astype(stats).astype(np.float64)
    return np.where(variances > 0, np.sqrt(variances), np.inf).astype(stats)


def _sparse_graph(linear: Linear, bits: int, quantize: Quantize):
    """``slots`` int64 [N, M], ``values`` double [N, M] -> ``p`` double [N]."""
    from onnx import TensorProto

    g = _Graph()
    helper = g.helper
    k, n_slots = len(linear.features), 1 << bits
    column = np.full(n_slots + 1, k, dtype=np.int32)  # no weight, and the padding: index k
    column[np.array([int(f) for f in linear.features], dtype=np.int64)] = np.arange(k)
    g.init("column", column)
    g.node("Gather", ["column", "slots"], "col")
    # The compact arrays, each with an empty last entry for index k.
    weights = g.weights(np.append(linear.weights, 0.0), quantize)
    g.node("Gather", [weights, "col"], "w_of")
    current = "values"
    stats = _stats_dtype(quantize)
    if linear.means is not None and linear.vars is not None:
        mean = g.widen("mean", np.append(linear.means, 0.0).astype(stats))
        std = g.widen("std", np.append(_std(linear.vars, stats), np.inf).astype(stats))
        g.node("Gather", [mean, "col"], "mean_of")
        g.node("Gather", [std, "col"], "std_of")
        g.node("Sub", [current, "mean_of"], "c")
        current = g.node("Div", ["c", "std_of"], "z")
    g.node("Mul", [current, "w_of"], "terms")
    g.init("sum_axes", np.array([1], dtype=np.int64))
    g.node("ReduceSum", ["terms", "sum_axes"], "dot", keepdims=0)
    g.init("b", np.array([stats(linear.intercept)], dtype=np.float64))
    g.node("Add", ["dot", "b"], "logit")
    g.node("Sigmoid", ["logit"], "p")
    return helper.make_graph(
        g.nodes,
        "learnstream_hashed_logistic_regression",
        [
            helper.make_tensor_value_info("slots", TensorProto.INT64, ["N", "M"]),
            helper.make_tensor_value_info("values", TensorProto.DOUBLE, ["N", "M"]),
        ],
        [helper.make_tensor_value_info("p", TensorProto.DOUBLE, ["N"])],
        g.inits,
    )


def _dense_graph(linear: Linear, quantize: Quantize):
    """``x`` double [N, K] -> ``p`` double [N]."""
    from onnx import TensorProto

    g = _Graph()
    k = len(linear.features)
    stats = _stats_dtype(quantize)
    current = "x"
    if linear.means is not None and linear.vars is not None:
        g.node("Sub", [current, g.widen("mean", linear.means.astype(stats))], "c")
        current = g.node("Div", ["c", g.widen("std", _std(linear.vars, stats))], "z")
    g.node("MatMul", [current, g.weights(linear.weights.reshape(k, 1), quantize)], "dot")
    g.init("b", np.array([stats(linear.intercept)], dtype=np.float64))
    g.node("Add", ["dot", "b"], "logit2d")
    g.init("flat", np.array([-1], dtype=np.int64))
    g.node("Reshape", ["logit2d", "flat"], "logit")
    g.node("Sigmoid", ["logit"], "p")
    return g.helper.make_graph(
        g.nodes,
        "learnstream_logistic_regression",
        [g.helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", k])],
        [g.helper.make_tensor_value_info("p", TensorProto.DOUBLE, ["N"])],
        g.inits,
    )


def export_bytes(
    state: ModelState, scale: bool, meta: dict[str, Any], fmt: ExportFormat, quantize: Quantize
) -> bytes:
    """The model in ``fmt``, its weights quantized as ``quantize`` says."""
    linear = Linear.of(state, scale, hashed=bool(meta.get("hashing")))
    if quantize != "none":
        round_weights(linear.weights, quantize)  # raises on float16 overflow
    if fmt == "json":
        return to_json(linear, meta, quantize)
    if fmt == "msgpack":
        return to_msgpack(linear, meta, quantize)
    if fmt == "onnx":
        return to_onnx(linear, meta, quantize)
    raise ValueError(f"format must be json, msgpack or onnx, got {fmt!r}")
