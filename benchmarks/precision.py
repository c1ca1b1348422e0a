"""Precision benchmark: Ember bf16 against Ember fp32, beside OpenVINO's default.

    python benchmarks/precision.py [--models NAME ...] [--budget 3]

For each model, 2 threads, every engine timed in alternating blocks in one
process (`optimization_levels.timed_together`): onnxruntime fp32 (the
reference), OpenVINO with INFERENCE_PRECISION_HINT=f32, OpenVINO's default
(on a CPU with bf16 instructions it computes in bf16: its precision is
printed), Ember fp32 and Ember `precision="bf16"`. Times are ratios against
onnxruntime (x = its time / this time); errors are max |output - onnxruntime
fp32| over max |onnxruntime fp32|, per model the worst output.

Models: the benchmark CNNs (light models of the onnx wheel, seeded random
weights: logits), MobileNetV2 exported from PyTorch (random weights) and the
real all-MiniLM-L6-v2 encoder on real sentences (the last two need the bench
extra). bf16 is fast only where the CPU has AVX-512 BF16 (`lscpu`:
avx512_bf16); elsewhere Ember's bf16 kernels convert to fp32 in the loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import onnx
from optimization_levels import timed_together
from quantization import openvino_runner

import ember
from ember import targets
from ember.compiler.backend.tvm.intrinsics import bf16_available
from ember.compiler.ir.reference import session
from ember.models.torch_export import BenchDependencyError

MODELS = ("squeezenet", "resnet50", "inception_v2", "densenet121", "mobilenet_v2", "minilm")


def load(name: str) -> tuple[onnx.ModelProto, dict]:
    from ember.models import torch_export as tx
    from ember.models.zoo import light_model, random_inputs

    if name == "mobilenet_v2":
        m = onnx.load(str(tx.mobilenet_v2_onnx()))
        return m, random_inputs(m, seed=1)
    if name == "minilm":
        return onnx.load(str(tx.minilm_onnx())), tx.minilm_inputs(2, 32, tx.real_sentences()[:2])
    m = light_model(name, seed=0, logits=True)
    return m, random_inputs(m, seed=1)


def rel_error(got: list, ref: list) -> float:
    return max(float(np.abs(np.asarray(g, np.float64) - r).max() / max(np.abs(r).max(), 1e-30))
               for g, r in zip(got, ref))


def bench(name: str, budget: float) -> tuple[dict, dict, str]:
    m, feeds = load(name)
    sess = session(m, threads=2)
    ref = sess.run(None, feeds)
    fns, err = {"ort fp32": lambda: sess.run(None, feeds)}, {}
    for prec in ("fp32", "bf16"):
        cm = ember.compile(m, precision=prec)
        err[f"ember {prec}"] = rel_error(list(cm.run(feeds).values()), ref)
        fns[f"ember {prec}"] = lambda c=cm: c.run(feeds)
    ov_default = "-"
    for hint in ("f32", None):
        run = openvino_runner(m, precision=hint)
        if run is None:
            break
        key = "openvino f32" if hint else "openvino default"
        err[key] = rel_error([v for v in run(feeds).values()], ref)
        fns[key] = lambda r=run: r(feeds)
        if hint is None:
            ov_default = str(run.precision)
    return timed_together(fns, budget), err, ov_default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per engine and model")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    host = targets.host()
    dots = bf16_available(host)
    print(f"CPU: {targets.cpu_model() or platform.processor()}; Ember's bf16 kernels on "
          f"{dots[0].label if dots else 'plain loops (no AVX-512 BF16 here)'}; 2 threads")
    rows = []
    for name in args.models:
        print(f".. {name}", file=sys.stderr, flush=True)
        try:
            rows.append((name, *bench(name, args.budget)))
        except BenchDependencyError as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
    if not rows:
        return 1
    cols = ["openvino f32", "openvino default", "ember fp32", "ember bf16"]
    head = (f"{'model':13s} {'ORT ms':>8s} " + " ".join(f"{c:>16s}" for c in cols)
            + f" {'bf16/fp32 Ember':>15s} {'err Ember bf16':>14s} {'err OV default':>14s} {'OV default':>10s}")
    print("\nx = onnxruntime fp32 time / this time; err = max |out - onnxruntime fp32| / max |onnxruntime fp32|")
    print(head)
    print("-" * len(head))
    ratios = {c: [] for c in cols}
    for name, t, err, ov_default in rows:
        base = t["ort fp32"]
        cells = []
        for c in cols:
            cells.append(f"{base / t[c]:15.2f}x" if c in t else f"{'-':>16s}")
            if c in t:
                ratios[c].append(base / t[c])
        speedup = t["ember fp32"] / t["ember bf16"]
        print(f"{name:13s} {base * 1e3:8.2f} " + " ".join(cells) + f" {speedup:14.2f}x"
              f" {err['ember bf16']:14.1e} {err.get('openvino default', float('nan')):14.1e} {ov_default:>10s}")
    print("geomean" + " " * 16 + " ".join(
        f"{float(np.exp(np.mean(np.log(v)))):15.2f}x" if v else f"{'-':>16s}" for v in ratios.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
