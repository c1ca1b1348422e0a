"""Relax converters for Ember's own ops (`custom_ops.py` defines them): the
fused activations, attention as batched matmuls, and the run-time checks."""

from __future__ import annotations

from functools import cache

from ember.compiler.backend.tvm.relax_util import same_dims

@cache
def _checked_copy(dtype: str, what: str, bounds: tuple[int, ...] | None):
    """TIR: y = x (1-D) in one serial pass that asserts each value with message `what`: within
    [-b, b) for b = bounds[i % len(bounds)] (indices; GatherND's last axis walks the bounds), or
    not zero (divisors, `bounds` None). Parsed once per dtype, message and bounds: a model checks
    many tensors alike. One kernel: the reduction, flag and copy it replaces cost three calls per
    checked Gather (an embedding lookup over a run-time sequence), more than the lookup itself."""
    from tvm.script import tirx as T

    def ok(v, i):
        if bounds is None:
            return v != T.cast(0, dtype)
        b = T.cast(bounds[0], dtype)
        for k in range(1, len(bounds)):  # a static choice by position (GatherND: few bounds)
            b = T.Select(i % len(bounds) == k, T.cast(bounds[k], dtype), b)
        return T.And(v >= -b, v < b)

    @T.prim_func(private=True, s_tir=True)
    def check(x_handle: T.handle, y_handle: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "ember.hand_scheduled": True})
        n = T.int64()
        x = T.match_buffer(x_handle, (n,), dtype)
        y = T.match_buffer(y_handle, (n,), dtype)
        for i in range(n):
            with T.sblock("check"):
                vi = T.axis.spatial(n, i)
                assert ok(x[vi], vi), what
                y[vi] = x[vi]

    return check


def relax_converters(kernel_asserts: bool = True) -> dict[str, type]:
    """Converters for TVM's ONNX frontend, keyed by op type. The frontend's
    convert map ignores domains, so these names must not be TVM's own.
    `kernel_asserts`: run-time checks are compiled into a kernel (CPU
    targets) rather than Relax's assert_op on the VM (CUDA)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def unary(relax_op):
        class Unary(OnnxOpConverter):
            @classmethod
            def _impl_v1(cls, bb, inputs, attr, params):
                return relax_op(inputs[0])

        return Unary

    class Attention(OnnxOpConverter):
        """softmax(Q KT * scale [+ mask]) V on Q [B,H,S,D], KT [B,H,D,T], V [B,H,T,Dv],
        as batched matmuls and a softmax (TVM's fused nn.attention lowers to
        one unscheduled loop nest, ~100x slower on CPU)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            q, kt, v = inputs[:3]
            dtype = q.ty.dtype
            scale = attr.get("scale")
            if scale is None:
                scale = 1.0 / float(int(q.ty.shape.values[-1])) ** 0.5
            scores = bb.emit(relax.op.multiply(relax.op.matmul(q, kt), relax.const(scale, dtype)))
            if len(inputs) > 3 and inputs[3] is not None:
                scores, mask = same_dims(bb, [scores, inputs[3]])
                scores = bb.emit(relax.op.add(scores, mask))
            weights = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            return relax.op.matmul(weights, v)

    class CheckBounds(OnnxOpConverter):
        """x -> x, asserting at run time that x is within [-b, b) (indices)
        or has no zero (divisors, when no bound is given). On CPUs the
        assertion is compiled into the kernel that passes x on
        (`_checked_copy`): Relax's assert_op is a function of TVM's compiler
        library, which a device with only the TVM runtime (or the emulated
        one) lacks. On CUDA the flag lives in GPU memory, which only the
        VM's assert_op reads (GPU artifacts run where TVM is installed)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x = inputs[0]
            dtype = x.ty.dtype
            what = attr.get("what", "runtime check failed")
            what = what.decode() if isinstance(what, bytes) else str(what)
            bounds = inputs[1] if len(inputs) > 1 else None
            if kernel_asserts:
                flat = bb.emit(relax.op.reshape(x, (-1,)))
                values = None if bounds is None else tuple(int(b) for b in bounds.value.numpy().reshape(-1))
                check = bb.add_func(_checked_copy(dtype, what, values).with_attr("op_pattern", 8), "ember_check_bounds")
                out = bb.emit(relax.call_tir(check, [flat], flat.ty))  # opaque: FuseOps leaves it alone
                return relax.op.reshape(out, x.ty.shape)
            if bounds is not None:
                b = bb.emit(relax.op.astype(bounds, dtype))
                ok = relax.op.logical_and(relax.op.greater_equal(x, relax.op.negative(b)), relax.op.less(x, b))
            else:
                ok = relax.op.not_equal(x, relax.const(0, dtype))
            flag = bb.emit(relax.op.min(relax.op.astype(ok, "int32")))
            bb.emit(relax.op.assert_op(bb.emit(relax.op.not_equal(flag, relax.const(0, "int32"))), [], what))
            return x

    return {"GeluErf": unary(relax.op.nn.gelu), "GeluTanh": unary(relax.op.nn.gelu_tanh),
            "Silu": unary(relax.op.nn.silu), "SDPA": Attention, "SDPAMasked": Attention, "CheckBounds": CheckBounds}
