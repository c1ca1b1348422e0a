"""The Relax -> TIR pipeline Ember compiles with, per target kind.

It is TVM's own default pipeline (library dispatch, legalization, fusion,
dataflow lowering, memory planning) with Ember's pieces put in:

- CPU: convolutions are converted to NHWC (channels innermost: the vector
  dimension of Ember's kernels), conv2d / depthwise conv2d / matmul are
  legalized into Ember's GEMM kernels (`kernels.py`), and every PrimFunc
  that no tuning record covers gets Ember's default schedule
  (`schedule.py`);
- CUDA: 8-bit conv2d / matmul are legalized into dp4a kernels (`dp4a.py`),
  and TVM's dlight GPU rules schedule what no tuning record covers;
- all targets: Relu and Clip keep NaN, as ONNX specifies (TVM's lower to
  max/min, which drop it), and BitShift by out-of-range amounts gives what
  ONNX specifies (LLVM leaves it undefined).

`database` (a MetaSchedule database) applies tuned schedules first.
"""

from __future__ import annotations

from typing import Any

from ember.compiler.backend.tvm import kernels, winograd
from ember.compiler.backend.tvm.relax_util import static_shape

CONV2D = "relax.nn.conv2d"
MATMUL = "relax.matmul"
RELU = "relax.nn.relu"
MAXIMUM, MINIMUM = "relax.maximum", "relax.minimum"
GELU = "relax.nn.gelu"
ROUND = "relax.round"
SOFTMAX = "relax.nn.softmax"
LAYER_NORM = "relax.nn.layer_norm"
LEFT_SHIFT, RIGHT_SHIFT = "relax.left_shift", "relax.right_shift"



def _default_dtype(dtype) -> bool:
    return dtype is None or str(dtype) in ("", "void", "float32")


def _default(op: str):
    import tvm

    return tvm.ir.Op.get(op).get_attr("FLegalize")


def _relu(bb, call):
    from tvm import te, tirx

    def nan_relu(x):
        return te.compute(x.shape, lambda *i: tirx.Select(x(*i) < tirx.const(0, x.dtype), tirx.const(0, x.dtype),
                                                          x(*i)), name="relu")

    return bb.call_te(nan_relu, call.args[0], primfunc_name_hint="relu")


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
    shape = static_shape(x)
    if shape is None or str(x.ty.dtype) != "float32" or call.attrs.axis not in (-1, len(shape) - 1) or not shape:
        return _default(SOFTMAX)(bb, call)
    return bb.call_te(kernels.softmax_last_axis, x, primfunc_name_hint="ember_softmax")


def _layer_norm(bb, call):
    """float32 layer norm over the last axis: Ember's row kernel."""
    x, gamma, beta = call.args
    a = call.attrs
    shape = static_shape(x)
    axes = [int(v) for v in a.axes]
    if (shape is None or not shape or str(x.ty.dtype) != "float32" or axes not in ([-1], [len(shape) - 1])
            or static_shape(gamma) != (shape[-1],) or static_shape(beta) != (shape[-1],)):
        return _default(LAYER_NORM)(bb, call)
    return bb.call_te(kernels.layer_norm_last_axis, x, gamma, beta, float(a.epsilon), bool(a.center),
                      bool(a.scale), primfunc_name_hint="ember_layernorm")


def _broadcast(call, fn, name: str):
    """A TE legalization of a broadcasting binary op: fn(a_elem, b_elem)."""
    from tvm import te

    out_shape = static_shape(call)

    def compute(a, b):
        def at(t, idx):
            rank = len(t.shape)
            sub = idx[len(idx) - rank:] if rank else ()
            return t(*[0 if int(d) == 1 else i for d, i in zip(t.shape, sub)])
        return te.compute(out_shape, lambda *i: fn(at(a, i), at(b, i)), name=name)

    return compute


def _shift(op: str):
    """BitShift as ONNX defines it for any amount: left shifts by the width or
    more (or by a negative amount, read as unsigned) give 0, right shifts of
    signed values fill with the sign bit. LLVM leaves such shifts undefined:
    scalar and vector x86 instructions give different answers."""

    def legalize(bb, call):
        from tvm import tirx

        a, b = call.args
        dtype = str(a.ty.dtype)
        if static_shape(call) is None or not dtype.startswith(("int", "uint")):
            return _default(op)(bb, call)
        width = int(dtype.lstrip("uint") or 0)
        zero, top = tirx.const(0, dtype), tirx.const(width - 1, dtype)
        signed = dtype.startswith("int")

        def f(x, s):
            out_of_range = tirx.Or(s < zero, s > top) if signed else s > top
            if op == LEFT_SHIFT:
                return tirx.Select(out_of_range, zero, x << s)
            return x >> tirx.Select(out_of_range, top, s) if signed else tirx.Select(out_of_range, zero, x >> s)

        return bb.call_te(_broadcast(call, f, op[6:]), a, b, primfunc_name_hint=op[6:])

    return legalize


def _keep_nan(op: str):
    """maximum/minimum against a scalar (Clip's bounds) that keep a NaN input,
    as ONNX specifies (TVM's follow LLVM's maxnum/minnum and drop it). Other
    maximum/minimum calls keep TVM's lowering: ONNX Max/Min nodes get a NaN
    guard in `guards.py`."""

    def legalize(bb, call):
        from tvm import te, tirx

        a, b = call.args
        if not str(a.ty.dtype).startswith("float") or static_shape(b) != ():
            return _default(op)(bb, call)
        def pick(u, v):  # a comparison with NaN is false: u passes through
            return tirx.Select(u < v, v, u) if op == MAXIMUM else tirx.Select(u > v, v, u)

        def f(x, y):
            return te.compute(x.shape, lambda *i: pick(x(*i), y()), name=op[6:])

        return bb.call_te(f, a, b, primfunc_name_hint=op[6:])

    return legalize


INT8 = ("int8", "uint8")


def _int8_operands(x, w, out_dtype) -> bool:
    return str(x.ty.dtype) in INT8 and str(w.ty.dtype) == "int8" and str(out_dtype) == "int32"


def _as_nhwc(bb, x, w, nchw: bool):
    """Layout conversion gave up on this graph (NCHW): transpose around the NHWC kernel."""
    from tvm import topi

    if nchw:
        x = bb.emit_te(topi.transpose, x, [0, 2, 3, 1], primfunc_name_hint="to_nhwc")
        w = bb.emit_te(topi.transpose, w, [0, 2, 3, 1], primfunc_name_hint="to_ohwi")
    return x, w, static_shape(x), static_shape(w)


def _conv_params(a, xs, kernel):
    """strides, padding, dilation of a conv2d call, and its output (height, width)
    (NHWC input shape `xs`)."""
    strides = tuple(int(s) for s in a.strides)
    padding = tuple(int(p) for p in a.padding)
    dilation = tuple(int(d) for d in a.dilation)
    return strides, padding, dilation, kernels.conv_out_hw(xs[1], xs[2], kernel, strides, padding, dilation)


def _qtiles(dot, rows: int, n: int, vector_lanes: int):
    """(int32 lanes, register tile, reduction depth) of an integer GEMM whose row
    runs are `rows` long, on `dot` (None: plain int32 loops on the vector width)."""
    if dot is not None and dot.rows == 2:
        return dot.lanes, kernels.pair_tiles(rows, n), dot.depth
    lanes = dot.lanes if dot else vector_lanes
    return lanes, kernels.gemm_tiles(rows, n, lanes), dot.depth if dot else 4


def _qconv2d(bb, call, x, w, nchw: bool, dots, vector_lanes: int):
    """8-bit conv2d (groups=1) into int32 with Ember's integer kernel, on the
    first of the target's dot products `dots` that fits the layer (int32
    lanes: the dot product's, or the vector width's without one)."""
    from tvm import topi

    from ember.compiler.backend.tvm.intrinsics import pick

    x, w, xs, ws = _as_nhwc(bb, x, w, nchw)
    o, kh, kw, c = ws
    strides, padding, dilation, (_, ow) = _conv_params(call.attrs, xs, (kh, kw))
    dot = pick(dots, ow, strides[1])
    lanes, tiles, depth = _qtiles(dot, ow, o, vector_lanes)
    flip = bool(dot) and str(x.ty.dtype) != dot.a_dtype
    wp = bb.emit_te(kernels.qpack_weights, w, tiles.nr, "OHWI", kernels.padded(c, depth), depth,
                    primfunc_name_hint="ember_pack")
    wsum = bb.emit_te(kernels.weight_sums, wp, o, primfunc_name_hint="ember_wsum") if flip else None
    out = bb.call_te(kernels.qconv2d_nhwc, x, wp, wsum, (kh, kw), strides, padding, dilation, tiles.mr, o, flip,
                     dot.name if dot else "", lanes, primfunc_name_hint="ember_qconv2d")
    if nchw:
        return bb.call_te(topi.transpose, bb.emit(out), [0, 3, 1, 2], primfunc_name_hint="to_nchw")
    return out


def _conv2d(lanes: int, dots=()):
    def legalize(bb, call):
        from tvm import topi

        a = call.attrs
        x, w = call.args
        xs, ws = static_shape(x), static_shape(w)
        nchw = a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
        nhwc = a.data_layout == "NHWC" and a.kernel_layout == "OHWI" and a.out_layout == "NHWC"
        if (nchw or nhwc) and xs is not None and ws is not None and len(xs) == 4 and _int8_operands(x, w, a.out_dtype):
            if a.groups == 1:
                return _qconv2d(bb, call, x, w, nchw, dots, lanes)
            c = xs[1] if nchw else xs[3]
            if nhwc and a.groups == c == ws[0] and ws[3] == 1:  # depthwise: int32 lanes, no dot product
                wt = bb.emit_te(kernels.depthwise_weights, w, primfunc_name_hint="ember_pack")
                return bb.call_te(kernels.depthwise_nhwc, x, wt, tuple(int(s) for s in a.strides),
                                  tuple(int(p) for p in a.padding), tuple(int(d) for d in a.dilation), "int32",
                                  primfunc_name_hint="ember_qdepthwise")
        usable = ((nchw or nhwc) and xs is not None and ws is not None and len(xs) == 4
                  and x.ty.dtype == "float32" and w.ty.dtype == "float32" and _default_dtype(a.out_dtype))
        if not usable:
            return _default(CONV2D)(bb, call)
        c, ci = (xs[1], ws[1]) if nchw else (xs[3], ws[3])
        dense, depthwise = a.groups == 1, a.groups == c == ws[0] and ci == 1
        if not (dense or depthwise):
            return _default(CONV2D)(bb, call)
        x, w, xs, ws = _as_nhwc(bb, x, w, nchw)
        o, kh, kw, _ = ws
        strides, padding, dilation, (oh, ow) = _conv_params(a, xs, (kh, kw))
        if dense and winograd.usable((kh, kw), strides, dilation, (oh, ow), xs[3]):
            tiles = kernels.gemm_tiles(xs[0] * winograd.tiles(oh) * winograd.tiles(ow), o, lanes)
            u = bb.emit_te(winograd.transform_weights, w, tiles.nr, primfunc_name_hint="ember_pack")
            out = bb.call_te(winograd.conv2d_nhwc, x, u, padding, tiles.mr, o, primfunc_name_hint="ember_winograd")
        elif dense:
            tiles = kernels.gemm_tiles(ow, o, lanes)
            wp = bb.emit_te(kernels.pack_weights, w, tiles.nr, "OHWI", primfunc_name_hint="ember_pack")
            out = bb.call_te(kernels.conv2d_nhwc, x, wp, (kh, kw), strides, padding, dilation, tiles.mr, o,
                             primfunc_name_hint="ember_conv2d")
        else:
            wt = bb.emit_te(kernels.depthwise_weights, w, primfunc_name_hint="ember_pack")
            out = bb.call_te(kernels.depthwise_nhwc, x, wt, strides, padding, dilation,
                             primfunc_name_hint="ember_depthwise")
        if nchw:
            return bb.call_te(topi.transpose, bb.emit(out), [0, 3, 1, 2], primfunc_name_hint="to_nchw")
        return out

    return legalize


def _matmul(lanes: int, dots=()):
    def legalize(bb, call):
        from ember.compiler.backend.tvm.intrinsics import pick

        a, b = call.args
        as_, bs = static_shape(a), static_shape(b)
        if (as_ is not None and bs is not None and len(as_) >= 2 and len(bs) == 2
                and _int8_operands(a, b, call.attrs.out_dtype)):
            dot = pick(dots, as_[-2])
            q_lanes, tiles, depth = _qtiles(dot, as_[-2], bs[1], lanes)
            flip = bool(dot) and str(a.ty.dtype) != dot.a_dtype
            wp = bb.emit_te(kernels.qpack_weights, b, tiles.nr, "KN", 0, depth, primfunc_name_hint="ember_pack")
            wsum = bb.emit_te(kernels.weight_sums, wp, bs[1], primfunc_name_hint="ember_wsum") if flip else None
            return bb.call_te(kernels.qmatmul_packed, a, wp, wsum, tiles.mr, bs[1], flip, dot.name if dot else "",
                              q_lanes, primfunc_name_hint="ember_qmatmul")
        usable = (as_ is not None and bs is not None and len(as_) >= 2 and len(bs) >= 2
                  and a.ty.dtype == "float32" and b.ty.dtype == "float32"
                  and _default_dtype(call.attrs.out_dtype))
        if usable and len(bs) == 2:  # constant weights, typically: packed once at build time
            tiles = kernels.gemm_tiles(as_[-2], bs[1], lanes)
            wp = bb.emit_te(kernels.pack_weights, b, tiles.nr, "KN", primfunc_name_hint="ember_pack")
            return bb.call_te(kernels.matmul_packed, a, wp, tiles.mr, bs[1], primfunc_name_hint="ember_matmul")
        if usable and as_[:-2] == bs[:-2]:
            tiles = kernels.gemm_tiles(as_[-2], bs[-1], lanes)
            if bs[-1] % tiles.nr == 0:
                return bb.call_te(kernels.batch_matmul, a, b, tiles.mr, tiles.nr,
                                  primfunc_name_hint="ember_batch_matmul")
        return _default(MATMUL)(bb, call)

    return legalize


def _dp4a(op: str, native: bool):
    """An 8-bit conv2d / matmul on CUDA's dp4a kernels (dp4a.py); TVM's legalization otherwise."""
    def legalize(bb, call):
        from ember.compiler.backend.tvm import dp4a

        x, w = call.args
        out = None
        if _int8_operands(x, w, call.attrs.out_dtype):
            out = (dp4a.legalize_conv2d(bb, call, x, w, native) if op == CONV2D
                   else dp4a.legalize_matmul(bb, x, w, native))
        return out if out is not None else _default(op)(bb, call)

    return legalize


def legalize_overrides(target) -> dict[str, Any]:
    nan_safe = {RELU: _relu, MAXIMUM: _keep_nan(MAXIMUM), MINIMUM: _keep_nan(MINIMUM),
                LEFT_SHIFT: _shift(LEFT_SHIFT), RIGHT_SHIFT: _shift(RIGHT_SHIFT)}
    if target.kind == "cuda":
        return {**nan_safe, CONV2D: _dp4a(CONV2D, target.int8_dot), MATMUL: _dp4a(MATMUL, target.int8_dot)}
    from ember.compiler.backend.tvm.intrinsics import available

    lanes, dots = max(4, target.vector_bits // 32), available(target)
    return {**nan_safe, GELU: _gelu, ROUND: _round, SOFTMAX: _softmax, LAYER_NORM: _layer_norm,
            CONV2D: _conv2d(lanes, dots), MATMUL: _matmul(lanes, dots)}


def _gpu_rules() -> list:
    """dlight's GPU rules, each declining (instead of failing the build) a
    function its analysis asserts on: GEMV's does on a block that reads
    several elements of a buffer per iteration, as dp4a's word packing does."""
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.base import ScheduleRule

    class Declining(ScheduleRule):
        def __init__(self, rule):
            self.rule = rule

        def apply(self, func, target, tunable):
            try:
                return self.rule.apply(func, target, tunable)
            except Exception:  # the rule's analysis failed on this function: the next rule gets it
                return None

    rules = (dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction())
    return [*(Declining(r) for r in rules), dl.gpu.Fallback()]


def gpu_default_schedule(func, tvm_target):
    """The schedule (with its trace) dlight's rules give one PrimFunc, or None."""
    from tvm.s_tir.dlight.base.transform import _apply_rules

    with tvm_target:
        space = _apply_rules(func, tvm_target, _gpu_rules(), tunable=False)
    return space[0] if space else None


def _gpu_schedule(tvm_target):
    def schedule(func):
        sch = gpu_default_schedule(func, tvm_target)
        return func if sch is None else sch.mod["main"].with_attr("tirx.is_scheduled", True)

    return schedule


def relax_pipeline(target, database=None, counts: dict[str, int] | None = None):
    """The module pass tvm.compile runs for an ember Target; `counts` receives
    how many kernels a tuning record scheduled ("tuned") and how many got the
    default schedule ("default")."""
    import tvm
    from tvm import relax

    cuda = target.kind == "cuda"
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as gpu

    backend = gpu if cuda else cpu
    tvm_target = target.tvm_target()

    def scheduling() -> list:
        passes = []
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        from ember.compiler.backend.tvm.schedule import default_schedule_pass

        passes.append(default_schedule_pass(counts, _gpu_schedule(tvm_target) if cuda else None))
        return passes

    @tvm.transform.module_pass(opt_level=0, name="EmberPipeline")
    def _pipeline(mod, _ctx):
        with tvm_target:
            seq = tvm.transform.Sequential(
                legalize_passes(target)
                + scheduling()
                + backend.dataflow_lower_passes(tvm_target)
                + backend.finalize_passes(tvm_target))
            if database is not None:
                with database:
                    return seq(mod)
            return seq(mod)

    return _pipeline


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
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == CONV2D:
            found.append(e)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


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
            converted = relax.transform.ConvertLayout({CONV2D: ["NHWC", "OHWI"]})(mod)
        except Exception:
            return mod
        return relax.transform.DeadCodeElimination()(converted)

    return _pass


def _fold_integer_offsets():
    """(x - c1) + c2 -> x + (c2 - c1) for integer constants c1, c2 (also with
    + for -): int32 arithmetic wraps, so the sum is exact. An int8 layer's
    zero-point correction and its int32 bias then cost one add per output
    in the kernel's epilogue, not two."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, c1, c2 = wildcard(), is_const(), is_const()
    inner = is_op("relax.add")(x, c1) | is_op("relax.subtract")(x, c1)
    pattern = is_op("relax.add")(inner, c2) | is_op("relax.subtract")(inner, c2)

    def rewrite(call, m):
        a, b = m[c1].value.numpy(), m[c2].value.numpy()
        if a.dtype != b.dtype or a.dtype.kind not in "iu" or str(call.ty.dtype) != str(a.dtype):
            return call
        inner_sign = 1 if m[inner].op.name == "relax.add" else -1
        outer_sign = 1 if call.op.name == "relax.add" else -1
        with np.errstate(over="ignore"):
            c = (inner_sign * a.astype(np.int64) + outer_sign * b.astype(np.int64)).astype(a.dtype)
        return relax.op.add(m[x], relax.const(c, str(c.dtype)))  # relax.const would narrow int64 to int32

    @tvm.transform.module_pass(opt_level=0, name="EmberFoldIntegerOffsets")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = relax.dpl.rewrite_call(pattern, rewrite, func)
        return mod

    return _pass


def legalize_passes(target) -> list:
    """Everything up to (not including) scheduling: the module MetaSchedule extracts its tasks from."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as gpu

    backend = gpu if target.kind == "cuda" else cpu
    tvm_target = target.tvm_target()
    cpu_only = [] if target.kind == "cuda" else [_to_nhwc(), _round_to_int()]
    return [_fold_integer_offsets()] + cpu_only + backend.library_dispatch_passes(tvm_target) + [
        relax.transform.LegalizeOps(legalize_overrides(target)),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
