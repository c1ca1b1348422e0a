"""Ember's CPU kernels for the operators that dominate inference time.

TVM 0.27 legalizes conv2d and matmul into naive loop nests and has no
default CPU schedule for them (dlight's CPU rules cover GEMV and reductions
only), so untuned code runs tens of times slower than onnxruntime. Ember
replaces their legalization with register-blocked GEMM formulations, as
MLAS and oneDNN do:

- conv2d (NHWC, groups=1): a direct GEMM over the zero-padded input (rows:
  output pixels, columns: output channels, reduction: ky, kx, c; channels
  are contiguous in NHWC, so no im2col copy), times the weights packed once
  at build time into [N/NR, K, NR] panels;
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
DEPTHWISE = "ember_depthwise"
PAD = "ember_pad"
CROP = "ember_crop"


@dataclass(frozen=True)
class Tiles:
    """Register tile of a GEMM: MR rows (broadcast) x NR columns (vector lanes)."""

    mr: int
    nr: int


def padded(n: int, nr: int) -> int:
    return -(-n // nr) * nr


def gemm_tiles(m: int, n: int, lanes: int) -> Tiles:
    """Register tile for a GEMM whose output rows come in runs of `m` (the
    innermost output dimension before N: a tile never crosses a run, so its
    writeback stays rectangular) and N columns, with `lanes` fp32 vector
    lanes. When no vector width divides N, the weights are zero-padded to a
    multiple of NR columns and the result is cropped."""
    accumulators = 24 if lanes >= 16 else 12  # vector registers kept for C (of 32 / 16)
    best = None
    widths = [nr for nr in (2 * lanes, lanes) if n % nr == 0] or [lanes]
    for nr in widths:
        vectors = nr // lanes
        for mr in range(1, 17):
            if m % mr == 0 and mr * vectors <= accumulators:
                key = (mr * nr, nr)
                if best is None or key > best[0]:
                    best = (key, Tiles(mr, nr))
    assert best is not None  # mr = 1 always fits
    return best[1]


def _te():
    from tvm import te, tirx

    return te, tirx


def _ints(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def pack_weights(w, nr: int, layout: str):
    """TE: weights -> [N/NR, K, NR]. `layout` OHWI (conv, K = kh,kw,c) or KN (matmul)."""
    te, _ = _te()
    _, tirx = _te()
    w_shape = _ints(w.shape)
    zero = tirx.const(0, w.dtype)
    if layout == "OHWI":
        o, kh, kw, c = w_shape
        k_total = kh * kw * c

        def f(no, k, ni):
            col = no * nr + ni
            return tirx.if_then_else(col < o, w[col, k // (kw * c), (k // c) % kw, k % c], zero)
        n = o
    else:
        k_total, n = w_shape

        def f(no, k, ni):
            col = no * nr + ni
            return tirx.if_then_else(col < n, w[k, col], zero)
    return te.compute((padded(n, nr) // nr, k_total, nr), f, name="ember_pack")


def _pad_nhwc(x, padding):
    """TE: zero-pad an NHWC tensor spatially (no-op without padding)."""
    te, tirx = _te()
    if not any(padding):
        return x
    b, h, w, c = _ints(x.shape)
    pt, pl, pb, pr = padding

    def pad(bi, y, xx, ci):
        inside = tirx.all(y >= pt, y < h + pt, xx >= pl, xx < w + pl)
        return tirx.if_then_else(inside, x[bi, y - pt, xx - pl, ci], tirx.const(0, x.dtype))
    return te.compute((b, h + pt + pb, w + pl + pr, c), pad, name=PAD)


def _out_hw(h, w, kernel, strides, padding, dilation):
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, strides, padding, dilation
    return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _crop(out, n: int):
    """TE: the first n columns of a GEMM computed on zero-padded weights."""
    te, _ = _te()
    if _ints(out.shape)[-1] == n:
        return out
    return te.compute((*_ints(out.shape)[:-1], n), lambda *i: out[i], name=CROP)


def conv2d_nhwc(x, wp, kernel, strides, padding, dilation, mr: int, n: int):
    """TE: NHWC conv2d (groups=1) as a direct GEMM: rows are output pixels,
    columns output channels, the reduction runs over (ky, kx, c) of the
    zero-padded input, whose channels are contiguous: no im2col copy."""
    te, _ = _te()
    b, h, w, c = _ints(x.shape)
    kh, kw = kernel
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = _out_hw(h, w, kernel, strides, padding, dilation)
    nr = _ints(wp.shape)[2]
    xp = _pad_nhwc(x, padding)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    rc = te.reduce_axis((0, c), name="kc")
    out = te.compute(
        (b, oh, ow, _ints(wp.shape)[0] * nr),
        lambda bi, y, xx, j: te.sum(xp[bi, y * sh + ry * dh, xx * sw + rx * dw, rc]
                                    * wp[j // nr, (ry * kw + rx) * c + rc, j % nr], axis=[ry, rx, rc]),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})
    return _crop(out, n)


def matmul_packed(a, wp, mr: int, n: int):
    """TE: A [..., M, K] x packed constant B -> [..., M, N]."""
    te, _ = _te()
    a_shape, packed_shape = _ints(a.shape), _ints(wp.shape)
    k_total, nr = a_shape[-1], packed_shape[2]
    r = te.reduce_axis((0, k_total), name="k")
    out = te.compute(
        (*a_shape[:-1], packed_shape[0] * nr),
        lambda *i: te.sum(a[(*i[:-1], r)] * wp[i[-1] // nr, r, i[-1] % nr], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})
    return _crop(out, n)


def batch_matmul(a, b, mr: int, nr: int):
    """TE: A [..., M, K] x B [..., K, N] (same batch dims, B read in place:
    its rows are contiguous along N, the vector dimension)."""
    te, _ = _te()
    k_total = _ints(a.shape)[-1]
    r = te.reduce_axis((0, k_total), name="k")
    return te.compute(
        (*_ints(a.shape)[:-1], _ints(b.shape)[-1]),
        lambda *i: te.sum(a[(*i[:-1], r)] * b[(*i[:-2], r, i[-1])], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})


def depthwise_nhwc(x, wt, strides, padding, dilation):
    """TE: NHWC depthwise conv2d, weights [C, KH, KW, 1] (OHWI with groups=C)."""
    te, _ = _te()
    _, h, w, c = _ints(x.shape)
    _, kh, kw, _ = _ints(wt.shape)
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = _out_hw(h, w, (kh, kw), strides, padding, dilation)
    xp = _pad_nhwc(x, padding)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    return te.compute(
        (_ints(x.shape)[0], oh, ow, c),
        lambda bi, y, xx, ci: te.sum(xp[bi, y * sh + ry * dh, xx * sw + rx * dw, ci] * wt[ci, ry, rx, 0],
                                      axis=[ry, rx]),
        name=DEPTHWISE)
