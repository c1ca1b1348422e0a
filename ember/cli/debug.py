"""`ember debug`: find the stage, pass and layer where a model stops agreeing with
onnxruntime (`ember.compiler.debug`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ember.cli.common import (Progress, device_options, load_plugins, parse_bind, parse_input_shapes, precision_option,
                              pipeline_options, read_array, step_options)
from ember.cli.compress import _calibration, quantize_options
from ember.cli.run import _gather_inputs, _input_options
from ember.errors import EmberError


def _feed(args: argparse.Namespace, model, calib) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The inputs the stages run on, and labels (from --labels or a `labels` array in --inputs)."""
    from ember.compiler.driver import signature

    specs, _ = signature(model.graph)
    if not (args.inputs or args.input or args.random_inputs is not None) and calib:
        feed = dict(calib[0])  # the first calibration batch
    else:
        feed = _gather_inputs(args, specs)
    labels = feed.pop("labels", None) if "labels" not in {s["name"] for s in specs} else None
    if args.labels:
        labels = read_array(args.labels, "--labels")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
    return feed, labels


def _debug(args: argparse.Namespace, progress):
    from ember.compiler.debug import debug
    from ember.compiler.ir import onnx_io
    from ember.passes.quantization.quantize import quantize

    load_plugins(args.plugin)
    progress(f"importing {args.model}")
    model = onnx_io.as_ir(args.model)
    calib = None

    def quantized(exclude: set[str]):
        q, _ = quantize(args.model, calib, calibrate=args.calibrate, symmetric=args.symmetric,
                        exclude=set(args.exclude or ()) | exclude, bias_correction=args.bias_correction,
                        max_drop=args.max_drop)
        return q

    if args.quantize:
        calib, _ = _calibration(args, model)
        if calib is None:
            raise EmberError("--quantize needs calibration data: --calib-data FILE|DIR (or --random-calib)")
    feed, labels = _feed(args, onnx_io.as_ir(args.reference) if args.reference else model, calib)
    remote = None
    if args.emulate:
        remote = {"qemu_cpu": args.qemu_cpu}
    elif args.rpc or args.tracker:
        remote = {"rpc": args.rpc, "tracker": args.tracker, "key": args.key}
    return debug(args.model, feed, reference=args.reference, labels=labels, target=args.target, mcpu=args.mcpu,
                 features=args.mattr, pipeline=args.pipeline, opt_level=args.opt_level, disabled=args.disable or (),
                 memory_budget=args.memory_budget, bind=parse_bind(args.bind),
                 input_shapes=parse_input_shapes(args.input_shape),
                 quantizer=quantized if args.quantize else None, db=args.db, remote=remote,
                 tol=args.tol, quant_tol=args.int8_tol, max_accuracy_drop=args.max_accuracy_drop,
                 int8_analysis=args.int8_analysis, int8_feeds=(calib[:8] if calib else None),
                 precision=args.precision, say=progress)


def cmd_debug(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    for path in filter(None, (args.model, args.reference)):
        if not Path(path).is_file():
            raise EmberError(f"{path}: no such file")
    if args.tol <= 0 or args.int8_tol <= 0:
        raise EmberError("--tol and --int8-tol must be positive")
    if args.isolate:
        from ember.compiler.runtime.isolate import run_isolated

        report = run_isolated(_debug, args, what="debugging", progress=progress, timeout=args.timeout)
    else:
        report = _debug(args, progress)
    paths = report.write(args.report)
    if args.print_pass_times:
        for s in report.stages:
            if s.seconds is not None:
                print(f"{s.name:48s} {s.seconds * 1e3:9.2f} ms")
    text = report.markdown()
    print(text.split("\n## Layers")[0].split("\n## int8")[0].rstrip())
    if report.divergence is not None:
        print(f"\nfirst layer over the threshold: {report.divergence.node} ({report.divergence.op}), "
              f"tensor {report.divergence.tensor}")
    if report.int8 and report.int8.get("exclude"):
        print(f"\nint8: `--exclude {' --exclude '.join(report.int8['exclude'])}` brings the output error from "
              f"{report.int8['error']:.3g} to {report.int8['error_excluded']:.3g}")
    print(f"\nreport: {', '.join(str(p) for p in paths)}")
    if report.failed:
        sys.stderr.write(f"ember: debug: {report.verdict()}\n")
        return 1
    return 0


def add_commands(sub) -> None:
    d = sub.add_parser("debug", help="find the stage, pass and layer where a model stops agreeing with onnxruntime")
    d.add_argument("model", help="ONNX model file")
    _input_options(d)
    d.add_argument("--labels", metavar="FILE.npy", help="one class per sample of the inputs: also compare top-1 "
                   "accuracy of the first output (a `labels` array in --inputs works too)")
    d.add_argument("--reference", metavar="MODEL.onnx", help="the model to compare with (e.g. the float model "
                   "of a quantized MODEL; default: MODEL itself in onnxruntime)")
    d.add_argument("--target", default="host", help="target triple or 'host' (default: host)")
    d.add_argument("--mcpu", default=None, help="CPU to generate code for")
    d.add_argument("--mattr", default=None, help="comma-separated target features")
    pipeline_options(d)
    d.add_argument("--bind", action="append", metavar="NAME=V[,V...]", help="as for `ember compile`")
    d.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="as for `ember compile`")
    precision_option(d)
    quantize_options(d, flag=True)
    d.add_argument("--db", default=None, help="tuning database whose schedules the artifact stages use")
    device_options(d, "the target stage")
    d.add_argument("--tol", type=float, default=1e-3, help="largest error a float stage may add, relative to "
                   "each output's scale (default 1e-3)")
    d.add_argument("--int8-tol", type=float, default=0.05, help="the same for quantization and the stages after "
                   "it, which compute in 8 bits (default 0.05)")
    d.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                   help="with labels: the most top-1 accuracy a stage may lose against the stage before (default 1)")
    d.add_argument("--no-int8-analysis", dest="int8_analysis", action="store_false",
                   help="skip the per-layer int8 analysis (one onnxruntime run per quantized layer)")
    d.add_argument("--report", default="ember-debug", metavar="DIR",
                   help="directory for report.md, report.json and report.png (default ember-debug)")
    step_options(d)
    d.set_defaults(fn=cmd_debug)
