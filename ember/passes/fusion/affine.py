"""Constant scales and offsets folded into the weights and biases of the
Conv/MatMul before them, and MatMul + Add -> Gemm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

from ember.passes.fusion.common import channel_vector, rank

X, W, B, C = Var("x"), Const("w"), Var("b", const=True, optional=True), Const("c")


def _conv_like(m: Match, w, b, graph: Graph):
    op = m["op"]
    new = graph.make_node(op.op_type, [m["x"], graph.make_const(w, "w_fold"), graph.make_const(b, "b_fold")],
                          attrs=dict(op.attrs), before=m.root)
    new.attr_types.update(op.attr_types)
    return [new.outputs[0]]


class _ConvChannelConstant(Rule):
    """Conv(x, W, b) <op> c for a per-channel or scalar constant c."""

    def check(self, m: Match) -> str | None:
        out = m["op"].outputs[0]
        if rank(out) is None or channel_vector(m.const("c"), rank(out), m.const("w").shape[0]) is None:
            return "the constant is not per-channel (or the rank is unknown)"
        if m.const("c").dtype != m.const("w").dtype:
            return "dtypes differ"
        return None

    def fold(self, w: np.ndarray, b: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def rewrite(self, m: Match, graph: Graph):
        w = m.const("w")
        vec = channel_vector(m.const("c"), rank(m["op"].outputs[0]), w.shape[0])
        b = m.const("b") if m["b"] is not None else np.zeros(w.shape[0], w.dtype)
        new_w, new_b = self.fold(w, b, vec)
        return _conv_like(m, new_w.astype(w.dtype), new_b.astype(w.dtype), graph)


class ConvMul(_ConvChannelConstant):
    """Conv(x, W, b) * c  ->  Conv(x, W*c, b*c)."""

    name = "conv-mul"
    pattern = Op("Mul", Op("Conv", X, W, B, name="op"), C, commutative=True)

    def fold(self, w, b, vec):
        return w * vec.reshape((-1,) + (1,) * (w.ndim - 1)), b * vec


class ConvAdd(_ConvChannelConstant):
    """Conv(x, W, b) + c  ->  Conv(x, W, b + c)."""

    name = "conv-add"
    pattern = Op("Add", Op("Conv", X, W, B, name="op"), C, commutative=True)

    def fold(self, w, b, vec):
        return w, b + vec


class MatMulAddToGemm(Rule):
    """MatMul(x[M,K], W[K,N]) + b[N]  ->  Gemm(x, W, b)."""

    name = "matmul-add-gemm"
    pattern = Op("Add", Op("MatMul", X, W, name="op"), C, commutative=True)

    def check(self, m: Match) -> str | None:
        if rank(m["x"]) != 2 or m.const("w").ndim != 2:
            return "Gemm needs a 2-D input and 2-D weights"
        c, n = m.const("c"), m.const("w").shape[1]
        if c.ndim > 2 or (c.size != n and c.size != 1) or (c.ndim == 2 and c.shape[0] != 1):
            return f"bias of shape {list(c.shape)} is not a row vector of {n}"
        if c.dtype != m.const("w").dtype:
            return "dtypes differ"
        return None

    def rewrite(self, m: Match, graph: Graph):
        n = m.const("w").shape[1]
        bias = np.broadcast_to(m.const("c").reshape(-1), (n,)).copy()
        gemm = graph.make_node("Gemm", [m["x"], m["w"], graph.make_const(bias, "gemm_b")], before=m.root)
        return [gemm.outputs[0]]


class MatMulMul(Rule):
    """MatMul(x, W) * c  ->  MatMul(x, W*c) for c scalar or along the last axis."""

    name = "matmul-mul"
    pattern = Op("Mul", Op("MatMul", X, W, name="op"), C, commutative=True)

    def check(self, m: Match) -> str | None:
        w, c = m.const("w"), m.const("c")
        if w.ndim != 2 or c.dtype != w.dtype:
            return "weights are not a 2-D constant of the same dtype"
        if c.size != 1 and (c.shape[-1] != w.shape[1] or c.size != w.shape[1]):
            return "the constant is not scalar or per output column"
        out = m["op"].outputs[0]
        if rank(out) is None or c.ndim > rank(out):
            return "the constant would broadcast the output"
        return None

    def rewrite(self, m: Match, graph: Graph):
        w = m.const("w")
        c = m.const("c").reshape(-1)
        mm = graph.make_node("MatMul", [m["x"], graph.make_const((w * c).astype(w.dtype), "w_fold")], before=m.root)
        return [mm.outputs[0]]


@register_pass
@dataclass(frozen=True)
class FoldAffine(RuleSet):
    """Fold constant Mul/Add after Conv and MatMul into weights and biases; MatMul+Add -> Gemm."""

    name: ClassVar[str] = "fold-affine"
    rules: ClassVar = (ConvMul(), ConvAdd(), MatMulMul(), MatMulAddToGemm())
