"""Consecutive Transposes compose into one (or none); consecutive Reshapes
keep only the last one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

X = Var("x")


class TransposeTranspose(Rule):
    name = "transpose-transpose"
    pattern = Op("Transpose", Op("Transpose", X, name="first"), name="second")

    def check(self, m: Match) -> str | None:
        if m["first"].attrs.get("perm") is None or m["second"].attrs.get("perm") is None:
            return "a Transpose without explicit perm"
        return None

    def rewrite(self, m: Match, graph: Graph):
        p1, p2 = list(m["first"].attrs["perm"]), list(m["second"].attrs["perm"])
        perm = [p1[i] for i in p2]
        if perm == sorted(perm):
            return [m["x"]]
        t = graph.make_node("Transpose", [m["x"]], attrs={"perm": perm}, before=m.root)
        return [t.outputs[0]]


class ReshapeReshape(Rule):
    name = "reshape-reshape"
    pattern = Op("Reshape", Op("Reshape", X, Var("s1")), Const("s2"), name="second")

    def check(self, m: Match) -> str | None:
        s2 = m.const("s2")
        if np.any(s2 == 0) and not m["second"].attrs.get("allowzero", 0):
            return "the second shape copies dimensions (0) from the intermediate shape"
        return None

    def rewrite(self, m: Match, graph: Graph):
        r = graph.make_node("Reshape", [m["x"], m["s2"]], attrs=dict(m["second"].attrs), before=m.root)
        return [r.outputs[0]]


@register_pass
@dataclass(frozen=True)
class MergeTransposes(RuleSet):
    """Transpose(Transpose(x)) -> one Transpose; Reshape(Reshape(x)) -> one Reshape."""

    name: ClassVar[str] = "merge-transposes"
    rules: ClassVar = (TransposeTranspose(), ReshapeReshape())
