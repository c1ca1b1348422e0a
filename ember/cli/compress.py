"""`ember prune` and `ember quantize`: smaller or int8 ONNX models, calibrated on the user's data."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ember.cli.common import Progress
from ember.errors import EmberError


def _calibration(args: argparse.Namespace, model) -> tuple[list | None, Any]:
    """Calibration feeds and labels from --calib-data, random ones with
    --random-calib (warned about), or (None, None)."""
    from ember.passes import calibration
    from ember.compiler.driver import signature

    if not args.calib_data and not args.random_calib:
        return None, None
    specs, _ = signature(model.graph)
    if args.calib_data:
        return calibration.load(args.calib_data, specs)
    sys.stderr.write("ember: warning: calibrating on random data: the accuracy it reports means nothing "
                     "for real inputs\n")
    return calibration.random_batches(specs, 16), None


def cmd_prune(args: argparse.Namespace) -> int:
    from ember.compiler.ir import onnx_io
    from ember.passes.pruning.prune import prune

    progress = Progress(args.quiet)
    nm = (2, 4)
    if args.method == "n:m":
        try:
            n, m = (int(x) for x in args.nm.split(":"))
        except ValueError:
            raise EmberError(f"--nm {args.nm!r}: expected N:M, e.g. 2:4") from None
        nm = (n, m)
    progress("importing model")
    model = onnx_io.as_ir(args.model)
    calib, labels = _calibration(args, model)
    pruned, report = prune(model, args.method, args.sparsity, nm=nm, scope=args.scope, norm=args.norm,
                           multiple=args.multiple, reconstruct=args.reconstruct, calib=calib, labels=labels,
                           target_sparsity=args.target_sparsity, max_drop=args.max_drop, select=args.select,
                           say=progress)
    onnx_io.save(pruned, args.output)
    for ln in report.lines():
        print(ln)
    if report.layers:
        changed = [f"{d['space']} {d['channels']}->{d['kept']}" for d in report.layers if d["kept"] < d["channels"]]
        print(f"channels removed in {len(changed)} of {len(report.layers)} groups: " + ", ".join(changed[:12])
              + (" ..." if len(changed) > 12 else ""))
    print(f"wrote {args.output}")
    return 0


def quantized(args: argparse.Namespace, progress):
    """The model quantized to QDQ int8 as --calibrate, --symmetric, ... say."""
    from ember.compiler.ir import onnx_io
    from ember.passes.quantization.quantize import quantize

    progress("importing model")
    model = onnx_io.as_ir(args.model)
    calib, labels = _calibration(args, model)
    if calib is None:
        raise EmberError("quantization needs calibration data: --calib-data FILE|DIR (or --random-calib, "
                         "and accuracy is then unknown)")
    q, report = quantize(model, calib, calibrate=args.calibrate, symmetric=args.symmetric,
                         exclude=set(args.exclude or ()), bias_correction=args.bias_correction,
                         max_drop=args.max_drop, labels=labels, say=progress)
    args.quant_report = report
    return q


def cmd_quantize(args: argparse.Namespace) -> int:
    from ember.compiler.ir import onnx_io

    q = quantized(args, Progress(args.quiet))
    onnx_io.save(q, args.output)
    for ln in args.quant_report.lines():
        print(ln)
    print(f"wrote {args.output}")
    return 0


def calib_options(sp: argparse.ArgumentParser) -> None:
    """The calibration data options `prune`, `quantize` and `compile --quantize` share."""
    sp.add_argument("--calib-data", metavar="FILE|DIR", help="calibration data: .npz with one array per input "
                    "(samples along axis 0, optional 'labels'), or a directory of .npz feed files")
    sp.add_argument("--random-calib", action="store_true", help="calibrate on random inputs (accuracy unknown)")


def quantize_options(sp: argparse.ArgumentParser, flag: bool) -> None:
    if flag:
        sp.add_argument("--quantize", choices=["int8"], default=None, help="quantize to int8 (QDQ) on "
                        "--calib-data first; int8 arithmetic is simulated in float until integer kernels land")
    calib_options(sp)
    sp.add_argument("--calibrate", choices=["minmax", "percentile", "entropy", "mse"], default="minmax",
                    help="activation range observer (default minmax)")
    sp.add_argument("--symmetric", action="store_true", help="int8 symmetric activations (default uint8 "
                    "asymmetric; weights are always int8 symmetric per channel)")
    sp.add_argument("--exclude", action="append", metavar="NAME|OP", help="keep this layer (output tensor or "
                    "node name) or op type in float (Gather: embedding tables); repeatable")
    sp.add_argument("--bias-correction", action="store_true", help="biases absorb the mean shift "
                    "quantization causes, per layer")
    sp.add_argument("--max-drop", type=float, default=None, help="layers with the worst SQNR go back to float "
                    "until the error (accuracy points with labels, else relative output error) is within this")


def add_commands(sub) -> None:
    qz = sub.add_parser("quantize", help="calibrated int8 quantization into a QDQ ONNX model")
    qz.add_argument("model", help="ONNX model file")
    qz.add_argument("-o", "--output", required=True, help="quantized ONNX model to write")
    quantize_options(qz, flag=False)
    qz.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    qz.set_defaults(fn=cmd_quantize)

    pr = sub.add_parser("prune", help="prune a model (channels, magnitude or N:M) and write the smaller ONNX model")
    pr.add_argument("model", help="ONNX model file")
    pr.add_argument("-o", "--output", required=True, help="pruned ONNX model to write")
    pr.add_argument("--method", choices=["channel", "magnitude", "n:m"], default="channel",
            help="channel: remove whole output channels (a smaller, faster dense model); magnitude / "
            "n:m: zero weights (a smaller compressed file only) (default: channel)")
    pr.add_argument("--sparsity", type=float, default=0.5, help="fraction of channels (or weights) to remove "
            "per layer (default 0.5)")
    pr.add_argument("--nm", default="2:4", help="N:M pattern for --method n:m (default 2:4)")
    pr.add_argument("--scope", choices=["layer", "global"], default="layer",
            help="magnitude pruning: a threshold per layer or one over all layers")
    pr.add_argument("--norm", choices=["l1", "l2"], default="l2", help="channel ranking norm without calibration "
            "data (default l2)")
    pr.add_argument("--select", choices=["reconstruction", "energy"], default=None,
            help="with calibration data: keep the channels from which least squares rebuilds the next "
            "layers best (the default with --reconstruct), or those sending them the most energy "
            "(the default without)")
    pr.add_argument("--multiple", type=int, default=8, help="round kept channel counts to a multiple of this "
            "(default 8: odd counts defeat vectorized kernels and can make the model slower; 1: exact)")
    pr.add_argument("--reconstruct", action="store_true", help="refit the layers by least squares on the "
            "calibration data so the pruned model mimics the original")
    calib_options(pr)
    pr.add_argument("--target-sparsity", type=float, default=None, help="channel ratios per layer chosen by "
            "measured sensitivity so this fraction of the weights goes")
    pr.add_argument("--max-drop", type=float, default=None, help="with sensitivity analysis: the most error "
            "allowed (accuracy points with labels, else relative output error)")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(fn=cmd_prune)

