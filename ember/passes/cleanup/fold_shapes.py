"""Shape(x) and Size(x) of statically shaped values become constants, so the
Shape -> Gather -> Concat -> Reshape chains of exported models fold away
(with fold-constants). So do Gather and Slice of Shape(x) that pick only
static dims of a value whose other dims are symbolic (a window size computed
from the height of a [batch, C, H, W] tensor). CastLike(x, y) becomes Cast(x, to=y's type): only
y's type matters, and the dependency on y kept constants from folding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph, const_array
from ember.passes.manager import Pass, register_pass


def _picked_dims(node) -> np.ndarray | None:
    """The dims a Gather or Slice of Shape(x) picks, where all of them are static."""
    source = node.inputs[0].producer if node.inputs and node.inputs[0] is not None else None
    if source is None or source.op_type != "Shape" or source.inputs[0] is None or source.inputs[0].shape is None:
        return None
    shape = source.inputs[0].shape
    dims = list(shape)[slice(source.attrs.get("start", 0), source.attrs.get("end", len(shape)))]
    positions = np.arange(len(dims))
    operands = [const_array(v) for v in node.inputs[1:]]
    if any(a is None for a in operands) or (node.op_type == "Gather" and node.attrs.get("axis", 0) != 0):
        return None
    try:
        if node.op_type == "Gather":
            picked = positions[operands[0]]
        else:  # Slice(data, starts, ends[, axes, steps]) of a 1-D shape
            starts, ends = operands[0], operands[1]
            steps = operands[3] if len(operands) > 3 else np.ones_like(starts)
            if starts.size != 1 or ends.size != 1 or steps.size != 1:
                return None
            picked = positions[int(starts[0]):int(np.clip(ends[0], -2**62, 2**62)):int(steps[0])]
    except (IndexError, ValueError):
        return None
    values = [dims[i] for i in picked.reshape(-1)]
    if not all(isinstance(d, int) for d in values):
        return None
    return np.array(values, np.int64).reshape(picked.shape)


def _cast_like_to_cast(g: Graph, node) -> bool:
    target = node.inputs[1] if len(node.inputs) > 1 else None
    if target is None or not target.dtype or node.inputs[0] is None:
        return False
    attrs = {"to": target.dtype}
    if "saturate" in node.attrs:
        attrs["saturate"] = node.attrs["saturate"]
    cast = g.make_node("Cast", [node.inputs[0]], attrs=attrs, before=node)
    out = node.outputs[0]
    cast.outputs[0].dtype, cast.outputs[0].shape = out.dtype or target.dtype, out.shape
    g.substitute(out, cast.outputs[0])
    g.remove(node)
    return True


@register_pass
@dataclass(frozen=True)
class FoldShapes(Pass):
    """Shape/Size of a value with a static shape -> constant."""

    name: ClassVar[str] = "fold-shapes"

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            for node in list(g.nodes):
                if node.op_type == "CastLike" and node.domain in ("", "ai.onnx"):
                    changed |= _cast_like_to_cast(g, node)
                    continue
                if node.op_type in ("Gather", "Slice") and node.domain in ("", "ai.onnx"):
                    value = _picked_dims(node)
                    if value is not None and not g.is_output(node.outputs[0]):
                        g.replace_all_uses(node.outputs[0], g.make_const(value, "dims"))
                        g.remove(node)
                        changed = True
                    continue
                if node.op_type not in ("Shape", "Size") or node.domain not in ("", "ai.onnx"):
                    continue
                x = node.inputs[0]
                if x is None or x.shape is None or not all(isinstance(d, int) for d in x.shape):
                    continue
                out = node.outputs[0]
                if g.is_output(out):
                    continue
                if node.op_type == "Size":
                    value = np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)
                else:
                    rank = len(x.shape)
                    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
                    value = np.array(x.shape, dtype=np.int64)[slice(start, end)]
                const = g.make_const(value, "shape")
                g.replace_all_uses(out, const)
                g.remove(node)
                changed = True
        return changed
