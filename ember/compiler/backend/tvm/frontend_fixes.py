"""Replacements for TVM frontend converters: for what TVM gets wrong
(measured on the ONNX conformance suite) and for what it converts into
something hard to compile. `converters()` returns them by ONNX op type;
`lower.py` puts them over TVM's own table for one import.

Hard to compile: Sum of N inputs becomes N-1 adds (TVM stacks the inputs into one
(N+1)-d tensor, which defeats layout conversion and fusion); Clip with
constant bounds, HardSigmoid and HardSwish become relax maximum/minimum ops
(TVM's clip is an opaque TIR call, which layout conversion cannot see
through); ConvTranspose with constant weights becomes convolutions
(conv_transpose.py). Wrong in TVM: IsInf's
detect_* attributes, SpaceToDepth's CRD mode, float Mod (fmod=0) by
infinities, Expand to a run-time shape, Softplus and Mish of very negative
inputs, SequenceInsert at a negative position, boolean ReduceMax/ReduceMin,
and float16 MatMul/Conv/Gemm/Softmax rounded at every step of their sums.
(Infinite and empty slices of ReduceMax/Min: guards.py.)
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter
from tvm.sym import Analyzer

from ember.compiler.backend.tvm import resample
from ember.compiler.backend.tvm.conv_transpose import ConvTranspose
from ember.compiler.backend.tvm.relax_util import meeting_dim, static_shape


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
                         lambda: tvm_onnx.Clip._impl_v1(bb, inputs, attr, params))

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        lo = bound(inputs[1] if len(inputs) > 1 else None, -np.inf)
        hi = bound(inputs[2] if len(inputs) > 2 else None, np.inf)
        return cls._clip(bb, inputs[0], lo, hi, lambda: tvm_onnx.Clip._impl_v13(bb, inputs, attr, params))

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


class HardSigmoid(OnnxOpConverter):
    """max(0, min(1, alpha x + beta)) as relax maximum/minimum (TVM's clip stops layout
    conversion: an SE block's gate ran NCHW between two NHWC convolutions)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = x.ty.dtype
        y = bb.normalize(relax.op.add(relax.op.multiply(x, relax.const(float(attr.get("alpha", 0.2)), dtype)),
                                      relax.const(float(attr.get("beta", 0.5)), dtype)))
        return Clip._clip(bb, y, 0.0, 1.0, lambda: tvm_onnx.HardSigmoid._impl_v1(bb, inputs, attr, params))


class HardSwish(OnnxOpConverter):
    """x * max(0, min(6, x + 3)) / 6 with relax maximum/minimum, as HardSigmoid."""

    @classmethod
    def _impl_v14(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = x.ty.dtype
        if not str(dtype).startswith("float"):
            return tvm_onnx.HardSwish._impl_v14(bb, inputs, attr, params)
        gate = Clip._clip(bb, bb.normalize(relax.op.add(x, relax.const(3.0, dtype))), 0.0, 6.0, None)
        return relax.op.multiply(x, relax.op.divide(gate, relax.const(6.0, dtype)))


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
            return tvm_onnx.SpaceToDepth._impl_v1(bb, inputs, attr, params)
        n, c, h, w = (int(d) for d in shape)
        b = int(attr["blocksize"])
        y = relax.op.reshape(x, [n, c, h // b, b, w // b, b])
        y = relax.op.permute_dims(y, [0, 1, 3, 5, 2, 4])
        return relax.op.reshape(y, [n, c * b * b, h // b, w // b])


class Mod(OnnxOpConverter):
    """Float Mod with fmod=0 as numpy's (Python's %). TVM's x - floor(x / y) * y gives NaN
    for a finite x over an infinite y, where ONNX gives x (same signs or x = 0)
    or y (signs differ); and a zero result takes the divisor's sign (0.0 % -2.0 is -0.0),
    where TVM's is +0.0."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, y = inputs[0], inputs[1]
        if attr.get("fmod", 0) or not str(x.ty.dtype).startswith("float"):
            return tvm_onnx.Mod._impl_v10(bb, inputs, attr, params)
        zero = relax.const(0, x.ty.dtype)
        finite_x = relax.op.logical_not(relax.op.logical_or(relax.op.isinf(x), relax.op.isnan(x)))
        inf_y = relax.op.logical_and(relax.op.isinf(y), finite_x)
        signs_differ = relax.op.logical_and(relax.op.not_equal(x, zero),
                                            relax.op.logical_xor(relax.op.less(x, zero), relax.op.less(y, zero)))
        out = relax.op.where(inf_y, relax.op.where(signs_differ, y, x), relax.op.floor_mod(x, y))
        signed_zero = relax.op.where(relax.op.less(y, zero), relax.const(-0.0, x.ty.dtype), zero)
        return relax.op.where(relax.op.equal(out, zero), signed_zero, out)


class Expand(OnnxOpConverter):
    """Expand to a run-time shape with ONNX's broadcasting: where the input's
    dim is not 1 it wins over the shape's (TVM used the shape's values as they
    are: [3, 1] expanded by [2, 1, 6] gave [2, 1, 6], not [2, 3, 6])."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        data, shape = inputs[0], inputs[1]
        if isinstance(shape, relax.ShapeExpr) and data.ty.shape is not None and not all(
                isinstance(d, tvm.tirx.IntImm) for d in list(shape.values) + list(data.ty.shape.values)):
            # TVM's compares symbolic dims with Python's == (an error): broadcast by ONNX's rule here
            target, dims = list(shape.values), list(data.ty.shape.values)
            dims = [tvm.tirx.IntImm("int64", 1)] * (len(target) - len(dims)) + dims
            one = lambda d: isinstance(d, tvm.tirx.IntImm) and d.value in (1, -1)  # noqa: E731
            fixed = lambda d: isinstance(d, tvm.tirx.IntImm) and d.value != 1  # noqa: E731
            out = [d if one(t) or fixed(d) else t for t, d in zip(target, dims)]  # the larger of the two
            return relax.op.broadcast_to(data, relax.ShapeExpr(out))
        if isinstance(shape, (relax.ShapeExpr, tvm.ir.expr.Constant)):
            return tvm_onnx.Expand._impl_v13(bb, inputs, attr, params)
        dims, n = static_shape(data), static_shape(shape)
        if dims is None or n is None:
            return tvm_onnx.Expand._impl_v13(bb, inputs, attr, params)
        dims, k = list(dims), n[0]
        rank = max(k, len(dims))
        if k < rank:
            shape = relax.op.concat([relax.const(np.ones(rank - k, "int64"), "int64"), shape], axis=0)
        padded = np.array([1] * (rank - len(dims)) + dims, "int64")
        shape = bb.normalize(relax.op.where(relax.const(padded == 1), shape, relax.const(padded, "int64")))
        return tvm_onnx.Expand._impl_v13(bb, [data, shape], attr, params)


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
        return tvm_onnx.SequenceInsert._impl_v11(bb, inputs, attr, params)


def patched(tvm_cls, fix):
    """TVM's converter class with every version's conversion passed through
    fix(tvm_conversion, bb, inputs, attr, params)."""

    def impl(name):
        tvm_impl = getattr(tvm_cls, name)
        return classmethod(lambda cls, bb, inputs, attr, params: fix(tvm_impl, bb, inputs, attr, params))

    return type(tvm_cls.__name__, (tvm_cls,), {n: impl(n) for n in dir(tvm_cls) if n.startswith("_impl_v")})


def dtype_of(x) -> str:
    return str(getattr(getattr(x, "ty", None), "dtype", ""))


def constant(v, params, what: str | None = None):
    """An operand's constant value as numpy; None when it is not a constant
    (or, with `what`, a ValueError naming it: TVM's importer reports it)."""
    c = tvm_onnx.get_constant(v, params)
    if isinstance(c, tvm.ir.expr.Constant):
        return c.value.numpy()
    if what:
        raise ValueError(f"{what} must be a constant")
    return None


def widen(tvm_impl, bb, inputs, attr, params):
    """float16/bfloat16 products accumulate in float32 and round once, as
    numpy (ONNX's reference) and onnxruntime do; TVM rounded every step of the sum."""
    dtype = dtype_of(inputs[0])
    if dtype not in ("float16", "bfloat16"):
        return tvm_impl(bb, inputs, attr, params)
    wide = type(inputs)(bb.normalize(relax.op.astype(x, "float32")) if x is not None and dtype_of(x) == dtype
                        else x for x in inputs)  # TVM's list type: None past its end
    return relax.op.astype(bb.normalize(tvm_impl(bb, wide, attr, params)), dtype)


class Softmax(tvm_onnx.Softmax):  # opset < 13 (flattening softmax) stays TVM's
    """float16 softmax as numpy computes it (ONNX's reference): each step
    rounded to float16, but the sum accumulated in float32 and rounded once."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        x = inputs[0]
        if x.ty.dtype != "float16":
            return tvm_onnx.Softmax._impl_v13(bb, inputs, attr, params)
        axis = attr.get("axis", -1)
        e = relax.op.exp(relax.op.subtract(x, relax.op.max(x, axis=axis, keepdims=True)))
        total = relax.op.sum(relax.op.astype(e, "float32"), axis=axis, keepdims=True)
        return relax.op.divide(e, relax.op.astype(total, "float16"))


def hyperbolic(sign: float):
    """cosh/sinh as (e^x +- e^-x) / 2 (LLVM has no such intrinsic); sinh of a small x by
    its series x + x^3/6 + x^5/120, where the difference would cancel."""

    class Hyperbolic(OnnxOpConverter):
        @classmethod
        def _impl_v9(cls, bb, inputs, attr, params):
            x = inputs[0]
            c = lambda v: relax.const(v, dtype_of(x))  # noqa: E731
            e = relax.op.exp(x)
            y = relax.op.multiply(c(0.5), relax.op.add(e, relax.op.multiply(c(sign), relax.op.divide(c(1), e))))
            if sign > 0:
                return y
            x2 = relax.op.multiply(x, x)
            series = relax.op.multiply(x, relax.op.add(c(1), relax.op.multiply(
                x2, relax.op.add(c(1 / 6), relax.op.multiply(x2, c(1 / 120))))))
            return relax.op.where(relax.op.less(relax.op.abs(x), c(0.01)), series, y)

    return Hyperbolic


def integer_pow(tvm_impl, bb, inputs, attr, params):
    """Integer Pow in float64 (exact up to 2^53), then back: TVM's power takes floats only;
    an integer exponent of a float base takes the base's type."""
    x, y = inputs[0], inputs[1]
    if dtype_of(x).startswith(("int", "uint")):
        wide = [bb.normalize(relax.op.astype(v, "float64")) for v in (x, y)]
        return relax.op.astype(relax.op.power(*wide), dtype_of(x))
    if dtype_of(y) != dtype_of(x):
        return relax.op.power(x, relax.op.astype(y, dtype_of(x)))
    return tvm_impl(bb, inputs, attr, params)


class OneHot(tvm_onnx.OneHot):
    """depth may be any numeric type (TVM passed a float depth on as it was);
    a negative axis counts from the output's rank."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        indices, depth, values = inputs[0], inputs[1], inputs[2]
        if not (isinstance(depth, tvm.ir.expr.Constant) and isinstance(values, tvm.ir.expr.Constant)):
            return tvm_onnx.OneHot._impl_v11(bb, inputs, attr, params)
        n = int(depth.value.numpy().reshape(-1)[0])
        off, on = values.value.numpy().reshape(-1)[:2].tolist()
        dtype = dtype_of(values)
        if not dtype_of(indices).startswith(("int", "uint")):  # ONNX allows float indices
            indices = bb.normalize(relax.op.astype(indices, "int64"))
        n_const = relax.const(n, dtype_of(indices))
        indices = bb.normalize(relax.op.where(relax.op.less(indices, relax.const(0, dtype_of(indices))),
                                              relax.op.add(indices, n_const), indices))
        axis = attr.get("axis", -1)
        if axis < 0:  # relax's one_hot reads only -1 as "last"
            axis += indices.ty.ndim + 1
        return relax.op.one_hot(indices, relax.prim_value(tvm.tirx.const(on, dtype)),
                                relax.prim_value(tvm.tirx.const(off, dtype)), n, axis)


class Upsample(OnnxOpConverter):
    """Upsample (opsets 7-9; scales an attribute, then an input): Resize
    with asymmetric coordinates, nearest rounding down (`resample.py`), the
    output floor(dim * scale). TVM's read the scales attribute only and
    resampled by the size ratio."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        return cls._resample(bb, inputs[0], np.asarray(attr.get("scales", []), np.float64), attr)

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        return cls._resample(bb, inputs[0], constant(inputs[1], params, "Upsample's scales"), attr)

    @classmethod
    def _resample(cls, bb, x, scales, attr):
        as_resize = {"mode": attr.get("mode", b"nearest"), "coordinate_transformation_mode": "asymmetric",
                     "nearest_mode": "floor"}
        maps = resample.plan(static_shape(x), dtype_of(x), as_resize, None, scales, None)
        if maps is None:
            raise ValueError("Upsample needs a float input of static shape, one scale per axis "
                             "and mode nearest or linear")
        return resampled(bb, x, maps)


def axes_as_vector(tvm_impl, bb, inputs, attr, params):
    """Squeeze/Unsqueeze with scalar constant axes (the reference takes
    them; function bodies such as AffineGrid's use them): as a 1-D tensor."""
    if len(inputs) > 1 and isinstance(inputs[1], tvm.ir.expr.Constant) and inputs[1].value.numpy().ndim == 0:
        axes = inputs[1].value.numpy().reshape(1)
        inputs = type(inputs)([inputs[0], relax.const(axes, str(axes.dtype)), *inputs[2:]])
    return tvm_impl(bb, inputs, attr, params)


class SequenceLength(OnnxOpConverter):
    """The number of tensors in a sequence, whatever expression holds it
    (TVM took len() of the Python object: a Tuple only, not a split)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        seq = inputs[0] if isinstance(inputs[0], relax.Tuple) else bb.normalize(inputs[0])
        n = len(seq.fields) if isinstance(seq, relax.Tuple) else len(seq.ty.fields)
        return relax.const(n, dtype="int64")


def unpool_then_pad(tvm_impl, bb, inputs, attr, params):
    """MaxUnpool with an output_shape: the indices address the inferred
    shape (the pooled input's), so values are placed there and the result
    padded at the end of each axis to output_shape, as the reference does
    (TVM scattered the indices into output_shape itself)."""
    if len(inputs) < 3 or inputs[2] is None:
        return tvm_impl(bb, inputs, attr, params)
    wanted = constant(inputs[2], params, "MaxUnpool's output_shape").astype(np.int64).tolist()
    y = bb.normalize(tvm_impl(bb, type(inputs)([inputs[0], inputs[1], None]), attr, params))
    inferred = static_shape(y)
    if inferred is None or len(wanted) != len(inferred) or any(w < i for w, i in zip(wanted, inferred)):
        raise ValueError("MaxUnpool's output_shape must not be smaller than the unpooled shape")
    if list(inferred) == wanted:
        return y
    return relax.op.nn.pad(y, [v for i, w in zip(inferred, wanted) for v in (0, w - i)])


def with_indices(tvm_impl, bb, inputs, attr, params):
    """MaxPool's Indices output (TVM converts the values only): the window
    slots are stacked (kernel offsets in scan order, padding at the type's
    lowest value), argmax picks the first maximum, and a constant table maps
    (slot, output position) to the flattened input index, row- or
    column-major (storage_order)."""
    values = bb.normalize(tvm_impl(bb, inputs, attr, params))
    if attr.get("tvm_custom", {}).get("num_outputs", 1) < 2:
        return values
    x = inputs[0]
    xs, ys = static_shape(x), static_shape(values)
    if xs is None or ys is None:
        raise ValueError("MaxPool's Indices output needs static shapes")
    nd, dims, outs = len(xs) - 2, xs[2:], ys[2:]
    kernel = list(attr["kernel_shape"])
    strides = list(attr.get("strides", [1] * nd))
    dil = list(attr.get("dilations", [1] * nd))
    auto_pad = attr.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(0, (o - 1) * s + (k - 1) * d + 1 - i) for o, s, k, d, i in zip(outs, strides, kernel, dil, dims)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        begin = [0] * nd if auto_pad == "VALID" else list(attr.get("pads", [0] * 2 * nd))[:nd]
    span = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(outs, strides, kernel, dil)]
    end = [max(0, sp - b - i) for sp, b, i in zip(span, begin, dims)]
    dtype = dtype_of(x)
    low = -np.inf if dtype.startswith(("float", "bfloat")) else np.iinfo(dtype).min
    padded = bb.normalize(relax.op.nn.pad(x, [0, 0, 0, 0] + [v for pair in zip(begin, end) for v in pair],
                                          pad_value=float(low)))
    offsets = list(np.ndindex(*kernel))
    slots = [relax.op.strided_slice(padded, list(range(2, 2 + nd)), [o * d for o, d in zip(off, dil)],
                                    [o * d + (n - 1) * s + 1 for o, d, n, s in zip(off, dil, outs, strides)],
                                    strides)
             for off in offsets]
    slot = bb.normalize(relax.op.argmax(relax.op.stack(slots, axis=2), axis=2, keepdims=True))
    grids = np.meshgrid(*[np.arange(o) for o in outs], indexing="ij")
    table = np.zeros([len(offsets), *outs], np.int64)
    column_major = bool(attr.get("storage_order", 0))
    for j, off in enumerate(offsets):
        coords = [g * s + o * d - b for g, s, o, d, b in zip(grids, strides, off, dil, begin)]
        for c, size in zip(*((coords[::-1], dims[::-1]) if column_major else (coords, dims))):
            table[j] = table[j] * size + c
    n, c = xs[0], xs[1]
    full = np.broadcast_to(table[None, None], (n, c, *table.shape))
    spatial = relax.op.gather_elements(relax.const(np.ascontiguousarray(full), "int64"), slot, axis=2)
    base = (np.arange(n * c, dtype=np.int64) * int(np.prod(dims))).reshape([n, c] + [1] * (nd + 1))
    indices = relax.op.squeeze(relax.op.add(spatial, relax.const(base, "int64")), axis=[2])
    return relax.Tuple([values, indices])


def unsigned_64(tvm_impl, bb, inputs, attr, params):
    """TopK of uint64 (TVM's sort has no uint64): x ^ 2^63 read as int64
    orders as x does; sorted, the values are flipped back."""
    if dtype_of(inputs[0]) != "uint64":
        return tvm_impl(bb, inputs, attr, params)
    top = relax.const(np.uint64(1 << 63), "uint64")
    flipped = bb.normalize(relax.op.astype(relax.op.bitwise_xor(inputs[0], top), "int64"))
    out = bb.normalize(tvm_impl(bb, type(inputs)([flipped, *inputs[1:]]), attr, params))
    values = relax.op.bitwise_xor(relax.op.astype(relax.TupleGetItem(out, 0), "uint64"), top)
    return relax.Tuple([values, relax.TupleGetItem(out, 1)])


def resampled(bb, x, maps, extrapolation_value: float = 0.0):
    """x through `resample.plan`'s per-axis maps: one take per tap, times its weights."""
    shape, dtype, y = static_shape(x), dtype_of(x), x
    for m in maps:
        if m.is_gather:
            y = bb.normalize(relax.op.take(y, relax.const(m.taps[:, 0]), m.axis))
            continue
        column = [-1] + [1] * (len(shape) - m.axis - 1)
        terms = [relax.op.multiply(relax.op.take(y, relax.const(m.taps[:, k]), m.axis),
                                   relax.const(m.weights[:, k].astype(dtype).reshape(column)))
                 for k in range(m.taps.shape[1])]
        y = bb.normalize(reduce(relax.op.add, terms))
    mask = resample.extrapolated(maps, len(shape))
    if mask is not None:
        y = relax.op.where(relax.const(mask), relax.const(np.array(extrapolation_value, dtype)), y)
    return y


def symbolic_resize(bb, given, attr, params):
    """Resize of an NCHW tensor to sizes computed from run-time dims (a UNet's
    `interpolate(size=skip.shape[2:])`): TVM's converter read them as constants."""
    x, roi, sizes = given[0], given[1], given[3]
    roi = constant(roi, params) if roi is not None else None
    if len(sizes.values) != 4 or (roi is not None and roi.size not in (0, 8)):
        raise ValueError("Resize to run-time sizes is supported for 4-D inputs with a constant roi")
    text = lambda name, default: attr.get(name, default).decode("ascii")  # noqa: E731
    mode = text("mode", b"nearest")
    return relax.op.image.resize2d(
        x, size=relax.ShapeExpr(list(sizes.values)[2:]),
        roi=[0.0] * 4 if roi is None or roi.size == 0 else [float(v) for v in list(roi[2:4]) + list(roi[6:8])],
        layout="NCHW", method="nearest_neighbor" if mode == "nearest" else mode,
        coordinate_transformation_mode=text("coordinate_transformation_mode", b"half_pixel"),
        rounding_method=text("nearest_mode", b"round_prefer_floor"), cubic_alpha=attr.get("cubic_coeff_a", -0.75),
        cubic_exclude=attr.get("exclude_outside", 0), extrapolation_value=attr.get("extrapolation_value", 0.0))


def _sizes_of_integer_scales(x, scales, sizes):
    """The output shape of a Resize by whole-number scales of a 4-D input with symbolic
    dims, as integer dims (h * 2): TVM's converter computes them in float,
    int64(2.0 * float32(h)), a shape later operators cannot be legalized over (a DB
    detector's ConvTranspose after a Resize by 8). None where it does not apply; a
    fractional scale would need floor(h * s) and its own coordinate mapping."""
    shape = getattr(getattr(x, "ty", None), "shape", None)
    if (sizes is not None or scales is None or scales.size != 4 or shape is None or len(shape.values) != 4
            or static_shape(x) is not None):
        return None
    factors = [float(s) for s in scales.reshape(-1)]
    if not all(f >= 1 and f.is_integer() for f in factors):
        return None
    return relax.ShapeExpr([d if f == 1 else d * int(f) for d, f in zip(shape.values, factors)])


def exact_resize(tvm_impl, bb, inputs, attr, params):
    """Resize (opset 11+) with constant roi/scales/sizes on a static float
    input, as the reference computes it (`resample.py`); TVM's otherwise."""
    given = list(inputs) + [None] * (4 - len(inputs))
    if isinstance(given[3], relax.ShapeExpr) and not all(isinstance(d, tvm.tirx.IntImm) for d in given[3].values):
        return symbolic_resize(bb, given, attr, params)
    consts = [None if v is None else constant(v, params) for v in given[1:4]]
    if any(c is None and v is not None for c, v in zip(consts, given[1:4])):
        return tvm_impl(bb, inputs, attr, params)
    sizes = _sizes_of_integer_scales(given[0], consts[1], consts[2])
    if sizes is not None:
        return symbolic_resize(bb, [given[0], given[1], None, sizes], attr, params)
    maps = None if len(inputs) < 3 else resample.plan(static_shape(given[0]), dtype_of(given[0]), attr, *consts)
    if maps is None:
        return tvm_impl(bb, inputs, attr, params)
    repeated = _repeats(static_shape(given[0]), maps)
    if repeated is not None:
        return relax.op.image.resize2d(given[0], size=repeated, roi=[0.0] * 4, layout="NCHW",
                                       method="nearest_neighbor", coordinate_transformation_mode="asymmetric",
                                       rounding_method="floor")
    return resampled(bb, given[0], maps, attr.get("extrapolation_value", 0.0))


def _repeats(shape, maps) -> tuple[int, int] | None:
    """(H, W) out when the maps repeat each row and column of an NCHW tensor 2^k times
    (an FPN's or UNet's nearest 2x): TVM's resize2d computes exactly that (dst * 2^-k is
    exact in float), and layout conversion carries it, where takes stay NCHW between two
    transposes. None for anything else."""
    if shape is None or len(shape) != 4 or any(m.axis not in (2, 3) or not m.is_gather or m.outside.any()
                                               for m in maps):
        return None
    out = list(shape[2:])
    for m in maps:
        n, size = len(m.taps), shape[m.axis]
        f = n // size
        if n != f * size or f & (f - 1) or not np.array_equal(m.taps[:, 0], np.arange(n) // f):
            return None
        out[m.axis - 2] = n
    return out[0], out[1]


class Concat(tvm_onnx.Concat):
    """Tensors whose other dims TVM cannot prove equal (a Resize by 2 of height // 4
    beside height // 2) are match-cast to one set of dims (`meeting_dim`): ONNX requires
    them equal, so the cast is checked at run time, and TVM gets a concat of known shape."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        tensors = [x for x in inputs if isinstance(getattr(x, "ty", None), relax.TensorType)]
        if len(tensors) != len(inputs) or len(tensors) < 2 or tensors[0].ty.shape is None:
            return tvm_onnx.Concat._impl_v13(bb, inputs, attr, params)
        rank = tensors[0].ty.ndim
        axis = attr.get("axis", 0) % rank
        if any(x.ty.ndim != rank for x in inputs):
            return tvm_onnx.Concat._impl_v13(bb, inputs, attr, params)
        known = [list(x.ty.shape.values) for x in inputs if x.ty.shape is not None]
        ref = [meeting_dim([d[i] for d in known]) for i in range(rank)]
        analyzer = Analyzer()
        cast = []
        for x in inputs:
            dims = list(x.ty.shape.values) if x.ty.shape is not None else None
            if dims is None or any(i != axis and not analyzer.can_prove_equal(d, r)
                                   for i, (d, r) in enumerate(zip(dims, ref))):
                own = dims[axis] if dims is not None else tvm.tirx.Var("concat_dim", "int64")
                shape = [own if i == axis else r for i, r in enumerate(ref)]
                x = bb.match_cast(x if isinstance(x, relax.Var) else bb.emit(x), relax.TensorType(shape, x.ty.dtype))
            cast.append(x)
        return tvm_onnx.Concat._impl_v13(bb, cast, attr, params)


class Range(tvm_onnx.Range):
    """A float Range to a limit cast from a dim (torch.arange(h, dtype=float)) as an
    integer arange to that dim, cast: TVM's float path hid its length in a run-time
    value that later kernels' shapes could not be computed from. Exact: the values
    are the same integers."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        start, limit, delta = inputs
        s, d = constant(start, params), constant(delta, params)
        integral = lambda a: a is not None and a.size == 1 and float(a.reshape(())) == int(a.reshape(()))  # noqa: E731
        if (isinstance(limit, tvm.tirx.Cast) and "float" in str(limit.ty) and "int" in str(limit.value.ty)
                and integral(s) and integral(d) and int(d.reshape(())) != 0):
            ints = relax.op.arange(int(s.reshape(())), tvm.tirx.Cast("int64", limit.value), int(d.reshape(())),
                                   dtype="int64")
            return relax.op.astype(bb.emit(ints), dtype_of(start))
        return tvm_onnx.Range._impl_v12(bb, inputs, attr, params)


def on_scalars(tvm_cls, tir_fn):
    """TVM's converter, and `tir_fn` where the input is a scalar of shape arithmetic
    (math.ceil(h / 8) in an exporter's trace reaches Ceil as a TIR expression)."""

    def fix(tvm_impl, bb, inputs, attr, params):
        if tvm.ir.is_prim_expr(inputs[0]):
            return tir_fn(inputs[0])
        return tvm_impl(bb, inputs, attr, params)

    return patched(tvm_cls, fix)


class EyeLike(OnnxOpConverter):
    """Ones on the k-th diagonal, in the `dtype` attribute's type (TVM required the input's)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        shape = static_shape(inputs[0])
        if shape is None or len(shape) != 2:
            return tvm_onnx.EyeLike._impl_v9(bb, inputs, attr, params)
        dtype = (onnx.helper.tensor_dtype_to_np_dtype(attr["dtype"]).name if "dtype" in attr
                 else dtype_of(inputs[0]))
        rows, cols = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
        return relax.const((cols - rows == attr.get("k", 0)).astype(dtype), dtype)


class PRelu(OnnxOpConverter):
    """x < 0 ? x * slope : x, with ONNX's (numpy's) broadcasting of the slope
    since opset 7; before, a 1-D slope of C values is per channel (axis 1),
    as Caffe2 and PyTorch's exporter meant it."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, slope = inputs[0], inputs[1]
        xs, ss = static_shape(x), static_shape(slope)
        if xs is not None and ss is not None and len(ss) == 1 and ss[0] > 1 and len(xs) > 2 and xs[1] == ss[0]:
            slope = bb.normalize(relax.op.reshape(slope, [ss[0]] + [1] * (len(xs) - 2)))
        return cls._impl_v7(bb, [x, slope], attr, params)

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        x, slope = inputs[0], inputs[1]
        return relax.op.where(relax.op.less(x, relax.const(0, dtype_of(x))), relax.op.multiply(x, slope), x)


def boolean(tvm_impl, bb, inputs, attr, params):
    """Max/Min of booleans as uint8 (TVM has no bool start value)."""
    if dtype_of(inputs[0]) != "bool":
        return tvm_impl(bb, inputs, attr, params)
    as_bytes = type(inputs)([bb.normalize(relax.op.astype(inputs[0], "uint8")), *inputs[1:]])
    return relax.op.astype(bb.normalize(tvm_impl(bb, as_bytes, attr, params)), "bool")


reductions = {op: patched(getattr(tvm_onnx, op), boolean) for op in ("ReduceMax", "ReduceMin")}


def nms_parameters(tvm_impl, bb, inputs, attr, params):
    """NonMaxSuppression's limits: constants (a run-time value made TVM fall back to its
    defaults silently), ONNX's defaults for absent ones (IoU 0, no score filtering;
    TVM assumed 0.5 and 0), and its strict IoU comparison."""
    given = list(inputs) + [None] * (5 - len(inputs))
    defaults = {3: np.float32(0.0), 4: np.float32(np.finfo(np.float32).min)}
    for i in (2, 3, 4):
        if given[i] is not None:
            given[i] = tvm_onnx.get_constant(given[i], params)
            if not isinstance(given[i], tvm.ir.expr.Constant):  # TVM would use its defaults instead
                raise ValueError("NonMaxSuppression's limits must be constants")
        elif i in defaults:
            given[i] = relax.const(defaults[i], "float32")
    if given[2] is None:
        given[2] = relax.const(np.array([0], np.int64), "int64")
    # ONNX suppresses a box whose IoU is above the threshold, TVM at or above it
    iou = np.float32(given[3].value.numpy().reshape(-1)[0])
    given[3] = relax.const(np.nextafter(iou, np.float32(np.inf)), "float32")
    return tvm_impl(bb, type(inputs)(given), attr, params)


CONVERTERS: dict[str, type] = {
    **reductions, "Sum": Sum, "Clip": Clip, "Cosh": hyperbolic(1.0), "Sinh": hyperbolic(-1.0),
    "Pow": patched(tvm_onnx.Pow, integer_pow), "OneHot": OneHot, "PRelu": PRelu, "EyeLike": EyeLike,
    "Upsample": Upsample, "Resize": patched(tvm_onnx.Resize, exact_resize),
    "TopK": patched(tvm_onnx.TopK, unsigned_64), "MaxPool": patched(tvm_onnx.MaxPool, with_indices),
    "SequenceLength": SequenceLength, "MaxUnpool": patched(tvm_onnx.MaxUnpool, unpool_then_pad),
    "Squeeze": patched(tvm_onnx.Squeeze, axes_as_vector), "Unsqueeze": patched(tvm_onnx.Unsqueeze, axes_as_vector),
    "NonMaxSuppression": patched(tvm_onnx.NonMaxSuppression, nms_parameters),
    "Elu": patched(tvm_onnx.Elu, widen), "MatMul": patched(tvm_onnx.MatMul, widen),
    "Conv": patched(tvm_onnx.Conv, widen), "Gemm": patched(tvm_onnx.Gemm, widen), "Softmax": Softmax,
    "IsInf": IsInf, "SpaceToDepth": SpaceToDepth, "Mod": Mod, "Expand": Expand, "Concat": Concat, "Range": Range,
    "Ceil": on_scalars(tvm_onnx.Ceil, tvm.tirx.ceil), "Floor": on_scalars(tvm_onnx.Floor, tvm.tirx.floor),
    "Softplus": Softplus, "Mish": Mish, "SequenceInsert": SequenceInsert, "ConvTranspose": ConvTranspose,
    "HardSigmoid": HardSigmoid, "HardSwish": HardSwish,
}


def converters() -> dict[str, type]:
    """The replacement converters by ONNX op type (a copy: the caller may extend it)."""
    return dict(CONVERTERS)
