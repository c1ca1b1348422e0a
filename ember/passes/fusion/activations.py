"""Recognise GELU (erf and tanh forms) and SiLU spelled out in elementwise
ops, and replace them by ember's GeluErf / GeluTanh / Silu (lowered to
Relax's nn.gelu, nn.gelu_tanh, nn.silu)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import custom_ops
from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

from ember.passes.fusion.common import is_float, scalar

X = Var("x")
HALF, ONE = Const("half"), Const("one")


def _near(value: float | None, target: float, tol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _outer_forms(part: Op) -> list[Op]:
    """0.5 * x * part, in the three association orders exporters produce."""
    return [Op("Mul", Op("Mul", X, part, commutative=True), HALF, commutative=True),
            Op("Mul", Op("Mul", X, HALF, commutative=True), part, commutative=True),
            Op("Mul", X, Op("Mul", part, HALF, commutative=True), commutative=True)]


ERF_PART = Op("Add", Op("Erf", Op(("Div", "Mul"), X, Const("k"), name="scale_op")), ONE, commutative=True)
TANH_PART = Op("Add", Op("Tanh", Op("Mul", Op("Add", X, Op("Mul", Op("Pow", X, Const("three")), Const("k3"),
                                                               commutative=True), commutative=True),
                                     Const("c"), commutative=True)), ONE, commutative=True)


class GeluRule(Rule):
    def __init__(self, pattern: Op, op_type: str, name: str):
        self.pattern, self.op_type, self.name = pattern, op_type, name

    def check(self, m: Match) -> str | None:
        if not is_float(m["x"]):
            return "not a floating-point tensor"
        if not (_near(scalar(m.const("half")), 0.5) and _near(scalar(m.const("one")), 1.0)):
            return "constants are not 0.5 and 1"
        if self.op_type == "GeluErf":
            k = scalar(m.const("k"))
            want = math.sqrt(2.0) if m["scale_op"].op_type == "Div" else 1 / math.sqrt(2.0)
            return None if _near(k, want) else f"erf argument scaled by {k}, not x/sqrt(2)"
        if not (_near(scalar(m.const("three")), 3.0) and _near(scalar(m.const("k3")), 0.044715)
                and _near(scalar(m.const("c")), math.sqrt(2 / math.pi))):
            return "tanh-form constants differ from 0.044715 and sqrt(2/pi)"
        return None

    def rewrite(self, m: Match, graph: Graph):
        n = graph.make_node(self.op_type, [m["x"]], domain=custom_ops.DOMAIN, before=m.root)
        return [n.outputs[0]]


class SiluRule(Rule):
    name = "silu"
    pattern = Op("Mul", X, Op("Sigmoid", X), commutative=True)

    def check(self, m: Match) -> str | None:
        return None if is_float(m["x"]) else "not a floating-point tensor"

    def rewrite(self, m: Match, graph: Graph):
        return [graph.make_node("Silu", [m["x"]], domain=custom_ops.DOMAIN, before=m.root).outputs[0]]


@register_pass
@dataclass(frozen=True)
class FuseGelu(RuleSet):
    """x*0.5*(1+erf(x/sqrt2)) -> GeluErf(x); the tanh approximation -> GeluTanh(x)."""

    name: ClassVar[str] = "fuse-gelu"
    rules: ClassVar = tuple(GeluRule(p, "GeluErf", f"gelu-erf-{i}") for i, p in enumerate(_outer_forms(ERF_PART))) + \
        tuple(GeluRule(p, "GeluTanh", f"gelu-tanh-{i}") for i, p in enumerate(_outer_forms(TANH_PART)))


@register_pass
@dataclass(frozen=True)
class FuseSilu(RuleSet):
    """x * Sigmoid(x) -> Silu(x)."""

    name: ClassVar[str] = "fuse-silu"
    rules: ClassVar = (SiluRule(),)
