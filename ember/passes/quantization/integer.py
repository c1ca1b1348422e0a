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
quantizer's scale is folded into the rescale (`_requantizer`).

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

from ember.compiler.ir import Graph, Node, Value, const_array
from ember.passes.manager import Pass, register_pass

INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)



def _dq(v: Value | None) -> Node | None:
    """The (unblocked) DequantizeLinear producing v, or None."""
    p = v.producer if v is not None else None
    if p is None or p.op_type != "DequantizeLinear" or p.domain not in ("", "ai.onnx") or p.attrs.get("block_size", 0):
        return None
    return p


def _dq_parts(node: Node):
    """(quantized input, scale array, zero point array, axis) of a DequantizeLinear."""
    ins = list(node.inputs) + [None] * 3
    zp = const_array(ins[2]) if ins[2] is not None else np.zeros((), np.uint8)
    return ins[0], const_array(ins[1]), zp, node.attrs.get("axis", 1)


def _activation(v: Value) -> tuple[Value, float, int] | None:
    """(xq, sx, zx) when v = DequantizeLinear(8-bit xq, constant scalar scale and zero point)."""
    dq = _dq(v)
    if dq is None:
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
    if dq is None:
        return None
    wq_v, s, z, axis = _dq_parts(dq)
    wq = const_array(wq_v)
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
    c = const_array(v)
    if c is not None and c.dtype == np.float32 and c.size == scale.size:
        return "float", c.reshape(-1)
    dq = _dq(v)
    if dq is None:
        return None
    bq_v, s, z, _ = _dq_parts(dq)
    bq = const_array(bq_v)
    if bq is None or bq.dtype != np.int32 or bq.size != scale.size or s is None or np.any(z != 0):
        return None
    s = np.broadcast_to(s.reshape(-1), scale.shape).astype(np.float32)
    if not np.allclose(s, scale, rtol=1e-5, atol=0):
        return "float", (bq.reshape(-1) * s).astype(np.float32)  # a scale of its own: applied in float
    return "int", bq.reshape(-1)


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
        kind, b = bias
        out = node.outputs[0]
        requant = _requantizer(graph, out)
        if requant is not None:  # the next quantizer's scale moves into this rescale
            sy = requant[0]
            scale = (scale / sy).astype(np.float32)
            b = (b / sy).astype(np.float32) if kind == "float" else b

        def emit(op: str, inputs: list, dtype: int, **attrs) -> Value:
            new = graph.make_node(op, inputs, attrs=attrs, before=node)
            new.outputs[0].dtype, new.outputs[0].shape = dtype, out.shape
            return new.outputs[0]

        zp = graph.make_const(np.array(zx, np.uint8 if xq.dtype == onnx.TensorProto.UINT8 else np.int8), "x_zp")
        core_inputs = [xq, graph.make_const(wq, "w_int8"), zp]
        if node.op_type == "Conv":
            conv_attrs = {k: v for k, v in node.attrs.items()
                          if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
            y = emit("ConvInteger", core_inputs, onnx.TensorProto.INT32, **conv_attrs)
        else:
            y = emit("MatMulInteger", core_inputs, onnx.TensorProto.INT32)
        if kind == "int":
            y = emit("Add", [y, graph.make_const(b.reshape(broadcast), "b_int32")], onnx.TensorProto.INT32)
        y = emit("Cast", [y], onnx.TensorProto.FLOAT, to=onnx.TensorProto.FLOAT)
        y = emit("Mul", [y, graph.make_const(scale.reshape(broadcast), "scale")], onnx.TensorProto.FLOAT)
        if kind == "float":
            y = emit("Add", [y, graph.make_const(b.reshape(broadcast), "bias")], onnx.TensorProto.FLOAT)
        graph.substitute(out, y)
        graph.remove(node)
        if requant is not None:
            _unit_requantizer(graph, *requant)
        return True


def _scalar(v: Value | None) -> float | None:
    c = const_array(v)
    return float(c.reshape(())) if c is not None and c.size == 1 else None


def _requantizer(graph: Graph, v: Value) -> tuple[float, Node, list[Node]] | None:
    """(sy, the QuantizeLinear, the Clip/Relu/MaxPool between) when v only feeds,
    through ops that commute with a positive scale, a QuantizeLinear of constant
    scalar scale sy. Its scale can then be folded into v's producer: rescale,
    float bias and Clip bounds divided by sy, the quantizer's scale set to 1
    (lowering then skips its division). This is requantization as integer
    kernels do it: one multiply per output."""
    chain = []
    while True:
        if graph.is_output(v) or len(v.uses) != 1:
            return None
        user, index = v.uses[0]
        if index != 0 or user.domain not in ("", "ai.onnx"):
            return None
        if user.op_type == "QuantizeLinear":
            break
        if user.op_type == "Clip" and not any(k in user.attrs for k in ("min", "max")) and all(
                _scalar(b) is not None for b in user.inputs[1:] if b is not None):
            chain.append(user)
        elif user.op_type == "Relu" or (user.op_type == "MaxPool" and len(user.outputs) == 1):
            chain.append(user)
        else:
            return None
        v = user.outputs[0]
    sy = _scalar(user.inputs[1]) if len(user.inputs) > 1 else None
    if sy is None or not sy > 0:
        return None
    return float(np.float32(sy)), user, chain


def _unit_requantizer(graph: Graph, sy: float, quantizer: Node, chain: list[Node]) -> None:
    """The rest of the fold (see `_requantizer`): Clip bounds over sy, the quantizer's scale 1."""
    for clip in (n for n in chain if n.op_type == "Clip"):
        for i, b in enumerate(clip.inputs[1:], start=1):
            if b is not None:
                graph.set_input(clip, i, graph.make_const(np.array(_scalar(b) / sy, np.float32), "bound"))
    graph.set_input(quantizer, 1, graph.make_const(np.array(1.0, np.float32), "unit_scale"))
