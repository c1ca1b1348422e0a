"""Which layers of an int8 (QDQ) model cost the accuracy: per-layer SQNR against
the float model, the output error left when each layer alone goes back to float,
and the layers whose return to float buys the most accuracy per unit of compute
(the list `ember quantize --exclude` takes)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from ember.compiler.debug.compare import error, onnx_runs
from ember.passes.quantization.quantize import sqnr_db

LAYERS = ("Conv", "Gemm", "MatMul")
MOST_SUGGESTED = 8  # layers a suggestion may send back to float
MOST_MEASURED = 48  # layers (lowest SQNR first) whose return to float is measured one by one


def quantized_layers(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str]]:
    """(layer, its float input) for each Conv/Gemm/MatMul reading a quantize-dequantize
    pair: the layers `ember quantize` (or onnxruntime's quantizer) made int8."""
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for n in graph.node:
        if n.op_type not in LAYERS or not n.input:
            continue
        dq = producer.get(n.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            out.append((n, q.input[0]))
    return out


def in_float(proto: onnx.ModelProto, layers: set[str]) -> onnx.ModelProto:
    """`proto` with the named layers (by output tensor) reading their float input, as
    `--exclude` leaves them (their weights keep the int8 rounding, a small part of the error)."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for n, x in quantized_layers(m.graph):
        if n.output[0] in layers:
            n.input[0] = x
    return m


def analyse(qdq: onnx.ModelProto, source_names: dict[str, str], source: onnx.ModelProto,
            feeds: list[dict[str, np.ndarray]], tol: float,
            requantize: Callable[[set[str]], onnx.ModelProto] | None = None,
            say: Callable[[str], None] = lambda msg: None) -> dict:
    """The int8 report of `qdq` against the float model `source`, over `feeds` (an output
    error is the largest over them; one sample's error moves by its own noise when a layer
    changes). A layer is named by its output tensor's name in the source model
    (`source_names`: name in `qdq` -> source name, for tensors a pass renamed), the name
    `ember quantize --exclude` takes."""
    layers = quantized_layers(qdq.graph)
    if not layers:
        return {"layers": [], "note": "no quantized Conv, Gemm or MatMul (a QuantizeLinear/DequantizeLinear "
                                      "pair on the input) in this model"}
    local = [n.output[0] for n, _ in layers]
    names = [source_names.get(o, o) for o in local]
    identity = {o: o for n in qdq.graph.node for o in n.output}
    own = {o: o for n in source.graph.node for o in n.output}
    outputs = [o.name for o in qdq.graph.output]

    def run(model: onnx.ModelProto, wanted: list[str], names_: dict[str, str]) -> list[dict[str, np.ndarray]]:
        return onnx_runs(model, names_, feeds, wanted)

    got = run(qdq, local + outputs, identity)
    ref = run(source, names + outputs, own)

    def out_error(runs: list[dict[str, np.ndarray]]) -> float:
        return max((error(r[o], g[o]) for r, g in zip(ref, runs) for o in outputs if o in r and o in g),
                   default=0.0)

    def sqnr(name: str, o: str) -> float | None:
        if any(name not in r for r in ref):
            return None
        flat = (lambda runs, key: np.concatenate([np.asarray(x[key], np.float64).reshape(-1) for x in runs]))
        return round(sqnr_db(flat(ref, name), flat(got, o)), 2)

    base = out_error(got)
    flops = _layer_flops(qdq.graph, [n for n, _ in layers], got[0])
    total = sum(flops.get(n, 0) for n in local) or 1
    rows = []
    for (node, _), name, o in zip(layers, names, local):
        rows.append({"layer": name, "tensor": o, "node": node.name, "op": node.op_type, "sqnr_db": sqnr(name, o),
                     "compute_share": flops.get(o, 0) / total})
    measured = sorted(rows, key=lambda r: (r["sqnr_db"] is None, r["sqnr_db"] or 0.0))[:MOST_MEASURED]
    for k, row in enumerate(measured):
        say(f"int8: layer {k + 1}/{len(measured)} back to float: {row['layer']}")
        row["error_in_float"] = out_error(run(in_float(qdq, {row["tensor"]}), outputs, identity))
        row["recovered"] = base - row["error_in_float"]
        row["per_compute"] = row["recovered"] / max(row["compute_share"], 1e-3)
    report: dict = {"error": base, "tol": tol, "samples": len(feeds), "layers": rows}
    ranked = sorted((r for r in measured if r["recovered"] > 0), key=lambda r: -r["per_compute"])
    chosen: list[dict] = []
    err = base
    for row in ranked[:MOST_SUGGESTED]:
        if err <= tol:
            break
        chosen.append(row)
        err = out_error(run(in_float(qdq, {r["tensor"] for r in chosen}), outputs, identity))
    if chosen:
        report["exclude"] = [r["layer"] for r in chosen]
        report["error_excluded"] = err
        if requantize is not None:  # what the suggestion gives when quantizing again
            say(f"int8: quantizing again with --exclude {' '.join(report['exclude'])}")
            again = requantize(set(report["exclude"]))
            report["error_requantized"] = out_error(run(again, outputs, {o.name: o.name for o in again.graph.output}))
    return report


def _layer_flops(graph: onnx.GraphProto, layers: list[onnx.NodeProto], outputs: dict[str, np.ndarray]) -> dict[str, int]:
    """Each layer's multiply-adds on this run, from its output (as computed) and its weight's
    shape (the initializer its DequantizeLinear reads): symbolic dims are known by now."""
    producer = {o: n for n in graph.node for o in n.output}
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    out = {}
    for n in layers:
        w = producer.get(n.input[1]) if len(n.input) > 1 else None
        shape = shapes.get(w.input[0] if w is not None and w.op_type == "DequantizeLinear" else n.input[1])
        y = outputs.get(n.output[0])
        if shape is None or y is None or len(shape) < 2:
            continue
        if n.op_type == "Conv":
            per_output = int(np.prod(shape[1:]))
        elif n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
            per_output = shape[1]
        else:
            per_output = shape[0]
        out[n.output[0]] = int(y.size) * per_output
    return out
