"""Relax converters for Ember's own ops (`custom_ops.py` defines them): the
fused activations, attention as batched matmuls, and the run-time checks."""

from __future__ import annotations

from functools import cache

from ember.compiler.backend.tvm.relax_util import same_dims

@cache
def _checked_copy(dtype: str, what: str):
    """TIR: y = x (1-D), after asserting flag != 0 with message `what` (parsed
    once per dtype and message: a model checks many tensors alike)."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def check(x_handle: T.handle, flag: T.Buffer((), "int32"), y_handle: T.handle):
        n = T.int64()
        x = T.match_buffer(x_handle, (n,), dtype)
        y = T.match_buffer(y_handle, (n,), dtype)
        assert flag[()] != 0, what
        for i in range(n):
            with T.sblock("copy"):
                vi = T.axis.spatial(n, i)
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
            if len(inputs) > 1 and inputs[1] is not None:
                b = bb.emit(relax.op.astype(inputs[1], dtype))
                ok = relax.op.logical_and(relax.op.greater_equal(x, relax.op.negative(b)), relax.op.less(x, b))
            else:
                ok = relax.op.not_equal(x, relax.const(0, dtype))
            flag = bb.emit(relax.op.min(relax.op.astype(ok, "int32")))
            cond = bb.emit(relax.op.not_equal(flag, relax.const(0, "int32")))
            what = attr.get("what", "runtime check failed")
            what = what.decode() if isinstance(what, bytes) else str(what)
            if not kernel_asserts:
                bb.emit(relax.op.assert_op(cond, [], what))
                return x
            flat = bb.emit(relax.op.reshape(x, (-1,)))
            check = bb.add_func(_checked_copy(dtype, what).with_attr("op_pattern", 8), "ember_check_bounds")  # opaque
            out = bb.emit(relax.call_tir(check, [flat, bb.emit(relax.op.astype(cond, "int32"))], flat.ty))
            return relax.op.reshape(out, x.ty.shape)

    return {"GeluErf": unary(relax.op.nn.gelu), "GeluTanh": unary(relax.op.nn.gelu_tanh),
            "Silu": unary(relax.op.nn.silu), "SDPA": Attention, "SDPAMasked": Attention, "CheckBounds": CheckBounds}
