"""Ember's CPU kernels for the operators that dominate inference time.

TVM 0.27 legalizes conv2d and matmul into naive loop nests and has no
default CPU schedule for them (dlight's CPU rules cover GEMV and reductions
only), so untuned code runs tens of times slower than onnxruntime. Ember
replaces their legalization with register-blocked GEMM formulations, as
MLAS and oneDNN do:

- conv2d (NHWC, groups=1): im2col into a packed [M/MR, K, MR] panel (skipped
  for 1x1 stride-1 convolutions, whose input already is the GEMM's A), times
  the weights packed once at build time into [N/NR, K, NR] panels;
- depthwise conv2d (NHWC): vectorized along channels;
- matmul with a constant right-hand side: the same packed GEMM.

Every kernel is a TE computation whose main block is named ``ember_*``;
`schedule.py` finds these blocks after operator fusion (which may have added
a bias, activation or residual epilogue) and schedules them: MR x NR
accumulator tiles held in registers, vectorized along NR, parallel over
tiles. MetaSchedule can still tune them: they are ordinary PrimFuncs.
"""

from __future__ import annotations

from dataclasses import dataclass

GEMM = "ember_gemm"
IM2COL = "ember_im2col"
DEPTHWISE = "ember_depthwise"
PAD = "ember_pad"


@dataclass(frozen=True)
class Tiles:
    """Register tile of a GEMM: MR rows (broadcast) x NR columns (vector lanes)."""

    mr: int
    nr: int


def gemm_tiles(m: int, n: int, lanes: int) -> Tiles | None:
    """Register tile for a GEMM whose output rows come in runs of `m` (the
    innermost output dimension before N: a tile never crosses a run, so the
    tile's writeback stays rectangular) and N columns, with `lanes` fp32
    vector lanes. None if N has no vector-friendly factor: the op keeps
    TVM's own lowering."""
    accumulators = 24 if lanes >= 16 else 12  # vector registers kept for C (of 32 / 16)
    best = None
    for nr in (2 * lanes, lanes, lanes // 2):
        if nr < 4 or n % nr:
            continue
        vectors = -(-nr // lanes)
        for mr in range(1, 17):
            if m % mr == 0 and mr * vectors <= accumulators:
                key = (mr * nr, nr)
                if best is None or key > best[0]:
                    best = (key, Tiles(mr, nr))
    return None if best is None else best[1]


def _te():
    from tvm import te, tirx

    return te, tirx


def _ints(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def pack_weights(w, nr: int, layout: str):
    """TE: weights -> [N/NR, K, NR]. `layout` OHWI (conv, K = kh,kw,c) or KN (matmul)."""
    te, _ = _te()
    w_shape = _ints(w.shape)
    if layout == "OHWI":
        o, kh, kw, c = w_shape
        k_total = kh * kw * c

        def f(no, k, ni):
            return w[no * nr + ni, k // (kw * c), (k // c) % kw, k % c]
        shape = (o // nr, k_total, nr)
    else:
        k_total, n = w_shape

        def f(no, k, ni):
            return w[k, no * nr + ni]
        shape = (n // nr, k_total, nr)
    return te.compute(shape, f, name="ember_pack")


def conv2d_nhwc(x, wp, kernel, strides, padding, dilation, mr: int):
    """TE: NHWC conv2d (groups=1) as im2col + packed GEMM."""
    te, tirx = _te()
    b, h, w, c = _ints(x.shape)
    packed_shape, dtype = _ints(wp.shape), x.dtype
    kh, kw = kernel
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    k_total = kh * kw * c
    m = b * oh * ow
    nr = packed_shape[2]
    direct = kh == kw == sh == sw == 1 and not any(padding)

    if direct:
        def a(mi, k):
            return x[mi // (oh * ow), (mi // ow) % oh, mi % ow, k]
    else:
        mp = -(-m // mr) * mr

        def col(mo, k, mi):
            row = mo * mr + mi
            bi, y, xx = row // (oh * ow), (row // ow) % oh, row % ow
            ci, ky, kx = k % c, k // (kw * c), (k // c) % kw
            iy, ix = y * sh - pt + ky * dh, xx * sw - pl + kx * dw
            inside = tirx.all(row < m, iy >= 0, iy < h, ix >= 0, ix < w)
            return tirx.if_then_else(inside, x[bi, iy, ix, ci], tirx.const(0, dtype))
        packed = te.compute((mp // mr, k_total, mr), col, name=IM2COL)

        def a(mi, k):
            return packed[mi // mr, k, mi % mr]

    r = te.reduce_axis((0, k_total), name="k")
    return te.compute(
        (b, oh, ow, packed_shape[0] * nr),
        lambda bi, y, xx, n: te.sum(a((bi * oh + y) * ow + xx, r) * wp[n // nr, r, n % nr], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})


def matmul_packed(a, wp, mr: int):
    """TE: A [..., M, K] x packed constant B -> [..., M, N]."""
    te, _ = _te()
    a_shape, packed_shape = _ints(a.shape), _ints(wp.shape)
    k_total, nr = a_shape[-1], packed_shape[2]
    r = te.reduce_axis((0, k_total), name="k")
    return te.compute(
        (*a_shape[:-1], packed_shape[0] * nr),
        lambda *i: te.sum(a[(*i[:-1], r)] * wp[i[-1] // nr, r, i[-1] % nr], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})


def depthwise_nhwc(x, wt, strides, padding, dilation):
    """TE: NHWC depthwise conv2d, weights [C, KH, KW, 1] (OHWI with groups=C)."""
    te, tirx = _te()
    b, h, w, c = _ints(x.shape)
    _, kh, kw, _ = _ints(wt.shape)
    dtype = x.dtype
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if any(padding):
        def pad(bi, y, xx, ci):
            inside = tirx.all(y >= pt, y < h + pt, xx >= pl, xx < w + pl)
            return tirx.if_then_else(inside, x[bi, y - pt, xx - pl, ci], tirx.const(0, dtype))
        xp = te.compute((b, h + pt + pb, w + pl + pr, c), pad, name=PAD)
    else:
        xp = x
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    return te.compute(
        (b, oh, ow, c),
        lambda bi, y, xx, ci: te.sum(xp[bi, y * sh + ry * dh, xx * sw + rx * dw, ci] * wt[ci, ry, rx, 0],
                                      axis=[ry, rx]),
        name=DEPTHWISE)
