"""Pruning benchmark: accuracy vs sparsity on real data, and speed of the smaller model.

    python benchmarks/pruning.py [--part digits|mobilenet|all] [--epochs 40] [--budget 3]

digits: two CNNs (narrow 8-16-32 and wide 32-64-128 channels, Conv+BN+ReLU)
trained here on scikit-learn's bundled digits (1,347 training images, 450
held out). Each is pruned at 0-80% by magnitude (weights zeroed per layer)
and by channels (whole channels removed), with and without least-squares
reconstruction on 1,024 training images; top-1 accuracy on the held-out
images (exact ratios: --multiple 1). Then channel ratios chosen by
sensitivity analysis for 50% of the weights. The 50% channel-pruned, reconstructed model is compiled by Ember and
checked against onnxruntime.

selection: a digits MLP (64-128-64-10) and the narrow CNN, three trainings
each, with 25/50/75% of channels removed and reconstructed on 256 training
images, the channels chosen by reconstruction error (the default) or by
energy: held-out accuracy.

mobilenet: MobileNetV2 (random weights) with 30% and 50% of channels removed
(kept counts rounded to multiples of 8, the default):
parameters, file size, and latency of Ember and onnxruntime (2 threads,
timed in turn), before and after.

Needs the `bench` extra (torch) and scikit-learn.
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
from ember.passes.pruning.prune import Size, accuracy, prune
from ember.compiler.ir.reference import session
from optimization_levels import max_error, timed_together

import ember

SPARSITIES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)


def digits_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def train_cnn(width: int, xtr, ytr, epochs: int, seed: int = 0, residual: bool = False) -> onnx.ModelProto:
    """Train a digits CNN: conv-BN-ReLU blocks of width w, 2w, 4w, a max pool,
    global average pooling and a linear classifier; `residual` adds a
    ResNet basic block (two convs and a skip connection) after the first two."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    w = width

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    class Basic(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*block(c, c), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(self.body(x) + x)

    skip = (lambda c: [Basic(c)]) if residual else (lambda c: [])
    net = nn.Sequential(*block(1, w), *skip(w), *block(w, 2 * w), *skip(2 * w), nn.MaxPool2d(2),
                        *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))
    return _trained(net, xtr, ytr, epochs)


def train_mlp(xtr, ytr, epochs: int, seed: int = 0, hidden=(128, 64)) -> onnx.ModelProto:
    """Train a digits MLP: 64 pixels -> hidden layers with ReLU -> 10 logits."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    sizes = (64, *hidden)
    layers = [m for i, o in zip(sizes, sizes[1:]) for m in (nn.Linear(i, o), nn.ReLU())]
    net = nn.Sequential(nn.Flatten(), *layers, nn.Linear(sizes[-1], 10))
    return _trained(net, xtr, ytr, epochs)


def _trained(net, xtr, ytr, epochs: int) -> onnx.ModelProto:
    """Train `net` with Adam on the digits (batches of 64), then export it to ONNX."""
    import torch
    from torch import nn

    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        torch.onnx.export(net, (xt[:1],), str(path), input_names=["x"], output_names=["logits"], dynamo=True,
                          verbose=False)
        return onnx.load(str(path), load_external_data=True)


def selection(epochs: int, seeds: int = 3) -> None:
    """Channels chosen by reconstruction (least squares) vs by energy, both refit after:
    accuracy at 25/50/75% of the channels removed, 256 calibration images."""
    xtr, xte, ytr, yte = digits_data()
    calib = feeds_of(xtr[:256], "x")
    ratios = (0.25, 0.5, 0.75)
    print(f"\nchannel selection, reconstructed on 256 images; top-1 % on 450 held-out digits, mean of {seeds} "
          "trainings (fp32 first)")
    print(f"{'model':16s} {'select':15s} {'fp32':>6s} " + " ".join(f"{int(100 * r):>5d}%" for r in ratios)
          + "  drop at 50%")
    makers = (("MLP 64-128-64", lambda seed: train_mlp(xtr, ytr, epochs, seed)),
              ("CNN 8-16-32", lambda seed: train_cnn(8, xtr, ytr, epochs, seed)))
    for label, make in makers:
        print(f".. training {seeds} {label}", file=sys.stderr, flush=True)
        models = [make(seed) for seed in range(seeds)]
        base = np.mean([test_accuracy(m, xte, yte) for m in models])
        for select in ("energy", "reconstruction"):
            accs = [np.mean([test_accuracy(prune(m, "channel", r, reconstruct=True, calib=calib, multiple=1,
                                                 select=select)[0], xte, yte) for m in models]) for r in ratios]
            print(f"{label:16s} {select:15s} {100 * base:6.2f} " + " ".join(f"{100 * a:6.2f}" for a in accs)
                  + f"  {100 * (base - accs[1]):5.2f}", flush=True)


def feeds_of(x: np.ndarray, name: str) -> list[dict[str, np.ndarray]]:
    return [{name: x[i:i + 1]} for i in range(len(x))]


def test_accuracy(model, xte, yte) -> float:
    proto = model if isinstance(model, onnx.ModelProto) else onnx_io.export_model(model)
    name = proto.graph.input[0].name
    out = calibration.activations(proto, feeds_of(xte, name), [proto.graph.output[0].name])
    return accuracy([out[proto.graph.output[0].name]], yte)


def trained_cnns(epochs: int):
    """(label, model, input name, fp32 held-out accuracy) of the narrow and wide
    digits CNNs, and the data split."""
    xtr, xte, ytr, yte = digits_data()
    data = (xtr, xte, ytr, yte)
    for label, width in (("narrow 8-16-32", 8), ("wide 32-64-128", 32)):
        print(f".. training the {label} CNN", file=sys.stderr, flush=True)
        m = train_cnn(width, xtr, ytr, epochs)
        yield label, m, m.graph.input[0].name, test_accuracy(m, xte, yte), data


def digits(epochs: int) -> None:
    for label, m, name, base, (xtr, xte, ytr, yte) in trained_cnns(epochs):
        calib = feeds_of(xtr[:1024], name)
        print(f"\n{label} CNN: fp32 accuracy {100 * base:.2f}% on 450 held-out digits "
              f"({Size.of(m).params:,} parameters)")
        print(f"{'method':10s} {'recon':5s} " + " ".join(f"{int(100 * s):>6d}%" for s in SPARSITIES)
              + "   params left at 50%")
        for method in ("magnitude", "channel"):
            for rec in (False, True):
                accs, left = [], ""
                for s in SPARSITIES:
                    pm, rep = prune(m, method, s, reconstruct=rec and s > 0, calib=calib, multiple=1)
                    accs.append(test_accuracy(pm, xte, yte))
                    if s == 0.5:
                        size = rep.after
                        left = f"{size.nonzero:,} nonzero of {rep.before.params:,}"
                print(f"{method:10s} {'yes' if rec else 'no':5s} " + " ".join(f"{100 * a:6.2f} " for a in accs)
                      + f"  {left}")
        pm, rep = prune(m, "channel", 0.5, reconstruct=True, calib=calib, target_sparsity=0.5, multiple=1,
                        labels=ytr[:1024])
        acc = test_accuracy(pm, xte, yte)
        print(f"sensitivity-chosen channel ratios for 50% of the weights, reconstructed: accuracy {100 * acc:.2f}% "
              f"(drop {100 * (base - acc):.2f} points), parameters {rep.before.params:,} -> {rep.after.params:,}; "
              "ratios " + ", ".join(f"{d['space']} {d['channels']}->{d['kept']}" for d in rep.layers))
        pm, rep = prune(m, "channel", 0.5, reconstruct=True, calib=calib, multiple=1)
        cm = ember.compile(pm)
        feed = {name: xte[:1]}
        ref = dict(zip([o.name for o in session(onnx_io.export_model(pm)).get_outputs()],
                       session(onnx_io.export_model(pm)).run(None, feed)))
        print(f"50% channels, reconstructed: Ember vs onnxruntime on the pruned model, max |error| "
              f"{max_error(cm.run(feed), ref):.1e}")


def mobilenet(budget: float) -> None:
    from ember.models import torch_export as tx

    m = onnx.load(str(tx.mobilenet_v2_onnx()))
    name = m.graph.input[0].name
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {name: x}
    variants = {"original": m}
    for s in (0.3, 0.5):
        pm, _ = prune(m, "channel", s)
        variants[f"{int(100 * s)}% channels"] = onnx_io.export_model(pm)
    rows = {}
    fns = {}
    for label, proto in variants.items():
        print(f".. {label}: compiling", file=sys.stderr, flush=True)
        sess = session(proto, threads=2)
        cm = ember.compile(proto)
        ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        rows[label] = {"size": Size.of(proto), "err": max_error(cm.run(feeds), ref)}
        fns[f"ort {label}"] = (lambda s=sess: s.run(None, feeds))
        fns[f"ember {label}"] = (lambda c=cm: c.run(feeds))
    t = timed_together(fns, budget)
    o_ort, o_em = t["ort original"], t["ember original"]
    print("\nMobileNetV2 (random weights), 2 threads, timed in turn; speed-up = original time / pruned time")
    head = (f"{'model':14s} {'params':>10s} {'file MB':>8s} {'ORT ms':>7s} {'ORT x':>6s} {'Ember ms':>8s} "
            f"{'Ember x':>7s} {'Ember/ORT':>9s} {'max err':>8s}")
    print(head)
    print("-" * len(head))
    for label, r in rows.items():
        to, te = t[f"ort {label}"], t[f"ember {label}"]
        print(f"{label:14s} {r['size'].params:10,d} {r['size'].file_bytes / 1e6:8.2f} {to * 1e3:7.2f} "
              f"{o_ort / to:6.2f} {te * 1e3:8.2f} {o_em / te:7.2f} {te / to:9.2f} {r['err']:8.1e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["digits", "selection", "mobilenet", "all"], default="all")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of the digits CNNs")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per engine and model")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    if args.part in ("digits", "all"):
        digits(args.epochs)
    if args.part in ("selection", "all"):
        selection(args.epochs)
    if args.part in ("mobilenet", "all"):
        mobilenet(args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
