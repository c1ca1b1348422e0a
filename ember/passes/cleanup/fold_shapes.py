"""Shape(x) and Size(x) of statically shaped values become constants, so the
Shape -> Gather -> Concat -> Reshape chains of exported models fold away
(with fold-constants). CastLike(x, y) becomes Cast(x, to=y's type): only
y's type matters, and the dependency on y kept constants from folding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass


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
