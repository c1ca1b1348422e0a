"""Model statistics for `ember inspect`: op histogram, parameters, FLOPs.

FLOPs are estimated from static shapes (a multiply-add counts as 2);
nodes whose shapes are not static are counted separately, not guessed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ember.compiler import ir


@dataclass
class ModelStats:
    opsets: dict[str, int]
    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    op_counts: Counter = field(default_factory=Counter)
    nodes: int = 0
    params: int = 0
    param_bytes: int = 0
    flops: int = 0
    flops_unknown_nodes: int = 0



def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "Exp",
                "Log", "Sqrt", "Pow", "Erf", "Max", "Min", "Neg", "Abs", "HardSigmoid", "HardSwish",
                "Elu", "Selu", "PRelu", "Gelu", "Softplus", "Mish", "Where", "Equal", "Greater", "Less"}


def node_flops(n: ir.Node) -> int | None:
    out = ir.static_shape(n.outputs[0]) if n.outputs else None
    op = n.op_type
    if op in ("Conv", "ConvTranspose"):
        w = ir.static_shape(n.inputs[1])
        x = ir.static_shape(n.inputs[0])
        if w is None or out is None or x is None:
            return None
        if op == "Conv":
            # out: N, Cout, spatial...; each output: Cin/groups * k... MACs
            return 2 * _numel(out) * _numel(w[1:])
        return 2 * _numel(x) * w[1] * _numel(w[2:])
    if op in ("Gemm", "MatMul"):
        a = ir.static_shape(n.inputs[0])
        if a is None or out is None or not a:
            return None
        k = a[0] if op == "Gemm" and n.attrs.get("transA", 0) else a[-1]
        return 2 * _numel(out) * k
    if out is None:
        return None
    if op in _ELEMENTWISE:
        return _numel(out)
    if op in ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "Softmax", "LRN"):
        return 4 * _numel(out)
    if op in ("MaxPool", "AveragePool"):
        k = n.attrs.get("kernel_shape", [1])
        return _numel(out) * int(np.prod(k))
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"):
        x = ir.static_shape(n.inputs[0])
        return None if x is None else _numel(x)
    return 0  # data movement (Reshape, Concat, Transpose...) does no arithmetic


def collect(model: ir.Model) -> ModelStats:
    g = model.graph

    def sig(v: ir.Value) -> str:
        from ember.compiler.ir.printer import value_type_str

        return value_type_str(v)

    st = ModelStats(opsets=dict(model.opset_imports),
                    inputs=[(v.name, sig(v)) for v in g.inputs if v.const is None],
                    outputs=[(v.name, sig(v)) for v in g.outputs])
    for sub in g.all_graphs():
        for v in sub.initializers.values():
            st.params += _numel(v.const.shape)
            st.param_bytes += v.const.nbytes
        for v in sub.inputs:
            if v.const is not None:
                st.params += _numel(v.const.shape)
                st.param_bytes += v.const.nbytes
    for n in g.all_nodes():
        st.nodes += 1
        st.op_counts[n.op_type if not n.domain else f"{n.domain}::{n.op_type}"] += 1
        f = node_flops(n)
        if f is None:
            st.flops_unknown_nodes += 1
        else:
            st.flops += f
    return st


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g} {suffix}{unit}".strip()
        n /= 1000
    return f"{n:.4g} P{unit}"


def format_stats(st: ModelStats) -> str:
    lines = ["opsets:     " + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in st.opsets.items())]
    lines += [f"input:      {n}: {t}" for n, t in st.inputs]
    lines += [f"output:     {n}: {t}" for n, t in st.outputs]
    lines.append(f"nodes:      {st.nodes}")
    lines.append(f"parameters: {st.params:,} ({_human(st.param_bytes, 'B')})")
    unknown = f" ({st.flops_unknown_nodes} nodes without static shapes not counted)" if st.flops_unknown_nodes else ""
    lines.append(f"FLOPs:      {_human(st.flops)}{unknown}")
    lines.append("operators:")
    for op, c in sorted(st.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:28s} {c}")
    return "\n".join(lines)
