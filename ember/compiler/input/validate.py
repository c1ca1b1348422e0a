"""Validation before anything is optimised, lowered or allocated.

Checks what a hostile or broken model can get wrong and TVM would turn into
a crash, a hang, a huge allocation or a silently wrong program: opsets and
domains, operator schemas (inputs, outputs, attribute names and types),
negative dimensions, initializer byte counts, tensors larger than a memory
budget, subgraph nesting, and constant indices out of range. Each problem is
one `InvalidModelError` naming the value or node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.defs

from ember.compiler import ir
from ember.errors import EmberError

STANDARD = ("", "ai.onnx")
SUB_BYTE = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
            if hasattr(onnx.TensorProto, n)}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
_ATTR_TYPES = {int(t): t for t in onnx.defs.OpSchema.AttrType.__members__.values()}


class InvalidModelError(EmberError):
    """The model breaks the ONNX spec or one of Ember's resource limits."""


@dataclass(frozen=True)
class Limits:
    memory_budget: int = 8 << 30  # bytes any one tensor (constant, declared or folded) may take
    max_subgraph_depth: int = 16


def _itemsize(dtype: int) -> int:
    if dtype in (0, onnx.TensorProto.STRING) or dtype in SUB_BYTE or dtype not in onnx.TensorProto.DataType.values():
        return 1
    return onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.3g} MiB"


def validate(model: ir.Model, limits: Limits = Limits()) -> None:
    if model.ir_version > onnx.IR_VERSION:  # a format newer than this onnx release: its meaning is unknown
        raise InvalidModelError(f"IR version {model.ir_version} is newer than any this installation reads "
                                f"(onnx {onnx.__version__} reads up to {onnx.IR_VERSION})")
    opset = model.opset
    newest = onnx.defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise InvalidModelError(f"default-domain opset {opset} is outside the supported range 1..{newest}")
    declared = set(model.opset_imports) | {f.domain for f in model.functions}
    functions = {(f.domain, f.name) for f in model.functions}
    _graph(model.graph, opset, declared, functions, limits, depth=0)


def _graph(g: ir.Graph, opset: int, declared: set[str], functions: set, limits: Limits, depth: int) -> None:
    if depth > limits.max_subgraph_depth:
        raise InvalidModelError(f"graph {g.name!r}: subgraphs nested deeper than {limits.max_subgraph_depth}")
    for v in g.values():
        _value(v, limits)
    for v in g.initializers.values():
        _initializer(v, limits)
    for v in g.inputs:
        if v.const is not None:
            _initializer(v, limits)
    for node in g.nodes:
        where = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
        if node.domain not in declared and node.domain not in STANDARD:
            raise InvalidModelError(f"{where}: domain {node.domain!r} is not declared in the model's opset imports")
        if node.domain in STANDARD and (node.domain, node.op_type) not in functions:
            _schema(node, where, opset)
            _constant_sizes(node, where, limits)
            _constant_indices(node, where)
        for sub in node.subgraphs():
            _graph(sub, opset, declared, functions, limits, depth + 1)


def _value(v: ir.Value, limits: Limits) -> None:
    if v.shape is None:
        return
    dims = [d for d in v.shape if isinstance(d, int)]
    if any(d < 0 for d in dims):
        raise InvalidModelError(f"value {v.name!r} has a negative dimension: {list(v.shape)}")
    if len(dims) == len(v.shape):
        size = float(np.prod(dims, dtype=np.float64)) * _itemsize(v.dtype)
        if size > limits.memory_budget:
            raise InvalidModelError(f"value {v.name!r} of shape {list(v.shape)} would take {_gb(size)}, over the "
                                    f"memory budget of {_gb(limits.memory_budget)}")


def _initializer(v: ir.Value, limits: Limits) -> None:
    t = v.const
    proto = t._proto
    if proto is None:
        return
    dims = list(proto.dims)
    if proto.data_type == 0 or proto.data_type not in onnx.TensorProto.DataType.values():
        raise InvalidModelError(f"initializer {v.name!r} has an invalid data type {proto.data_type}")
    if any(d < 0 for d in dims):
        raise InvalidModelError(f"initializer {v.name!r} has a negative dimension: {dims}")
    numel = int(np.prod(dims, dtype=np.float64))
    size = float(numel) * _itemsize(proto.data_type)
    if size > limits.memory_budget:
        raise InvalidModelError(f"initializer {v.name!r} would take {_gb(size)}, over the memory budget")
    if proto.data_location == onnx.TensorProto.EXTERNAL or proto.data_type in SUB_BYTE:
        return
    if proto.data_type == onnx.TensorProto.STRING:
        have = len(proto.string_data)
    elif proto.HasField("raw_data"):
        want = numel * _itemsize(proto.data_type)
        if len(proto.raw_data) != want:
            raise InvalidModelError(f"initializer {v.name!r}: {len(proto.raw_data)} bytes of data for shape {dims} "
                                    f"of {onnx.TensorProto.DataType.Name(proto.data_type)} ({want} expected)")
        return
    else:
        have = sum(len(getattr(proto, f)) for f in _TYPED_FIELDS)
        if proto.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            have //= 2
    if have != numel:
        raise InvalidModelError(f"initializer {v.name!r}: {have} values for shape {dims} ({numel} expected)")


def _schema(node: ir.Node, where: str, opset: int) -> None:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        if onnx.defs.has(node.op_type):
            raise InvalidModelError(f"{where}: {node.op_type} does not exist in opset {opset}") from None
        return  # not an ONNX operator at all: the backend check reports it as unsupported
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    variadic = schema.inputs and schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    if len(inputs) < schema.min_input or (len(inputs) > schema.max_input and not variadic):
        raise InvalidModelError(f"{where}: {len(inputs)} inputs, {node.op_type}-{schema.since_version} takes "
                                f"{schema.min_input}..{schema.max_input}")
    if len(node.outputs) > schema.max_output:
        raise InvalidModelError(f"{where}: {len(node.outputs)} outputs, {node.op_type}-{schema.since_version} "
                                f"has at most {schema.max_output}")
    for name, attr in schema.attributes.items():
        if attr.required and name not in node.attrs:
            raise InvalidModelError(f"{where}: required attribute {name!r} is missing")
    for name, atype in node.attr_types.items():
        spec = schema.attributes.get(name)
        if spec is None:
            raise InvalidModelError(f"{where}: {node.op_type}-{schema.since_version} has no attribute {name!r}")
        if int(spec.type) != atype and atype != onnx.AttributeProto.UNDEFINED:
            raise InvalidModelError(f"{where}: attribute {name!r} must be {spec.type.name}, "
                                    f"got {onnx.AttributeProto.AttributeType.Name(atype)}")



def _constant_sizes(node: ir.Node, where: str, limits: Limits) -> None:
    """Ops that allocate what a small constant says: refuse bombs before anyone allocates."""
    shape = None
    if node.op_type in ("ConstantOfShape", "Expand") and len(node.inputs) >= 1:
        shape = ir.const_array(node.inputs[0] if node.op_type == "ConstantOfShape" else node.inputs[1])
    elif node.op_type == "Range" and len(node.inputs) == 3:
        start, limit, delta = (ir.const_array(v) for v in node.inputs)
        if start is not None and limit is not None and delta is not None and float(delta) != 0:
            shape = np.array([max(0.0, np.ceil((float(limit) - float(start)) / float(delta)))])
    if shape is None:
        return
    shape = np.asarray(shape, dtype=np.float64).reshape(-1)
    if np.any(shape < 0):
        raise InvalidModelError(f"{where}: negative size {shape.astype(np.int64).tolist()}")
    out = node.outputs[0]
    size = float(np.prod(shape)) * _itemsize(out.dtype or onnx.TensorProto.FLOAT)
    if size > limits.memory_budget:
        raise InvalidModelError(f"{where}: would allocate {_gb(size)} (shape {shape.astype(np.int64).tolist()}), "
                                f"over the memory budget of {_gb(limits.memory_budget)}")


def _constant_indices(node: ir.Node, where: str) -> None:
    """Constant indices must be in range for the data they index (proved here,
    so the compiled code never reads out of bounds for them)."""
    if node.op_type not in ("Gather", "GatherElements", "ScatterElements", "ScatterND", "GatherND") or len(node.inputs) < 2:
        return
    data, idx = node.inputs[0], ir.const_array(node.inputs[1])
    if idx is None or data is None or data.shape is None or idx.size == 0:
        return
    if node.op_type in ("GatherND", "ScatterND"):
        b = node.attrs.get("batch_dims", 0)
        k = idx.shape[-1] if idx.ndim else 0
        dims = data.shape[b:b + k]
        if not all(isinstance(d, int) for d in dims):
            return
        for j, d in enumerate(dims):
            col = idx[..., j]
            if np.any(col >= d) or np.any(col < -d):
                raise InvalidModelError(f"{where}: constant index out of range for dimension {b + j} of size {d}")
        return
    axis = node.attrs.get("axis", 0)
    rank = len(data.shape)
    if not -rank <= axis < rank:
        raise InvalidModelError(f"{where}: axis {axis} out of range for rank {rank}")
    d = data.shape[axis]
    if isinstance(d, int) and (np.any(idx >= d) or np.any(idx < -d)):
        bad = idx[(idx >= d) | (idx < -d)].reshape(-1)[0]
        raise InvalidModelError(f"{where}: constant index {int(bad)} out of range for axis {axis} of size {d}")
