"""QuantizeLinear moved above MaxPool and Concat: they then move 8-bit data.

    QuantizeLinear(MaxPool(x), s, z)     == MaxPool(QuantizeLinear(x, s, z))
    QuantizeLinear(Concat(x1..xn), s, z) == Concat(QuantizeLinear(x1, s, z) ..)

for a per-tensor quantizer: quantization is monotone (max commutes with it,
and MaxPool pads with the lowest value in either type), and elementwise (it
commutes with joining tensors). Moved, the quantizer sits right after the
layer that produced x, where `int8-compute` folds it into that layer's
epilogue; MaxPool and Concat read and write a quarter of the bytes, and the
float tensor between the layer and the pooling is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph, Node, Value
from ember.passes.manager import Pass, register_pass

from ember.passes.quantization.saturation import quantizer_range


def _sole_quantizer(v: Value) -> Node | None:
    """The per-tensor 8-bit QuantizeLinear that is v's only reader, or None."""
    if len(v.uses) != 1:
        return None
    user, index = v.uses[0]
    if user.op_type != "QuantizeLinear" or index != 0 or quantizer_range(user) is None:
        return None
    return user


def _quantize(graph: Graph, x: Value, q: Node, before: Node) -> Value:
    new = graph.make_node("QuantizeLinear", [x, *q.inputs[1:]], attrs=dict(q.attrs), before=before)
    out = new.outputs[0]
    out.dtype, out.shape = q.outputs[0].dtype, x.shape
    return out


@register_pass
@dataclass(frozen=True)
class HoistQuantize(Pass):
    """QuantizeLinear(MaxPool(x)) -> MaxPool(QuantizeLinear(x)); likewise for each Concat input."""

    name: ClassVar[str] = "hoist-quantize"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            if node.graph is not graph or node.domain not in ("", "ai.onnx"):
                continue
            pool = node.op_type == "MaxPool" and len(node.outputs) == 1
            if not (pool or node.op_type == "Concat"):
                continue
            out = node.outputs[0]
            if graph.is_output(out):
                continue
            q = _sole_quantizer(out)
            if q is None:
                continue
            if any(x is None or x.const is not None for x in node.inputs):
                continue
            for i, x in enumerate(list(node.inputs)):
                graph.set_input(node, i, _quantize(graph, x, q, node))
            out.dtype = q.outputs[0].dtype
            graph.substitute(q.outputs[0], out)
            graph.remove(q)
            changed = True
        return changed

