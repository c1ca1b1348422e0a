"""3x3 stride-1 convolutions as Winograd F(2x2, 3x3), for the CPU kernels.

Each 2x2 block of outputs is computed from a 4x4 tile of input with 16
multiplications per channel pair instead of 36 (2.25x fewer):

    Y = A^T [ (G w G^T) * (B^T d B) ] A        (* elementwise over the 4x4 tile)

- the weights are transformed (U = G w G^T) once, at build time (FoldConstant
  runs the stage), and packed [4, 4, N/NR, C, NR] like the GEMM kernels' panels;
- V = B^T d B for every tile and channel (input transform);
- M[a, b] = V[a, b] x U[a, b]: 16 GEMMs (tiles x C) x (C x N), the block
  `schedule.py` register-tiles like any `ember_*` GEMM;
- Y = A^T M A per output pixel, with the fused epilogue (bias, activation,
  residual add) inlined into it.

B^T and A^T hold only 0 and +-1, so the transforms are written as sums and
differences selected by the tile position (a, b, and the output's r, s);
the schedule unrolls those loops, which leaves one branch of each select.
The transforms cost about as much as the GEMM's epilogue; the GEMM is 2.25x
smaller than the direct convolution's.
"""

from __future__ import annotations

from ember.compiler.backend.tvm.kernels import pad_nhwc, padded, static_ints

GEMM = "ember_winograd"  # the main block; the transforms' names must not start with it
INPUT = "ember_wtransform_in"
OUTPUT = "ember_wtransform_out"
M, ALPHA = 2, 4  # output tile, input tile


def usable(kernel, strides, dilation, out_hw, channels: int) -> bool:
    """Whether a conv2d (groups=1) is one this kernel computes, and is large
    enough for the transforms to pay: 3x3, stride 1, no dilation, an output
    of at least 14x14 and 64 input channels or more. (Measured on one layer:
    64 -> 64 channels at 56x56 runs 1.35x faster than the direct kernel,
    256 -> 256 at 14x14 1.6x; 16 -> 64 at 55x55 and 64 -> 256 at 13x13 run
    slower, the transforms costing more than the smaller GEMM saves.)"""
    oh, ow = out_hw
    return (tuple(kernel) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and oh * ow >= 196 and channels >= 64)


def tiles(size: int) -> int:
    """Output tiles along one dimension (the last one may stick out)."""
    return -(-size // M)


def _pick(i, options):
    """options[i] for a loop variable i: a select chain, one branch once i is unrolled."""
    from tvm import tirx

    out = options[-1]
    for k in range(len(options) - 2, -1, -1):
        out = tirx.Select(i == k, options[k], out)
    return out


def _bt(a, f):
    """Row a of B^T (F(2,3)) applied to f(0..3)."""
    return _pick(a, [f(0) - f(2), f(1) + f(2), f(2) - f(1), f(1) - f(3)])


def _at(r, f):
    """Row r of A^T (F(2,3)) applied to f(0..3)."""
    return _pick(r, [f(0) + f(1) + f(2), f(1) - f(2) - f(3)])


def _g(a, f):
    """Row a of G (F(2,3)) applied to f(0..2)."""
    from tvm import tirx

    half = tirx.const(0.5, "float32")
    return _pick(a, [f(0), (f(0) + f(1) + f(2)) * half, (f(0) - f(1) + f(2)) * half, f(2)])


def transform_weights(w, nr: int):
    """TE: OHWI 3x3 weights -> U = G w G^T, packed [4, 4, N/NR, C, NR] (output
    channels zero-padded to a multiple of NR)."""
    from tvm import te, tirx

    n, _, _, c = static_ints(w.shape)

    def u(a, b, no, ci, ni):
        k = no * nr + ni
        value = _g(a, lambda i: _g(b, lambda j: w[tirx.min(k, n - 1), i, j, ci]))
        return tirx.if_then_else(k < n, value, tirx.const(0, w.dtype))
    return te.compute((ALPHA, ALPHA, padded(n, nr) // nr, c, nr), u, name="ember_pack")


def conv2d_nhwc(x, u, padding, mr: int, n: int):
    """TE: NHWC 3x3 stride-1 conv2d from transformed weights `u`."""
    from tvm import te

    b, h, w, c = static_ints(x.shape)
    pt, pl, pb, pr = padding
    oh, ow = h + pt + pb - 2, w + pl + pr - 2
    th, tw = tiles(oh), tiles(ow)
    # an odd output gets a last tile half outside it: one more row / column of zeros to read
    xp = pad_nhwc(x, (pt, pl, pb + th * M - oh, pr + tw * M - ow))
    count = b * th * tw
    nr = static_ints(u.shape)[4]

    def v(a, bb, p, ci):
        bi, t = p // (th * tw), p % (th * tw)
        y, xx = (t // tw) * M, (t % tw) * M
        return _bt(a, lambda i: _bt(bb, lambda j: xp[bi, y + i, xx + j, ci]))
    tv = te.compute((ALPHA, ALPHA, count, c), v, name=INPUT)
    rc = te.reduce_axis((0, c), name="kc")
    mm = te.compute((ALPHA, ALPHA, count, static_ints(u.shape)[2] * nr),
                    lambda a, bb, p, k: te.sum(tv[a, bb, p, rc] * u[a, bb, k // nr, rc, k % nr], axis=rc),
                    name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})

    def y(bi, yy, xx, k):
        p = (bi * th + yy // M) * tw + xx // M
        return _at(yy % M, lambda a: _at(xx % M, lambda bb: mm[a, bb, p, k]))
    return te.compute((b, oh, ow, n), y, name=OUTPUT)

