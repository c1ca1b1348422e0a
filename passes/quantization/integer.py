"""QDQ-wrapped layers -> integer compute.

A QDQ model (Ember's `quantize`, onnxruntime's `quantize_static`, ...) says
which layers may run in int8 but computes them in float:

    Conv(DequantizeLinear(xq, sx, zx), DequantizeLinear(Wq, sw, 0), DequantizeLinear(Bq, sx*sw, 0))

This pass gives those layers integer arithmetic, in standard ONNX:

    Mul(Cast<float>(Add(ConvInteger(xq, Wq, zx), Bq)), sx*sw)

(MatMulInteger for MatMul, and Gemm with its B transposed to [K, N]). The
int32 accumulation is exact, so the result equals the QDQ graph's up to
float rounding. Lowering turns ConvInteger / MatMulInteger into Ember's
dot-product kernels, and TVM fuses the bias, rescale, activation and the
next layer's QuantizeLinear into the kernel's epilogue: requantization
happens in registers, not in a float tensor in memory. Where the result
only feeds the next QuantizeLinear (through Relu, Clip or MaxPool), that
quantizer's scale is folded into the rescale (`_fold_requantization`).

Fires only on: 8-bit activations with a constant scalar scale and zero
point; int8 constant weights with zero zero points, one scale per tensor
or per output channel; 2-D Conv, dense or depthwise; MatMul with a 2-D weight;
Gemm with alpha = beta = 1 and no transA. Everything else keeps its QDQ
float compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ember.compiler.ir import Graph, Node, Value
from ember.compiler.pass_manager import Pass, register_pass

INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or v.const is None else v.const.numpy()


def _dq(v: Value | None) -> Node | None:
    p = v.producer if v is not None else None
    return p if p is not None and p.op_type == "DequantizeLinear" and p.domain in ("", "ai.onnx") else None


def _dq_parts(node: Node):
    """(quantized input, scale array, zero point array, axis) of a DequantizeLinear."""
    ins = list(node.inputs) + [None] * 3
    zp = _const(ins[2]) if ins[2] is not None else np.zeros((), np.uint8)
    return ins[0], _const(ins[1]), zp, node.attrs.get("axis", 1)


def _activation(v: Value) -> tuple[Value, float, int] | None:
    """(xq, sx, zx) when v = DequantizeLinear(8-bit xq, constant scalar scale and zero point)."""
    dq = _dq(v)
    if dq is None or dq.attrs.get("block_size", 0):
        return None
    xq, s, z, _ = _dq_parts(dq)
    if xq is None or xq.const is not None or xq.dtype not in INT8_TYPES:
        return None
    if s is None or z is None or s.size != 1 or z.size != 1 or s.dtype != np.float32:
        return None
    return xq, float(s.reshape(())), int(z.reshape(()))


def _weight(v: Value, channel_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 weights, float32 scales [channels]) when v = DequantizeLinear(const int8,
    scale per tensor or along `channel_axis`, zero point 0)."""
    dq = _dq(v)
    if dq is None or dq.attrs.get("block_size", 0):
        return None
    wq_v, s, z, axis = _dq_parts(dq)
    wq = _const(wq_v)
    if wq is None or wq.dtype != np.int8 or s is None or z is None or np.any(z != 0) or s.dtype != np.float32:
        return None
    channels = wq.shape[channel_axis]
    if s.size == 1:
        return wq, np.full(channels, float(s.reshape(())), np.float32)
    if s.ndim == 1 and s.size == channels and axis % wq.ndim == channel_axis % wq.ndim:
        return wq, s.astype(np.float32)
    return None


def _bias(v: Value | None, scale: np.ndarray) -> tuple[str, np.ndarray] | None:
    """("int", int32 [C]) when v = DequantizeLinear(const int32, scale sx*sw, 0);
    ("float", float32 [C]) for a float constant; ("none", ...) when absent;
    None when neither."""
    if v is None:
        return "none", np.zeros(0)
    c = _const(v)
    if c is not None and c.dtype == np.float32 and c.size == scale.size:
        return "float", c.reshape(-1)
    dq = _dq(v)
    if dq is None:
        return None
    bq_v, s, z, _ = _dq_parts(dq)
    bq = _const(bq_v)
    if bq is None or bq.dtype != np.int32 or bq.size != scale.size or s is None or np.any(z != 0):
        return None
    s = np.broadcast_to(s.reshape(-1), scale.shape).astype(np.float32)
    if not np.allclose(s, scale, rtol=1e-5, atol=0):
        return "float", (bq.reshape(-1) * s).astype(np.float32)  # a scale of its own: applied in float
    return "int", bq.reshape(-1)


def _typed(node: Node, dtype: int, shape) -> Value:
    out = node.outputs[0]
    out.dtype, out.shape = dtype, shape
    return out


@register_pass
@dataclass(frozen=True)
class Int8Compute(Pass):
    """QDQ-wrapped Conv/MatMul/Gemm -> ConvInteger/MatMulInteger + int32 bias + rescale."""

    name: ClassVar[str] = "int8-compute"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            if node.op_type in ("Conv", "MatMul", "Gemm") and node.domain in ("", "ai.onnx"):
                changed |= self._rewrite(graph, node)
        if changed:
            for node in reversed(list(graph.nodes)):
                if node.op_type == "DequantizeLinear" and not any(o.uses or graph.is_output(o) for o in node.outputs):
                    graph.remove(node)
        return changed

    def _rewrite(self, graph: Graph, node: Node) -> bool:
        if graph.root().opset < 10 or len(node.inputs) < 2:
            return False
        act = _activation(node.inputs[0])
        x = node.inputs[0]
        if act is None or x.shape is None:
            return False
        xq, sx, zx = act
        if node.op_type == "Conv":
            group = node.attrs.get("group", 1)
            if len(x.shape) != 4:
                return False
            w = _weight(node.inputs[1], 0)
            if w is None or w[0].ndim != 4:
                return False
            if group != 1 and not (group == x.shape[1] == w[0].shape[0] and w[0].shape[1] == 1):
                return False  # grouped, not depthwise
            wq, sw = w
            broadcast = (1, -1, 1, 1)
        elif node.op_type == "MatMul":
            w = _weight(node.inputs[1], 1)
            if w is None or w[0].ndim != 2 or len(x.shape) < 2:
                return False
            wq, sw = w
            broadcast = (-1,)
        else:  # Gemm
            a = node.attrs
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0) or len(x.shape) != 2:
                return False
            trans_b = a.get("transB", 0)
            w = _weight(node.inputs[1], 0 if trans_b else 1)
            if w is None or w[0].ndim != 2:
                return False
            wq, sw = (w[0].T.copy(), w[1]) if trans_b else w
            broadcast = (-1,)
        scale = (np.float32(sx) * sw).astype(np.float32)
        bias = _bias(node.inputs[2] if len(node.inputs) > 2 else None, scale)
        if bias is None:
            return False
        out = node.outputs[0]
        zp = graph.make_const(np.array(zx, np.uint8 if xq.dtype == onnx.TensorProto.UINT8 else np.int8), "x_zp")
        if node.op_type == "Conv":
            attrs = {k: v for k, v in node.attrs.items() if k in ("auto_pad", "dilations", "group", "kernel_shape",
                                                                  "pads", "strides")}
            core = graph.make_node("ConvInteger", [xq, graph.make_const(wq, "w_int8"), zp], attrs=attrs, before=node)
        else:
            core = graph.make_node("MatMulInteger", [xq, graph.make_const(wq, "w_int8"), zp], before=node)
        acc = _typed(core, onnx.TensorProto.INT32, out.shape)
        kind, b = bias
        if kind == "int":
            add = graph.make_node("Add", [acc, graph.make_const(b.reshape(broadcast), "b_int32")], before=node)
            acc = _typed(add, onnx.TensorProto.INT32, out.shape)
        cast = graph.make_node("Cast", [acc], attrs={"to": onnx.TensorProto.FLOAT}, before=node)
        y = _typed(cast, onnx.TensorProto.FLOAT, out.shape)
        mul = graph.make_node("Mul", [y, graph.make_const(scale.reshape(broadcast), "scale")], before=node)
        y = _typed(mul, onnx.TensorProto.FLOAT, out.shape)
        add = None
        if kind == "float":
            add = graph.make_node("Add", [y, graph.make_const(b.reshape(broadcast), "bias")], before=node)
            y = _typed(add, onnx.TensorProto.FLOAT, out.shape)
        graph.substitute(out, y)
        graph.remove(node)
        _fold_requantization(graph, mul, add if kind == "float" else None)
        return True


def _scalar(v: Value | None) -> float | None:
    c = _const(v)
    return float(c.reshape(())) if c is not None and c.size == 1 else None


def _fold_requantization(graph: Graph, mul: Node, bias: Node | None) -> None:
    """When the rescaled result only feeds (through Relu, Clip or MaxPool,
    which commute with a positive scale) the next QuantizeLinear, fold that
    quantizer's scale sy into the rescale: sx*sw/sy, bounds and float bias
    divided by sy, and the quantizer's scale becomes 1 (lowering then skips
    its division). This is requantization as integer kernels do it: one
    multiply per output."""
    v, chain = (bias or mul).outputs[0], []
    while True:
        if graph.is_output(v) or len(v.uses) != 1:
            return
        user, index = v.uses[0]
        if index != 0 or user.domain not in ("", "ai.onnx"):
            return
        if user.op_type == "QuantizeLinear":
            break
        if user.op_type == "Clip" and not any(k in user.attrs for k in ("min", "max")) and all(
                _scalar(b) is not None for b in user.inputs[1:] if b is not None):
            chain.append(user)
        elif user.op_type == "Relu" or (user.op_type == "MaxPool" and len(user.outputs) == 1):
            chain.append(user)
        else:
            return
        v = user.outputs[0]
    sy = _scalar(user.inputs[1]) if len(user.inputs) > 1 else None
    if sy is None or not sy > 0:
        return
    div = np.float32(sy)
    graph.set_input(mul, 1, graph.make_const((_const(mul.inputs[1]) / div).astype(np.float32), "requant_scale"))
    if bias is not None:
        graph.set_input(bias, 1, graph.make_const((_const(bias.inputs[1]) / div).astype(np.float32), "bias"))
    for clip in (n for n in chain if n.op_type == "Clip"):
        for i, b in enumerate(clip.inputs[1:], start=1):
            if b is not None:
                graph.set_input(clip, i, graph.make_const(np.array(_scalar(b) / div, np.float32), "bound"))
    graph.set_input(user, 1, graph.make_const(np.array(1.0, np.float32), "unit_scale"))
