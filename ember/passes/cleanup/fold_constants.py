"""Constant folding: nodes whose inputs are all constants (or tensors with
no elements, whose contents are known too) are evaluated once, with onnx's
reference implementation, and become initializers.

A size cap keeps folding from materialising huge tensors: the output must
be predictably small (static shape under the cap, or an op whose output is
never larger than its inputs) before anything is evaluated."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ember.compiler.ir import Graph, Node, Tensor, Value
from ember.passes.manager import Pass, register_pass

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout"}
# ops whose output never has more elements than their largest input
SHRINKING = {"Shape", "Size", "Gather", "GatherElements", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
             "Cast", "CastLike", "Transpose", "Identity", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log",
             "Floor", "Ceil", "Round", "Sign", "Not", "Relu", "Sigmoid", "Tanh", "Erf", "ReduceSum", "ReduceMean",
             "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "Softmax", "Clip", "Constant",
             "NonZero", "Squeeze", "Trilu", "Split"}
# quantized weights stay quantized: DequantizeLinear(const int8) is how a QDQ
# model says "compute this in integers" (passes/quantization/integer.py)
KEEP = {"DequantizeLinear"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual",
               "GreaterOrEqual", "And", "Or", "Xor", "Where", "Mod", "BitShift", "Sum", "Mean"}


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape is not None else -1


def _predicted_elements(node: Node) -> int | None:
    """Upper bound of the output elements, or None when it cannot be told."""
    outs = [v.shape for v in node.outputs]
    if outs and all(s is not None and all(isinstance(d, int) for d in s) for s in outs):
        return max((_numel(s) for s in outs), default=0)
    ins = [v.const.shape if v.const is not None else v.shape for v in node.inputs if v is not None and known(v)]
    if node.op_type in SHRINKING or node.op_type == "Concat":
        return sum(_numel(s) for s in ins) if node.op_type == "Concat" else max((_numel(s) for s in ins), default=1)
    if node.op_type in ELEMENTWISE:
        try:
            return _numel(np.broadcast_shapes(*ins))
        except ValueError:
            return None
    return None


def known(v: Value | None) -> bool:
    """A value whose contents are known: a constant, or a tensor with no elements."""
    return v is None or v.const is not None or v.is_empty


def _contents(v: Value) -> np.ndarray:
    if v.const is not None:
        return v.const.numpy()
    return np.zeros(v.shape, onnx.helper.tensor_dtype_to_np_dtype(v.dtype))


def evaluate(node: Node, opset: int) -> list[np.ndarray]:
    """Run one node with onnx's reference evaluator on its constant inputs."""
    from onnx.reference import ReferenceEvaluator

    from ember.compiler.ir.onnx_io import export_node

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
    proto = export_node(node)
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(f"out{i}" for i in range(len(node.outputs)))
    feeds = {n: _contents(v) for n, v in zip(names, node.inputs) if v is not None}
    graph = onnx.helper.make_graph([proto], "fold", [onnx.helper.make_tensor_value_info(n, 0, None) for n in feeds],
                                   [onnx.helper.make_tensor_value_info(o, 0, None) for o in proto.output])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, feeds)]


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate nodes whose inputs are all constants (outputs up to `max_elements`)."""

    name: ClassVar[str] = "fold-constants"
    max_elements: int = 1 << 20

    def run(self, graph: Graph) -> bool:
        opset = graph.root().opset
        changed = False
        for g in list(graph.all_graphs()):
            for node in list(g.nodes):
                if self._foldable(node):
                    changed |= self._fold(g, node, opset)
        return changed

    def _foldable(self, node: Node) -> bool:
        if (node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC or node.op_type in KEEP
                or any(True for _ in node.subgraphs())):
            return False
        if not all(known(v) for v in node.inputs):
            return False
        if not all(v.is_tensor for v in node.outputs):
            return False
        if node.op_type == "Identity" and node.graph is not None and node.graph.is_output(node.outputs[0]):
            return False  # keeps a graph output's name on a constant: nothing left to fold
        size = _predicted_elements(node)
        return size is not None and size <= self.max_elements

    def _fold(self, g: Graph, node: Node, opset: int) -> bool:
        try:
            results = evaluate(node, opset)
        except Exception:
            return False  # leave it to the backend, which reports errors properly
        if any(r.dtype == object or r.size > self.max_elements for r in results):
            return False
        for old, arr in zip(node.outputs, results):
            if not old.uses and not g.is_output(old):
                continue
            expected = onnx.helper.tensor_dtype_to_np_dtype(old.dtype) if old.dtype else arr.dtype
            arr = arr.astype(expected, copy=False)
            const = Value(g.fresh_name(old.name), dtype=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype),
                          shape=tuple(arr.shape), const=Tensor.from_numpy(arr))
            g.add_initializer(const)
            g.substitute(old, const)
        if not any(o.uses or g.is_output(o) for o in node.outputs):
            g.remove(node)
        return True
