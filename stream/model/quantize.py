"""Rounding a model's state to fewer bits, for compact exports and for serving them.

Only the linear weights are quantized (``float16``: IEEE half precision;
``int8``: symmetric per-tensor, ``w = q * scale`` with ``q`` in [-127, 127]
and ``scale = max|w| / 127``). The intercept and the scaler's means and
variances are kept as float32: one scalar, and statistics whose range (an
income, a timestamp) float16 could not hold. The rounded state scores with
the ordinary model, so a quantized model is measured, served and exported by
the same code as the full one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stream.config import Quantize
from stream.model.state import ModelState

INT8_MAX = 127


def int8_scale(values: np.ndarray) -> float:
    """Symmetric per-tensor scale (float32, as stored); 1.0 when every value is 0."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    return float(np.float32(peak / INT8_MAX)) if peak > 0 else 1.0


def quantize_int8(values: np.ndarray) -> tuple[np.ndarray, float]:
    scale = int8_scale(values)
    q = np.clip(np.rint(values / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def round_weights(values: np.ndarray, mode: Quantize) -> np.ndarray:
    """The float64 values that ``mode`` stores for ``values`` (dequantized)."""
    if mode == "float16":
        half = values.astype(np.float16)
        if not np.all(np.isfinite(half)):
            raise ValueError(
                f"a weight of magnitude {float(np.max(np.abs(values))):g} overflows float16 "
                "(max 65504); use int8 or no quantization"
            )
        return half.astype(np.float64)
    if mode == "int8":
        q, scale = quantize_int8(values)
        return q.astype(np.float64) * np.float64(np.float32(scale))
    return values.astype(np.float64)


def _float32(mapping: dict[str, float]) -> dict[str, float]:
    return {k: float(np.float32(v)) for k, v in mapping.items()}


def quantize_state(state: ModelState, mode: Quantize) -> ModelState:
    """``state`` as a ``mode`` export holds it; ``none`` returns it unchanged."""
    if mode == "none":
        return state
    if mode not in ("float16", "int8"):
        raise ValueError(f"quantize must be none, float16 or int8, got {mode!r}")
    names = list(state.weights)
    rounded = round_weights(np.array([state.weights[n] for n in names], dtype=np.float64), mode)
    return replace(
        state,
        weights=dict(zip(names, rounded.tolist(), strict=True)),
        intercept=float(np.float32(state.intercept)),
        scaler_means=_float32(state.scaler_means),
        scaler_vars=_float32(state.scaler_vars),
    )
