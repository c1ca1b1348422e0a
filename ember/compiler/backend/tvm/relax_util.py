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
