"""Relax converters for standard ONNX operators TVM's frontend lacks:
BitCast, Col2Im, CumProd, LpNormalization and ReverseSequence. `lower.py` adds them to
TVM's table for one import, and their names to the supported operators."""

from __future__ import annotations

OPS = frozenset({"BitCast", "Col2Im", "CumProd", "LpNormalization", "ReverseSequence"})
MAX_COL2IM_TABLE = 1 << 24  # entries of Col2Im's 0/1 placement matrix


def col2im_table(image, block, dilations, pads, strides):
    """The 0/1 matrix [K * L, prod(image)] that adds each column entry into its image position."""
    import itertools

    import numpy as np

    n = len(image)
    counts = [(image[i] + pads[i] + pads[i + n] - (dilations[i] * (block[i] - 1) + 1)) // strides[i] + 1
              for i in range(n)]
    kernel, places = int(np.prod(block)), int(np.prod(counts))
    table = np.zeros((kernel * places, int(np.prod(image))), np.float32)
    for k, offset in enumerate(itertools.product(*[range(b) for b in block])):
        for p, where in enumerate(itertools.product(*[range(c) for c in counts])):
            pos = [where[i] * strides[i] - pads[i] + offset[i] * dilations[i] for i in range(n)]
            if all(0 <= pos[i] < image[i] for i in range(n)):
                table[k * places + p, np.ravel_multi_index(pos, image)] = 1
    return table


def converters() -> dict[str, type]:
    import numpy as np
    import onnx
    import tvm
    from tvm import relax, te
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    from ember.compiler.backend.tvm.relax_util import static_shape

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

    class Col2Im(OnnxOpConverter):
        """Columns [N, C * K, L] summed into the image [N, C, *image] by a constant 0/1 matrix."""

        @classmethod
        def _impl_v18(cls, bb, inputs, attr, params):
            x = inputs[0]
            shape = static_shape(x)
            if shape is None or not all(isinstance(v, tvm.ir.expr.Constant) for v in inputs[1:3]):
                raise ValueError("Col2Im needs a static input shape and constant image and block shapes")
            image, block = (v.value.numpy().astype(int).tolist() for v in inputs[1:3])
            n = len(image)
            dims = [attr.get("dilations", [1] * n), attr.get("pads", [0] * 2 * n), attr.get("strides", [1] * n)]
            kernel, places, image_size = int(np.prod(block)), shape[2], int(np.prod(image))
            if kernel * places * image_size > MAX_COL2IM_TABLE:
                raise ValueError("Col2Im too large for Ember's placement table")
            table = col2im_table(image, block, *dims)
            if table.shape[0] != kernel * places:
                raise ValueError(f"Col2Im: {places} columns do not match the image, block and strides")
            channels = shape[1] // kernel
            cols = relax.op.reshape(x, [shape[0], channels, kernel * places])
            out = relax.op.matmul(cols, relax.const(table.astype(str(x.ty.dtype))))
            return relax.op.reshape(out, [shape[0], channels, *image])

    return {"BitCast": BitCast, "Col2Im": Col2Im, "CumProd": CumProd, "LpNormalization": LpNormalization,
            "ReverseSequence": ReverseSequence}
