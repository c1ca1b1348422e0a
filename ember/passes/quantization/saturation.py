"""Clip/Relu -> QuantizeLinear: drop the clamp when saturation does it anyway.

    QuantizeLinear(Clip(y, lo, hi), s, z) == QuantizeLinear(y, s, z)

whenever round(lo / s) + z <= qmin and round(hi / s) + z >= qmax: rounding is
monotone, so a value below lo quantizes to at most round(lo / s) + z, which
saturation takes to qmin as it does lo itself (the same above hi). Relu is a
Clip with lo = 0 and no upper bound. This is the common case, not a corner
one: a ReLU6 calibrated on its own output has range [0, 6], zero point 0 and
scale 6/255, so its clamp and the quantizer's coincide. Dropped, the clamp
leaves the integer kernels' epilogue (four vector ops of about ten).
NaN is left undefined by QuantizeLinear, clamped or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ember.compiler.ir import Graph, Node
from ember.passes.manager import Pass, register_pass

_RANGE = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127)}


def _scalar(node: Node, index: int) -> np.ndarray | None:
    v = node.inputs[index] if len(node.inputs) > index else None
    c = None if v is None else v.const
    if c is None:
        return None
    a = c.numpy()
    return a.reshape(()) if a.size == 1 else None


def _bounds(node: Node) -> tuple[float, float] | None:
    """(lo, hi) of a Relu or of a Clip with constant (or absent) bounds."""
    if node.op_type == "Relu":
        return 0.0, np.inf
    if "min" in node.attrs or "max" in node.attrs:  # Clip before opset 11
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        present = len(node.inputs) > i and node.inputs[i] is not None
        b = _scalar(node, i) if present else np.array(default)
        if b is None:
            return None
        bounds.append(float(b))
    return bounds[0], bounds[1]


def quantizer_range(q: Node) -> tuple[np.float32, int, int, int] | None:
    """(scale, zero point, qmin, qmax) of a per-tensor 8-bit QuantizeLinear."""
    if q.domain not in ("", "ai.onnx") or any(q.attrs.get(k, 0) for k in ("block_size", "output_dtype", "precision")):
        return None
    s = _scalar(q, 1)
    z = _scalar(q, 2) if len(q.inputs) > 2 and q.inputs[2] is not None else np.array(0, np.uint8)
    if s is None or z is None or s.dtype != np.float32 or not s > 0:
        return None
    dtype = onnx.helper.np_dtype_to_tensor_dtype(z.dtype)
    if dtype not in _RANGE:
        return None
    return np.float32(s), int(z), *_RANGE[dtype]


def _quantized(bound: float, s: np.float32, z: int) -> float:
    """round(bound / s) + z as QuantizeLinear computes it (float32), before saturation."""
    if np.isinf(bound):
        return bound
    with np.errstate(over="ignore"):
        return float(np.round(np.float32(bound) / s)) + z


@register_pass
@dataclass(frozen=True)
class DropSaturatedClips(Pass):
    """Remove a Clip or Relu whose only reader is a QuantizeLinear that clamps at least as tightly."""

    name: ClassVar[str] = "drop-saturated-clips"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            if node.op_type not in ("Clip", "Relu") or node.domain not in ("", "ai.onnx"):
                continue
            out = node.outputs[0]
            if graph.is_output(out) or len(out.uses) != 1:
                continue
            user, index = out.uses[0]
            if user.op_type != "QuantizeLinear" or index != 0:
                continue
            bounds, q = _bounds(node), quantizer_range(user)
            if bounds is None or q is None or np.isnan(bounds).any():
                continue
            s, z, qmin, qmax = q
            if _quantized(bounds[0], s, z) <= qmin and _quantized(bounds[1], s, z) >= qmax:
                graph.set_input(user, 0, node.inputs[0])
                graph.remove(node)
                changed = True
        return changed
