"""Recognise layer normalisation spelled out as ReduceMean/Sub/Pow/Sqrt/Div
and replace it by LayerNormalization (opset >= 17), lowered to Relax's
nn.layer_norm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

from ember.passes.fusion.common import is_float, rank, scalar

X = Var("x")
AXES1, AXES2 = Var("axes1", const=True, optional=True), Var("axes2", const=True, optional=True)
DIFF = Op("Sub", X, Op("ReduceMean", X, AXES1, name="mean1"), name="diff")
SQUARE = Op(("Pow", "Mul"), DIFF, Var("two"), name="square")
VAR = Op("ReduceMean", SQUARE, AXES2, name="mean2")
NORM = Op("Div", DIFF, Op("Sqrt", Op("Add", VAR, Const("eps"), commutative=True)))
SCALED = Op("Mul", NORM, Const("gamma"), commutative=True)


def _axes(m: Match, node_name: str, var: str) -> list[int] | None:
    node = m[node_name]
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    arr = m.const(var) if m.values.get(var) is not None else None
    return None if arr is None else [int(a) for a in arr.reshape(-1)]


class LayerNormRule(Rule):
    def __init__(self, pattern: Op, name: str, with_beta: bool):
        self.pattern, self.name, self.with_beta = pattern, name, with_beta

    def check(self, m: Match) -> str | None:
        if m.opset < 17:
            return f"LayerNormalization needs opset 17, the model has {m.opset}"
        r = rank(m["x"])
        if r is None or not is_float(m["x"]):
            return "input rank or dtype unknown"
        for node, var in (("mean1", "axes1"), ("mean2", "axes2")):
            axes = _axes(m, node, var)
            if axes is None or len(axes) != 1 or axes[0] % r != r - 1:
                return f"{node} does not reduce over the last axis only (axes={axes})"
            if not m[node].attrs.get("keepdims", 1):
                return f"{node} drops the reduced axis"
        sq = m["square"]
        if sq.op_type == "Pow":
            if m["two"].const is None or scalar(m["two"].const.numpy()) != 2.0:
                return "the variance is not a mean of squares"
        elif m["two"] is not m["diff"].outputs[0]:
            return "the variance is not a mean of squares"
        last = m["x"].shape[-1]
        for name in ("gamma", "beta") if self.with_beta else ("gamma",):
            c = m.const(name)
            if c.size not in (1, last) if isinstance(last, int) else c.size != 1:
                return f"{name} is not per last-axis element"
        if scalar(m.const("eps")) is None:
            return "epsilon is not a scalar"
        return None

    def rewrite(self, m: Match, graph: Graph):
        last = m["x"].shape[-1]
        dtype = m.const("gamma").dtype

        def vec(name: str):
            c = m.const(name).reshape(-1)
            return graph.make_const(np.broadcast_to(c, (last,)).astype(dtype).copy(), name)

        beta = vec("beta") if self.with_beta else graph.make_const(np.zeros(last, dtype), "beta")
        n = graph.make_node("LayerNormalization", [m["x"], vec("gamma"), beta],
                            attrs={"axis": -1, "epsilon": float(scalar(m.const("eps")))}, before=m.root)
        return [n.outputs[0]]


@register_pass
@dataclass(frozen=True)
class FuseLayerNorm(RuleSet):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis -> LayerNormalization."""

    name: ClassVar[str] = "fuse-layernorm"
    rules: ClassVar = (LayerNormRule(Op("Add", SCALED, Const("beta"), commutative=True), "layernorm", True),
                       LayerNormRule(SCALED, "layernorm-no-beta", False))
