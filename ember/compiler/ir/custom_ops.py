"""Ember's own operators (domain `com.ember`), made by the fusion passes.

Each one is defined twice, once per consumer:
- as an ONNX function (`FunctionProto`) built from standard ops, added to
  every exported model that uses it, so onnxruntime, Netron and any ONNX
  tool still open and run the optimised graph;
- as a Relax converter (the TVM backend's `ember_ops.py`), so lowering emits
  the matching Relax operator (`nn.gelu`, `nn.silu`; attention as batched
  matmuls) instead of a chain of elementwise kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx
from onnx import helper as h

DOMAIN = "com.ember"
VERSION = 1


@dataclass(frozen=True)
class CustomOp:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[str, ...]
    body: Callable[[], list[onnx.NodeProto]]
    doc: str

    def function(self, opset: int = 17) -> onnx.FunctionProto:
        """The ONNX definition, importing the model's own default-domain opset
        (ONNX requires functions and model to agree)."""
        return h.make_function(DOMAIN, self.op_type, list(self.inputs), list(self.outputs), self.body(),
                               [h.make_opsetid("", opset)], attributes=list(self.attributes), doc_string=self.doc)


def _const(name: str, value: float) -> onnx.NodeProto:
    return h.make_node("Constant", [], [name], value_float=value)


def _scale_const(name: str) -> onnx.NodeProto:
    node = h.make_node("Constant", [], [name])
    a = onnx.AttributeProto(name="value_float", ref_attr_name="scale", type=onnx.AttributeProto.FLOAT)
    node.attribute.append(a)
    return node


def _gelu_body():
    return [_const("rsqrt2", 0.7071067811865476), _const("one", 1.0), _const("half", 0.5),
            h.make_node("Mul", ["X", "rsqrt2"], ["s"]), h.make_node("Erf", ["s"], ["e"]),
            h.make_node("Add", ["e", "one"], ["p"]), h.make_node("Mul", ["X", "p"], ["xp"]),
            h.make_node("Mul", ["xp", "half"], ["Y"])]


def _gelu_tanh_body():
    return [_const("c", 0.7978845608028654), _const("k", 0.044715), _const("one", 1.0), _const("half", 0.5),
            _const("three", 3.0),
            h.make_node("Pow", ["X", "three"], ["x3"]), h.make_node("Mul", ["x3", "k"], ["kx3"]),
            h.make_node("Add", ["X", "kx3"], ["inner"]), h.make_node("Mul", ["inner", "c"], ["scaled"]),
            h.make_node("Tanh", ["scaled"], ["t"]), h.make_node("Add", ["t", "one"], ["p"]),
            h.make_node("Mul", ["X", "p"], ["xp"]), h.make_node("Mul", ["xp", "half"], ["Y"])]


def _silu_body():
    return [h.make_node("Sigmoid", ["X"], ["s"]), h.make_node("Mul", ["X", "s"], ["Y"])]


def _attention_body(masked: bool):
    nodes = [_scale_const("scale_value"), h.make_node("MatMul", ["Q", "KT"], ["qk"]),
             h.make_node("Mul", ["qk", "scale_value"], ["scores"])]
    if masked:
        nodes.append(h.make_node("Add", ["scores", "Mask"], ["masked"]))
    nodes += [h.make_node("Softmax", ["masked" if masked else "scores"], ["probs"], axis=-1),
              h.make_node("MatMul", ["probs", "V"], ["Y"])]
    return nodes


OPS: dict[str, CustomOp] = {op.op_type: op for op in (
    CustomOp("GeluErf", ("X",), ("Y",), (), _gelu_body, "x * 0.5 * (1 + erf(x / sqrt(2)))"),
    CustomOp("GeluTanh", ("X",), ("Y",), (), _gelu_tanh_body,
             "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))"),
    CustomOp("Silu", ("X",), ("Y",), (), _silu_body, "x * sigmoid(x)"),
    CustomOp("SDPA", ("Q", "KT", "V"), ("Y",), ("scale",), lambda: _attention_body(False),
             "softmax(Q @ KT * scale) @ V; Q [B,H,S,D], KT [B,H,D,T], V [B,H,T,Dv]"),
    CustomOp("SDPAMasked", ("Q", "KT", "V", "Mask"), ("Y",), ("scale",), lambda: _attention_body(True),
             "softmax(Q @ KT * scale + Mask) @ V; Mask additive, broadcast to [B,H,S,T]"),
)}


# ops only lowering adds (runtime checks); they never appear in an exported graph
LOWERING_ONLY = frozenset({"CheckBounds", "NarrowEncode", "NarrowDecode"})


def used_ops(op_types: set[tuple[str, str]]) -> list[CustomOp]:
    return [OPS[t] for d, t in sorted(op_types) if d == DOMAIN and t in OPS]

