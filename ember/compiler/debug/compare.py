"""How far one run of a model is from another: the error of a tensor relative to
its scale, the source model's tensors found again in a rewritten graph, and the
layer where two runs start to differ."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.ir.reference import session
from ember.errors import EmberError

# ops whose presence makes a graph compute (partly) in 8 bits
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                       "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
                       "MatMulIntegerToFloat", "QGemm", "QLinearAdd", "QLinearMul"})


def error(ref: np.ndarray, got: np.ndarray) -> float:
    """The largest difference relative to the reference's scale (its largest finite
    magnitude): max |got - ref| / max |ref|. Integer and boolean tensors (indices,
    masks): the share of elements that differ. inf where shapes differ, where only
    one side is NaN or infinite, or where the reference is all zeros and `got` is not."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return math.inf
    if ref.size == 0:
        return 0.0
    if ref.dtype.kind not in "fc" and got.dtype.kind not in "fc":
        return float(np.mean(ref != got))
    r, g = ref.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(r)
    if ((~finite | ~np.isfinite(g)) & ~((r == g) | (np.isnan(r) & np.isnan(g)))).any():
        return math.inf
    if not finite.any():
        return 0.0
    diff = float(np.max(np.abs(r[finite] - g[finite])))
    scale = float(np.max(np.abs(r[finite])))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else math.inf


def is_quantized(graph: onnx.GraphProto) -> bool:
    return any(n.op_type in QUANT_OPS for n in graph.node)


def sources(graph: ir.Graph) -> dict[str, str]:
    """Each tensor name of the source model -> the value of `graph` holding that tensor
    now: itself, or the value that replaced it (`Value.aliases`: a pass fused the
    node that computed it, or removed an Identity)."""
    out: dict[str, str] = {}
    values = list(graph.inputs) + [v for n in graph.nodes for v in n.outputs]
    for v in values:
        for name in v.aliases:
            out.setdefault(name, v.name)
    out.update({v.name: v.name for v in values})
    return out


# a stage's tensors: source tensor names -> arrays (what it computes, found by source name)
Probe = Callable[[list[str]], dict[str, np.ndarray]]


def feed_for(inputs: Iterable[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of `feed` a graph takes (bound inputs are constants in later stages)."""
    names = set(inputs)
    return {k: v for k, v in feed.items() if k in names}


def onnx_runs(proto: onnx.ModelProto, names: dict[str, str], feeds: list[dict[str, np.ndarray]],
              wanted: list[str]) -> list[dict[str, np.ndarray]]:
    """The `wanted` tensors (source names, found in `proto` through `names`) of one
    onnxruntime session over each feed, the tensors added as graph outputs."""
    local = {w: names[w] for w in wanted if w in names}
    order = list(dict.fromkeys(local.values()))
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in order if n not in have)
    sess = session(m)
    inputs = [i.name for i in sess.get_inputs()]
    out = []
    for feed in feeds:
        try:
            got = dict(zip(order, sess.run(order, feed_for(inputs, feed))))
        except Exception as e:
            raise EmberError(f"onnxruntime failed: {str(e).splitlines()[0][:300]}") from None
        out.append({w: got[n] for w, n in local.items()})
    return out


def onnx_probe(proto: onnx.ModelProto, names: dict[str, str], feed: dict[str, np.ndarray]) -> Probe:
    """A Probe running `proto` in onnxruntime on `feed` (`onnx_runs`)."""
    return lambda wanted: onnx_runs(proto, names, [feed], wanted)[0]


@dataclass
class Layer:
    """One source node's output compared between two stages."""

    node: str  # the source node's name, or its op type and output where it has none
    op: str
    tensor: str
    error: float

    def over(self, tol: float) -> bool:
        return not self.error <= tol  # NaN counts as over


def node_label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} -> {node.output[0]}"


def compare_layers(source: onnx.GraphProto, good: Probe, bad: Probe) -> list[Layer]:
    """Every output of every node of the source graph that both stages compute, in the
    source's (topological) order, with the error of `bad` relative to `good`."""
    wanted = [o for n in source.node for o in n.output if o]
    a, b = good(wanted), bad(wanted)
    rows = []
    for n in source.node:
        for o in n.output:
            if o in a and o in b:
                rows.append(Layer(node_label(n), n.op_type, o, error(a[o], b[o])))
    return rows


def first_over(rows: list[Layer], tol: float) -> Layer | None:
    """Where the divergence starts: the first tensor, in source order, past `tol`."""
    return next((r for r in rows if r.over(tol)), None)
