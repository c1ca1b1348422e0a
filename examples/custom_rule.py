"""A user-written declarative rewrite in about ten lines: Relu(Relu(x)) -> Relu(x).

    ember compile model.onnx -o out --plugin examples/custom_rule.py --pipeline fold-double-relu,cleanup
    ember optimize model.onnx -o opt.onnx --plugin examples/custom_rule.py --pipeline fold-double-relu,dce
"""

from dataclasses import dataclass
from typing import ClassVar

from ember.passes.manager import register_pass
from ember.passes.rewrite import Op, Rule, RuleSet, Var


class ReluRelu(Rule):
    name = "relu-relu"
    pattern = Op("Relu", Op("Relu", Var("x")))

    def rewrite(self, m, graph):
        return [graph.make_node("Relu", [m["x"]], before=m.root).outputs[0]]


@register_pass
@dataclass(frozen=True)
class FoldDoubleRelu(RuleSet):
    """Relu(Relu(x)) -> Relu(x)."""

    name: ClassVar[str] = "fold-double-relu"
    rules: ClassVar = (ReluRelu(),)
