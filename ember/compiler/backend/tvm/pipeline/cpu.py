"""CPU targets (LLVM: x86-64, AArch64): convolutions go NHWC (channels
innermost, the vector dimension of Ember's kernels); conv2d, depthwise conv2d
and matmul are legalized into Ember's GEMM kernels (`kernels.py`, Winograd
for 3x3, int8 on dot-product intrinsics); softmax and layer norm over the
last axis into row kernels; requantizations convert once (llvm.lrint); and
every kernel no tuning record covers gets Ember's default schedule
(`schedule.py`)."""

from __future__ import annotations

import math
from typing import Any

from tvm.relax.backend.cpu_generic import pipeline as tvm_pipeline  # noqa: F401  (the kind's TVM pipeline)

from ember.compiler.backend.tvm import gemm_rows, kernels, permutes, schedule, winograd
from ember.compiler.backend.tvm.intrinsics import available, bf16_available
from ember.compiler.backend.tvm.pipeline.common import (CONV2D, GELU, LAYER_NORM, MATMUL, MEAN, ROUND, SOFTMAX, SUM,
                                                        _default, _default_dtype, _int8_operands,
                                                        nan_safe_overrides)
from ember.compiler.backend.tvm.relax_util import calls, static_shape

# run-time checks are compiled into a kernel (the TVM runtime alone lacks Relax's assert_op)
KERNEL_ASSERTS = True
DEVICE = "cpu"  # TVM's name of the device artifacts run on


def legalize_overrides(target, precision: str = "fp32") -> dict[str, Any]:
    # bf16: the target's bf16 dot products (possibly none: plain loops), None for fp32
    lanes, dots = max(4, target.vector_bits // 32), available(target)
    bf16_dots = bf16_available(target) if precision == "bf16" else None
    return {**nan_safe_overrides(), GELU: _gelu, ROUND: _round, SOFTMAX: _softmax, LAYER_NORM: _layer_norm,
            CONV2D: _conv2d(lanes, dots, bf16_dots), MATMUL: _matmul(lanes, dots, bf16_dots),
            SUM: _wide_sum(SUM), MEAN: _wide_sum(MEAN), **_vector_math()}


def _vector_math() -> dict[str, Any]:
    """exp, sigmoid, tanh and the activations built on them, float32, on `vector_math`'s
    arithmetic: TVM's call libm's scalar expf per element (7-13x slower over a tensor)."""
    from tvm import te

    from ember.compiler.backend.tvm.vector_math import exp_f32, f32, sigmoid_f32, tanh_f32

    def gelu_tanh(v):
        return f32(0.5) * v * (f32(1.0) + tanh_f32(f32((2 / math.pi) ** 0.5) * (v + f32(0.044715) * v * v * v)))

    def elementwise(op: str, f, name: str):
        def legalize(bb, call):
            x = call.args[0]
            if str(x.ty.dtype) != "float32":
                return _default(op)(bb, call)
            return bb.call_te(lambda t: te.compute(t.shape, lambda *i: f(t(*i)), name=name), x,
                              primfunc_name_hint=name)
        return legalize

    table = {"relax.exp": (exp_f32, "exp"), "relax.sigmoid": (sigmoid_f32, "sigmoid"),
             "relax.tanh": (tanh_f32, "tanh"), "relax.nn.silu": (lambda v: v * sigmoid_f32(v), "silu"),
             "relax.nn.gelu_tanh": (gelu_tanh, "gelu_tanh")}
    return {op: elementwise(op, f, name) for op, (f, name) in table.items()}


# float32 sums over at least this many elements (or a run-time count) accumulate in float64
WIDE_SUM_MIN = 1024


def _wide_sum(op: str):
    """float32 sum/mean (ReduceSum, ReduceMean, GlobalAveragePool) over many elements,
    accumulated in float64 and rounded once. TVM adds them one after another in float32,
    whose error grows with the count: an SE block's mean over a 160x160 map was 1.6e-4
    off (relative), where onnxruntime's blocked sums are near exact, and it moved an
    OCR detector's output by 1.7e-3. Reductions are memory-bound: the wider adds cost
    little."""

    def legalize(bb, call):
        from tvm import te, tirx, topi

        x = call.args[0]
        if str(x.ty.dtype) != "float32" or x.ty.shape is None:
            return _default(op)(bb, call)
        dims = list(x.ty.shape.values)
        axes = (list(range(len(dims))) if call.attrs.axis is None
                else [int(a) % len(dims) for a in call.attrs.axis])
        count = 1
        for a in axes:
            count = count * dims[a]
        if isinstance(count, int) or (isinstance(count, tirx.IntImm) and int(count) < WIDE_SUM_MIN):
            return _default(op)(bb, call)
        keep = bool(call.attrs.keepdims)

        def reduce(t):
            total = topi.sum(te.compute(t.shape, lambda *i: t(*i).astype("float64"), name="widen"), axis=axes,
                             keepdims=keep)
            if op == MEAN:
                n = 1
                for a in axes:
                    n = n * t.shape[a]
                n = tirx.Cast("float64", n)
                return te.compute(total.shape, lambda *i: (total(*i) / n).astype("float32"), name="mean")
            return te.compute(total.shape, lambda *i: total(*i).astype("float32"), name="sum")

        return bb.call_te(reduce, x, primfunc_name_hint="ember_" + op.split(".")[-1])

    return legalize


def layout_passes() -> list:
    """Before legalization: NHWC convolutions, single-conversion requantization, bias adds into
    the GEMMs over rows of a run-time count (`gemm_rows`)."""
    return [_to_nhwc(), _round_to_int(), gemm_rows.fold()]


def default_schedule(func, tvm_target):
    """The schedule (with its trace) one untuned PrimFunc gets, or None."""
    return schedule.default_schedule(func)


def schedule_func(tvm_target):
    """PrimFunc -> scheduled PrimFunc, for what no tuning record covers."""
    return schedule.schedule_func


def _gelu(bb, call):
    """GELU with TVM's vectorizable polynomial erf (its default calls libm's
    scalar erff for every element)."""
    from tvm import te, tirx, topi

    x = call.args[0]
    if x.ty.dtype != "float32":
        return _default(GELU)(bb, call)

    def gelu(x):
        half = tirx.const(0.5, x.dtype)
        erf = topi.fast_erf(te.compute(x.shape, lambda *i: x(*i) * tirx.const(0.5 ** 0.5, x.dtype)))
        return te.compute(x.shape, lambda *i: x(*i) * (half + erf(*i) * half), name="gelu")

    return bb.call_te(gelu, x, primfunc_name_hint="gelu")


def _round(bb, call):
    """Round half to even as `tirx.round`: on LLVM targets TVM lowers it to
    llvm.nearbyint, the same instruction as TVM's own legalization
    (`tirx.nearbyint`), but TVM marks only `tirx.round` vectorizable. With
    nearbyint, VectorizeLoop scalarized every loop that rounds: the
    requantization epilogue of each int8 kernel, which LLVM re-vectorized
    along the wrong axis in some kernels (gathers, 2x slower)."""
    from tvm import te

    x = call.args[0]
    if not str(x.ty.dtype).startswith("float"):
        return _default(ROUND)(bb, call)
    return bb.call_te(lambda t: te.compute(t.shape, lambda *i: te.round(t(*i)), name="round"), x,
                      primfunc_name_hint="round")


def _softmax(bb, call):
    """float32 softmax over the last axis: Ember's kernel (a vectorized exp, one pass per row)."""
    x = call.args[0]
    shape = getattr(x.ty, "shape", None)
    rank = len(shape.values) if shape is not None else 0
    if not rank or str(x.ty.dtype) != "float32" or call.attrs.axis not in (-1, rank - 1):
        return _default(SOFTMAX)(bb, call)
    return bb.call_te(kernels.softmax_last_axis, x, primfunc_name_hint="ember_softmax")


def _layer_norm(bb, call):
    """float32 layer norm over the last axis: Ember's row kernel."""
    x, gamma, beta = call.args
    a = call.attrs
    axes = [int(v) for v in a.axes]
    if (not _static_last(x) or str(x.ty.dtype) != "float32" or axes not in ([-1], [len(x.ty.shape.values) - 1])
            or static_shape(gamma) != (int(x.ty.shape.values[-1]),) or static_shape(beta) != static_shape(gamma)):
        return _default(LAYER_NORM)(bb, call)
    return bb.call_te(kernels.layer_norm_last_axis, x, gamma, beta, float(a.epsilon), bool(a.center),
                      bool(a.scale), primfunc_name_hint="ember_layernorm")


def _as_nhwc(bb, x, w, nchw: bool):
    """Layout conversion gave up on this graph (NCHW): transpose around the NHWC kernel."""
    from tvm import topi

    if nchw:
        x = bb.emit_te(topi.transpose, x, [0, 2, 3, 1], primfunc_name_hint="to_nhwc")
        w = bb.emit_te(topi.transpose, w, [0, 2, 3, 1], primfunc_name_hint="to_ohwi")
    return x, w, _dims(x), static_shape(w)


def _conv_params(a, xs, kernel):
    """strides, padding, dilation of a conv2d call, and its output (height, width)
    (NHWC input shape `xs`)."""
    strides = tuple(int(s) for s in a.strides)
    padding = tuple(int(p) for p in a.padding)
    dilation = tuple(int(d) for d in a.dilation)
    return strides, padding, dilation, kernels.conv_out_hw(xs[1], xs[2], kernel, strides, padding, dilation)


def _qtiles(dot, rows: int, n: int, vector_lanes: int, bf16: bool = False):
    """(accumulator lanes, register tile, reduction depth) of a dot-product GEMM whose row
    runs are `rows` long, on `dot` (None: plain int32 loops on the vector width, or
    float32 ones for bfloat16 operands, taken in pairs)."""
    if dot is not None and dot.rows == 2:
        return dot.lanes, kernels.pair_tiles(rows, n), dot.depth
    lanes = dot.lanes if dot else vector_lanes
    return lanes, kernels.gemm_tiles(rows, n, lanes), dot.depth if dot else 2 if bf16 else 4


def _operands(dot, dtype: str) -> tuple[bool, bool]:
    """(bf16, flip) of a dot-product GEMM's activations of `dtype`: float32 ones are rounded to
    bfloat16 by the kernel; 8-bit ones are sign-flipped where `dot` wants the other signedness."""
    bf16 = dtype == "float32"
    return bf16, not bf16 and bool(dot) and dtype != dot.a_dtype


def _qconv2d(bb, call, x, w, nchw: bool, dots, vector_lanes: int):
    """8-bit conv2d (groups=1) into int32 (float32 on bfloat16-rounded operands) with Ember's
    dot-product kernel, on the first of the target's dot products `dots` that fits
    the layer (accumulator lanes: the dot product's, or the vector width's without one)."""
    from tvm import topi

    from ember.compiler.backend.tvm.intrinsics import pick

    x, w, xs, ws = _as_nhwc(bb, x, w, nchw)
    o, kh, kw, c = ws
    strides, padding, dilation, (_, ow) = _conv_params(call.attrs, xs, (kh, kw))
    rows = ow if isinstance(ow, int) else ANY_ROWS  # a symbolic width: padded to the tile
    dot = pick(dots, rows, strides[1])
    bf16, flip = _operands(dot, str(x.ty.dtype))
    lanes, tiles, depth = _qtiles(dot, rows, o, vector_lanes, bf16)
    wp = bb.emit_te(kernels.qpack_weights, w, tiles.nr, "OHWI", kernels.padded(c, depth), depth,
                    primfunc_name_hint="ember_pack")
    wsum = bb.emit_te(kernels.weight_sums, w, 0, primfunc_name_hint="ember_wsum") if flip else None
    out = bb.call_te(kernels.qconv2d_nhwc, x, wp, wsum, (kh, kw), strides, padding, dilation, tiles.mr, o, flip,
                     dot.name if dot else "", lanes, schedule.crop_schedules(ow, tiles.mr),
                     primfunc_name_hint="ember_qconv2d")
    if nchw:
        return bb.call_te(topi.transpose, bb.emit(out), [0, 3, 1, 2], primfunc_name_hint="to_nchw")
    return out


def _conv2d(lanes: int, dots=(), bf16_dots=None):
    def legalize(bb, call):
        from tvm import topi

        a = call.attrs
        x, w = call.args
        dims, ws = _dims(x), static_shape(w)  # batch and spatial dims may be symbolic, channels must not
        nchw = a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
        nhwc = a.data_layout == "NHWC" and a.kernel_layout == "OHWI" and a.out_layout == "NHWC"
        if ((nchw or nhwc) and dims is not None and ws is not None and len(dims) == 4
                and isinstance(dims[1] if nchw else dims[3], int) and _int8_operands(x, w, a.out_dtype)):
            if a.groups == 1:
                return _qconv2d(bb, call, x, w, nchw, dots, lanes)
            c = dims[1] if nchw else dims[3]
            if nhwc and a.groups == c == ws[0] and ws[3] == 1:  # depthwise: int32 lanes, no dot product
                wt = bb.emit_te(kernels.depthwise_weights, w, primfunc_name_hint="ember_pack")
                return bb.call_te(kernels.depthwise_nhwc, x, wt, tuple(int(s) for s in a.strides),
                                  tuple(int(p) for p in a.padding), tuple(int(d) for d in a.dilation), "int32",
                                  primfunc_name_hint="ember_qdepthwise")
        usable = ((nchw or nhwc) and dims is not None and ws is not None and len(dims) == 4
                  and isinstance(dims[1] if nchw else dims[3], int)
                  and x.ty.dtype == "float32" and w.ty.dtype == "float32" and _default_dtype(a.out_dtype))
        if not usable:
            return _default(CONV2D)(bb, call)
        c, ci = (dims[1], ws[1]) if nchw else (dims[3], ws[3])
        dense, depthwise = a.groups == 1, a.groups == c == ws[0] and ci == 1
        grouped = not (dense or depthwise) and c == a.groups * ci and ws[0] % a.groups == 0
        if not (dense or depthwise or grouped):
            return _default(CONV2D)(bb, call)
        if dense and bf16_dots is not None:
            return _qconv2d(bb, call, x, w, nchw, bf16_dots, lanes)
        x, w, xs, ws = _as_nhwc(bb, x, w, nchw)
        o, kh, kw, _ = ws
        strides, padding, dilation, (oh, ow) = _conv_params(a, xs, (kh, kw))
        static = all(isinstance(d, int) for d in xs)
        if dense and static and winograd.usable((kh, kw), strides, dilation, (oh, ow), xs[3]):
            tiles = kernels.gemm_tiles(xs[0] * winograd.tiles(oh) * winograd.tiles(ow), o, lanes)
            u = bb.emit_te(winograd.transform_weights, w, tiles.nr, primfunc_name_hint="ember_pack")
            out = bb.call_te(winograd.conv2d_nhwc, x, u, padding, tiles.mr, o, primfunc_name_hint="ember_winograd")
        elif dense or grouped:
            # grouped: one GEMM group spans as many groups as fill whole vectors (their weights
            # block-diagonal), so its register tiles never cross a group
            span = kernels.group_span(a.groups, o // a.groups, lanes)
            if grouped:
                w = bb.emit_te(kernels.group_weights, w, a.groups, span, primfunc_name_hint="ember_pack")
            # a tile divides the output row where its width is static (the batch or height may not
            # be); a symbolic width is padded to a multiple of a short tile (kernels.run_time_rows)
            rows = ow if isinstance(ow, int) else _run_time_rows(kh * kw * span * ci)
            tiles = kernels.gemm_tiles(rows, o // (a.groups // span), lanes)
            wp = bb.emit_te(kernels.pack_weights, w, tiles.nr, "OHWI", primfunc_name_hint="ember_pack")
            out = bb.call_te(kernels.conv2d_nhwc, x, wp, (kh, kw), strides, padding, dilation, tiles.mr, o,
                             schedule.crop_schedules(ow, tiles.mr), a.groups // span,
                             primfunc_name_hint="ember_conv2d")
        else:
            wt = bb.emit_te(kernels.depthwise_weights, w, primfunc_name_hint="ember_pack")
            out = bb.call_te(kernels.depthwise_nhwc, x, wt, strides, padding, dilation,
                             primfunc_name_hint="ember_depthwise")
        if nchw:
            return bb.call_te(topi.transpose, bb.emit(out), [0, 3, 1, 2], primfunc_name_hint="to_nchw")
        return out

    return legalize


# rows of a run-time count are computed padded to a multiple of the row tile (kernels.run_time_rows):
# a short one wastes little where the count is small (a batch of 1: up to 3 rows in 4)
ANY_ROWS = 4


def _run_time_rows(k: int) -> int:
    """The row tile (the rows a register tile may take) of a float32 GEMM over a run-time row count
    and a reduction of `k`: 8 where the reduction is short (<= 192), as a tile's fixed costs (its
    accumulators' start and write-back) weigh more there, else ANY_ROWS. Measured on AMD Zen 4
    against the static kernel (0.64-0.92x its time for K = 80 and 160 at 20-80 rows, against
    0.85-1.3x with 4 rows; for K >= 256, 4 rows did as well or better)."""
    return 8 if k <= 192 else ANY_ROWS


def _dividing_tile(count, most: int) -> int | None:
    """The largest row tile of at least ANY_ROWS and at most `most` rows that a run-time row count
    provably divides (batch x 50 tokens: 5), or None. Such a tile needs no padded rows: the
    padded form of batch x 50, floordiv(max(r, 0) + 7, 8) * 8, is one TVM cannot show covers the
    rows (`schedule.crop_schedules`), and the GEMM kept a predicated tile whose accumulators live
    in memory (whisper's projections at 2.5x their specialized time)."""
    from tvm import tirx
    from tvm.sym import Analyzer

    prove = Analyzer().can_prove
    return next((mr for mr in range(most, ANY_ROWS - 1, -1) if prove(tirx.floormod(count, mr) == 0)), None)


def _dims(x) -> list | None:
    """`x`'s dims, ints where static and TIR expressions where symbolic; None for an unknown shape."""
    from tvm import tirx

    values = getattr(getattr(x.ty, "shape", None), "values", None)
    if values is None:
        return None
    return [int(v) if isinstance(v, tirx.IntImm) else v for v in values]


def _static_last(x) -> bool:
    """Whether `x` has a known rank of 2 or more and a static last dim (the reduction)."""
    from tvm import tirx

    shape = getattr(x.ty, "shape", None)
    values = list(getattr(shape, "values", None) or [])
    return len(values) >= 2 and isinstance(values[-1], tirx.IntImm)


def _symbolic_batch_matmul(bb, call, lanes: int):
    """A [..., M, K] x B [..., K, N] with symbolic batch dims, M, K or N (attention's scores and
    weights x values): Ember's batched kernel (`_batch_matmul`; a run-time N: tiles of one vector)."""
    import tvm_ffi
    from tvm import tirx

    a, b = call.args
    ash, bsh = (list(getattr(getattr(v.ty, "shape", None), "values", None) or []) for v in (a, b))
    if (len(ash) < 3 or len(ash) != len(bsh) or str(a.ty.dtype) != "float32" or str(b.ty.dtype) != "float32"
            or not _default_dtype(call.attrs.out_dtype)
            or not all(tvm_ffi.structural_equal(x, y) for x, y in zip(ash[:-2], bsh[:-2]))):
        return _default(MATMUL)(bb, call)
    static = isinstance(bsh[-1], tirx.IntImm)
    tiles = kernels.gemm_tiles(_run_time_rows(int(ash[-1])) if isinstance(ash[-1], tirx.IntImm) else ANY_ROWS,
                               int(bsh[-1]) if static else lanes, lanes)
    return _batch_matmul(bb, call, tiles, bsh[-1], schedule.crop_schedules(ash[-2], tiles.mr))


def _batch_matmul(bb, call, tiles, n, pad_rows: bool = True):
    """Ember's batched kernel for A [..., M, K] x B [..., K, N] where the tile width divides N or
    N is a run-time count: B then padded to whole column tiles (a small copy: K x N, fused with a
    transpose before it) and the result cropped. TVM's kernel for a static N the tile width does
    not divide (its crop would cut every tile: scalar stores, 5x TVM's time over 799 columns)."""
    from tvm import tirx

    a, b = call.args
    static = isinstance(n, (int, tirx.IntImm))
    if static and int(n) % tiles.nr:
        return _default(MATMUL)(bb, call)
    if not static:
        b = bb.emit_te(kernels.pad_columns, b, tiles.nr, primfunc_name_hint="ember_pad")
    return bb.call_te(kernels.batch_matmul, a, b, tiles.mr, tiles.nr, pad_rows, None if static else n,
                      primfunc_name_hint="ember_batch_matmul")


def _matmul(lanes: int, dots=(), bf16_dots=None):
    def legalize(bb, call):
        from ember.compiler.backend.tvm.intrinsics import pick

        a, b = call.args
        as_, bs = static_shape(a), static_shape(b)
        if (bf16_dots is not None and bs is not None and len(bs) == 2 and _static_last(a)
                and a.ty.dtype == "float32" and b.ty.dtype == "float32" and _default_dtype(call.attrs.out_dtype)):
            if as_ is not None and len(as_) >= 2:
                return _qmatmul(bb, a, b, pick(bf16_dots, as_[-2]), as_[-2], bs[1], lanes)
            return _over_rows(bb, a, bs[1], lambda rows: _qmatmul(bb, rows, b, pick(bf16_dots, ANY_ROWS), ANY_ROWS,
                                                                  bs[1], lanes))
        if (as_ is not None and bs is not None and len(as_) >= 2 and len(bs) == 2
                and _int8_operands(a, b, call.attrs.out_dtype)):
            return _qmatmul(bb, a, b, pick(dots, as_[-2]), as_[-2], bs[1], lanes)
        if (as_ is None and bs is not None and len(bs) == 2 and _static_last(a)
                and _int8_operands(a, b, call.attrs.out_dtype)):
            # rows of a run-time count (a sequence): one-row instructions, rows padded to the tile
            dot = pick(tuple(d for d in dots if d.rows == 1), ANY_ROWS)
            return _over_rows(bb, a, bs[1], lambda rows: _qmatmul(bb, rows, b, dot, ANY_ROWS, bs[1], lanes))
        usable = (as_ is not None and bs is not None and len(as_) >= 2 and len(bs) >= 2
                  and a.ty.dtype == "float32" and b.ty.dtype == "float32"
                  and _default_dtype(call.attrs.out_dtype))
        if usable and len(bs) == 2:  # constant weights, typically: packed once at build time
            tiles = kernels.gemm_tiles(as_[-2], bs[1], lanes)
            wp = bb.emit_te(kernels.pack_weights, b, tiles.nr, "KN", primfunc_name_hint="ember_pack")
            return bb.call_te(kernels.matmul_packed, a, wp, tiles.mr, bs[1], primfunc_name_hint="ember_matmul")
        if (as_ is None and bs is not None and len(bs) == 2 and _static_last(a) and a.ty.dtype == "float32"
                and b.ty.dtype == "float32" and _default_dtype(call.attrs.out_dtype)):
            # rows of a run-time count (batch x sequence): a short register tile, rows padded to it,
            # or where the count has a static factor (batch x 50 tokens), a tile dividing it
            def gemm(rows):
                count = rows.ty.shape.values[0]
                mr = _dividing_tile(count, _run_time_rows(bs[0]))
                tiles = kernels.gemm_tiles(mr or _run_time_rows(bs[0]), bs[1], lanes)
                wp = bb.emit_te(kernels.pack_weights, b, tiles.nr, "KN", primfunc_name_hint="ember_pack")
                pad = False if mr else schedule.crop_schedules(count, tiles.mr)
                return bb.call_te(kernels.matmul_packed, rows, wp, tiles.mr, bs[1], pad,
                                  primfunc_name_hint="ember_matmul")
            return _over_rows(bb, a, bs[1], gemm)
        if as_ is None or bs is None:
            return _symbolic_batch_matmul(bb, call, lanes)
        if usable and as_[:-2] == bs[:-2]:
            return _batch_matmul(bb, call, kernels.gemm_tiles(as_[-2], bs[-1], lanes), bs[-1])
        return _default(MATMUL)(bb, call)

    return legalize


def _over_rows(bb, a, n: int, gemm):
    """`gemm` over A [..., M, K] with every leading dim folded into the rows (a view):
    the row tiles then run over sequence x batch, not over a dim that may be 1."""
    from tvm import relax

    dims = list(a.ty.shape.values)
    if len(dims) == 2:
        return gemm(a)
    out = bb.emit(gemm(bb.emit(relax.op.reshape(a, relax.ShapeExpr([_product(dims[:-1]), dims[-1]])))))
    return relax.op.reshape(out, relax.ShapeExpr([*dims[:-1], n]))


def _product(dims):
    out = dims[0]
    for d in dims[1:]:
        out = out * d
    return out


def _qmatmul(bb, a, b, dot, rows: int, n: int, lanes: int):
    """8-bit A x constant int8 B [K, N] into int32 (float32 on bfloat16-rounded operands) with Ember's
    dot-product kernel on `dot`."""
    bf16, flip = _operands(dot, str(a.ty.dtype))
    q_lanes, tiles, depth = _qtiles(dot, rows, n, lanes, bf16)
    wp = bb.emit_te(kernels.qpack_weights, b, tiles.nr, "KN", 0, depth, primfunc_name_hint="ember_pack")
    wsum = bb.emit_te(kernels.weight_sums, b, 1, primfunc_name_hint="ember_wsum") if flip else None
    return bb.call_te(kernels.qmatmul_packed, a, wp, wsum, tiles.mr, n, flip, dot.name if dot else "",
                      q_lanes, primfunc_name_hint="ember_qmatmul")


def _round_to_int():
    """astype(round(x) [+ c], int32) for static float32 x (and c a constant of
    whole numbers: a zero point) becomes llvm.lrint(x) [+ int32(c)]: one
    conversion in the current rounding mode (the default: nearest, ties to
    even) instead of a rounding then a truncating conversion (vcvtps2dq, or
    AArch64's fcvtns; every requantization ends so). The results are the
    same, out-of-range values included (both give x86's 0x80000000, or
    AArch64's saturated value). CPU targets only."""
    import numpy as np
    import tvm
    from tvm import relax, te, tirx
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, c = wildcard(), is_const()
    rounded = is_op("relax.round")(x)
    shifted = is_op("relax.add")(rounded, c)
    pattern = is_op("relax.astype")(rounded | shifted)

    def lrint_func(shape):
        shape = [tirx.IntImm("int64", d) for d in shape]  # as Relax's own kernels: FuseTIR matches buffers
        t = te.placeholder(shape, "float32", name="x")
        out = te.compute(shape, lambda *i: tirx.call_llvm_pure_intrin("int32", "llvm.lrint", t(*i)), name="lrint")
        return te.create_prim_func([t, out]).without_attr("global_symbol")

    @tvm.transform.module_pass(opt_level=0, name="EmberRoundToInt")
    def _pass(mod, _ctx):
        bb = relax.BlockBuilder(mod)
        kernels = {}

        def rewrite(call, m):
            shape = static_shape(m[x])
            if str(call.ty.dtype) != "int32" or str(m[x].ty.dtype) != "float32" or shape is None:
                return call
            offset = m[c].value.numpy() if shifted in m else None
            if offset is not None and (offset.dtype != np.float32 or np.any(offset != np.round(offset))
                                       or np.any(np.abs(offset) > 2**24)):
                return call
            if shape not in kernels:
                kernels[shape] = bb.add_func(lrint_func(shape), "lrint")
            out = relax.call_tir(kernels[shape], [m[x]], relax.TensorType(shape, "int32"))
            return out if offset is None else relax.op.add(out, relax.const(offset.astype(np.int32), "int32"))

        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                bb.update_func(gv, relax.dpl.rewrite_call(pattern, rewrite, func))
        return bb.get()

    return _pass


def _has_conv2d(mod) -> bool:
    return bool(calls(mod, CONV2D))


def _to_nhwc():
    """TVM's ConvertLayout to NHWC, or nothing where it gives up (it refuses
    some ops' layouts with an internal error): the convolutions then stay
    NCHW and Ember's kernels transpose around them."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="EmberToNHWC")
    def _pass(mod, _ctx):
        if not _has_conv2d(mod):  # nothing to convert, and ConvertLayout itself can die of SIGFPE
            return mod
        try:
            # a transposed convolution stays NCHW: TOPI legalizes no other layout, and
            # ConvertLayout would otherwise carry NHWC into it from a convolution before
            converted = relax.transform.ConvertLayout({CONV2D: ["NHWC", "OHWI"],
                                                       "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]})(mod)
        except Exception:
            return mod
        converted = relax.transform.DeadCodeElimination()(converted)
        try:
            converted = permutes.fold()(converted)
        except Exception:  # the transposes stay: slower, never wrong
            pass
        # ConvertLayout, like rewrite_call, can drop the source of a match_cast that feeds an
        # output (a streaming model's cache slice): the module then names an undefined variable
        return converted if relax.analysis.check_well_formed(converted) else mod

    return _pass
