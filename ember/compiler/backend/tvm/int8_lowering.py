"""Relax converters for ONNX's quantization operators.

- QuantizeLinear / DequantizeLinear with constant scales and zero points
  become plain elementwise Relax (multiply, round, add, clip, cast). TVM's
  converters emit `relax.quantize` / `relax.dequantize`, which layout
  conversion cannot see through: every one of them would sit between two
  transposes in an NHWC network, and none fuses into a kernel's epilogue.
- ConvInteger / MatMulInteger with constant int8 weights (zero point 0), or
  uint8 ones with a scalar zero point zw (read as w - 128, int8, plus
  128 - zw times the input's window or row sums), and a scalar input zero
  point (a constant, or one DynamicQuantizeLinear computes at run time)
  become 8-bit x int8 -> int32 conv2d / matmul, which `pipeline.py`
  legalizes into Ember's integer kernels (dot-product instructions), minus
  the zero point's contribution: the zero point times the weights' (window)
  sums, folded here. Other forms are computed exactly in int32.

`passes/quantization/integer.py` rewrites QDQ-wrapped Conv/MatMul/Gemm into
these integer operators.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.backend.tvm.relax_util import static_shape

OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger", "QLinearMatMul",
                 "QLinearConv"})
INT8 = ("int8", "uint8")
_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _const(expr) -> np.ndarray | None:
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _along(value: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-axis 1-D parameter shaped to broadcast against a rank-`ndim` tensor."""
    if value.ndim == 0:
        return value
    shape = [1] * ndim
    shape[axis % ndim] = value.size
    return value.reshape(shape)


def _qdq_params(inputs, attr, ndim: int, zp_default: str):
    """(scale, zero point) of a QuantizeLinear/DequantizeLinear as numpy arrays
    shaped to broadcast against its rank-`ndim` input, or None when they are
    not constants Ember can decompose (blocked, or a non-float32 scale)."""
    if attr.get("block_size", 0) or attr.get("output_dtype", 0) or attr.get("precision", 0):
        return None
    scale = _const(inputs[1])
    zp = np.zeros((), zp_default) if len(inputs) < 3 or inputs[2] is None else _const(inputs[2])
    if scale is None or zp is None or scale.dtype != np.float32 or scale.ndim > 1 or zp.ndim > 1:
        return None
    if scale.ndim == 1 and ndim == 0:
        return None
    axis = attr.get("axis", 1)
    if ndim <= 1 and axis == 1:
        axis = 0
    return _along(scale, axis, ndim), _along(zp, axis, ndim)


def _saturate(y, dtype: str):
    """int32 -> 8-bit, clamped with integer maximum/minimum: single instructions
    that layout conversion sees through (relax clip is opaque to it; float
    maximum/minimum keep NaN with Selects, whose chains, inlined into a
    kernel's epilogue after ReLU6's, grow exponentially)."""
    from tvm import relax

    lo, hi = _RANGE[dtype]
    y = relax.op.minimum(relax.op.maximum(y, relax.const(lo, "int32")), relax.const(hi, "int32"))
    return relax.op.astype(y, dtype)


def _zero_weight_zero_point(inputs, index: int) -> bool:
    """Whether the weight zero point (input `index`) is absent or a constant of zeros."""
    if len(inputs) <= index or inputs[index] is None:
        return True
    zw = _const(inputs[index])
    return zw is not None and not np.any(zw != 0)


def converters(opset: int) -> dict[str, type]:
    """The converters for a model of default-domain `opset` (what they fall back on is TVM's for that opset)."""
    from tvm import relax, tirx
    from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

    class QuantizeLinear(tvm_onnx.OnnxOpConverter):
        """y = saturate(round_half_even(x / scale) + zero_point)."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x = inputs[0]
            p = _qdq_params(inputs, attr, x.ty.ndim, "uint8") if _dtype(x) == "float32" else None
            if p is None or str(p[1].dtype) not in INT8:
                return tvm_onnx.QuantizeLinear.get_converter(opset)(bb, inputs, attr, params)
            scale, zp = p
            if np.all(scale == 1.0):  # folded into the producer (passes/quantization/integer.py)
                y = relax.op.round(x)
            else:
                y = relax.op.round(relax.op.divide(x, relax.const(scale, "float32")))
            if np.any(zp != 0):
                y = relax.op.add(y, relax.const(zp.astype("float32")))
            # beyond int32 (|x / scale| >= 2^31, +-inf) and for NaN the cast gives INT_MIN: the low end
            return _saturate(relax.op.astype(y, "int32"), str(zp.dtype))

    class DequantizeLinear(tvm_onnx.OnnxOpConverter):
        """y = (x - zero_point) * scale, the subtraction in int32."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x = inputs[0]
            p = _qdq_params(inputs, attr, x.ty.ndim, _dtype(x)) if _dtype(x) in (*INT8, "int32") else None
            if p is None:
                return tvm_onnx.DequantizeLinear.get_converter(opset)(bb, inputs, attr, params)
            scale, zp = p
            if np.any(zp != 0):
                x = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(zp.astype("int32")))
            return relax.op.multiply(relax.op.astype(x, "float32"), relax.const(scale, "float32"))

    class ConvInteger(tvm_onnx.OnnxOpConverter):
        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x, w = inputs[0], inputs[1]
            fast = _fast_conv(x, w, inputs, attr)
            if fast is not None:
                return fast
            xi = _minus_zero_point(bb, x, inputs[2] if len(inputs) > 2 else None, axis=None)
            wi = _minus_zero_point(bb, w, inputs[3] if len(inputs) > 3 else None, axis=0)
            return tvm_onnx.Conv._impl_v11(bb, [xi, wi, None], dict(attr), params)

    class MatMulInteger(tvm_onnx.OnnxOpConverter):
        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            a, b = inputs[0], inputs[1]
            wb = _const(b)
            za = _input_zero_point(inputs)
            w8, c = _signed_weights(wb, inputs, 3)
            if wb is None or wb.ndim != 2 or w8 is None or _dtype(a) not in INT8 or za is None:
                return tvm_onnx.MatMulInteger._impl_v10(bb, inputs, attr, params)
            acc = relax.op.matmul(a, relax.const(w8), out_dtype="int32")
            acc = _minus_zero_point_sums(acc, za, w8.astype("int32").sum(0))
            if c:  # + c * sum_k (a - za): the rows' sums
                rows = relax.op.sum(relax.op.astype(a, "int32"), axis=[-1], keepdims=True)
                acc = relax.op.add(acc, relax.op.multiply(relax.const(c, "int32"), _minus_zero_point_sums(
                    rows, za, np.array([w8.shape[0]], np.int32))))
            return acc

    def _signed_weights(wc, inputs, index: int):
        """(int8 weights w8, int c) with w - zero point = w8 + c: int8 weights with zero point 0
        as they are; uint8 ones (older quantizers) with a scalar constant zero point zw as
        w - 128 and c = 128 - zw. (None, 0) for other forms."""
        if wc is None:
            return None, 0
        if wc.dtype == np.int8 and _zero_weight_zero_point(inputs, index):
            return wc, 0
        zw = _scalar_zero_point(inputs[index] if len(inputs) > index else None)
        if wc.dtype == np.uint8 and zw is not None:
            return (wc.astype(np.int16) - 128).astype(np.int8), 128 - zw
        return None, 0

    def _minus_zero_point_sums(acc, za, sums: np.ndarray):
        """acc - za * sums: an input zero point's contribution (`za` an int, or a run-time
        int32 scalar)."""
        if isinstance(za, int):
            return relax.op.subtract(acc, relax.const(za * sums)) if za else acc
        return relax.op.subtract(acc, relax.op.multiply(za, relax.const(sums.astype("int32"))))

    def _minus_zero_point(bb, v, zp, axis):
        vi = bb.normalize(relax.op.astype(v, "int32"))
        if zp is None:
            return vi
        z = bb.normalize(relax.op.astype(zp, "int32"))
        if axis is not None and z.ty.ndim == 1:  # per output channel
            z = bb.normalize(relax.op.reshape(z, [-1] + [1] * (v.ty.ndim - 1)))
        return bb.normalize(relax.op.subtract(vi, z))

    def _fast_conv(x, w, inputs, attr):
        """8-bit x constant int8 conv2d (groups 1 or depthwise, weight zero point 0) into int32, or None."""
        wc = _const(w)
        zx = _input_zero_point(inputs)
        auto_pad = attr.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        xs = static_shape(x)
        dims = list(getattr(getattr(x.ty, "shape", None), "values", None) or [])
        w8, c = _signed_weights(wc, inputs, 3)
        if (wc is None or wc.ndim != 4 or w8 is None or _dtype(x) not in INT8 or zx is None
                or len(dims) != 4 or not isinstance(dims[1], tirx.IntImm)
                or auto_pad not in ("NOTSET", "VALID")):
            return None
        group = attr.get("group", 1)
        if group != 1 and not (group == int(dims[1]) == wc.shape[0] and wc.shape[1] == 1):
            return None  # grouped, not depthwise
        strides = list(attr.get("strides", [1, 1]))
        dilations = list(attr.get("dilations", [1, 1]))
        pads = [0, 0, 0, 0] if auto_pad == "VALID" else list(attr.get("pads", [0, 0, 0, 0]))
        if xs is None and any(pads) and not (isinstance(zx, int) and zx == 0):
            # run-time sizes: the padded taps' share of the zero point's contribution cannot be
            # tabulated, so the input is padded with the zero point itself (those taps add
            # zx - zx = 0) and the correction is the same everywhere
            width = [0, 0, 0, 0, pads[0], pads[2], pads[1], pads[3]]
            if isinstance(zx, int):
                x = relax.op.nn.pad(x, width, pad_value=float(zx))
            else:  # a run-time zero point: zeros padded, plus zx where the border's ones are
                border = relax.op.nn.pad(relax.op.zeros_like(x), width, pad_value=1.0)
                x = relax.op.add(relax.op.nn.pad(x, width),
                                 relax.op.multiply(relax.op.astype(zx, _dtype(x)), border))
            pads = [0, 0, 0, 0]
        hw = xs[2:] if xs is not None else None

        def conv(weights):
            return relax.op.nn.conv2d(x, relax.const(weights), strides=strides, padding=pads, dilation=dilations,
                                      groups=group, out_dtype="int32")

        acc = _minus_zero_point_sums(conv(w8), zx, _window_sums(w8, hw, strides, pads, dilations))
        if c:  # + c * the window sums of (x - zx): a conv with ones (per channel when depthwise)
            ones = np.ones((1 if group == 1 else wc.shape[0], *wc.shape[1:]), np.int8)
            box = _minus_zero_point_sums(conv(ones), zx, _window_sums(ones, hw, strides, pads, dilations))
            acc = relax.op.add(acc, relax.op.multiply(relax.const(c, "int32"), box))
        return acc

    def _requantize(bb, acc, scale, y_zp, out_dtype: str, channel_axis: int | None):
        """saturate(round(acc * scale) + y_zp) for an int32 accumulator; `scale` a
        float relax expr, per channel along `channel_axis` when 1-D."""
        scale = bb.normalize(relax.op.astype(scale, "float32"))
        if channel_axis is not None and scale.ty.ndim == 1:
            shape = [1] * acc.ty.ndim
            shape[channel_axis] = -1
            scale = relax.op.reshape(scale, shape)
        y = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), scale))
        y = relax.op.astype(y, "int32")
        if y_zp is not None:
            y = relax.op.add(y, relax.op.astype(y_zp, "int32"))
        return _saturate(y, out_dtype)

    def _combined_scale(s_in, s_w, s_out):
        f32 = [relax.op.astype(v, "float32") for v in (s_in, s_w, s_out)]
        return relax.op.divide(relax.op.multiply(f32[0], f32[1]), f32[2])

    class QLinearMatMul(tvm_onnx.OnnxOpConverter):
        """(a - za)(b - zb) exact in int32, then one rescale sa*sb/sy, round, + zy, saturate."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            a, sa, za, b, sb, zb, sy, zy = (list(inputs) + [None] * 8)[:8]
            acc = bb.normalize(MatMulInteger._impl_v10(bb, [a, b, za, zb], {}, params))
            out_dtype = _dtype(zy) if zy is not None else _dtype(a)
            return _requantize(bb, acc, _combined_scale(sa, sb, sy), zy, out_dtype, channel_axis=acc.ty.ndim - 1)

    class QLinearConv(tvm_onnx.OnnxOpConverter):
        """ConvInteger + int32 bias, then one rescale sx*sw/sy, round, + zy, saturate."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x, sx, zx, w, sw, zw, sy, zy, bias = (list(inputs) + [None] * 9)[:9]
            acc = bb.normalize(ConvInteger._impl_v10(bb, [x, w, zx, zw], dict(attr), params))
            if bias is not None:
                acc = bb.normalize(relax.op.add(acc, relax.op.reshape(bias, [1, -1] + [1] * (acc.ty.ndim - 2))))
            out_dtype = _dtype(zy) if zy is not None else _dtype(x)
            return _requantize(bb, acc, _combined_scale(sx, sw, sy), zy, out_dtype, channel_axis=1)

    return {"QuantizeLinear": QuantizeLinear, "DequantizeLinear": DequantizeLinear,
            "ConvInteger": ConvInteger, "MatMulInteger": MatMulInteger,
            "QLinearMatMul": QLinearMatMul, "QLinearConv": QLinearConv}


def _input_zero_point(inputs):
    """The input zero point of ConvInteger / MatMulInteger (input 2): a constant as an int
    (0 if absent), a run-time scalar as an int32 expression, or None for other forms."""
    zp = inputs[2] if len(inputs) > 2 else None
    constant = _scalar_zero_point(zp)
    return constant if constant is not None else _run_time_scalar(zp)


def _run_time_scalar(zp):
    """A zero point computed at run time (DynamicQuantizeLinear's) holding one value, as an
    int32 scalar expression; None for anything else."""
    from tvm import relax

    if zp is None or _const(zp) is not None or getattr(zp.ty, "shape", None) is None:
        return None
    if any(getattr(d, "value", None) != 1 for d in zp.ty.shape.values):
        return None
    return relax.op.reshape(relax.op.astype(zp, "int32"), ())


def _scalar_zero_point(zp) -> int | None:
    """A constant scalar (or one-element) zero point as an int; 0 if absent; None if not constant."""
    if zp is None:
        return 0
    v = _const(zp)
    if v is None or v.size != 1:
        return None
    return int(v.reshape(()))


def _window_sums(w: np.ndarray, hw, strides, pads, dilations) -> np.ndarray:
    """int32 [1, O, OH, OW]: for each output position, the sum of the weights
    whose taps land inside the (unpadded) input (of size `hw`). A zero point zx contributes
    zx times this to the accumulator; padding (raw zeros) contributes
    nothing. Without padding it is the same everywhere: [1, O, 1, 1] (`hw` unused)."""
    o, _, kh, kw = w.shape
    per_tap = w.astype(np.int64).sum(axis=1)  # [O, KH, KW]
    if not any(pads):
        return per_tap.sum(axis=(1, 2)).astype(np.int32).reshape(1, o, 1, 1)
    valid = []
    for size, k, s, p0, p1, dil in zip(hw, (kh, kw), strides, pads[:2], pads[2:], dilations):
        out = (size + p0 + p1 - dil * (k - 1) - 1) // s + 1
        pos = np.arange(out)[:, None] * s - p0 + np.arange(k)[None, :] * dil  # [out, k] input coordinate
        valid.append(((pos >= 0) & (pos < size)).astype(np.int64))
    sums = np.einsum("yk,xl,okl->oyx", valid[0], valid[1], per_tap)
    return sums.astype(np.int32)[None]
