"""Ember's own operators (domain `com.ember`), made by the fusion passes.

Each one is defined twice, once per consumer:
- as an ONNX function (`FunctionProto`) built from standard ops, added to
  every exported model that uses it, so onnxruntime, Netron and any ONNX
  tool still open and run the optimised graph;
- as a Relax converter, so lowering emits the matching Relax operator
  (`nn.gelu`, `nn.silu`, `nn.attention`) instead of a chain of elementwise
  kernels. Only `compiler/lower.py` asks for the converters (they import TVM).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
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


@cache
def _checked_copy(dtype: str, what: str):
    """TIR: y = x (1-D), after asserting flag != 0 with message `what` (parsed
    once per dtype and message: a model checks many tensors alike)."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def check(x_handle: T.handle, flag: T.Buffer((), "int32"), y_handle: T.handle):
        n = T.int64()
        x = T.match_buffer(x_handle, (n,), dtype)
        y = T.match_buffer(y_handle, (n,), dtype)
        assert flag[()] != 0, what
        for i in range(n):
            with T.sblock("copy"):
                vi = T.axis.spatial(n, i)
                y[vi] = x[vi]

    return check


def relax_converters(kernel_asserts: bool = True) -> dict[str, type]:
    """Converters for TVM's ONNX frontend, keyed by op type. The frontend's
    convert map ignores domains, so these names must not be TVM's own.
    `kernel_asserts`: run-time checks are compiled into a kernel (CPU
    targets) rather than Relax's assert_op on the VM (CUDA)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def unary(relax_op):
        class Unary(OnnxOpConverter):
            @classmethod
            def _impl_v1(cls, bb, inputs, attr, params):
                return relax_op(inputs[0])

        return Unary

    class Attention(OnnxOpConverter):
        """softmax(Q KT * scale [+ mask]) V on Q [B,H,S,D], KT [B,H,D,T], V [B,H,T,Dv],
        as batched matmuls and a softmax (TVM's fused nn.attention lowers to
        one unscheduled loop nest, ~100x slower on CPU)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            q, kt, v = inputs[:3]
            dtype = q.ty.dtype
            scale = attr.get("scale")
            if scale is None:
                scale = 1.0 / float(int(q.ty.shape.values[-1])) ** 0.5
            scores = bb.emit(relax.op.multiply(relax.op.matmul(q, kt), relax.const(scale, dtype)))
            if len(inputs) > 3 and inputs[3] is not None:
                scores = bb.emit(relax.op.add(scores, inputs[3]))
            weights = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            return relax.op.matmul(weights, v)

    class CheckBounds(OnnxOpConverter):
        """x -> x, asserting at run time that x is within [-b, b) (indices)
        or has no zero (divisors, when no bound is given). On CPUs the
        assertion is compiled into the kernel that passes x on
        (`_checked_copy`): Relax's assert_op is a function of TVM's compiler
        library, which a device with only the TVM runtime (or the emulated
        one) lacks. On CUDA the flag lives in GPU memory, which only the
        VM's assert_op reads (GPU artifacts run where TVM is installed)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x = inputs[0]
            dtype = x.ty.dtype
            if len(inputs) > 1 and inputs[1] is not None:
                b = bb.emit(relax.op.astype(inputs[1], dtype))
                ok = relax.op.logical_and(relax.op.greater_equal(x, relax.op.negative(b)), relax.op.less(x, b))
            else:
                ok = relax.op.not_equal(x, relax.const(0, dtype))
            flag = bb.emit(relax.op.min(relax.op.astype(ok, "int32")))
            cond = bb.emit(relax.op.not_equal(flag, relax.const(0, "int32")))
            what = attr.get("what", "runtime check failed")
            what = what.decode() if isinstance(what, bytes) else str(what)
            if not kernel_asserts:
                bb.emit(relax.op.assert_op(cond, [], what))
                return x
            flat = bb.emit(relax.op.reshape(x, (-1,)))
            check = bb.add_func(_checked_copy(dtype, what).with_attr("op_pattern", 8), "ember_check_bounds")  # opaque
            out = bb.emit(relax.call_tir(check, [flat, bb.emit(relax.op.astype(cond, "int32"))], flat.ty))
            return relax.op.reshape(out, x.ty.shape)

    return {"GeluErf": unary(relax.op.nn.gelu), "GeluTanh": unary(relax.op.nn.gelu_tanh),
            "Silu": unary(relax.op.nn.silu), "SDPA": Attention, "SDPAMasked": Attention, "CheckBounds": CheckBounds}
