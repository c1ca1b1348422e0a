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
LOWERING_ONLY = frozenset({"CheckBounds"})


def used_ops(op_types: set[tuple[str, str]]) -> list[CustomOp]:
    return [OPS[t] for d, t in sorted(op_types) if d == DOMAIN and t in OPS]


def relax_converters() -> dict[str, type]:
    """Converters for TVM's ONNX frontend, keyed by op type. The frontend's
    convert map ignores domains, so these names must not be TVM's own."""
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
        or has no zero (divisors, when no bound is given)."""

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
            bb.emit(relax.op.assert_op(cond, [], what.decode() if isinstance(what, bytes) else str(what)))
            return x

    return {"GeluErf": unary(relax.op.nn.gelu), "GeluTanh": unary(relax.op.nn.gelu_tanh),
            "Silu": unary(relax.op.nn.silu), "SDPA": Attention, "SDPAMasked": Attention, "CheckBounds": CheckBounds}


def frontend_fixes() -> dict[str, type]:
    """Replacements for TVM frontend converters whose output is hard to
    compile: Sum of N inputs becomes N-1 adds (TVM stacks the inputs into one
    (N+1)-d tensor, which defeats layout conversion and fusion); Clip with
    constant bounds becomes relax maximum/minimum ops (TVM emits opaque TIR
    calls, which layout conversion cannot see through). And for what TVM
    gets wrong: IsInf's detect_* attributes, SpaceToDepth's CRD mode, float
    Mod (fmod=0) by infinities, Expand to a run-time shape, Softplus and Mish
    of very negative inputs, SequenceInsert at a negative position."""
    from functools import reduce

    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import Clip as TvmClip

    from .pipeline import static_shape
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter
    from tvm.relax.frontend.onnx.onnx_frontend import Expand as TvmExpand
    from tvm.relax.frontend.onnx.onnx_frontend import Mod as TvmMod
    from tvm.relax.frontend.onnx.onnx_frontend import SequenceInsert as TvmSequenceInsert
    from tvm.relax.frontend.onnx.onnx_frontend import SpaceToDepth as TvmSpaceToDepth

    def bound(value, default: float) -> float | None:
        """A constant scalar clip bound as a float (NaN means unbounded), or None if not constant."""
        if value is None:
            return default
        if not isinstance(value, tvm.ir.expr.Constant) or value.value.numpy().size != 1:
            return None
        v = float(value.value.numpy().reshape(()))
        return default if np.isnan(v) else v

    class Clip(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            return cls._clip(bb, inputs[0], float(attr.get("min", -np.inf)), float(attr.get("max", np.inf)),
                             lambda: TvmClip._impl_v1(bb, inputs, attr, params))

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            lo = bound(inputs[1] if len(inputs) > 1 else None, -np.inf)
            hi = bound(inputs[2] if len(inputs) > 2 else None, np.inf)
            return cls._clip(bb, inputs[0], lo, hi, lambda: TvmClip._impl_v13(bb, inputs, attr, params))

        @classmethod
        def _clip(cls, bb, x, lo, hi, fallback):
            if lo is None or hi is None or not str(x.ty.dtype).startswith("float"):
                return fallback()
            dtype = x.ty.dtype
            if lo != -np.inf:
                x = bb.emit(relax.op.maximum(x, relax.const(lo, dtype)))
            if hi != np.inf:
                x = bb.emit(relax.op.minimum(x, relax.const(hi, dtype)))
            return x

    class Sum(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            return reduce(lambda a, b: bb.emit(relax.op.add(a, b)), inputs[1:], inputs[0])

    class IsInf(OnnxOpConverter):
        """IsInf with its detect_negative / detect_positive attributes (TVM ignores them)."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x = inputs[0]
            neg, pos = attr.get("detect_negative", 1), attr.get("detect_positive", 1)
            inf = relax.op.isinf(x)
            zero = relax.const(0, x.ty.dtype)
            if neg and pos:
                return inf
            if neg:
                return relax.op.logical_and(inf, relax.op.less(x, zero))
            if pos:
                return relax.op.logical_and(inf, relax.op.greater(x, zero))
            return relax.op.logical_and(inf, relax.op.not_equal(x, x))  # nothing: all false

    class SpaceToDepth(OnnxOpConverter):
        """SpaceToDepth with mode=CRD (opset 25+; TVM knows DCR only): blocks go
        after the channel, [N, C*b*b, H/b, W/b] from [N, C, H/b, b, W/b, b]."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            mode = attr.get("mode", b"DCR")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            x = inputs[0]
            shape = getattr(getattr(x.ty, "shape", None), "values", None)
            if mode == "DCR" or shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
                return TvmSpaceToDepth._impl_v1(bb, inputs, attr, params)
            n, c, h, w = (int(d) for d in shape)
            b = int(attr["blocksize"])
            y = relax.op.reshape(x, [n, c, h // b, b, w // b, b])
            y = relax.op.permute_dims(y, [0, 1, 3, 5, 2, 4])
            return relax.op.reshape(y, [n, c * b * b, h // b, w // b])

    class Mod(OnnxOpConverter):
        """Float Mod with fmod=0 as numpy's. TVM's x - floor(x / y) * y gives NaN
        for a finite x over an infinite y, where ONNX gives x (same signs or x = 0)
        or y (signs differ)."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x, y = inputs[0], inputs[1]
            if attr.get("fmod", 0) or not str(x.ty.dtype).startswith("float"):
                return TvmMod._impl_v10(bb, inputs, attr, params)
            zero = relax.const(0, x.ty.dtype)
            finite_x = relax.op.logical_not(relax.op.logical_or(relax.op.isinf(x), relax.op.isnan(x)))
            inf_y = relax.op.logical_and(relax.op.isinf(y), finite_x)
            signs_differ = relax.op.logical_and(relax.op.not_equal(x, zero),
                                                relax.op.logical_xor(relax.op.less(x, zero), relax.op.less(y, zero)))
            return relax.op.where(inf_y, relax.op.where(signs_differ, y, x), relax.op.floor_mod(x, y))

    class Expand(OnnxOpConverter):
        """Expand to a run-time shape with ONNX's broadcasting: where the input's
        dim is not 1 it wins over the shape's (TVM used the shape's values as they
        are: [3, 1] expanded by [2, 1, 6] gave [2, 1, 6], not [2, 3, 6])."""

        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            data, shape = inputs[0], inputs[1]
            if isinstance(shape, (relax.ShapeExpr, tvm.ir.expr.Constant)):
                return TvmExpand._impl_v13(bb, inputs, attr, params)
            dims, n = static_shape(data), static_shape(shape)
            if dims is None or n is None:
                return TvmExpand._impl_v13(bb, inputs, attr, params)
            dims, k = list(dims), n[0]
            rank = max(k, len(dims))
            if k < rank:
                shape = relax.op.concat([relax.const(np.ones(rank - k, "int64"), "int64"), shape], axis=0)
            padded = np.array([1] * (rank - len(dims)) + dims, "int64")
            shape = bb.normalize(relax.op.where(relax.const(padded == 1), shape, relax.const(padded, "int64")))
            return TvmExpand._impl_v13(bb, [data, shape], attr, params)

    def softplus(x):
        """max(x, 0) + log1p(exp(-|x|)). Relax has no log1p, and log(1 + t) of a tiny t
        keeps few of its digits (mish(-15) was 20% off); below t = 0.01 the series
        t - t^2/2 + t^3/3 is within 3e-7. (Goldberg's log(u) t / (u - 1) would not
        survive TVM's simplifier, which folds (1 + t) - 1 into t.)"""
        dtype = x.ty.dtype
        c = lambda v: relax.const(v, dtype)  # noqa: E731
        t = relax.op.exp(relax.op.negative(relax.op.abs(x)))
        series = relax.op.multiply(t, relax.op.subtract(c(1), relax.op.multiply(
            t, relax.op.subtract(c(0.5), relax.op.divide(t, c(3))))))
        log1p = relax.op.where(relax.op.less(t, c(0.01)), series, relax.op.log(relax.op.add(c(1), t)))
        return relax.op.add(relax.op.maximum(x, c(0)), log1p)

    class Softplus(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            return softplus(inputs[0])

    class Mish(OnnxOpConverter):
        """x tanh(softplus(x)) = x n / (n + 2), n = e^x (e^x + 2): no tanh of a tiny
        value (TVM's flushes them to 0), and x beyond 20 is its own mish."""

        @classmethod
        def _impl_v18(cls, bb, inputs, attr, params):
            x = inputs[0]
            c = lambda v: relax.const(v, x.ty.dtype)  # noqa: E731
            e = relax.op.exp(relax.op.minimum(x, c(20)))
            n = relax.op.multiply(e, relax.op.add(e, c(2)))
            return relax.op.where(relax.op.greater(x, c(20)), x,
                                  relax.op.divide(relax.op.multiply(x, n), relax.op.add(n, c(2))))

    class SequenceInsert(OnnxOpConverter):
        """A negative position counts from the back as Python's list.insert does
        (-1: before the last tensor; ONNX's reference). TVM appended after it."""

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            pos = inputs[2] if len(inputs) > 2 else None
            if isinstance(pos, tvm.ir.expr.Constant) and int(pos.value.numpy()) < 0:
                seq = list(inputs[0])
                index = int(pos.value.numpy()) + len(seq)
                if index < 0:
                    raise ValueError(f"SequenceInsert position out of bounds for length {len(seq)}")
                seq.insert(index, inputs[1])
                return relax.Tuple(seq)
            return TvmSequenceInsert._impl_v11(bb, inputs, attr, params)

    return {"Sum": Sum, "Clip": Clip, "IsInf": IsInf, "SpaceToDepth": SpaceToDepth, "Mod": Mod, "Expand": Expand,
            "Softplus": Softplus, "Mish": Mish, "SequenceInsert": SequenceInsert}
