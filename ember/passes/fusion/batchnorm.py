"""BatchNormalization folded into the Conv, ConvTranspose or Gemm before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

X, W, B = Var("x"), Const("w"), Var("b", const=True, optional=True)
BN_PARAMS = (Const("scale"), Const("shift"), Const("mean"), Const("var"))


def _bn_affine(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """BN(y) = y * a + c, per channel."""
    eps = m["bn"].attrs.get("epsilon", 1e-5)
    a = m.const("scale") / np.sqrt(m.const("var") + eps)
    return a, m.const("shift") - m.const("mean") * a


class _FoldInto(Rule):
    axis: ClassVar[int]  # weight axis that holds output channels

    def check(self, m: Match) -> str | None:
        if m["bn"].attrs.get("training_mode", 0):
            return "BatchNormalization in training mode"
        if len(m["bn"].outputs) > 1:
            return "BatchNormalization's running-statistics outputs are requested"
        if m.const("w").dtype not in (np.float32, np.float64, np.float16):
            return "weights are not floating point"
        return None

    def rewrite(self, m: Match, graph: Graph):
        a, c = _bn_affine(m)
        w = m.const("w")
        shape = [1] * w.ndim
        shape[self.axis] = -1
        groups = m["op"].attrs.get("group", 1) if self.axis == 1 else 1
        if self.axis == 1 and groups > 1:  # ConvTranspose weight: [Cin, Cout/group, ...]
            w = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
            new_w = (w * a.reshape((groups, 1, -1) + (1,) * (w.ndim - 3))).reshape((-1,) + w.shape[2:])
        else:
            new_w = w * a.reshape(shape)
        b = m.const("b") if m["b"] is not None else np.zeros_like(a)
        op = m["op"]
        new = graph.make_node(op.op_type, [m["x"], graph.make_const(new_w.astype(w.dtype), "w_bn"),
                                           graph.make_const((b * a + c).astype(w.dtype), "b_bn")],
                              attrs=dict(op.attrs), before=m.root)
        new.attr_types.update(op.attr_types)
        return [new.outputs[0]]


class ConvBN(_FoldInto):
    name = "conv-bn"
    axis = 0
    pattern = Op("BatchNormalization", Op("Conv", X, W, B, name="op"), *BN_PARAMS, name="bn")


class ConvTransposeBN(_FoldInto):
    name = "convtranspose-bn"
    axis = 1
    pattern = Op("BatchNormalization", Op("ConvTranspose", X, W, B, name="op"), *BN_PARAMS, name="bn")


class GemmBN(_FoldInto):
    name = "gemm-bn"
    pattern = Op("BatchNormalization", Op("Gemm", X, W, B, name="op"), *BN_PARAMS, name="bn")

    @property
    def axis(self) -> int:  # type: ignore[override]
        return 0

    def check(self, m: Match) -> str | None:
        op = m["op"]
        if op.attrs.get("transA", 0) or op.attrs.get("alpha", 1.0) != 1.0 or op.attrs.get("beta", 1.0) != 1.0:
            return "Gemm with transA/alpha/beta"
        if not op.attrs.get("transB", 0):
            return "Gemm without transB (weights are [K, N])"
        return super().check(m)


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(RuleSet):
    """Fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm weights."""

    name: ClassVar[str] = "fold-batchnorm"
    rules: ClassVar = (ConvBN(), ConvTransposeBN(), GemmBN())
