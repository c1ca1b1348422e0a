"""A bias added to a GEMM over rows of a run-time count, moved into the GEMM's epilogue.

A MatMul of A [..., M, K] with symbolic leading dims by constant weights [K, N]
runs as one 2-D GEMM over the rows (batch x sequence) with a reshape each side
(`cpu._over_rows`). The bias Add after it then read the reshaped result: FuseOps
does not fuse an add into a GEMM across a reshape, so the bias was one more pass
over the whole output (a recognizer's 6906-class head: as much time as the
reshape copies around it). Before legalization this pass writes the reshapes
itself, with the add on the 2-D side:

    add(matmul(a, W), b)  ->  reshape(add(matmul(reshape(a, [rows, K]), W), b), [..., M, N])

where b is a constant that broadcasts along N only; an activation read only
from it (Relu, Sigmoid, ...) moves to the 2-D side as well. They then fuse into
the GEMM, and the reshapes are views. `fold()` is the module pass.
"""

from __future__ import annotations

from ember.compiler.backend.tvm.permutes import UNARY
from ember.compiler.backend.tvm.relax_util import read_counts, rewrite_functions


def _symbolic_rows(a) -> list | None:
    """A's dims where A has rank 3 or more, a symbolic leading dim and a static last one."""
    from tvm import tirx

    dims = list(getattr(getattr(a.ty, "shape", None), "values", None) or [])
    if len(dims) < 3 or not isinstance(dims[-1], tirx.IntImm):
        return None
    return dims if any(not isinstance(d, tirx.IntImm) for d in dims[:-1]) else None


def _row_bias(c, n: int, rank: int):
    """The constant `c` as a [n] vector where, beside a rank-`rank` [..., n] tensor, it
    broadcasts along the last dim only; None where not."""
    import numpy as np
    import tvm

    if not isinstance(c, tvm.ir.expr.Constant):
        return None
    v = c.value.numpy()
    if not 0 < v.ndim <= rank or v.shape[-1] != n or any(d != 1 for d in v.shape[:-1]):
        return None
    return np.ascontiguousarray(v.reshape(n))


def fold():
    """The module pass."""
    import tvm
    from tvm import relax

    matmul, add = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.add")

    def gemm_by_constant(value):
        """(a, its dims, N) of matmul(a, constant [K, N]) in float32 over symbolic rows, or None."""
        if not (isinstance(value, relax.Call) and value.op.same_as(matmul)):
            return None
        a, w = value.args
        if not isinstance(w, tvm.ir.expr.Constant) or len(w.value.shape) != 2 or str(w.value.dtype) != "float32":
            return None
        dims = _symbolic_rows(a)
        if dims is None or str(a.ty.dtype) != "float32" or str(value.ty.dtype) != "float32":
            return None
        return a, dims, int(w.value.shape[1])

    def pairs(func) -> dict:
        """matmul var -> (its call, a's dims, N, the bias) for each GEMM whose one reader is a bias add
        (one inside the dataflow block: a block's output stays as written)."""
        uses, gemms, out = read_counts(func), {}, {}
        for block in getattr(func.body, "blocks", []):
            for b in block.bindings if isinstance(block, relax.DataflowBlock) else []:
                value = b.value
                found = gemm_by_constant(value) if isinstance(b, relax.VarBinding) else None
                if found is not None and isinstance(b.var, relax.DataflowVar) and uses.get(b.var, 0) == 1:
                    gemms[b.var] = (value, *found[1:])
                elif isinstance(value, relax.Call) and value.op.same_as(add) and isinstance(b.var, relax.DataflowVar):
                    for x, c in (value.args, reversed(value.args)):
                        if x in gemms and (bias := _row_bias(c, gemms[x][2], len(gemms[x][1]))) is not None:
                            out[x] = (*gemms[x], bias)
                            break
        return out

    @relax.expr_functor.mutator
    class Rows(relax.PyExprMutator):
        def __init__(self, mod, func):
            super().__init__(mod)
            self.gemms = pairs(func)
            self.uses = read_counts(func)
            self.rows = {}  # new var -> (its 2-D value, the dims it is reshaped to)

        def visit_var_binding_(self, binding):
            if binding.var in self.gemms:
                return  # emitted with its bias add
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(add):
                x = next((a for a in value.args if a in self.gemms), None)
                if x is not None:
                    self.set_var_remap(binding.var, self._with_bias(*self.gemms[x]))
                    return
            if (isinstance(value, relax.Call) and getattr(value.op, "name", "") in UNARY and len(value.args) == 1
                    and isinstance(binding.var, relax.DataflowVar)  # a block's output stays as written
                    and self.uses.get(value.args[0], 0) == 1
                    and (on_rows := self.rows.get(self.visit_expr(value.args[0]))) is not None):
                z, dims = on_rows  # an activation: on the rows too
                u = self.builder_.emit(relax.Call(value.op, [z], value.attrs, value.ty_args))
                self.set_var_remap(binding.var, self._reshaped(u, dims))
                return
            super().visit_var_binding_(binding)

        def _reshaped(self, z, dims):
            out = self.builder_.emit(relax.op.reshape(z, relax.ShapeExpr(dims)))
            self.rows[out] = (z, dims)
            return out

        def _with_bias(self, gemm, dims, n, bias):
            rows = dims[0]
            for d in dims[1:-1]:
                rows = rows * d
            a = self.builder_.emit(relax.op.reshape(self.visit_expr(gemm.args[0]), relax.ShapeExpr([rows, dims[-1]])))
            y = self.builder_.emit(relax.Call(gemm.op, [a, gemm.args[1]], gemm.attrs, gemm.ty_args))
            z = self.builder_.emit(relax.op.add(y, relax.const(bias, "float32")))
            return self._reshaped(z, [*dims[:-1], n])

    @tvm.transform.module_pass(opt_level=0, name="EmberGemmRows")
    def _pass(mod, _ctx):
        return rewrite_functions(mod, Rows)

    return _pass
