"""What every target kind's legalization shares: the Relax op names, TVM's own
legalization of an op, the NaN-keeping and shift overrides ONNX's semantics
need, and the integer-offset folding int8 layers' epilogues profit from."""

from __future__ import annotations

from typing import Any

from ember.compiler.backend.tvm.relax_util import static_shape

CONV2D = "relax.nn.conv2d"
MATMUL = "relax.matmul"
RELU = "relax.nn.relu"
MAXIMUM, MINIMUM = "relax.maximum", "relax.minimum"
GELU = "relax.nn.gelu"
ROUND = "relax.round"
SOFTMAX = "relax.nn.softmax"
LAYER_NORM = "relax.nn.layer_norm"
RESHAPE = "relax.reshape"
SUM, MEAN = "relax.sum", "relax.mean"
LEFT_SHIFT, RIGHT_SHIFT = "relax.left_shift", "relax.right_shift"
INT8 = ("int8", "uint8")


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


def _int8_operands(x, w, out_dtype) -> bool:
    return str(x.ty.dtype) in INT8 and str(w.ty.dtype) == "int8" and str(out_dtype) == "int32"


def nan_safe_overrides() -> dict[str, Any]:
    """Relu, Maximum and Minimum keep NaN (TVM's drop it); shifts by out-of-range amounts give
    what ONNX specifies (LLVM leaves them undefined). Every target kind uses these."""
    return {RELU: _relu, MAXIMUM: _keep_nan(MAXIMUM), MINIMUM: _keep_nan(MINIMUM),
            LEFT_SHIFT: _shift(LEFT_SHIFT), RIGHT_SHIFT: _shift(RIGHT_SHIFT), RESHAPE: _grouped_reshape}


def reshape_groups(src: list, dst: list, same=lambda a, b: a is b, multiply=None) -> list | None:
    """The dims of a reshape from `src` to `dst` as groups ((s0, s1), (d0, d1)): src[s0:s1]
    and dst[d0:d1] hold the same elements, as one symbolic dim on both sides, static dims
    with equal products, or (given `multiply`) one symbolic dim that is the product of
    dims on the other side (rows of a GEMM back to batch x sequence); None where the dims
    do not group so."""

    def product_run(total, dims, k):  # the end of dims[k:...] whose product is `total`
        p = None
        for end in range(k, len(dims)):
            p = dims[end] if p is None else multiply(p, dims[end])
            if end > k and same(total, p):
                return end + 1
        return None

    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and not isinstance(src[i], int) and same(src[i], dst[j]):
            groups.append(((i, i + 1), (j, j + 1)))
            i, j = i + 1, j + 1
            continue
        if multiply is not None and i < len(src) and j < len(dst):
            if not isinstance(src[i], int) and (end := product_run(src[i], dst, j)):
                groups.append(((i, i + 1), (j, end)))
                i, j = i + 1, end
                continue
            if not isinstance(dst[j], int) and (end := product_run(dst[j], src, i)):
                groups.append(((i, end), (j, j + 1)))
                i, j = end, j + 1
                continue
        s0, d0, a, b = i, j, 1, 1
        while True:  # static dims from the side whose product is behind, until the products meet
            if i < len(src) and isinstance(src[i], int) and (a < b or (a == b and i == s0)):
                a, i = a * src[i], i + 1
            elif j < len(dst) and isinstance(dst[j], int) and (b < a or (a == b and j == d0)):
                b, j = b * dst[j], j + 1
            else:
                break
            if a == b:
                break
        if a != b or (i == s0 and j == d0):
            return None
        groups.append(((s0, i), (d0, j)))
    return groups


def _grouped_reshape(bb, call):
    """Reshape whose dims regroup (static dims split or merged, symbolic ones kept in
    place or split into the dims they are the product of, as a detector's [n, 27, h, w]
    -> [n, 3, 9, h, w] or a GEMM's rows [n * t, c] -> [n, t, c]) as direct index maps:
    RewriteDataflowReshape then sees a view (TVM's map kept a `% (n * t)` it could not).
    TVM's flattens every index and unravels it again: over symbolic dims that is
    arithmetic whose simplification took LLVM codegen minutes per kernel."""
    import tvm_ffi
    from tvm import te, tirx
    from tvm.sym import Analyzer

    x = call.args[0]
    if x.ty.shape is None or call.ty.shape is None:
        return _default(RESHAPE)(bb, call)
    as_int = lambda d: int(d.value) if isinstance(d, tirx.IntImm) else d  # noqa: E731
    src, dst = [as_int(d) for d in x.ty.shape.values], [as_int(d) for d in call.ty.shape.values]
    analyzer = Analyzer()
    same = lambda a, b: tvm_ffi.structural_equal(a, b) or bool(analyzer.can_prove_equal(a, b))  # noqa: E731
    groups = (None if all(isinstance(d, int) for d in src + dst)
              else reshape_groups(src, dst, same, multiply=lambda a, b: a * b))
    if groups is None:
        return _default(RESHAPE)(bb, call)

    def index(out, sizes):  # `sizes`: the input's dims as its placeholder has them (call_te's own variables)
        idx = []
        for (s0, s1), (d0, d1) in groups:
            flat = 0
            for k in range(d0, d1):
                flat = out[k] if k == d0 else flat * dst[k] + out[k]
            part = []
            for k in reversed(range(s0, s1)):
                part.append(flat if k == s0 else flat % sizes[k])
                flat = flat // sizes[k] if k > s0 else flat
            idx.extend(reversed(part))
        return idx

    return bb.call_te(lambda t: te.compute(call.ty.shape.values, lambda *out: t(*index(out, t.shape)), name="T_reshape"),
                      x, primfunc_name_hint="reshape")


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
                new = relax.dpl.rewrite_call(pattern, rewrite, func)
                # rewrite_call drops the source of a match_cast whose result is an output (a
                # streaming model's cache slice): the function it returns then names an
                # undefined variable, and the build fails; such a function is kept as it was
                mod[gv] = new if relax.analysis.check_well_formed(new) else func
        return mod

    return _pass
