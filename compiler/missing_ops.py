"""Relax converters for standard ONNX operators TVM's frontend lacks:
BitCast, CumProd, LpNormalization and ReverseSequence. `lower.py` adds them to
TVM's table for one import, and their names to the supported operators."""

from __future__ import annotations

OPS = frozenset({"BitCast", "CumProd", "LpNormalization", "ReverseSequence"})


def converters() -> dict[str, type]:
    import numpy as np
    import onnx
    import tvm
    from tvm import relax, te
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    from .pipeline import static_shape

    def constant_int(value, what: str) -> int:
        if not isinstance(value, tvm.ir.expr.Constant):
            raise ValueError(f"{what} must be a constant")
        return int(value.value.numpy().reshape(-1)[0])

    class BitCast(OnnxOpConverter):
        """The same bits read as another type of the same width."""

        @classmethod
        def _impl_v26(cls, bb, inputs, attr, params):
            x, to = inputs[0], onnx.helper.tensor_dtype_to_np_dtype(attr["to"]).name
            if str(x.ty.dtype) == "bool":  # one byte of 0 or 1
                return relax.op.astype(x, to)
            return bb.emit_te(lambda t: te.compute(t.shape, lambda *i: tvm.tirx.reinterpret(to, t(*i)),
                                                   name="bitcast"), x)

    class CumProd(OnnxOpConverter):
        @classmethod
        def _impl_v26(cls, bb, inputs, attr, params):
            x = inputs[0]
            axis = constant_int(inputs[1], "CumProd's axis")
            if attr.get("reverse", 0):
                x = relax.op.flip(x, axis)
            y = relax.op.cumprod(x, axis=axis, exclusive=bool(attr.get("exclusive", 0)))
            return relax.op.flip(y, axis) if attr.get("reverse", 0) else y

    class LpNormalization(OnnxOpConverter):
        """x / ||x||_p along `axis` (p = 1 or 2)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x, axis, p = inputs[0], attr.get("axis", -1), attr.get("p", 2)
            if p == 1:
                norm = relax.op.sum(relax.op.abs(x), axis=[axis], keepdims=True)
            elif p == 2:
                norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), axis=[axis], keepdims=True))
            else:
                raise ValueError(f"LpNormalization with p={p}: ONNX allows 1 or 2")
            zero = relax.const(0, str(x.ty.dtype))
            norm = relax.op.where(relax.op.equal(norm, zero), relax.const(1, str(x.ty.dtype)), norm)
            return relax.op.divide(x, norm)  # an all-zero slice stays 0, as ONNX's reference

    class ReverseSequence(OnnxOpConverter):
        """Reverse the first seq_lens[b] steps along the time axis, for each batch entry b."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            x, lens = inputs[0], inputs[1]
            shape = static_shape(x)
            if shape is None:
                raise ValueError("ReverseSequence needs a static input shape")
            batch_axis, time_axis = attr.get("batch_axis", 1), attr.get("time_axis", 0)
            steps = relax.const(np.arange(shape[time_axis], dtype=np.int64), "int64")
            lens = relax.op.astype(lens, "int64")
            if time_axis == 0:  # [T, B]
                steps, lens = relax.op.expand_dims(steps, 1), relax.op.expand_dims(lens, 0)
            else:  # [B, T]
                steps, lens = relax.op.expand_dims(steps, 0), relax.op.expand_dims(lens, 1)
            index = relax.op.where(relax.op.less(steps, lens),
                                   relax.op.subtract(relax.op.subtract(lens, relax.const(1, "int64")), steps), steps)
            index = relax.op.reshape(index, [*index_shape(shape, batch_axis, time_axis)])
            return relax.op.gather_elements(x, relax.op.broadcast_to(index, shape), axis=time_axis)

    def index_shape(shape, batch_axis: int, time_axis: int) -> list[int]:
        dims = [1] * len(shape)
        dims[batch_axis], dims[time_axis] = shape[batch_axis], shape[time_axis]
        return dims

    return {"BitCast": BitCast, "CumProd": CumProd, "LpNormalization": LpNormalization,
            "ReverseSequence": ReverseSequence}
