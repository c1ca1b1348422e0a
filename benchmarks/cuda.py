"""GPU benchmark: Ember on CUDA against PyTorch eager on the same GPU, fp32 and int8.

    python benchmarks/cuda.py [--models resnet50,squeezenet,mobilenet_v2,bert] [--repeat 100]
                              [--tune-time 90] [--tune-models squeezenet] [--out results.json] [--strict-fp32]

Needs an NVIDIA GPU, nvcc, torch with CUDA (torchvision for ResNet-50 and
SqueezeNet, transformers for the encoder). For each model (random weights,
batch 1; the encoder is a BERT with MiniLM's shape: 6 layers, hidden 384,
sequence 128):

- PyTorch eager fp32 on the GPU (its defaults: cuDNN may run convolutions
  in TF32, which --strict-fp32 turns off): latency, and the reference outputs;
- the module exported to ONNX and compiled by Ember for the GPU's sm_XX
  with no tuning (TVM's dlight rules): latency, compile time, and the
  largest error against PyTorch relative to the output's largest magnitude;
- the same ONNX quantized by Ember (QDQ: per-channel int8 weights, uint8
  activations, 8 random calibration batches, so speed only) and compiled
  onto Ember's dp4a integer kernels: latency and the cosine similarity of
  its outputs to fp32;
- with --tune-time, `ember tune` on the fp32 model for that many seconds,
  then the tuned latency.

Latency is the median of --repeat timed calls with inputs already on the
GPU, each call synchronized. Ratios are PyTorch time / Ember time (above 1:
Ember is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ember.compiler.ir import onnx_io
from ember.models import torch_export as tx
from ember.passes.quantization.quantize import quantize

import ember

MODELS = ("resnet50", "squeezenet", "mobilenet_v2", "bert")


def _module(name: str):
    """(torch module in eval mode, example inputs by name, output name)."""
    import torch

    torch.manual_seed(0)
    if name in ("resnet50", "squeezenet"):
        import torchvision

        net = torchvision.models.resnet50() if name == "resnet50" else torchvision.models.squeezenet1_0()
        return net.eval(), {"input": torch.randn(1, 3, 224, 224)}, "logits"
    if name == "mobilenet_v2":
        return tx.mobilenet_v2_module(), {"input": torch.randn(1, 3, 224, 224)}, "logits"
    if name == "bert":
        import transformers

        config = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                         intermediate_size=1536, attn_implementation="eager")
        bert = transformers.BertModel(config).eval()

        class Encoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        ids = torch.randint(0, config.vocab_size, (1, 128))
        mask = torch.ones(1, 128, dtype=torch.int64)
        return Encoder().eval(), {"input_ids": ids, "attention_mask": mask}, "last_hidden_state"
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def _torch_latency(net, inputs: dict, repeat: int) -> tuple[float, np.ndarray]:
    import torch

    net = net.cuda()
    args = [v.cuda() for v in inputs.values()]
    with torch.no_grad():
        for _ in range(10):
            out = net(*args)
        times = []
        for _ in range(repeat):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = net(*args)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    net.cpu()
    return float(np.median(times)), out.float().cpu().numpy()


def _calibration(feeds: dict, count: int) -> list[dict]:
    """Random batches like `feeds`: normal floats; integer inputs (token ids,
    masks) permuted, so ids stay in the vocabulary."""
    rng = np.random.default_rng(1)
    return [{k: rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f"
             else rng.permutation(v.ravel()).reshape(v.shape) for k, v in feeds.items()} for _ in range(count)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ember(path, feeds: dict, sm: str, repeat: int, db: str | None = None):
    t0 = time.perf_counter()
    cm = ember.compile(path, target="cuda", mcpu=sm, db=db)
    compile_s = time.perf_counter() - t0
    out = next(iter(cm.run(feeds).values()))
    return float(np.median(cm.time(feeds, repeat=repeat))), out, compile_s


def bench(name: str, sm: str, repeat: int, tune_s: float, tmp: Path) -> dict:
    import torch

    net, inputs, out_name = _module(name)
    path = tx.export_onnx(net, tuple(inputs.values()), tmp / f"{name}.onnx", list(inputs), [out_name], opset=18)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    row: dict = {"model": name}
    t, ref = _torch_latency(net, inputs, repeat)
    row["torch_ms"] = t * 1e3
    torch.cuda.empty_cache()
    scale = float(np.abs(ref).max()) or 1.0

    t, out, row["compile_s"] = _ember(path, feeds, sm, repeat)
    row["fp32_ms"], row["fp32_rel_err"] = t * 1e3, float(np.abs(out - ref).max()) / scale
    print(f"  {name}: torch {row['torch_ms']:.3f} ms, ember fp32 {row['fp32_ms']:.3f} ms "
          f"(compile {row['compile_s']:.0f} s, rel err {row['fp32_rel_err']:.1e})", flush=True)

    q, _ = quantize(str(path), _calibration(feeds, 8), calibrate="minmax")
    qpath = tmp / f"{name}.int8.onnx"
    onnx_io.save(q, qpath)
    t, qout, row["int8_compile_s"] = _ember(qpath, feeds, sm, repeat)
    row["int8_ms"], row["int8_cos"] = t * 1e3, _cosine(qout, ref)
    print(f"  {name}: ember int8 {row['int8_ms']:.3f} ms (compile {row['int8_compile_s']:.0f} s, "
          f"cosine to fp32 {row['int8_cos']:.4f})", flush=True)

    if tune_s:
        from ember.autotune.tune import tune

        db = str(tmp / f"{name}-db")
        t0 = time.perf_counter()
        report = tune(str(path), target="cuda", mcpu=sm, db=db, seconds=tune_s,
                      progress=lambda msg: print(f"    {name}: {msg}", flush=True))
        row["tune_s"], row["trials"] = time.perf_counter() - t0, sum(t.trials for t in report.tasks)
        t, out, _ = _ember(path, feeds, sm, repeat, db=db)
        row["tuned_ms"], row["tuned_rel_err"] = t * 1e3, float(np.abs(out - ref).max()) / scale
        print(f"  {name}: tuned {row['tuned_ms']:.3f} ms after {row['tune_s']:.0f} s ({row['trials']} trials)",
              flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--tune-time", type=float, default=0.0, help="seconds of `ember tune` per tuned model")
    ap.add_argument("--tune-models", default="squeezenet", help="models to tune when --tune-time is given")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--strict-fp32", action="store_true",
                    help="PyTorch without TF32 (its default lets cuDNN convolutions use TF32 tensor cores)")
    args = ap.parse_args()
    import torch
    import tvm

    if args.strict_fp32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    if not torch.cuda.is_available() or not tvm.cuda(0).exist:
        print("benchmarks/cuda.py needs an NVIDIA GPU that both torch and TVM see", file=sys.stderr)
        return 1
    major, minor = torch.cuda.get_device_capability()
    sm = f"sm_{major}{minor}"
    print(f"{torch.cuda.get_device_name()} ({sm}), torch {torch.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            tune_s = args.tune_time if name in args.tune_models.split(",") else 0.0
            try:
                rows.append(bench(name, sm, args.repeat, tune_s, Path(tmp)))
            except Exception as e:  # noqa: BLE001 - one model's failure must not hide the others' figures
                print(f"  {name}: FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}",
                      flush=True)
                rows.append({"model": name, "error": f"{type(e).__name__}: {e}"[:500]})
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"\n{'model':14s} {'torch ms':>9s} {'fp32 ms':>8s} {'torch/fp32':>10s} {'int8 ms':>8s} "
          f"{'fp32/int8':>9s} {'torch/int8':>10s} {'fp32 err':>8s} {'int8 cos':>8s} {'tuned ms':>8s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:14s} failed: {r['error'][:100]}")
            continue
        tuned = f"{r['tuned_ms']:8.3f}" if "tuned_ms" in r else f"{'-':>8s}"
        print(f"{r['model']:14s} {r['torch_ms']:9.3f} {r['fp32_ms']:8.3f} {r['torch_ms'] / r['fp32_ms']:10.2f} "
              f"{r['int8_ms']:8.3f} {r['fp32_ms'] / r['int8_ms']:9.2f} {r['torch_ms'] / r['int8_ms']:10.2f} "
              f"{r['fp32_rel_err']:8.1e} {r['int8_cos']:8.4f} {tuned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
