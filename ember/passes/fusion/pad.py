"""A zero Pad of the spatial dims folded into the pads of the Conv after it.

Exporters of TensorFlow-style "same" padding (Hugging Face's MobileNet, EfficientNet ports, PaddleOCR)
write Pad -> Conv. Kept apart, the Pad is a copy of the whole activation, and on CPU targets it sits
between two NHWC convolutions in NCHW (TVM's layout conversion does not carry Pad): a transpose,
the copy and a transpose back. Folded, the convolution reads zeros it pads itself: the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph
from ember.passes.manager import register_pass
from ember.passes.rewrite import Const, Match, Op, Rule, RuleSet, Var

X, W, B = Var("x"), Const("w"), Var("b", optional=True)
PADS, VALUE, AXES = (Var(n, const=True, optional=True) for n in ("pads", "value", "axes"))


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pad_amounts(m: Match, rank: int) -> np.ndarray | None:
    """The Pad's [begin..., end...] over all `rank` dims, or None where it is not constant."""
    pad = m["pad"]
    if m.opset < 11:
        pads = pad.attrs.get("pads")
        return None if pads is None else np.asarray(pads, np.int64)
    if m["pads"] is None:
        return None
    pads = np.asarray(m.const("pads"), np.int64).reshape(-1)
    if m["axes"] is None:
        return pads
    axes = [int(a) % rank for a in np.asarray(m.const("axes")).reshape(-1)]
    full = np.zeros(2 * rank, np.int64)
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[len(axes) + i]
    return full


class PadConv(Rule):
    name = "pad-conv"
    pattern = Op("Conv", Op("Pad", X, PADS, VALUE, AXES, name="pad"), W, B, name="conv")

    def check(self, m: Match) -> str | None:
        pad, conv = m["pad"], m["conv"]
        if _text(pad.attrs.get("mode", "constant")) != "constant":
            return f"Pad mode {_text(pad.attrs['mode'])}"
        value = pad.attrs.get("value", 0.0) if m.opset < 11 else (
            0.0 if m["value"] is None else np.asarray(m.const("value")).reshape(-1))
        if np.any(np.asarray(value) != 0):
            return "Pad value is not zero"
        if _text(conv.attrs.get("auto_pad", "NOTSET")) != "NOTSET":
            return "Conv pads by auto_pad"
        rank = m.const("w").ndim
        pads = _pad_amounts(m, rank)
        if pads is None or pads.size != 2 * rank:
            return "Pad amounts are not constant"
        if np.any(pads < 0):
            return "Pad crops"
        if np.any(pads[[0, 1, rank, rank + 1]] != 0):
            return "Pad pads the batch or channel dim"
        return None

    def rewrite(self, m: Match, graph: Graph):
        conv = m["conv"]
        rank = m.const("w").ndim
        pads = _pad_amounts(m, rank)
        conv_pads = np.asarray(conv.attrs.get("pads", [0] * 2 * (rank - 2)), np.int64)
        conv_pads = conv_pads + np.concatenate([pads[2:rank], pads[rank + 2:]])
        new = graph.make_node("Conv", [m["x"], m["w"], m["b"]],
                              attrs={**conv.attrs, "pads": [int(p) for p in conv_pads]}, before=m.root)
        new.attr_types.update(conv.attr_types)
        return [new.outputs[0]]


@register_pass
@dataclass(frozen=True)
class FoldPad(RuleSet):
    """Pad(x, spatial zeros) -> Conv: the pads become the Conv's."""

    name: ClassVar[str] = "fold-pad"
    rules: ClassVar = (PadConv(),)
