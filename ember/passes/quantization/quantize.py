"""`ember quantize`: calibrated post-training int8 quantization, written as a
QDQ ONNX model (QuantizeLinear/DequantizeLinear pairs around the operators
that benefit) that onnxruntime and Ember both run.

- Weights of Conv, Gemm and MatMul: int8, symmetric, one scale per output
  channel; biases int32 with scale = input scale x weight scale.
- Activations entering those operators: one scale per tensor, uint8
  asymmetric (default) or int8 symmetric, from an observer over the
  calibration data: minmax, percentile (99.99th), entropy (the KL-divergence
  threshold search of TensorRT's calibrator) or mse (the clipping threshold
  with the least quantization error). A residual Add between quantized
  layers reads the quantized form of such a tensor.
- Accuracy tools: a per-layer report (SQNR of each quantized layer's output
  against the float model's), bias correction, and `max_drop`: the layers
  with the worst SQNR go back to float until the error budget holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from ember.passes import optimize

from ember.passes import calibration
from ember.compiler import ir
from ember.compiler.ir import onnx_io
from ember.errors import EmberError
from ember.passes.pruning.prune import Size, accuracy, drop_dead_weights, rel_error

OBSERVERS = ("minmax", "percentile", "entropy", "mse")
LAYERS = ("Conv", "Gemm", "MatMul")


# ---------------------------------------------------------------- observers
def activation_range(x: np.ndarray, method: str = "minmax", percentile: float = 99.99) -> tuple[float, float]:
    """The (low, high) range an activation tensor is quantized to."""
    x = x.astype(np.float32).reshape(-1)
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if method == "minmax" or lo == hi:
        return lo, hi
    if method == "percentile":
        return (float(np.percentile(x, 100 - percentile)) if lo < 0 else 0.0,
                float(np.percentile(x, percentile)))
    signed = lo < 0
    t = _entropy_threshold(x, signed) if method == "entropy" else _mse_threshold(x, signed)
    return (-t if signed else 0.0), t if signed or hi > 0 else 0.0


def _entropy_threshold(x: np.ndarray, signed: bool, bins: int = 2048) -> float:
    """TensorRT's calibration: the |x| threshold whose clipped histogram loses
    the least information (KL divergence) when merged into the quantizer's
    levels (128 per side when signed, 256 when not). The spike of exact zeros
    (ReLU outputs) is flattened first, as NVIDIA's calibrator does, or it
    would dominate the divergence."""
    levels = 128 if signed else 256
    a = np.abs(x)
    top = float(a.max())
    hist, edges = np.histogram(a, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    hist[0] = hist[1]
    best, best_t = np.inf, top
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers clipped into the last bin
        nz = p > 0
        # the kept range merged into `levels` bins, spread back over the bins it uses; the
        # clipped mass is in p (last bin) but not in q: that is what clipping costs
        q = np.zeros(i)
        for chunk in np.array_split(np.arange(i), levels):
            c = hist[chunk]
            used = (c > 0).sum()
            if used:
                q[chunk] = np.where(c > 0, c.sum() / used, 0.0)
        if not nz.any():
            continue
        # smoothing: mass p has where q has none (a clipped tail landing on an empty
        # bin) must cost, not be skipped
        q = np.where(nz & (q == 0), 1e-4 * p.sum() / max(1, int(nz.sum())), q)
        p_n, q_n = p[nz] / p.sum(), q[nz] / q[nz].sum()
        kl = float(np.sum(p_n * np.log(p_n / q_n)))
        if kl < best:
            best, best_t = kl, float(edges[i])
    return best_t


def _mse_threshold(x: np.ndarray, signed: bool, steps: int = 40, sample: int = 200000) -> float:
    """The clipping threshold with the least mean squared quantization error."""
    rng = np.random.default_rng(0)
    if x.size > sample:
        x = rng.choice(x, sample, replace=False)
    top = float(np.abs(x).max())
    best, best_t = np.inf, top
    for t in np.linspace(0.2 * top, top, steps):
        lo = -t if signed else 0.0
        s, z = qparams(lo, t, signed)
        err = float(np.mean((fake_quant(x, s, z, signed) - x) ** 2))
        if err < best:
            best, best_t = err, float(t)
    return best_t


def qparams(lo: float, hi: float, symmetric: bool) -> tuple[float, int]:
    """(scale, zero point): int8 symmetric, or uint8 asymmetric."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        s = max(abs(lo), abs(hi)) / 127.0
        return (s or 1.0), 0
    s = (hi - lo) / 255.0
    if s == 0:
        return 1.0, 0
    return s, int(np.clip(round(-lo / s), 0, 255))


def fake_quant(x: np.ndarray, s: float, z: int, symmetric: bool) -> np.ndarray:
    qmin, qmax = (-128, 127) if symmetric else (0, 255)
    return (np.clip(np.round(x / s) + z, qmin, qmax) - z) * s


def weight_axis(node: ir.Node) -> int:
    """Axis of the weight that holds output channels."""
    if node.op_type == "Conv" or node.op_type == "Gemm" and node.attrs.get("transB", 0):
        return 0
    return 1


def quantize_weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and per-channel scales along `axis` (one scale when None), symmetric."""
    if axis is None:
        s = np.array(np.abs(w).max() / 127.0, dtype=np.float32)
        s = s if s > 0 else np.float32(1.0)
        return np.clip(np.round(w / s), -127, 127).astype(np.int8), s
    other = tuple(i for i in range(w.ndim) if i != axis)
    s = np.abs(w).max(axis=other) / 127.0
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
    return q, s


# ---------------------------------------------------------------- the rewrite
def quantizable(graph: ir.Graph, exclude: set[str] = frozenset()) -> list[ir.Node]:
    out = []
    for n in graph.nodes:
        names = {n.op_type, n.name, n.outputs[0].name} | n.outputs[0].aliases  # aliases: the source's names
        if n.op_type not in LAYERS or names & set(exclude):
            continue
        w = n.inputs[1] if len(n.inputs) > 1 else None
        if w is None or w.const is None or w.const.numpy().dtype != np.float32 or len(w.const.shape) < 2:
            continue
        if n.op_type == "Gemm" and (n.attrs.get("transA", 0) or len(w.const.shape) != 2):
            continue
        if n.op_type == "MatMul" and len(w.const.shape) != 2:
            continue
        if n.inputs[0] is None or n.inputs[0].const is not None:
            continue
        out.append(n)
    return out


def insert_qdq(graph: ir.Graph, layers: list[ir.Node], ranges: dict[str, tuple[float, float]],
               symmetric: bool, per_channel: bool = True) -> None:
    """Rewrite `layers` to take DequantizeLinear'd int8 weights, int32 biases
    and quantized activations (one Q/DQ pair per activation tensor). Weight
    scales are per output channel where the opset allows it (13+)."""
    act: dict[str, tuple[ir.Value, float]] = {}
    zp_dtype = np.int8 if symmetric else np.uint8
    for node in layers:
        x = node.inputs[0]
        if x.name not in act:
            s, z = qparams(*ranges[x.name], symmetric)
            sv, zv = graph.make_const(np.array(s, np.float32), "scale"), graph.make_const(np.array(z, zp_dtype), "zp")
            q = graph.make_node("QuantizeLinear", [x, sv, zv], before=node)
            q.outputs[0].dtype = onnx.TensorProto.INT8 if symmetric else onnx.TensorProto.UINT8
            q.outputs[0].shape = x.shape
            dq = graph.make_node("DequantizeLinear", [q.outputs[0], sv, zv], before=node)
            dq.outputs[0].dtype, dq.outputs[0].shape = onnx.TensorProto.FLOAT, x.shape
            act[x.name] = (dq.outputs[0], s)
        xdq, sx = act[x.name]
        for user, i in [(u, i) for u, i in list(x.uses) if u is node and i == 0]:
            graph.set_input(user, i, xdq)
        w = node.inputs[1].const.numpy()
        axis = weight_axis(node) if per_channel else None
        wq, sw = quantize_weight(w, axis)
        wdq = graph.make_node("DequantizeLinear", [graph.make_const(wq, "w_int8"), graph.make_const(sw, "w_scale"),
                                                   graph.make_const(np.zeros(sw.shape, np.int8), "w_zp")],
                              attrs={"axis": axis} if per_channel else {}, before=node)
        sw = np.broadcast_to(sw, (w.shape[weight_axis(node)],))
        wdq.outputs[0].dtype, wdq.outputs[0].shape = onnx.TensorProto.FLOAT, tuple(w.shape)
        graph.set_input(node, 1, wdq.outputs[0])
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None and b.const is not None and b.const.numpy().reshape(-1).size == len(sw):
            bs = (sx * sw).astype(np.float32)
            bq = np.round(b.const.numpy().reshape(-1) / bs).astype(np.int32)
            if not per_channel:  # one scale: sx * sw is the same for every channel
                bs = bs[:1].reshape(())
                bq = np.round(b.const.numpy().reshape(-1) / bs).astype(np.int32)
            bdq = graph.make_node("DequantizeLinear", [graph.make_const(bq, "b_int32"), graph.make_const(bs, "b_scale"),
                                                       graph.make_const(np.zeros(bs.shape, np.int32), "b_zp")],
                                  attrs={"axis": 0} if per_channel else {}, before=node)
            bdq.outputs[0].dtype, bdq.outputs[0].shape = onnx.TensorProto.FLOAT, (len(bq),)
            if b.const.numpy().ndim != 1:
                shape = graph.make_const(np.array(b.const.numpy().shape, np.int64), "b_shape")
                r = graph.make_node("Reshape", [bdq.outputs[0], shape], before=node)
                r.outputs[0].dtype, r.outputs[0].shape = onnx.TensorProto.FLOAT, tuple(b.const.numpy().shape)
                graph.set_input(node, 2, r.outputs[0])
            else:
                graph.set_input(node, 2, bdq.outputs[0])
    _join_quantized(graph, {name: v for name, (v, _) in act.items()})


def _join_quantized(graph: ir.Graph, dequantized: dict[str, ir.Value]) -> None:
    """Residual joins between quantized layers (an Add or Sum whose result is
    quantized, directly or through Relu and MaxPool) read the quantized form
    of inputs that are quantized anyway, as onnxruntime's QLinearAdd does:
    then the float tensor has no reader left but its quantizer, which folds
    into the layer that produced it (8-bit in memory, not float plus a
    separate quantizing pass). A join feeding float ops (a transformer's Add
    before LayerNorm) stays float."""
    for node in list(graph.nodes):
        if node.op_type not in ("Add", "Sum"):
            continue
        out = node.outputs[0]
        while out.name not in dequantized and len(out.uses) == 1 and out.uses[0][0].op_type in ("Relu", "MaxPool"):
            out = out.uses[0][0].outputs[0]
        if out.name not in dequantized:
            continue
        for i, x in enumerate(node.inputs):
            if x is not None and x.name in dequantized:
                graph.set_input(node, i, dequantized[x.name])


def quantize_embeddings(graph: ir.Graph, min_elements: int = 4096) -> int:
    """Weight-only int8 for embedding tables (Gather from a constant float
    matrix along axis 0): int8 rows and one scale per row, gathered first and
    scaled after, so only the looked-up rows are ever dequantized. Returns
    how many tables were rewritten."""
    done = 0
    for node in list(graph.nodes):
        table = node.inputs[0] if node.op_type == "Gather" and node.inputs else None
        if (table is None or table.const is None or node.attrs.get("axis", 0) != 0 or len(table.const.shape) != 2
                or table.const.numpy().dtype != np.float32 or table.const.numpy().size < min_elements):
            continue
        ids, out = node.inputs[1], node.outputs[0]
        q, s = quantize_weight(table.const.numpy(), 0)
        rows = graph.make_node("Gather", [graph.make_const(q, "emb_int8"), ids], attrs={"axis": 0}, before=node)
        cast = graph.make_node("Cast", [rows.outputs[0]], attrs={"to": onnx.TensorProto.FLOAT}, before=node)
        scale = graph.make_node("Gather", [graph.make_const(s.reshape(-1, 1), "emb_scale"), ids], attrs={"axis": 0},
                                before=node)
        mul = graph.make_node("Mul", [cast.outputs[0], scale.outputs[0]], before=node)
        shape = out.shape
        rows.outputs[0].dtype, rows.outputs[0].shape = onnx.TensorProto.INT8, shape
        cast.outputs[0].dtype, cast.outputs[0].shape = onnx.TensorProto.FLOAT, shape
        scale.outputs[0].dtype = onnx.TensorProto.FLOAT
        scale.outputs[0].shape = None if shape is None else tuple(shape[:-1]) + (1,)
        mul.outputs[0].dtype, mul.outputs[0].shape = onnx.TensorProto.FLOAT, shape
        graph.substitute(out, mul.outputs[0])
        graph.remove(node)
        done += 1
    return done


# ---------------------------------------------------------------- the driver
@dataclass
class QuantReport:
    calibrate: str
    before: Size
    after: Size | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)  # per layer: name, op, sqnr_db
    in_float: list[str] = field(default_factory=list)
    embeddings: int = 0  # embedding tables made int8 (weight-only)
    error: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{len(self.layers)} layers int8 ({self.calibrate} calibration)"
               + (f", {self.embeddings} embedding tables int8 (weight-only)" if self.embeddings else "")
               + (f"; kept in float: {', '.join(self.in_float)}" if self.in_float else ""),
               f"file {self.before.file_bytes / 1e6:.2f} MB -> {self.after.file_bytes / 1e6:.2f} MB"]
        if self.error is not None:
            out.append(f"output error vs the float model on calibration data: {self.error:.4f}")
        if self.accuracy:
            out.append("top-1 accuracy on the calibration labels: "
                       + ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.accuracy.items()))
        worst = sorted(self.layers, key=lambda d: d["sqnr_db"])[:5]
        if worst:
            out.append("lowest SQNR (dB, int8 vs float layer output): "
                       + ", ".join(f"{d['layer']} {d['sqnr_db']:.1f}" for d in worst))
        return out


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    return 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise) if noise > 0 else 200.0


def quantize(model: Any, calib: list[dict[str, np.ndarray]], *, calibrate: str = "minmax",
             symmetric: bool = False, exclude: set[str] = frozenset(), bias_correction: bool = False,
             max_drop: float | None = None, labels: np.ndarray | None = None, embeddings: bool = True,
             say: Callable[[str], None] = lambda msg: None) -> tuple[ir.Model, QuantReport]:
    """Quantize a model (path, ModelProto or IR) to QDQ int8; returns the IR and a report."""
    if calibrate not in OBSERVERS:
        raise EmberError(f"unknown calibration {calibrate!r}; choose one of {', '.join(OBSERVERS)}")
    if not calib:
        raise EmberError("quantization needs calibration data (--calib-data, or --random-calib to accept "
                         "unknown accuracy)")
    fp = _at_least_opset_13(onnx_io.as_ir(model), say)
    optimize(fp, "cleanup,fold-batchnorm")
    drop_dead_weights(fp.graph)
    fp_proto = onnx_io.export_model(fp)
    report = QuantReport(calibrate=calibrate, before=Size.of(fp_proto))
    layers = quantizable(fp.graph, set(exclude))
    if not layers:
        raise EmberError("nothing to quantize: no Conv, Gemm or MatMul with constant float weights")
    say(f"calibrating {len(layers)} layers' inputs on {len(calib)} batches ({calibrate})")
    acts = calibration.activations(fp_proto, calib, sorted({n.inputs[0].name for n in layers})
                                   + [n.outputs[0].name for n in layers])
    ranges = {name: activation_range(acts[name], calibrate) for name in {n.inputs[0].name for n in layers}}
    ref = calibration.outputs(fp_proto, calib)
    if labels is not None:
        report.accuracy["float"] = accuracy(ref, labels)
    in_float: list[str] = []
    per_channel = fp.opset >= 13
    while True:
        q = onnx_io.as_ir(fp)
        chosen = [n for n in quantizable(q.graph, set(exclude)) if n.outputs[0].name not in in_float]
        if bias_correction:
            _correct_biases(q, chosen, acts, ranges, symmetric, per_channel, calib, say)
        insert_qdq(q.graph, chosen, ranges, symmetric, per_channel)
        report.embeddings = quantize_embeddings(q.graph) if embeddings and "Gather" not in exclude else 0
        drop_dead_weights(q.graph)
        q.verify()
        proto = onnx_io.export_model(q)
        out = calibration.activations(proto, calib, [n.outputs[0].name for n in chosen]
                                      + [o.name for o in proto.graph.output])
        got = [out[o.name] for o in proto.graph.output]
        report.layers = [{"layer": n.outputs[0].name, "op": n.op_type,
                          "sqnr_db": round(sqnr_db(acts[n.outputs[0].name], out[n.outputs[0].name]), 2)}
                         for n in chosen]
        report.error = rel_error(got, ref)
        drop = (100 * (report.accuracy["float"] - accuracy(got, labels)) if labels is not None else report.error)
        if max_drop is None or drop <= max_drop or not report.layers:
            break
        worst = min(report.layers, key=lambda d: d["sqnr_db"])["layer"]
        say(f"error {drop:.4f} over --max-drop {max_drop}: {worst} back to float")
        in_float.append(worst)
    report.in_float = in_float
    if labels is not None:
        report.accuracy["int8"] = accuracy(got, labels)
    report.after = Size.of(proto)
    return q, report


def _at_least_opset_13(m: ir.Model, say) -> ir.Model:
    """QuantizeLinear needs opset 10 and per-channel scales 13: older models
    are converted with onnx's version converter (or refused, clearly)."""
    if m.opset >= 13:
        return m
    from onnx import version_converter

    say(f"converting the model from opset {m.opset} to 13 (per-channel QuantizeLinear needs it)")
    try:
        proto = version_converter.convert_version(onnx_io.export_model(m), 13)
        return onnx_io.import_model(proto)
    except Exception as e:
        raise EmberError(f"quantization needs opset 13 and this model is opset {m.opset}; onnx's version "
                         f"converter failed: {str(e).splitlines()[0][:200]}") from None


def _correct_biases(q: ir.Model, layers: list[ir.Node], acts: dict[str, np.ndarray],
                    ranges: dict[str, tuple[float, float]], symmetric: bool, per_channel: bool, calib,
                    say) -> None:
    """Bias correction: each layer's float bias absorbs the mean shift (per
    output channel) that quantizing its weights and input causes, measured
    layer by layer on the calibration data."""
    from ember.passes.pruning.channels import set_const

    for k, node in enumerate(layers):
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is None or b.const is None:
            continue
        trial = onnx_io.as_ir(q)
        tnode = next(n for n in trial.graph.nodes if n.outputs and n.outputs[0].name == node.outputs[0].name)
        insert_qdq(trial.graph, [tnode], ranges, symmetric, per_channel)
        name = node.outputs[0].name
        got = calibration.activations(onnx_io.export_model(trial), calib, [name])[name]
        axis = 1 if node.op_type == "Conv" else got.ndim - 1
        other = tuple(i for i in range(got.ndim) if i != axis)
        delta = (acts[name].astype(np.float64) - got).mean(axis=other)
        bias = b.const.numpy()
        if delta.size == bias.size:
            set_const(q.graph, node, 2, (bias.reshape(-1) + delta).reshape(bias.shape))
        say(f"bias correction {k + 1}/{len(layers)}: {name}")
