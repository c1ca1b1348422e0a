"""ConvTranspose as an ordinary convolution plus data movement.

TVM's conv2d_transpose has no fast CPU schedule (2% of the machine's peak on a
DB text detector's upsampling head, where it was 55% of the run). With constant
weights, a transposed convolution becomes operations Ember's kernels cover:

- stride 1: a convolution with the kernel flipped and its in/out channels
  swapped (per group), padded by dilation * (k - 1) - pad on each side;
- stride s > 1 (dilation 1): a 1x1 convolution to Co * k'^2 channels, the
  kernel zero-padded to k' = m * s (m = ceil(k / s)), followed by its
  overlap-add. Output row y * s + a * s + i gets the taps (a * s + i) of input
  row y: each of the m x m blocks of taps is a depth-to-space (reshape and
  transpose) shifted by (a * s, b * s), and the blocks are summed. For the
  common k == s (a UNet's or a DB head's 2x upsampling) that is one
  depth-to-space. The padding crops the result; output_padding extends it.

1-D ConvTranspose runs as 2-D with a unit height. The rest (3-D, run-time
weights, dilation with a stride, non-float32) stays TVM's.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter


def _geometry(attr, kernel: list[int], n: int):
    """(strides, dilations, pads_begin, pads_end, output_padding), or None for what stays TVM's."""
    strides = list(attr.get("strides", [1] * n))
    dilations = list(attr.get("dilations", [1] * n))
    outpad = list(attr.get("output_padding", [0] * n))
    pads = list(attr.get("pads", [0] * 2 * n))
    auto_pad = attr.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        pads = [0] * 2 * n
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # as TVM's converter and the ONNX spec derive them
        pads_b, pads_e = [], []
        for i in range(n):
            total = max((kernel[i] - 1) * dilations[i] + 1 + outpad[i] - strides[i], 0)
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads_b.append(b)
            pads_e.append(total - b)
        pads = pads_b + pads_e
    elif auto_pad != "NOTSET":
        return None
    if len(strides) != n or len(dilations) != n or len(outpad) != n or len(pads) != 2 * n:
        return None
    if any(s > 1 for s in strides) and any(d != 1 for d in dilations):
        return None
    return strides, dilations, pads[:n], pads[n:], outpad


def _as_conv(bb, x, w: np.ndarray, groups: int, dilations, pads_b, pads_e, outpad):
    """Stride 1: the convolution with the flipped, channel-swapped kernel; None if it would need negative padding."""
    ci, cog, kh, kw = w.shape
    lo = [dilations[i] * (w.shape[2 + i] - 1) - pads_b[i] for i in range(2)]
    hi = [dilations[i] * (w.shape[2 + i] - 1) - pads_e[i] + outpad[i] for i in range(2)]
    if min(lo + hi) < 0:
        return None
    flipped = w[:, :, ::-1, ::-1].reshape(groups, ci // groups, cog, kh, kw).transpose(0, 2, 1, 3, 4)
    weight = relax.const(np.ascontiguousarray(flipped.reshape(groups * cog, ci // groups, kh, kw)), "float32")
    return bb.emit(relax.op.nn.conv2d(x, weight, strides=1, padding=[lo[0], lo[1], hi[0], hi[1]],
                                      dilation=dilations, groups=groups))


def _by_taps(bb, x, w: np.ndarray, groups: int, strides, pads_b, pads_e, outpad, bias=None):
    """Stride > 1: a 1x1 convolution to every tap, then their overlap-add (`bias` [C] added,
    where given: before the NHWC result's permute, so layout conversion sees NHWC throughout)."""
    ci, cog, kh, kw = w.shape
    (sh, sw), co = strides, cog * groups
    mh, mw = math.ceil(kh / sh), math.ceil(kw / sw)
    wide = np.zeros((ci, cog, mh * sh, mw * sw), np.float32)
    wide[:, :, :kh, :kw] = w
    # the full overlap-add is (H - 1) * s + k' long; ONNX's output starts at pads_b and ends `cut` before it
    cut = [mh * sh - kh - outpad[0] + pads_e[0], mw * sw - kw - outpad[1] + pads_e[1]]
    if groups == 1:
        # output channel (ky, kx, co): a tap's channels side by side, read as vectors by an NHWC
        # overlap-add; the permutes around it cancel those of layout conversion (permutes)
        taps = wide.transpose(2, 3, 1, 0).reshape(mh * sh * mw * sw * co, ci, 1, 1)
        cols = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ascontiguousarray(taps), "float32")))
        out = bb.emit_te(_overlap_add_nhwc, bb.emit(relax.op.permute_dims(cols, [0, 2, 3, 1])), co, (sh, sw),
                         (mh, mw), pads_b, cut, primfunc_name_hint="overlap_add")
        if bias is not None:
            out = bb.emit(relax.op.add(out, bias))
        return bb.emit(relax.op.permute_dims(out, [0, 3, 1, 2]))
    # output channel (co, ky, kx): contiguous per group, as a grouped 1x1 convolution writes them
    taps = wide.reshape(groups, ci // groups, cog, mh * sh, mw * sw).transpose(0, 2, 3, 4, 1)
    weight = relax.const(np.ascontiguousarray(taps.reshape(co * mh * sh * mw * sw, ci // groups, 1, 1)), "float32")
    cols = bb.emit(relax.op.nn.conv2d(x, weight, groups=groups))
    out = bb.emit_te(_overlap_add, cols, co, (sh, sw), (mh, mw), pads_b, cut, primfunc_name_hint="overlap_add")
    return out if bias is None else bb.emit(relax.op.add(out, relax.op.reshape(bias, [1, -1, 1, 1])))


def _taps(h, w, strides, blocks, pads_b, cut):
    """The output size, and per block (a, b) at output position (y, x): the input position,
    the tap, and the in-bounds condition (None where always in bounds)."""
    from tvm import tirx

    (sh, sw), (mh, mw) = strides, blocks
    size = [h * sh + (mh - 1) * sh - cut[0] - pads_b[0], w * sw + (mw - 1) * sw - cut[1] - pads_b[1]]

    def tap(extent, pos, stride, count, cut_, a):
        q, r = pos // stride - a, pos % stride + a * stride
        return q, r, None if count == 1 and cut_ >= 0 else tirx.all(q >= 0, q < extent)

    def at(y, x):
        for a in range(mh):
            for b in range(mw):
                qy, ry, vy = tap(h, y + pads_b[0], sh, mh, cut[0], a)
                qx, rx, vx = tap(w, x + pads_b[1], sw, mw, cut[1], b)
                yield qy, qx, ry, rx, [t for t in (vy, vx) if t is not None]
    return size, at


def _overlap_add_nhwc(cols, co: int, strides, blocks, pads_b, cut):
    """NHWC: out[n, Y, X, c] = sum over blocks of cols[n, y - a, x - b, (a * s + i, b * s + j, c)]."""
    from tvm import te, tirx

    n, h, w, _ = cols.shape
    size, at = _taps(h, w, strides, blocks, pads_b, cut)
    kw = blocks[1] * strides[1]

    def value(b_, y, x, c):
        total = None
        for qy, qx, ry, rx, conds in at(y, x):
            v = cols[b_, qy, qx, (ry * kw + rx) * co + c]
            if conds:
                v = tirx.if_then_else(tirx.all(*conds), v, tirx.const(0, cols.dtype))
            total = v if total is None else total + v
        return total

    return te.compute((n, *size, co), value, name="overlap_add")


def _overlap_add(cols, co: int, strides, blocks, pads_b, cut):
    """out[n, c, Y, X] = sum over blocks (a, b) of cols[n, (c, a * s + i, b * s + j), y - a, x - b]
    where (y, i) = divmod(Y + pad, s) (and likewise for X): a gather, one read per block."""
    from tvm import te, tirx

    n, _, h, w = cols.shape
    size, at = _taps(h, w, strides, blocks, pads_b, cut)
    kh, kw = blocks[0] * strides[0], blocks[1] * strides[1]

    def value(b_, c, y, x):
        total = None
        for qy, qx, ry, rx, conds in at(y, x):
            v = cols[b_, (c * kh + ry) * kw + rx, qy, qx]
            if conds:
                v = tirx.if_then_else(tirx.all(*conds), v, tirx.const(0, cols.dtype))
            total = v if total is None else total + v
        return total

    return te.compute((n, co, *size), value, name="overlap_add")


class ConvTranspose(OnnxOpConverter):
    """2-D (and 1-D) ConvTranspose with constant float32 weights on Ember's convolutions; the rest TVM's."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        out = cls._lowered(bb, inputs, attr, params)
        return tvm_onnx.ConvTranspose._impl_v1(bb, inputs, attr, params) if out is None else out

    @classmethod
    def _lowered(cls, bb, inputs, attr, params):
        x, bias = inputs[0], inputs[2] if len(inputs) > 2 else None
        weight = tvm_onnx.get_constant(inputs[1], params)
        if not isinstance(weight, tvm.ir.expr.Constant):
            return None
        weight = weight.value.numpy()
        ndim = getattr(x.ty, "ndim", -1)
        if ndim not in (3, 4) or str(getattr(x.ty, "dtype", "")) != "float32" or weight.dtype != np.float32:
            return None
        n = ndim - 2
        kernel = list(attr.get("kernel_shape", weight.shape[2:]))
        groups = int(attr.get("group", 1))
        geometry = _geometry(attr, kernel, n)
        if geometry is None or kernel != list(weight.shape[2:]) or weight.shape[0] % groups:
            return None
        if n == 1:  # as 2-D over a unit height
            strides, dilations, pads_b, pads_e, outpad = ([unit] + list(g) for unit, g in zip((1, 1, 0, 0, 0), geometry))
            x = bb.emit(relax.op.expand_dims(x, 2))
            weight = weight[:, :, None, :]
        else:
            strides, dilations, pads_b, pads_e, outpad = geometry
        if all(s == 1 for s in strides):
            y = _as_conv(bb, x, weight, groups, dilations, pads_b, pads_e, outpad)
            if y is not None and bias is not None:
                y = bb.emit(relax.op.add(y, relax.op.reshape(bias, [1, -1, 1, 1])))
        else:
            y = _by_taps(bb, x, weight, groups, strides, pads_b, pads_e, outpad, bias)
        if y is None:
            return None
        return bb.emit(relax.op.squeeze(y, [2])) if n == 1 else y
