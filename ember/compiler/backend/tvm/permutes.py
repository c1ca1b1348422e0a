"""Transposes that layout conversion leaves behind, removed.

ConvertLayout makes convolutions NHWC and carries the layout through the ops
it knows; where it cannot see through an op it puts the tensor back in NCHW,
a copy of the whole map each way around it:

- a `match_cast`, which Ember's lowering writes where two symbolic dims must
  meet (an FPN's upsampled map, ((h - 1) // 32 + 1) * 2 rows, added to the skip
  connection's (h - 1) // 16 + 1): x -> permute(P) -> match_cast -> permute(P^-1).
  x itself is cast instead (the same dims, permuted back): the same check;
- a kernel that states its own layout with permutes (the NHWC overlap-add of a
  transposed convolution): its permute(P) meets ConvertLayout's permute(P^-1),
  with the elementwise ops after it (a bias, an activation) left NCHW between two
  permutes. A permute moves below elementwise ops (unary, or with a constant
  operand, which is permuted back) and cancels against its inverse.

Specialized to one size the casts did not arise; over symbolic dims they cost a
DB detector's head two full copies of each map. `fold()` is the module pass.
"""

from __future__ import annotations

from ember.compiler.backend.tvm.relax_util import read_counts, rewrite_functions

# elementwise ops a permute moves below: unary, and binary with a constant operand
UNARY = frozenset({"relax.nn.relu", "relax.sigmoid", "relax.tanh", "relax.exp", "relax.negative", "relax.nn.silu",
                   "relax.nn.gelu", "relax.clip", "relax.abs", "relax.sqrt"})
BINARY = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum"})


def _inverse(p: list[int]) -> list[int]:
    out = [0] * len(p)
    for i, a in enumerate(p):
        out[a] = i
    return out


def _identity(p: list[int]) -> bool:
    return p == list(range(len(p)))


def fold():
    """The module pass."""
    import numpy as np
    import tvm
    from tvm import relax

    permute = tvm.ir.Op.get("relax.permute_dims")

    def axes(value) -> list[int] | None:
        if isinstance(value, relax.Call) and value.op.same_as(permute) and value.attrs.axes is not None:
            return [int(a) for a in value.attrs.axes]
        return None

    def foldable_casts(func, uses) -> dict:
        """The casts of a permute every reader of which permutes back: var -> value."""
        permutes, casts, readers = {}, {}, {}
        for block in getattr(func.body, "blocks", []):
            for b in block.bindings if isinstance(block, relax.DataflowBlock) else []:
                if isinstance(b, relax.MatchCast):
                    casts[b.var] = b.value
                elif axes(b.value) is not None:
                    permutes[b.var] = (b.value.args[0], axes(b.value))
        for arg, q in permutes.values():
            first = permutes.get(casts.get(arg))
            if first is not None and _identity([first[1][i] for i in q]):
                readers[arg] = readers.get(arg, 0) + 1
        return {c: casts[c] for c, n in readers.items() if uses.get(c, 0) == n}

    @relax.expr_functor.mutator
    class Fold(relax.PyExprMutator):
        def __init__(self, mod, func):
            super().__init__(mod)
            self.uses = read_counts(func)
            self.permuted = {}  # new var -> (the tensor it permutes, axes)
            self.casts = foldable_casts(func, self.uses)  # match_cast var -> its value, as written

        def visit_match_cast_(self, binding):
            if binding.var not in self.casts:  # a folded cast: its readers cast x instead
                super().visit_match_cast_(binding)

        def visit_var_binding_(self, binding):
            value, out = binding.value, None
            p = axes(value)
            if not isinstance(binding.var, relax.DataflowVar):  # a block's output stays as written
                pass
            elif p is not None:
                cast = self.casts.get(value.args[0])
                inner = self.permuted.get(self.visit_expr(cast)) if cast is not None else None
                if inner is not None and _identity([inner[1][i] for i in p]):
                    out = self.builder_.match_cast(inner[0], binding.var.ty)  # x cast, not its permute
                else:
                    out = self._permute(self.visit_expr(value.args[0]), p)
            elif isinstance(value, relax.Call) and getattr(value.op, "name", "") in UNARY | BINARY:
                out = self._sink(value)
            if out is None:
                return super().visit_var_binding_(binding)
            self.set_var_remap(binding.var, out)

        def _permute(self, x, p: list[int]):
            if _identity(p):
                return x
            inner = self.permuted.get(x)
            if inner is not None and _identity([inner[1][i] for i in p]):
                return inner[0]  # permute(permute(x, P), P^-1) = x
            out = self.builder_.emit(relax.op.permute_dims(x, p))
            self.permuted[out] = (x, p)
            return out

        def _sink(self, call):
            """op(permute(x, P), c) -> permute(op(x, c permuted back), P), or None."""
            args = [self.visit_expr(a) for a in call.args]
            tensors = [i for i, a in enumerate(args) if not isinstance(a, tvm.ir.expr.Constant)]
            if len(tensors) != 1 or self.uses.get(call.args[tensors[0]], 0) != 1:
                return None
            x, p = self.permuted.get(args[tensors[0]], (None, None))
            if x is None:
                return None
            for i, a in enumerate(args):
                if i != tensors[0]:
                    v = a.value.numpy()
                    if v.ndim == len(p):
                        args[i] = relax.const(np.ascontiguousarray(v.transpose(_inverse(p))), str(v.dtype))
                    elif v.ndim != 0:
                        return None
            args[tensors[0]] = x
            return self._permute(self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args)), p)

    @tvm.transform.module_pass(opt_level=0, name="EmberFoldPermutes")
    def _pass(mod, _ctx):
        return relax.transform.DeadCodeElimination()(rewrite_functions(mod, Fold))

    return _pass
