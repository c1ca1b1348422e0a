"""Recognise scaled-dot-product attention, softmax(Q @ K^T * scale + mask) @ V
on 4-D [batch, heads, seq, dim] tensors, and replace it by ember's SDPA op
(lowered to Relax's nn.attention)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import custom_ops
from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

from ember.passes.fusion.common import is_float, rank, scalar

Q, KT, V, MASK = Var("q"), Var("kt"), Var("v"), Var("mask")
SCORES = Op("MatMul", Q, KT)


def _patterns():
    scaled = {"mul": Op("Mul", SCORES, Const("scale"), commutative=True, name="scale_op"),
              "div": Op("Div", SCORES, Const("scale"), name="scale_op"),
              "noscale": SCORES}
    for sname, s in scaled.items():
        yield f"sdpa-{sname}-mask", Op("MatMul", Op("Softmax", Op("Add", s, MASK, commutative=True), name="softmax"), V), True
        yield f"sdpa-{sname}", Op("MatMul", Op("Softmax", s, name="softmax"), V), False


class AttentionRule(Rule):
    def __init__(self, name: str, pattern: Op, masked: bool):
        self.name, self.pattern, self.masked = name, pattern, masked

    def _scale(self, m: Match) -> float | None:
        if "scale_op" not in m.nodes:
            return 1.0
        s = scalar(m.const("scale"))
        if s is None or s == 0:
            return None
        return s if m["scale_op"].op_type == "Mul" else 1.0 / s

    def check(self, m: Match) -> str | None:
        if any(rank(m[v]) != 4 for v in ("q", "kt", "v")) or not is_float(m["q"]):
            return "Q, K^T and V must be 4-D floating-point tensors"
        axis = m["softmax"].attrs.get("axis", -1 if m.opset >= 13 else 1)
        if axis not in (-1, 3):
            return f"softmax over axis {axis}, not the key axis"
        if self._scale(m) is None:
            return "the scale is not a non-zero scalar"
        if self.masked and (rank(m["mask"]) is None or rank(m["mask"]) > 4 or not is_float(m["mask"])):
            return "the mask is not an additive float tensor of rank <= 4"
        return None

    def rewrite(self, m: Match, graph: Graph):
        inputs = [m["q"], m["kt"], m["v"]] + ([m["mask"]] if self.masked else [])
        n = graph.make_node("SDPAMasked" if self.masked else "SDPA", inputs, domain=custom_ops.DOMAIN,
                            attrs={"scale": float(self._scale(m))}, before=m.root)
        n.attr_types["scale"] = 1  # FLOAT
        return [n.outputs[0]]


@register_pass
@dataclass(frozen=True)
class FuseAttention(RuleSet):
    """softmax(Q @ K^T * scale [+ mask]) @ V -> SDPA / SDPAMasked."""

    name: ClassVar[str] = "fuse-attention"
    rules: ClassVar = tuple(AttentionRule(n, p, masked) for n, p, masked in _patterns())
