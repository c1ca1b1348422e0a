"""`ember prune`: make a model smaller, and refit it to keep its accuracy.

1. The model is cleaned up and its BatchNormalizations folded (the
   "teacher": same function, fewer tensors to track).
2. A copy loses channels (`channel`: whole output channels, physically
   removed), or weights (`magnitude`, `n:m`: zeros). Per-layer channel ratios
   come from `sparsity`, or from a sensitivity analysis that meets a global
   `target_sparsity` (fraction of weight parameters removed) at the least
   measured error, within `max_drop`.
3. With `reconstruct`, every Conv/Gemm/MatMul from the first changed one on
   is refitted by least squares, in order, so that on the calibration data
   its output matches the teacher's (passes/pruning/reconstruct.py).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from ember.passes import optimize

from ember.passes import calibration
from ember.compiler import ir
from ember.compiler.ir import onnx_io
from ember.errors import EmberError

METHODS = ("channel", "magnitude", "n:m")
RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
ACTIVATION_BYTES = 512 << 20  # of calibration activations held to choose channels


@dataclass
class Size:
    params: int = 0
    nonzero: int = 0
    file_bytes: int = 0
    compressed_bytes: int = 0  # the ONNX file deflated: what zeros buy

    @classmethod
    def of(cls, proto: onnx.ModelProto) -> "Size":
        data = proto.SerializeToString()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("model.onnx", data)
        s = cls(file_bytes=len(data), compressed_bytes=len(buf.getvalue()))
        for t in proto.graph.initializer:
            a = onnx.numpy_helper.to_array(t)
            if a.dtype.kind == "f":
                s.params += a.size
                s.nonzero += int(np.count_nonzero(a))
        return s


@dataclass
class PruneReport:
    method: str
    before: Size
    after: Size | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)  # per pruned space / layer
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    error_pruned: float | None = None  # relative output error vs the original, on calibration data
    error_reconstructed: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # with labels: original / pruned / reconstructed
    reconstructed: int = 0

    def lines(self) -> list[str]:
        b, a = self.before, self.after
        out = [f"parameters {b.params:,} -> {a.params:,} ({100 * (1 - a.params / max(1, b.params)):.1f}% removed); "
               f"nonzero {b.nonzero:,} -> {a.nonzero:,}",
               f"file {b.file_bytes / 1e6:.2f} MB -> {a.file_bytes / 1e6:.2f} MB; compressed (deflate) "
               f"{b.compressed_bytes / 1e6:.2f} MB -> {a.compressed_bytes / 1e6:.2f} MB"]
        if self.method != "channel":
            out.append("zeros shrink the compressed file only: dense kernels run no faster")
        if self.error_pruned is not None:
            line = f"output error vs the original on calibration data: {self.error_pruned:.4f} pruned"
            if self.error_reconstructed is not None:
                line += f", {self.error_reconstructed:.4f} after reconstructing {self.reconstructed} layers"
            out.append(line)
        if self.accuracy:
            out.append("top-1 accuracy on the calibration labels: " +
                       ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.accuracy.items()))
        return out


def rel_error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    num = sum(float(np.sum((g.astype(np.float64) - r) ** 2)) for g, r in zip(got, ref))
    den = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    return (num / den) ** 0.5 if den else 0.0


def accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    logits = outputs[0].reshape(len(labels), -1)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def drop_dead_weights(g: ir.Graph) -> None:
    """Remove the weights nothing reads any more, including those old (IR < 4)
    models also list as graph inputs."""
    g.inputs = [v for v in g.inputs if v.const is None or v.uses or g.is_output(v)]
    g.remove_unused_initializers()


def prune(model: Any, method: str = "channel", sparsity: float = 0.5, *, nm: tuple[int, int] = (2, 4),
          scope: str = "layer", norm: str = "l2", multiple: int = 8, reconstruct: bool = False,
          calib: list[dict[str, np.ndarray]] | None = None, labels: np.ndarray | None = None,
          target_sparsity: float | None = None, max_drop: float | None = None, select: str | None = None,
          say: Callable[[str], None] = lambda msg: None) -> tuple[ir.Model, PruneReport]:
    """Prune a model (path, ModelProto or IR); returns the pruned IR model and a report.
    With calibration data, channels are chosen so the layers after them stay best rebuilt
    from the channels kept (`select="reconstruction"`, the default with `reconstruct`), or by
    the energy they send there (`"energy"`, the default without: nothing is refit then); see
    `channels.channel_scores`."""
    from ember.passes.pruning import PruneMagnitude, PruneNM, channels

    select = select or ("reconstruction" if reconstruct else "energy")
    if select not in channels.SELECTIONS:
        raise EmberError(f"unknown channel selection {select!r}; choose one of {', '.join(channels.SELECTIONS)}")
    if method not in METHODS:
        raise EmberError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= sparsity < 1.0:
        raise EmberError(f"--sparsity must be in [0, 1), got {sparsity}")
    if target_sparsity is not None and not 0.0 < target_sparsity < 1.0:
        raise EmberError(f"--target-sparsity must be in (0, 1), got {target_sparsity}")
    if (reconstruct or target_sparsity is not None or max_drop is not None) and not calib:
        raise EmberError("reconstruction and sensitivity analysis need calibration data (--calib-data)")
    if (target_sparsity is not None or max_drop is not None) and method != "channel":
        raise EmberError("--target-sparsity/--max-drop pick per-layer channel ratios: use --method channel")
    teacher = onnx_io.as_ir(model)
    optimize(teacher, "cleanup,fold-batchnorm")
    drop_dead_weights(teacher.graph)
    teacher_proto = onnx_io.export_model(teacher)
    report = PruneReport(method=method, before=Size.of(teacher_proto))
    ref = calibration.outputs(teacher_proto, calib) if calib else None
    if ref is not None and labels is not None:
        report.accuracy["original"] = accuracy(ref, labels)

    student = onnx_io.as_ir(teacher)
    keeps: dict[str, np.ndarray] = {}  # tensor of a pruned space -> its kept channels
    if method == "channel":
        spaces = channels.prunable(student.graph)  # the teacher's, too: student is a copy
        acts = None
        if calib:  # rank channels by how well the rest rebuild what the layers after them compute
            sinks = sorted({n.inputs[0].name for sp in spaces for n, _ in sp.sinks})
            one = calibration.activations(teacher_proto, calib[:1], sinks)
            per_batch = sum(a.nbytes for a in one.values()) or 1
            acts = calibration.activations(teacher_proto, calib[:max(1, min(256, ACTIVATION_BYTES // per_batch))],
                                           sinks)
        scores = [channels.channel_scores(sp, norm, acts, select) for sp in spaces]  # before any edit
        ratios = ([sparsity] * len(spaces) if target_sparsity is None and max_drop is None
                  else _sensitivity(teacher, calib, labels, ref, target_sparsity, max_drop, multiple, scores,
                                    [sp.name for sp in spaces], report, say))
        for sp, ratio, score in zip(spaces, ratios, scores):
            before = sp.channels
            keep = channels.keep_channels(score, ratio, multiple)
            if len(keep) < before:
                keeps.update((v.name, keep) for v, _ in sp.values)
                channels.apply(student.graph, sp, keep)
            report.layers.append({"space": sp.name, "layers": [p.outputs[0].name for p in sp.producers],
                                  "channels": before, "kept": len(keep)})
    elif method == "magnitude":
        PruneMagnitude(sparsity=sparsity, scope=scope).run(student.graph)
    else:
        PruneNM(n=nm[0], m=nm[1]).run(student.graph)
    drop_dead_weights(student.graph)
    student.verify()
    say(f"pruned: {len(report.layers)} channel groups" if method == "channel" else f"pruned ({method})")

    if ref is not None:
        pruned_out = calibration.outputs(onnx_io.export_model(student), calib)
        report.error_pruned = rel_error(pruned_out, ref)
        if labels is not None:
            report.accuracy["pruned"] = accuracy(pruned_out, labels)
    if reconstruct:
        report.reconstructed = _reconstruct(teacher, teacher_proto, student, keeps, calib, say)
        out = calibration.outputs(onnx_io.export_model(student), calib)
        report.error_reconstructed = rel_error(out, ref)
        if labels is not None:
            report.accuracy["reconstructed"] = accuracy(out, labels)
    report.after = Size.of(onnx_io.export_model(student))
    return student, report


def _reconstruct(teacher: ir.Model, teacher_proto: onnx.ModelProto, student: ir.Model,
                 keeps: dict[str, np.ndarray], calib: list[dict[str, np.ndarray]], say) -> int:
    """Refit every supported layer from the first changed one on; returns how many."""
    from ember.passes.pruning import reconstruct as rc
    from ember.passes.pruning.channels import set_const

    # layers are matched by their output tensor's name (node names may be empty)
    tnodes = {n.outputs[0].name: n for n in teacher.graph.nodes if n.outputs}
    layers = [n for n in student.graph.nodes
              if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1 and n.inputs[1] is not None
              and n.inputs[1].const is not None and (rc.supported(n) or _bias(n) is not None)
              and n.outputs[0].name in tnodes]

    def changed(n: ir.Node) -> bool:
        w0 = tnodes[n.outputs[0].name].inputs[1].const.numpy()
        return not np.array_equal(n.inputs[1].const.numpy(), w0)

    first = next((i for i, n in enumerate(layers) if changed(n)), None)
    if first is None:
        return 0
    layers = layers[first:]
    targets = calibration.activations(teacher_proto, calib, [n.outputs[0].name for n in layers])
    done = 0
    for k, node in enumerate(layers):
        name = node.outputs[0].name
        say(f"reconstructing layer {k + 1}/{len(layers)}: {node.op_type} -> {name}")
        y = targets[name]
        axis = 1 if node.op_type == "Conv" else y.ndim - 1
        if name in keeps:
            y = np.take(y, keeps[name], axis=axis)
        if not rc.supported(node):  # depthwise: bias correction only
            done += _correct_bias(student, node, y, axis, calib)
            continue
        x = calibration.activations(onnx_io.export_model(student), calib, [node.inputs[0].name])[node.inputs[0].name]
        w = node.inputs[1].const.numpy()
        a, yt = rc.layer_rows(node, x, y)
        wmat = rc.weight_matrix(node, w)
        bias_in = _bias(node)
        has_bias = bias_in is not None and bias_in.const.numpy().size == len(wmat)
        new_w, b = rc.refit(a, yt, wmat, bias_in.const.numpy().reshape(-1) if has_bias else None)
        if new_w is wmat:  # too large to solve with its zeros kept: bias correction only
            done += _correct_bias(student, node, y, axis, calib) if has_bias else 0
            continue
        set_const(student.graph, node, 1, rc.from_matrix(node, new_w, w.shape))
        if b is not None:
            set_const(student.graph, node, 2, b.reshape(bias_in.const.numpy().shape))
        done += 1
    student.graph.remove_unused_initializers()
    return done


def _bias(node: ir.Node) -> ir.Value | None:
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return b if b is not None and b.const is not None else None


def _correct_bias(student: ir.Model, node: ir.Node, target: np.ndarray, axis: int, calib) -> int:
    """Bias correction: add the mean, per output channel, of what the layer's
    output misses against the original's on the calibration data."""
    from ember.passes.pruning.channels import set_const

    b = _bias(node)
    if b is None:
        return 0
    got = calibration.activations(onnx_io.export_model(student), calib, [node.outputs[0].name])[node.outputs[0].name]
    other = tuple(i for i in range(got.ndim) if i != axis)
    delta = (target.astype(np.float64) - got).mean(axis=other)
    if delta.size != b.const.numpy().size:
        return 0
    set_const(student.graph, node, 2, (b.const.numpy().reshape(-1) + delta).reshape(b.const.numpy().shape))
    return 1


def _sensitivity(teacher: ir.Model, calib, labels, ref, target: float | None, max_drop: float | None,
                 multiple: int, scores: list[np.ndarray], names: list[str], report: PruneReport,
                 say) -> list[float]:
    """Per channel group: the error (accuracy drop in points with labels, else
    relative output error) and parameters removed when only it is pruned, at
    10%..90%. Then greedily raise the ratio that costs least error per
    parameter until `target` of the weights is gone (or `max_drop` would be
    exceeded)."""
    from ember.passes.pruning import channels

    base = report.before.params
    feeds = calib[:4]
    ref4 = [r[:sum(len(next(iter(f.values()))) for f in feeds)] for r in ref]
    lab4 = labels[:len(ref4[0])] if labels is not None else None
    n_spaces = len(names)
    table: list[dict[float, tuple[float, int]]] = []
    base_acc = accuracy(ref4, lab4) if lab4 is not None else None
    for i in range(n_spaces):
        row: dict[float, tuple[float, int]] = {0.0: (0.0, 0)}
        for r in RATIOS:
            m = onnx_io.as_ir(teacher)
            sp = channels.prunable(m.graph)[i]
            channels.apply(m.graph, sp, channels.keep_channels(scores[i], r, multiple))
            drop_dead_weights(m.graph)
            proto = onnx_io.export_model(m)
            out = calibration.outputs(proto, feeds)
            err = (100 * (base_acc - accuracy(out, lab4))) if lab4 is not None else rel_error(out, ref4)
            row[r] = (max(0.0, err), base - Size.of(proto).params)
        name = names[i]
        report.sensitivity.append({"space": name, **{f"{r:.1f}": round(row[r][0], 4) for r in RATIOS}})
        say(f"sensitivity {i + 1}/{n_spaces} ({name}): " + " ".join(f"{row[r][0]:.3f}" for r in RATIOS))
        table.append(row)
    ratios = [0.0] * n_spaces
    removed, spent = 0, 0.0
    while target is None or removed < target * base:
        best = None
        for i, row in enumerate(table):
            nxt = round(ratios[i] + 0.1, 1)
            if nxt not in row:
                continue
            d_err = row[nxt][0] - row[ratios[i]][0]
            d_par = row[nxt][1] - row[ratios[i]][1]
            if d_par <= 0:
                continue
            if max_drop is not None and spent + d_err > max_drop:
                continue
            cost = max(d_err, 0.0) / d_par
            if best is None or cost < best[0]:
                best = (cost, i, nxt, d_err, d_par)
        if best is None:
            break
        _, i, nxt, d_err, d_par = best
        ratios[i] = nxt
        spent += d_err
        removed += d_par
    say(f"chosen ratios: {', '.join(f'{r:.1f}' for r in ratios)} (estimated {removed / base:.1%} of weights)")
    return ratios
