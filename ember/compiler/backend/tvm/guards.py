"""Runtime safety, applied to every model right before lowering (at every -O
level; never part of an exported ONNX graph):

- indices that reach Gather, GatherElements, GatherND, ScatterElements and
  ScatterND at run time are checked against the data's (static) bounds, and
  integer Div/Mod divisors against zero: a bad input raises a clear error,
  as in onnxruntime, instead of reading out of bounds or killing the
  process with SIGFPE (constant indices and divisors are checked at compile
  time by `validate`);
- NaN propagates as ONNX specifies through Max, Min, ReduceMax and
  ReduceMin, and ReduceMax/ReduceMin of slices holding only -inf/+inf give
  -inf/+inf (TVM's max/min drop NaN and start at the lowest/highest finite
  value; Relu is made NaN-safe in its
  legalization, `pipeline.py`);
- reductions over an empty axis give the reduction's identity.
"""

from __future__ import annotations

import numpy as np
import onnx

from ember.compiler.ir import custom_ops
from ember.compiler import ir

# TVM has no isnan for bfloat16
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
INTS = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}
INDEXED_BY_AXIS = {"Gather", "GatherElements", "ScatterElements"}
EMPTY_IDENTITY = {"ReduceSum": 0.0, "ReduceSumSquare": 0.0, "ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceProd": 1.0,
                  "ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceMean": np.nan, "ReduceLogSum": -np.inf,
                  "ReduceLogSumExp": -np.inf}


def _where(node: ir.Node) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"



def _check(g: ir.Graph, node: ir.Node, index: int, bounds: np.ndarray | None, what: str) -> None:
    """Route input `index` of `node` through an ember CheckBounds op: indices
    within [-bounds, bounds), or (bounds None) a divisor without zeros."""
    v = node.inputs[index]
    inputs = [v] if bounds is None else [v, g.make_const(bounds.astype(np.int64), "bounds")]
    check = g.make_node("CheckBounds", inputs, attrs={"what": what}, domain=custom_ops.DOMAIN, before=node)
    out = check.outputs[0]
    out.dtype, out.shape = v.dtype, v.shape
    g.set_input(node, index, out)


def _index_checks(g: ir.Graph, node: ir.Node) -> bool:
    if len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[1].const is not None:
        return False
    # the dims the indices address must be static; the others (a batch, a sequence) may not be
    data, idx, where = node.inputs[0].shape, node.inputs[1].shape, _where(node)
    if data is None or idx is None:
        return False
    if node.op_type in INDEXED_BY_AXIS:
        axis = node.attrs.get("axis", 0) % len(data)
        if not isinstance(data[axis], int):
            return False
        _check(g, node, 1, np.array(data[axis]), f"{where}: index out of range for axis {axis} of size {data[axis]}")
        return True
    if node.op_type in ("GatherND", "ScatterND"):
        b = node.attrs.get("batch_dims", 0)
        dims = tuple(data[b:b + idx[-1]]) if idx and isinstance(idx[-1], int) else None
        if not dims or not all(isinstance(d, int) for d in dims):
            return False
        _check(g, node, 1, np.array(dims), f"{where}: index out of range for dimensions {dims}")
        return True
    return False


def _nan_safe(g: ir.Graph, node: ir.Node) -> bool:
    """Wrap a NaN-dropping op: where(any input is NaN, NaN, op). For ReduceMax/ReduceMin
    one more reduction says, per slice, whether it holds a NaN (2), or only the
    reduction's start value -inf/+inf (0; TVM starts at the lowest/highest finite
    value instead), or anything else (1)."""
    out = node.outputs[0]
    if out.dtype not in FLOATS:
        return False
    np_type = onnx.helper.tensor_dtype_to_np_dtype(out.dtype)
    ins = [v for v in node.inputs if v is not None]
    result = ir.Value(g.fresh_name(out.name), dtype=out.dtype, shape=out.shape)
    # the original op now writes `result`; the last Where takes over the original output value
    node.outputs[0] = result
    result.producer, out.producer = node, None
    last = node

    def add(op: str, inputs, **attrs) -> ir.Value:
        nonlocal last
        last = g.make_node(op, inputs, attrs=attrs, after=last)
        return last.outputs[0]

    def const(value) -> ir.Value:
        return g.make_const(np.array(value, dtype=np_type), "guard")

    if node.op_type in ("ReduceMax", "ReduceMin"):
        start = const(-np.inf if node.op_type == "ReduceMax" else np.inf)
        code = add("Where", [add("IsNaN", [ins[0]]), const(2),
                             add("Where", [add("Equal", [ins[0], start]), const(0), const(1)])])
        flag = add("ReduceMax", [code, *node.inputs[1:]], **node.attrs)
        last.attr_types.update(node.attr_types)
        value = add("Where", [add("Less", [flag, const(0.5)]), start, result])  # empty slices too
        cond = add("Greater", [flag, const(1.5)])
    else:
        cond, value = add("IsNaN", [ins[0]]), result
        for v in ins[1:]:
            cond = add("Or", [cond, add("IsNaN", [v])])
    where = ir.Node("Where", [cond, const(np.nan), value], [out], name=g.fresh_name("nan_guard"))
    g.insert(where, after=last)
    return True


def _empty_reduction(g: ir.Graph, node: ir.Node) -> bool:
    x, out = node.inputs[0], node.outputs[0]
    shape, out_shape = ir.static_shape(x), ir.static_shape(out)
    if shape is None or out_shape is None or 0 not in shape or out.dtype not in FLOATS:
        return False
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const is not None:
        axes = node.inputs[1].const.numpy().reshape(-1).tolist()
    if axes is None:
        if node.attrs.get("noop_with_empty_axes", 0):
            return False
        axes = list(range(len(shape)))
    if not any(shape[a % len(shape)] == 0 for a in axes) or 0 in out_shape:
        return False
    value = np.full(out_shape, EMPTY_IDENTITY[node.op_type], dtype=onnx.helper.tensor_dtype_to_np_dtype(out.dtype))
    g.substitute(out, g.make_const(value, "empty_reduction"))
    g.remove(node)
    return True


def insert_guards(model: ir.Model) -> int:
    """Add the runtime checks and NaN/empty-reduction fixes; returns how many nodes were guarded."""
    count = 0
    for g in list(model.graph.all_graphs()):
        for node in list(g.nodes):
            if node.domain not in ("", "ai.onnx"):
                continue
            op = node.op_type
            if op in INDEXED_BY_AXIS or op in ("GatherND", "ScatterND"):
                count += _index_checks(g, node)
            elif op in ("Div", "Mod") and len(node.inputs) == 2 and node.inputs[1] is not None \
                    and node.inputs[1].dtype in INTS and node.inputs[1].const is None:
                _check(g, node, 1, None, f"{_where(node)}: integer division by zero")
                count += 1
            elif op in EMPTY_IDENTITY and _empty_reduction(g, node):
                count += 1
            elif op in ("Max", "Min", "ReduceMax", "ReduceMin"):
                count += _nan_safe(g, node)
    return count
