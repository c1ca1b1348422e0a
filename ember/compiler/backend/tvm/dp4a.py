"""8-bit conv2d and matmul for CUDA on the dp4a instruction.

TVM 0.27 has no integer GPU kernels: an int8 conv2d or matmul legalizes to
int32 multiply-adds, one per byte. Ember packs four consecutive reduction
bytes into one int32 word and sums `__dp4a(a, b, 0)` (four int8 products
added in one instruction, sm_61 and later) over the words:

- the weights (constants) are packed once, at build time: conv2d OIHW into
  [O, KH*KW*C4/4] words (reduction order ky, kx, channel group), matmul
  [K, N] into [N, K4/4];
- the activations are packed by a stage of the kernel itself, which dlight
  inlines into its shared-memory load.

The result is an ordinary reduction over int32 words, so dlight's GPU
matmul rule tiles it as it tiles a float GEMM (conv2d as an implicit GEMM):
shared-memory tiles, register tiles, and the fused requantization epilogue.

dp4a multiplies signed bytes by signed bytes. uint8 activations are flipped
to int8 (x - 128, padding included) and 128 * sum(w) is added back per
output channel, as the AArch64 sdot path in `kernels.py` does. Below sm_61
the same words are multiplied byte by byte in int32 arithmetic.
"""

from __future__ import annotations

from tvm import te, tirx

from ember.compiler.backend.tvm.kernels import conv_out_hw, padded, static_ints, weight_sums
from ember.compiler.backend.tvm.relax_util import static_shape

FLIP = 128  # uint8 x == (x - 128) + 128


def word(byte_at, dtype: str, flip: bool = False):
    """TE: the int32 word holding bytes byte_at(0..3) (8-bit expressions of
    `dtype`), byte i in bits 8i..8i+7; with `flip`, each byte minus 128."""
    parts = []
    for i in range(4):
        v = byte_at(i).astype("int32")
        if flip:
            v = v - FLIP
        parts.append((v & 0xFF) << (8 * i))
    return parts[0] | parts[1] | parts[2] | parts[3]


def dot4(a, b, native: bool):
    """TE: the sum of the four signed byte products of words a and b."""
    if native:
        return tirx.call_pure_extern("int32", "__dp4a", a, b, tirx.const(0, "int32"))
    total = None
    for i in range(4):
        shift = 24 - 8 * i  # byte i to the top, then an arithmetic shift back sign-extends it
        term = ((a << shift) >> 24) * ((b << shift) >> 24)
        total = term if total is None else total + term
    return total


def pack_conv_weights(w):
    """TE: int8 OIHW weights -> int32 words [O, KH*KW*C4/4], C zero-padded to a multiple of 4."""
    o, c, kh, kw = static_ints(w.shape)
    groups = padded(c, 4) // 4

    def at(oi, k, i):
        ci = (k % groups) * 4 + i
        return tirx.if_then_else(ci < c, w[oi, tirx.min(ci, c - 1), k // (kw * groups), (k // groups) % kw],
                                 tirx.const(0, w.dtype))
    return te.compute((o, kh * kw * groups), lambda oi, k: word(lambda i: at(oi, k, i), w.dtype),
                      name="ember_pack")


def pack_matmul_weights(w):
    """TE: int8 [K, N] weights -> int32 words [N, K4/4], K zero-padded to a multiple of 4."""
    k, n = static_ints(w.shape)

    def at(j, ko, i):
        ki = ko * 4 + i
        return tirx.if_then_else(ki < k, w[tirx.min(ki, k - 1), j], tirx.const(0, w.dtype))
    return te.compute((n, padded(k, 4) // 4), lambda j, ko: word(lambda i: at(j, ko, i), w.dtype),
                      name="ember_pack")


def _fixed(acc, wsum, flip: bool, channel: int):
    if not flip:
        return acc
    return te.compute(static_ints(acc.shape), lambda *i: acc[i] + wsum[i[channel]] * FLIP, name="ember_qfix")


def qconv2d_nchw(x, wp, wsum, kernel, strides, padding, dilation, native: bool):
    """TE: 8-bit NCHW conv2d (groups=1) x packed int8 weights -> int32 NCHW."""
    b, c, h, w = static_ints(x.shape)
    kh, kw = kernel
    (sh, sw), (dh, dw) = strides, dilation
    pt, pl, pb, pr = padding
    groups = padded(c, 4) // 4
    flip = x.dtype == "uint8"

    def byte(bi, g, y, xx, i):
        ci = g * 4 + i
        inside = tirx.all(y >= pt, y < h + pt, xx >= pl, xx < w + pl, ci < c)
        return tirx.if_then_else(inside, x[bi, tirx.min(ci, c - 1), y - pt, xx - pl], tirx.const(0, x.dtype))
    xp = te.compute((b, groups, h + pt + pb, w + pl + pr),
                    lambda bi, g, y, xx: word(lambda i: byte(bi, g, y, xx, i), x.dtype, flip), name="ember_words")
    oh, ow = conv_out_hw(h, w, kernel, strides, padding, dilation)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    rg = te.reduce_axis((0, groups), name="kg")
    acc = te.compute(
        (b, static_ints(wp.shape)[0], oh, ow),
        lambda bi, o, y, xx: te.sum(dot4(xp[bi, rg, y * sh + ry * dh, xx * sw + rx * dw],
                                         wp[o, (ry * kw + rx) * groups + rg], native), axis=[ry, rx, rg]),
        name="ember_dp4a")
    return _fixed(acc, wsum, flip, 1)


def qmatmul(a, wp, wsum, native: bool):
    """TE: 8-bit A [..., M, K] x packed int8 weights -> int32 [..., M, N]."""
    shape = static_ints(a.shape)
    k = shape[-1]
    n, ko_total = static_ints(wp.shape)
    flip = a.dtype == "uint8"

    def byte(i, ko, j):
        kk = ko * 4 + j
        return tirx.if_then_else(kk < k, a[(*i, tirx.min(kk, k - 1))], tirx.const(0, a.dtype))
    ap = te.compute((*shape[:-1], ko_total), lambda *i: word(lambda j: byte(i[:-1], i[-1], j), a.dtype, flip),
                    name="ember_words")
    ko = te.reduce_axis((0, ko_total), name="ko")
    acc = te.compute((*shape[:-1], n), lambda *i: te.sum(dot4(ap[(*i[:-1], ko)], wp[i[-1], ko], native), axis=ko),
                     name="ember_dp4a")
    return _fixed(acc, wsum, flip, len(shape) - 1)


def legalize_conv2d(bb, call, x, w, native: bool):
    """Relax: an 8-bit NCHW conv2d (groups=1) on dp4a, or None when it is not one."""
    a = call.attrs
    xs, ws = static_shape(x), static_shape(w)
    if not (a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
            and a.groups == 1 and xs is not None and ws is not None and len(xs) == 4):
        return None
    wp = bb.emit_te(pack_conv_weights, w, primfunc_name_hint="ember_pack")
    wsum = bb.emit_te(weight_sums, w, 0, primfunc_name_hint="ember_wsum") if str(x.ty.dtype) == "uint8" else None
    return bb.call_te(qconv2d_nchw, x, wp, wsum, (ws[2], ws[3]), tuple(int(s) for s in a.strides),
                      tuple(int(p) for p in a.padding), tuple(int(d) for d in a.dilation), native,
                      primfunc_name_hint="ember_qconv2d")


def legalize_matmul(bb, x, w, native: bool):
    """Relax: an 8-bit [..., M, K] x [K, N] matmul on dp4a, or None when it is not one."""
    xs, ws = static_shape(x), static_shape(w)
    if xs is None or ws is None or len(xs) < 2 or len(ws) != 2:
        return None
    wp = bb.emit_te(pack_matmul_weights, w, primfunc_name_hint="ember_pack")
    wsum = bb.emit_te(weight_sums, w, 1, primfunc_name_hint="ember_wsum") if str(x.ty.dtype) == "uint8" else None
    return bb.call_te(qmatmul, x, wp, wsum, native, primfunc_name_hint="ember_qmatmul")

