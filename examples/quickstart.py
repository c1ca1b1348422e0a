"""Compile a real model for this machine, run it, and compare it with onnxruntime.

    python examples/quickstart.py [MODEL] [--runs N] [--int8]

MODEL is one of the architectures shipped in the onnx wheel (default:
squeezenet); its constant weights are replaced by seeded random ones so the
comparison means something. Prints compile time, max error and latency of
Ember and onnxruntime measured in the same run.

--int8 quantizes the model first (calibrated on random inputs: speed, not
accuracy) and compiles it onto Ember's integer kernels; onnxruntime runs the
same QDQ file, and the float model for the speed reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import ember
from ember.models import zoo
from ember.compiler.ir.reference import run_onnxruntime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="squeezenet", choices=zoo.LIGHT_MODELS)
    ap.add_argument("--runs", type=int, default=10, help="timed runs of each engine")
    ap.add_argument("--int8", action="store_true", help="quantize to int8 first (random calibration data)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ember-quickstart-"))
    model = zoo.light_model(args.model, seed=0)
    path = work / f"{args.model}.onnx"
    onnx.save(model, str(path))
    feeds = zoo.random_inputs(model, seed=1)
    float_path = path
    if args.int8:
        from ember.compiler.ir import onnx_io
        from ember.passes.quantization.quantize import quantize

        calib = [zoo.random_inputs(model, seed=s) for s in range(2, 10)]
        q, _ = quantize(model, calib)
        path = work / f"{args.model}.int8.onnx"
        onnx.save(onnx_io.export_model(q), str(path))

    t0 = time.perf_counter()
    compiled = ember.compile(path, target="host", progress=lambda m: print(f"  .. {m}", file=sys.stderr))
    compile_s = time.perf_counter() - t0
    compiled.save(work / "artifact")
    loaded = ember.load(work / "artifact")

    outputs = loaded.run(feeds)
    ember_t = loaded.time(feeds, repeat=args.runs)
    reference, ort_t = run_onnxruntime(path, feeds, repeat=args.runs)
    err = max(float(np.max(np.abs(outputs[k] - reference[k]))) for k in reference)
    # int8: the same QDQ file in onnxruntime; roundings may differ by a quantization step
    tol = {"rtol": 0, "atol": 0.02 * max(float(np.abs(r).max()) for r in reference.values())} if args.int8 \
        else {"rtol": 1e-3, "atol": 1e-5}
    ok = all(np.allclose(outputs[k], reference[k], **tol) for k in reference)

    e_ms, o_ms = np.median(ember_t) * 1e3, np.median(ort_t) * 1e3
    print(f"model        {args.model} (random weights), compiled for {compiled.metadata['target']['triple']} "
          f"mcpu={compiled.metadata['target']['mcpu'] or 'generic'}")
    print(f"artifact     {work / 'artifact'}  (compile {compile_s:.1f} s)")
    print(f"accuracy     max |ember - onnxruntime| = {err:.3g}  -> {'OK' if ok else 'MISMATCH'} "
          f"(rtol {tol['rtol']:g}, atol {tol['atol']:.3g})")
    print(f"latency      ember {e_ms:.2f} ms, onnxruntime {o_ms:.2f} ms (median of {args.runs}); "
          f"ember/onnxruntime = {e_ms / o_ms:.1f}x")
    if args.int8:
        _, fp_t = run_onnxruntime(float_path, feeds, repeat=args.runs)
        f_ms = np.median(fp_t) * 1e3
        print(f"int8         onnxruntime fp32 {f_ms:.2f} ms: ember int8 is {f_ms / e_ms:.1f}x faster, "
              f"onnxruntime int8 {f_ms / o_ms:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
