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
    ref: list = [None] * rank  # per right-aligned position: the first dim that is not statically 1
    for x in tensors:
        for k, d in enumerate(reversed(list(x.ty.shape.values))):
            if ref[k] is None and not (isinstance(d, tirx.IntImm) and d.value == 1):
                ref[k] = d
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
