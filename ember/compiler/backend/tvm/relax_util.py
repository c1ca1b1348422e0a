"""Small helpers over Relax expressions, shared by the converters, the legalizations and the kernels."""

from __future__ import annotations

def static_shape(expr) -> tuple[int, ...] | None:
    """The static shape of a Relax expression (all dims known), or None."""
    from tvm import tirx

    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tirx.IntImm) for v in values):
        return None
    return tuple(int(v) for v in values)


def same_dims(bb, inputs):
    """Operands of a broadcasting op with symbolic dims TVM cannot relate (neither known to
    be 1; `samples // 20 - 1` beside a slice's length) are match-cast to the first such
    operand's dims: TVM could not compile the op otherwise (callers cast only then). The
    cast is checked when the model runs, so a dim that turns out to be 1 (a broadcast)
    fails there with an error, never silently."""
    from tvm import relax, tirx
    from tvm.sym import Analyzer

    tensors = [x for x in inputs if isinstance(getattr(x, "ty", None), relax.TensorType) and x.ty.shape is not None]
    if len(tensors) < 2:
        return inputs
    analyzer, rank = Analyzer(), max(len(x.ty.shape.values) for x in tensors)

    def not_one(k):  # each tensor's dim at right-aligned position k, but those statically 1
        dims = (list(x.ty.shape.values) for x in tensors)
        return [d[-1 - k] for d in dims if k < len(d) and not (isinstance(d[-1 - k], tirx.IntImm) and d[-1 - k] == 1)]

    ref = [meeting_dim(not_one(k)) for k in range(rank)]
    out = []
    for x in inputs:
        if not any(x is t for t in tensors):
            out.append(x)
            continue
        dims = list(x.ty.shape.values)
        new = [ref[len(dims) - 1 - i] if not isinstance(d, tirx.IntImm) and ref[len(dims) - 1 - i] is not None
               and not analyzer.can_prove_equal(d, ref[len(dims) - 1 - i]) else d for i, d in enumerate(dims)]
        if any(not a.same_as(b) for a, b in zip(new, dims)):
            x = bb.match_cast(x if isinstance(x, relax.Var) else bb.emit(x), relax.TensorType(new, x.ty.dtype))
        out.append(x)
    return type(inputs)(out)  # onnx_input: a list that gives None past its end


def meeting_dim(dims: list):
    """Of dims that must be equal, the one to match-cast the others to (None for none): the
    first that is not a bare variable another one is computed from. Casting `(h - 1) // 2 * 2`
    to `h` would state h := (h - 1) // 2 * 2, on which TVM's CanonicalizeTIRVariables (in
    FuseTIR) recurses without end and crashes the interpreter; the other way round, the cast
    binds no variable and is still checked when the model runs."""
    from tvm import tirx

    def computed_from(var, other) -> bool:
        return not other.same_as(var) and any(v.same_as(var) for v in tirx.analysis.undefined_vars(other, []))

    for d in dims:
        if not (isinstance(d, tirx.Var) and any(computed_from(d, o) for o in dims)):
            return d
    return dims[0] if dims else None


def calls(mod, op_name: str) -> list:
    """Every call of the Relax op `op_name` in the module's Relax functions."""
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == op_name:
            found.append(e)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def rewrite_functions(mod, mutator):
    """`mod` with each Relax function rewritten by `mutator(mod, func)`, a PyExprMutator."""
    from tvm import relax

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            m = mutator(mod, func)
            m.builder_.update_func(gv, m.visit_expr(func))
            mod = m.builder_.get()
    return mod


def read_counts(func) -> dict:
    """Times each variable is read in the Relax function `func`."""
    from tvm import relax

    counts: dict = {}

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] = counts.get(e, 0) + 1

    relax.analysis.post_order_visit(func, visit)
    return counts
