"""A user-written pass in about ten lines: Neg(Neg(x)) -> x.

Use it from the command line by loading this file as a plugin:

    ember compile model.onnx -o out --plugin examples/custom_pass.py --pipeline drop-double-neg,cleanup

The pass turns the outer Neg into an Identity fed by x; `cleanup` then
removes the Identity and the inner Neg if nothing else uses it.
"""

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class DropDoubleNeg(Pass):
    """Neg(Neg(x)) -> Identity(x)."""

    name: ClassVar[str] = "drop-double-neg"

    def run(self, graph: Graph) -> bool:
        changed = False
        for n in graph.nodes:
            inner = n.inputs[0].producer if n.op_type == "Neg" else None
            if inner is not None and inner.op_type == "Neg":
                graph.set_input(n, 0, inner.inputs[0])
                n.op_type = "Identity"
                changed = True
        return changed
