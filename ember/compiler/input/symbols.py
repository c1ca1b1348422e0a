"""Symbolic dims onnx's shape inference does not relate: the length of
`Range(0, x.shape[i], 1)` (positions in a transformer, a detector's grid) is
x's dim i, but onnx names it anew (`unk__0`), and every value computed from it
then carries a dim no one can prove equal to the input's `seq`. TVM then
cannot broadcast `tokens + positions`, nor compile what follows.

`tie_range_lengths(model)` gives such Range outputs the dim they have, and
Slices of symbolic dims whose length does not depend on them (DETR's
`cumsum[:, -1:, :]`) that length, and infers the graph's shapes again, so the
symbol flows on.
"""

from __future__ import annotations

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.ir import onnx_io

_PASS_VALUE = ("Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten")


def _scalar(v: ir.Value | None) -> float | None:
    """A one-element constant's value (an initializer or a Constant node's), else None."""
    if v is None:
        return None
    value = v.const
    if value is None and v.producer is not None and v.producer.op_type == "Constant":
        value = v.producer.attrs.get("value")
    if not isinstance(value, ir.Tensor):
        return None
    a = np.asarray(value.numpy())
    return float(a.reshape(())) if a.size == 1 and a.dtype.kind in "iuf" else None


def dim_of(v: ir.Value) -> ir.Dim:
    """The dim (an int or a symbol) that a one-element value holds, where it is read
    from a Shape (through Gather, Cast and reshapes), else None."""
    while v.producer is not None and v.producer.op_type in _PASS_VALUE and v.producer.inputs:
        v = v.producer.inputs[0]
    p = v.producer
    if p is None or p.op_type != "Gather" or len(p.inputs) < 2 or p.attrs.get("axis", 0) != 0:
        return None
    index, shape = _scalar(p.inputs[1]), p.inputs[0].producer
    if index is None or shape is None or shape.op_type != "Shape" or shape.inputs[0].shape is None:
        return None
    dims = list(shape.inputs[0].shape)
    dims = dims[slice(shape.attrs.get("start", 0), shape.attrs.get("end"))]
    i = int(index)
    if not -len(dims) <= i < len(dims):
        return None
    d = dims[i]
    return d if isinstance(d, int) or (isinstance(d, str) and d) else None


_END = 2 ** 62  # a Slice end at least this large means "to the end"


def _ints(v: ir.Value | None) -> list[int] | None:
    a = ir.const_array(v)
    return [int(x) for x in a.reshape(-1)] if a is not None and a.dtype.kind in "iu" else None


def slice_shape(node: ir.Node) -> tuple | None:
    """The output shape of a Slice of symbolic dims whose lengths do not depend on them:
    x[..., -k:] (k elements) and x[..., a:b] with 0 <= a < b (b - a), step 1; None
    otherwise. Each length holds when the dim is at least k (or b): an artifact checks
    its shapes at run time."""
    x = node.inputs[0]
    if x is None or x.shape is None or len(node.inputs) < 3:
        return None
    starts, ends = _ints(node.inputs[1]), _ints(node.inputs[2])
    has_axes = len(node.inputs) > 3 and node.inputs[3] is not None
    axes = _ints(node.inputs[3]) if has_axes else list(range(len(starts or [])))
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or axes is None or (steps is not None and any(st != 1 for st in steps)):
        return None
    dims = list(x.shape)
    for a, b, axis in zip(starts, ends, axes):
        if not -len(dims) <= axis < len(dims):
            return None
        axis %= len(dims)
        if isinstance(dims[axis], int):
            continue
        if a < 0 and b >= _END:
            dims[axis] = -a
        elif 0 <= a < b < _END:
            dims[axis] = b - a
        else:
            return None
    return None if tuple(dims) == tuple(x.shape) else tuple(dims)


def tie_range_lengths(model: ir.Model) -> bool:
    """Give Range(0, dim, 1) outputs the dim as their length, and Slices of symbolic dims
    their static lengths (`slice_shape`); then infer shapes again."""
    tied, dtypes = {}, {}
    for node in model.graph.nodes:
        out = node.outputs[0] if node.outputs else None
        if node.op_type == "Slice" and out is not None and out.dtype and out.shape is not None:
            shape = slice_shape(node)
            if shape is not None and any(isinstance(d, int) and d != o for d, o in zip(shape, out.shape)):
                tied[out.name], dtypes[out.name] = shape, out.dtype
            continue
        if node.op_type != "Range" or len(node.inputs) != 3 or node.inputs[1] is None:
            continue
        if _scalar(node.inputs[0]) != 0 or _scalar(node.inputs[2]) != 1:
            continue
        d = dim_of(node.inputs[1])
        if d is not None and out.shape != (d,) and out.dtype:
            tied[out.name], dtypes[out.name] = (d,), out.dtype
    if not tied:
        return False
    proto = onnx_io.export_model(model)
    # outputs' dims that are no input's symbol were inferred from the old lengths: inferred again
    named = {d for v in model.graph.inputs if v.shape is not None for d in v.shape if isinstance(d, str)}
    for vi in proto.graph.output:
        for d in vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ():
            if d.HasField("dim_param") and d.dim_param not in named:
                d.ClearField("dim_param")
    onnx_io.keep_static_value_info(proto)  # shapes inferred from the old lengths are inferred again
    kept = [vi for vi in proto.graph.value_info if vi.name not in tied]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    # a symbol that is no input's is named anew by the inference: such dims are left to it
    proto.graph.value_info.extend(onnx.helper.make_tensor_value_info(
        name, dtypes[name], [d if isinstance(d, int) or d in named else None for d in shape])
        for name, shape in tied.items())
    model.assign(onnx_io.import_model(proto))
    return True
