"""Ember's CPU kernels for the operators that dominate inference time.

TVM 0.27 legalizes conv2d and matmul into naive loop nests and has no
default CPU schedule for them (dlight's CPU rules cover GEMV and reductions
only), so untuned code runs tens of times slower than onnxruntime. Ember
replaces their legalization with register-blocked GEMM formulations, as
MLAS and oneDNN do:

- conv2d (NHWC, dense or grouped): a direct GEMM over the zero-padded input (rows:
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

from tvm import te, tirx

from ember.compiler.backend.tvm.vector_math import exp_f32, f32 as _f32

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


def pair_tiles(m: int, n: int) -> Tiles:
    """Register tile for a GEMM on a 2 x 2 instruction (usmmla): MR rows in
    pairs (dividing the row run m) x NR columns in pairs, at most 16 2 x 2
    accumulator blocks (of AArch64's 32 vector registers), the most products
    per loaded operand, counting the columns N's zero-padding wastes."""
    best = None
    for nr in (16, 8, 4):
        for mr in range(2, 17, 2):
            if m % mr == 0 and (mr // 2) * (nr // 2) <= 16:
                key = (mr * nr * n / padded(n, nr), nr)
                if best is None or key > best[0]:
                    best = (key, Tiles(mr, nr))
    assert best is not None, "rows must come in pairs"
    return best[1]


def static_ints(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def pack_weights(w, nr: int, layout: str):
    """TE: weights -> [N/NR, K, NR]. `layout` OHWI (conv, K = kh,kw,c) or KN (matmul)."""
    w_shape = static_ints(w.shape)
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


def group_span(groups: int, cog: int, lanes: int) -> int:
    """How many of a grouped convolution's `groups` (of `cog` output channels each) one GEMM
    group spans: the fewest whose output channels fill whole vectors of `lanes` (`groups`, one
    dense GEMM, when none do). Spanning s groups multiplies the products by s (the weights
    between them are zeros) and buys whole-vector register tiles that stay inside a group."""
    return next((s for s in range(1, groups + 1) if groups % s == 0 and s * cog % lanes == 0), groups)


def group_weights(w, groups: int, span: int):
    """TE: grouped weights [O, KH, KW, C/groups] (OHWI) -> [O, KH, KW, span * C/groups]: each
    output channel reads the input channels of the `span` groups its GEMM group spans, zeros
    where they are not its own group's (a block-diagonal weight)."""
    o, kh, kw, cig = static_ints(w.shape)
    cog = o // groups
    zero = tirx.const(0, w.dtype)
    return te.compute((o, kh, kw, span * cig),
                      lambda oi, y, x, i: tirx.if_then_else(i // cig == (oi // cog) % span, w[oi, y, x, i % cig], zero),
                      name="ember_group")


def pad_nhwc(x, padding):
    """TE: zero-pad an NHWC tensor spatially (no-op without padding)."""
    if not any(padding):
        return x
    b, h, w, c = list(x.shape)
    pt, pl, pb, pr = padding

    def pad(bi, y, xx, ci):
        inside = tirx.all(y >= pt, y < h + pt, xx >= pl, xx < w + pl)
        return tirx.if_then_else(inside, x[bi, y - pt, xx - pl, ci], tirx.const(0, x.dtype))
    return te.compute((b, h + pt + pb, w + pl + pr, c), pad, name=PAD)


def conv_out_hw(h, w, kernel, strides, padding, dilation):
    """The output (height, width); simplified where the input's are symbolic, so later shapes
    compare equal to TVM's own (and a chain of convolutions keeps its expressions short)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, strides, padding, dilation
    oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if isinstance(oh, int) and isinstance(ow, int):
        return oh, ow
    from tvm.sym import Analyzer

    simplify = Analyzer().simplify
    return (oh if isinstance(oh, int) else simplify(oh)), (ow if isinstance(ow, int) else simplify(ow))


def _crop(out, shape):
    """TE: the `shape` corner of a GEMM's result: its first columns where it ran on zero-padded
    weights, its first rows where it ran over rows padded to a multiple of its tile, the run-time
    leading dims it ran over as `counted` (the same values); `out` itself where nothing differs."""
    def same(a, b):
        return int(a) == int(b) if _static(a) and _static(b) else not _static(a) and a.same_as(b)
    if all(same(a, b) for a, b in zip(out.shape, shape)):
        return out
    return te.compute(tuple(shape), lambda *i: out[i], name=CROP)


def _static(d) -> bool:
    return isinstance(d, (int, tirx.IntImm))


def counted(d):
    """A GEMM's extent over a run-time dim d (a batch, an output height) as max(d, 0), the same
    value: TVM's analyzer then knows it is not negative, and so are the quotients of the
    parallel loop fused over such extents. Without that, buffer compaction offsets the register
    tile by max(0, q) for a quotient q it cannot sign and indexes it by min(q, 0) * tile + ...,
    lowered to floor-division fix-ups LLVM took seconds per kernel to compile (HF RegNet's
    symbolic build: 75 s, 11 s with counted extents)."""
    return d if _static(d) else tirx.max(d, 0)


def run_time_rows(rows, mr: int, pad: bool = True):
    """(rows the GEMM computes, row index it reads) for a row dim of `rows`, a run-time count
    (symbolic) or a static one. A run-time count is padded to a multiple of the row tile: the tile
    then takes no predicate (a predicated one keeps its accumulators in memory, not registers:
    TVM cannot bound a buffer region cut by a symbolic condition) and the padded rows re-read the
    last row (an index clamp, hoisted out of the reduction) and are cropped. At most mr - 1 rows
    are wasted. A static count: itself, read as it is; so is a count with `pad` false (the caller's
    `schedule.crop_schedules` says TVM cannot show that the padded rows cover the crop's).
    The padding counts max(rows, 0) rows, the same number: TVM cannot tell that a count such as
    n * ((t - 5) // 8 + 1) is not negative, and then indexed the accumulators with floor-division
    fix-ups LLVM could not keep in registers (loaded and stored at every step of the reduction)."""
    if isinstance(rows, (int, tirx.IntImm)) or not pad:
        return rows, lambda i: i
    last = rows - 1
    return tirx.floordiv(tirx.max(rows, 0) + (mr - 1), mr) * mr, lambda i: tirx.min(i, last)


def conv2d_nhwc(x, wp, kernel, strides, padding, dilation, mr: int, n: int, pad_rows: bool = True,
                groups: int = 1):
    """TE: NHWC conv2d as a direct GEMM: rows are output pixels,
    columns output channels, the reduction runs over (ky, kx, c) of the
    zero-padded input, whose channels are contiguous: no im2col copy. Batch and
    spatial dims may be symbolic (a symbolic width: see `run_time_rows`); channels are static.
    With `groups` > 1, a GEMM column reads the input channels of its group only (weights from
    `group_weights`); a group's columns are whole panels, so a register tile stays in one group."""
    b, h, w, _ = list(x.shape)
    kh, kw = kernel
    panels, k_total, nr = static_ints(wp.shape)
    c = k_total // (kh * kw)  # the input channels a column reads

    def channel(j, rc):  # of the input, for column j's reduction step rc
        return rc if groups == 1 else j // nr // (panels // groups) * c + rc
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = conv_out_hw(h, w, kernel, strides, padding, dilation)
    owp, col = run_time_rows(ow, mr, pad_rows)
    xp = pad_nhwc(x, padding)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    rc = te.reduce_axis((0, c), name="kc")
    out = te.compute(
        (counted(b), counted(oh), owp, panels * nr),
        lambda bi, y, xx, j: te.sum(xp[bi, y * sh + ry * dh, col(xx) * sw + rx * dw, channel(j, rc)]
                                    * wp[j // nr, (ry * kw + rx) * c + rc, j % nr], axis=[ry, rx, rc]),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})
    return _crop(out, (b, oh, ow, n))


def matmul_packed(a, wp, mr: int, n: int, pad_rows: bool = True):
    """TE: A [..., M, K] x packed constant B -> [..., M, N]; the leading dims and M may be
    symbolic (a batch, a sequence; M: see `run_time_rows`)."""
    a_shape, packed_shape = list(a.shape), static_ints(wp.shape)
    k_total, nr = int(a_shape[-1]), packed_shape[2]
    rows, row = run_time_rows(a_shape[-2], mr, pad_rows)
    r = te.reduce_axis((0, k_total), name="k")
    out = te.compute(
        (*map(counted, a_shape[:-2]), rows, packed_shape[0] * nr),
        lambda *i: te.sum(a[(*i[:-2], row(i[-2]), r)] * wp[i[-1] // nr, r, i[-1] % nr], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})
    return _crop(out, (*a_shape[:-1], n))


def batch_matmul(a, b, mr: int, nr: int, pad_rows: bool = True, n=None):
    """TE: A [..., M, K] x B [..., K, N] (same batch dims, B read in place:
    its rows are contiguous along N, the vector dimension). M may be symbolic (see
    `run_time_rows`). `n`: the columns wanted where B's are zero-padded to whole tiles
    (`pad_columns`: a run-time count, attention's scores over a sequence of any length);
    the result is cropped to them."""
    m, cols = a.shape[-2], b.shape[-1]
    rows, row = run_time_rows(m, mr, pad_rows)
    r = te.reduce_axis((0, a.shape[-1]), name="k")
    out = te.compute(
        (*map(counted, list(a.shape)[:-2]), rows, cols),
        lambda *i: te.sum(a[(*i[:-2], row(i[-2]), r)] * b[(*i[:-2], r, i[-1])], axis=r),
        name=GEMM, attrs={"ember_mr": mr, "ember_nr": nr})
    return _crop(out, (*list(a.shape)[:-2], m, cols if n is None else n))


def pad_columns(b, nr: int):
    """TE: B [..., K, N], N a run-time count, with zero columns up to a multiple of `nr`: a GEMM
    over it then runs whole register tiles (its accumulators keep a static size, its loads no
    predicate) and crops (`batch_matmul`)."""
    n = b.shape[-1]
    cols = tirx.floordiv(n + (nr - 1), nr) * nr
    return te.compute((*list(b.shape)[:-1], cols), lambda *i: tirx.if_then_else(i[-1] < n, b[i], _f32(0.0)),
                      name=PAD)


def _as(v, dtype: str | None):
    return v if dtype is None else v.astype(dtype)


def depthwise_weights(w):
    """TE: depthwise weights [C, KH, KW, 1] (OHWI, groups = C) -> [KH, KW, C]:
    the channels a vector of outputs needs sit side by side (read in place,
    every tap's weights were a gather, KH*KW bytes apart)."""
    c, kh, kw, _ = static_ints(w.shape)
    return te.compute((kh, kw, c), lambda y, x, ci: w[ci, y, x, 0], name="ember_pack")


def depthwise_nhwc(x, wt, strides, padding, dilation, acc_dtype: str | None = None):
    """TE: NHWC depthwise conv2d, weights [KH, KW, C] (`depthwise_weights`);
    8-bit operands accumulate in `acc_dtype` (int32). Batch and spatial dims may be symbolic."""
    _, h, w, c = list(x.shape)
    c = int(c)
    kh, kw, _ = static_ints(wt.shape)
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = conv_out_hw(h, w, (kh, kw), strides, padding, dilation)
    xp = pad_nhwc(x, padding)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    return te.compute(
        (x.shape[0], oh, ow, c),
        lambda bi, y, xx, ci: te.sum(_as(xp[bi, y * sh + ry * dh, xx * sw + rx * dw, ci], acc_dtype)
                                      * _as(wt[ry, rx, ci], acc_dtype), axis=[ry, rx]),
        name=DEPTHWISE)


# ---- softmax over the last axis, with an exp that vectorizes (vector_math.exp_f32) ----

SOFTMAX = "ember_softmax"
SOFTMAX_STAGES = "ember_smx_"  # its row stages: maximum, exponentials, sum


def softmax_last_axis(x):
    """TE: softmax over the last axis of a float32 tensor: row maximum, e^(x - max)
    stored once, its sum, and e^(x - max) times the sum's reciprocal (TVM's computed e^(x - max)
    twice, with libm's scalar expf, and divided). Any dim may be symbolic. A row whose length
    is a run-time value or a static one 16 does not divide: the maximum and the sum run over its
    whole vectors (`ROW_VECTOR`, summed in vector lanes) and then over the rest, one by one; the
    elementwise passes are cut at the last whole vector (`schedule._row_tail`)."""
    *outer, n = list(x.shape)
    if not isinstance(n, (int, tirx.IntImm)) or (int(n) > ROW_VECTOR and int(n) % ROW_VECTOR):
        return _softmax_run_time_rows(x, outer, n)
    k = te.reduce_axis((0, n), name="k")
    top = te.compute(outer, lambda *i: te.max(x[(*i, k)], axis=k), name=SOFTMAX_STAGES + "max")
    e = te.compute(x.shape, lambda *i: exp_f32(x[i] - top[i[:-1]]), name=SOFTMAX_STAGES + "exp")
    j = te.reduce_axis((0, n), name="j")
    total = te.compute(outer, lambda *i: te.sum(e[(*i, j)], axis=j), name=SOFTMAX_STAGES + "sum")
    return _normalized(x.shape, lambda i: e[i], total)


ROW_VECTOR = 16  # lanes a row reduction is summed in (schedule._lane_reduction); a run-time row: its whole vectors, then the rest


def _softmax_run_time_rows(x, outer, n):
    whole = tirx.floordiv(n, ROW_VECTOR) * ROW_VECTOR
    rest = n - whole

    def reduce(stage, combine, value):
        k = te.reduce_axis((0, whole), name="k")
        r = te.reduce_axis((0, rest), name="r")
        main = te.compute(outer, lambda *i: combine(value(i, k), axis=k), name=stage)
        tail = te.compute(outer, lambda *i: combine(value(i, whole + r), axis=r), name=stage + "_rest")
        return main, tail

    top_main, top_rest = reduce(SOFTMAX_STAGES + "max", te.max, lambda i, k: x[(*i, k)])
    top = te.compute(outer, lambda *i: tirx.max(top_main[i], top_rest[i]), name=SOFTMAX_STAGES + "top")
    if isinstance(n, (int, tirx.IntImm)):  # e^(x - max) kept in a row buffer
        e = te.compute(x.shape, lambda *i: exp_f32(x[i] - top[i[:-1]]), name=SOFTMAX_STAGES + "exp")
        sum_main, sum_rest = reduce(SOFTMAX_STAGES + "sum", te.sum, lambda i, k: e[(*i, k)])
        return _normalized(x.shape, lambda i: e[i], sum_main, sum_rest)
    # computed twice: a row buffer of run-time length is allocated from TVM's workspace pool for
    # every row (1.3 ms against 1.1 over 4 x 799 x 799)
    sum_main, sum_rest = reduce(SOFTMAX_STAGES + "sum", te.sum, lambda i, k: exp_f32(x[(*i, k)] - top[i]))
    return _normalized(x.shape, lambda i: exp_f32(x[i] - top[i[:-1]]), sum_main, sum_rest)


def _normalized(shape, e, *sums):
    """TE: e(index) times the reciprocal of the sum of `sums` (per row): a multiply per element,
    not a divide."""
    outer = list(shape)[:-1]

    def total(i):
        out = sums[0][i]
        for part in sums[1:]:
            out = out + part[i]
        return out
    inv = te.compute(outer, lambda *i: _f32(1.0) / total(i), name=SOFTMAX_STAGES + "inv")
    return te.compute(shape, lambda *i: e(i) * inv[i[:-1]], name=SOFTMAX)


LAYERNORM = "ember_layernorm"
LAYERNORM_STAGES = "ember_ln_"  # its row stages: sum, mean, squared deviations, 1/sqrt


def layer_norm_last_axis(x, gamma, beta, epsilon: float, center: bool, scale: bool):
    """TE: layer normalization over the last axis, two passes per row (the sum,
    then the squared deviations from the mean, as ONNX's reference computes
    the variance), 1/sqrt once per row, then one vectorizable pass. The rows' dims may be
    symbolic; the normalized axis is static."""
    *outer, n = list(x.shape)
    n = int(n)
    k = te.reduce_axis((0, n), name="k")
    total = te.compute(outer, lambda *i: te.sum(x[(*i, k)], axis=k), name=LAYERNORM_STAGES + "sum")
    mean = te.compute(outer, lambda *i: total[i] / _f32(n), name=LAYERNORM_STAGES + "mean")
    j = te.reduce_axis((0, n), name="j")
    squares = te.compute(outer, lambda *i: te.sum((x[(*i, j)] - mean[i]) * (x[(*i, j)] - mean[i]), axis=j),
                         name=LAYERNORM_STAGES + "sq")
    inv = te.compute(outer, lambda *i: _f32(1.0) / tirx.sqrt(squares[i] / _f32(n) + _f32(epsilon)),
                     name=LAYERNORM_STAGES + "inv")

    def value(*i):
        y = (x[i] - mean[i[:-1]]) * inv[i[:-1]]
        y = y * gamma[i[-1]] if scale else y
        return y + beta[i[-1]] if center else y

    return te.compute(x.shape, value, name=LAYERNORM)


# ---- dot-product GEMMs: A (8-bit) x B (int8) -> int32, four (or eight) products per lane at a
# time; float32 A x B rounded to bfloat16 -> float32, two ----
#
# bfloat16 operands are kept as their bits (uint16) inside the kernels: TVM's TIR lowering turns
# bfloat16 values into float32 and internal bfloat16 buffers into float32 ones, which a kernel
# reading pairs of them as one 32-bit word (the dot product's operand) cannot have.

QGEMM = "ember_qgemm"
QFIX = "ember_qfix"
BF16_BITS = "uint16"


def bf16_bits(v):
    """TIR: float32 -> the bits of the nearest bfloat16 (ties to even; NaN stays a quiet NaN)."""
    u = tirx.reinterpret("uint32", v)
    rounded = (u + (tirx.const(0x7FFF, "uint32") + ((u >> 16) & tirx.const(1, "uint32")))) >> 16
    return tirx.if_then_else(v != v, (u >> 16) | tirx.const(0x40, "uint32"), rounded).astype(BF16_BITS)


def widen(v):
    """TIR: a stored operand as the accumulator's type (bfloat16 bits: exactly, as float32)."""
    if v.dtype == BF16_BITS:
        return tirx.reinterpret("float32", v.astype("uint32") << tirx.const(16, "uint32"))
    return v.astype("int32")


def _encode(v, dtype: str):
    """TIR: a float32 operand as the kernel stores it (bfloat16 bits); others as they are."""
    return bf16_bits(v) if dtype == "float32" else v


def qpack_weights(w, nr: int, layout: str, cpad: int = 0, depth: int = 4):
    """TE: int8 weights (float32 ones: rounded to bfloat16 bits) -> [N/NR, K/depth, NR, depth],
    the layout the dot-product instructions read (NR output channels x `depth` consecutive reduction
    steps). OHWI (conv): K runs over (ky, kx, c) with C zero-padded to
    `cpad`; KN (matmul): K zero-padded to a multiple of `depth`."""
    zero = tirx.const(0, w.dtype)
    if layout == "OHWI":
        o, kh, kw, c = static_ints(w.shape)
        n, k_total = o, kh * kw * cpad

        def at(col, k):
            ci = k % cpad
            return tirx.if_then_else(tirx.all(col < n, ci < c), w[col, k // (kw * cpad), (k // cpad) % kw, ci], zero)
    else:
        k_real, n = static_ints(w.shape)
        k_total = padded(k_real, depth)

        def at(col, k):
            return tirx.if_then_else(tirx.all(col < n, k < k_real), w[k, col], zero)
    return te.compute((padded(n, nr) // nr, k_total // depth, nr, depth),
                      lambda no, ko, ni, ki: _encode(at(no * nr + ni, ko * depth + ki), w.dtype), name="ember_pack")


def weight_sums(w, axis: int):
    """TE: int32 sums of 8-bit weights over every axis but `axis` (the output channel),
    taken before packing (the packing's zero padding adds nothing)."""
    shape = static_ints(w.shape)
    red = [te.reduce_axis((0, d), name=f"r{i}") for i, d in enumerate(shape) if i != axis]

    def total(j):
        idx, it = [], iter(red)
        for i in range(len(shape)):
            idx.append(j if i == axis else next(it))
        return te.sum(w[tuple(idx)].astype("int32"), axis=red)
    return te.compute((shape[axis],), total, name="ember_wsum")


def _qstage(x, padding, cpad: int, flip: bool):
    """TE: the input as the kernel reads it: zero-padded spatially (NHWC),
    channels padded to `cpad` (a multiple of the instruction's depth), 8-bit
    values with their sign flipped (x ^ 0x80: int8 <-> uint8 plus or minus
    128) when the instruction wants the other signedness, float32 ones
    rounded to bfloat16 bits. Nothing to do: the input itself."""
    b, h, w, c = list(x.shape)
    pt, pl, pb, pr = padding if len(padding) == 4 else (0, 0, 0, 0)
    if not any((pt, pl, pb, pr)) and cpad == c and not flip and x.dtype != "float32":
        return x

    def value(bi, y, xx, ci):
        inside = tirx.all(y >= pt, y < h + pt, xx >= pl, xx < w + pl, ci < c)
        v = tirx.if_then_else(inside, x[bi, y - pt, xx - pl, ci], tirx.const(0, x.dtype))
        return _encode(_flipped(v, x.dtype, flip), x.dtype)
    return te.compute((b, h + pt + pb, w + pl + pr, cpad), value, name=PAD)


def _qout(acc, wsum, flip_sign: int, shape):
    """TE: the int32 result, of `shape`: flipped inputs add +-128 * sum(w) to every
    output, taken off here; padded columns and rows cropped (`_crop`)."""
    if flip_sign:
        return te.compute(tuple(shape), lambda *i: acc[i] - wsum[i[-1]] * flip_sign, name=QFIX)
    return _crop(acc, shape)


def _qattrs(mr: int, nr: int, dot: str, lanes: int, step: int) -> dict:
    return {"ember_mr": mr, "ember_nr": nr, "ember_dot": dot, "ember_lanes": lanes, "ember_step": step}


def qconv2d_nhwc(x, wp, wsum, kernel, strides, padding, dilation, mr: int, n: int, flip: bool, dot: str = "",
                 lanes: int = 16, pad_rows: bool = True):
    """TE: 8-bit NHWC conv2d (groups=1) into int32 (float32 rounded to bfloat16: into
    float32), as a direct GEMM over the staged input (see `conv2d_nhwc`), its reduction split into groups of
    the packed weights' depth (4 or 8 channels) for the dot-product
    instruction `dot` (a TensorIntrin name; empty: plain int32 loops) of
    `lanes` int32 lanes. The batch and spatial dims may be symbolic (a width: see `run_time_rows`)."""
    c = int(x.shape[3])
    kh, kw = kernel
    (sh, sw), (dh, dw) = strides, dilation
    nr, depth = static_ints(wp.shape)[2:]
    cpad = padded(c, depth)
    xp = _qstage(x, padding, cpad, flip)
    b, h, w = (int(d) if isinstance(d, tirx.IntImm) else d for d in list(x.shape)[:3])
    oh, ow = conv_out_hw(h, w, kernel, strides, padding, dilation)
    owp, col = run_time_rows(ow, mr, pad_rows)
    ry = te.reduce_axis((0, kh), name="ky")
    rx = te.reduce_axis((0, kw), name="kx")
    rco = te.reduce_axis((0, cpad // depth), name="kco")
    rci = te.reduce_axis((0, depth), name="kci")
    acc = te.compute(
        (counted(b), counted(oh), owp, static_ints(wp.shape)[0] * nr),
        lambda bi, y, xx, j: te.sum(
            widen(xp[bi, y * sh + ry * dh, col(xx) * sw + rx * dw, rco * depth + rci])
            * widen(wp[j // nr, (ry * kw + rx) * (cpad // depth) + rco, j % nr, rci]),
            axis=[ry, rx, rco, rci]),
        name=QGEMM, attrs=_qattrs(mr, nr, dot, lanes, sw))
    return _qout(acc, wsum, _flip_sign(x.dtype, flip), (b, oh, ow, n))


def _flip_sign(dtype: str, flip: bool) -> int:
    """What flipping adds per unit of weight: +128 for int8 -> uint8, -128 the other way."""
    return 0 if not flip else (128 if dtype == "int8" else -128)


def _flipped(v, dtype: str, flip: bool):
    """An 8-bit value in the other signedness (x ^ 0x80), or as it is."""
    if not flip:
        return v
    return (v.astype("int32") + _flip_sign(dtype, flip)).astype("uint8" if dtype == "int8" else "int8")


def qmatmul_packed(a, wp, wsum, mr: int, n: int, flip: bool, dot: str = "", lanes: int = 16):
    """TE: 8-bit A [..., M, K] x packed int8 B -> int32 [..., M, N] (float32 rounded to bfloat16:
    into float32). A 2-D A may have a
    run-time row count: it is read padded with zero rows to a multiple of the row tile
    (a tensorized step takes no predicate) and the result cropped back."""
    a_shape = list(a.shape)
    _, ko_total, nr, depth = static_ints(wp.shape)
    k_real = int(a_shape[-1])
    delta = _flip_sign(a.dtype, flip)
    rows = a_shape[0] if len(a_shape) == 2 and not isinstance(a_shape[0], (int, tirx.IntImm)) else None
    if k_real % depth or flip or rows is not None or a.dtype == "float32":
        padded_rows = tirx.floordiv(rows + (mr - 1), mr) * mr if rows is not None else None

        def value(*i):
            inside = i[-1] < k_real if rows is None else tirx.all(i[0] < rows, i[-1] < k_real)
            at = (*i[:-1], tirx.min(i[-1], k_real - 1)) if rows is None else (
                tirx.min(i[0], rows - 1), tirx.min(i[-1], k_real - 1))
            v = tirx.if_then_else(inside, a[at], tirx.const(0, a.dtype))
            return _encode(_flipped(v, a.dtype, flip), a.dtype)
        a = te.compute((*(a_shape[:-1] if rows is None else [padded_rows]), ko_total * depth), value, name=PAD)
    ko = te.reduce_axis((0, ko_total), name="ko")
    ki = te.reduce_axis((0, depth), name="ki")
    acc = te.compute(
        (*list(a.shape)[:-1], static_ints(wp.shape)[0] * nr),
        lambda *i: te.sum(widen(a[(*i[:-1], ko * depth + ki)]) * widen(wp[i[-1] // nr, ko, i[-1] % nr, ki]),
                          axis=[ko, ki]),
        name=QGEMM, attrs=_qattrs(mr, nr, dot, lanes, 1))
    if rows is not None:  # crop the padded rows (and columns), correcting a flip on the way
        return te.compute((rows, n), lambda i, j: acc[i, j] - (wsum[j] * delta if delta else 0), name=QFIX)
    return _qout(acc, wsum, delta, (*list(acc.shape)[:-1], n))
