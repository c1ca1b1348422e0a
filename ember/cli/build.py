"""`ember compile` and the commands that look at a model or at Ember itself: `optimize`,
`inspect`, `passes`, `targets`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ember.cli.common import (Progress, load_plugins, parse_bind, parse_input_shapes, pipeline_options,
                              precision_option, step_options)
from ember.cli.compress import quantize_options, quantized


def _compile_and_save(args: argparse.Namespace, progress) -> dict[str, Any]:
    from ember.compiler.driver import compile as ember_compile
    from ember.passes.manager import DumpIR, PassTiming

    load_plugins(args.plugin)
    timing = PassTiming()
    instruments: list = [timing]
    if args.dump_ir_after:
        def sink(label: str, text: str) -> None:
            sys.stderr.write(f"// ---- IR after {label}\n{text}\n")

        instruments.append(DumpIR(frozenset("*" if a == "all" else a for a in args.dump_ir_after),
                                  Path(args.dump_dir) if args.dump_dir else None,
                                  None if args.dump_dir else sink))
    model: Any = args.model
    if args.quantize:
        model = quantized(args, progress)
        for ln in args.quant_report.lines():
            progress(ln)
    cm = ember_compile(model, target=args.target, pipeline=args.pipeline, opt_level=args.opt_level,
                       memory_budget=args.memory_budget, mcpu=args.mcpu,
                       features=args.mattr, db=args.db, instruments=instruments, disabled=args.disable or (),
                       progress=progress, bind=parse_bind(args.bind),
                       input_shapes=parse_input_shapes(args.input_shape), precision=args.precision)
    progress(f"writing {args.output}")
    cm.save(args.output)
    return {"pass_times": timing.table(), "metadata": cm.metadata, "seconds": cm.compile_seconds}


def cmd_compile(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    if args.isolate:
        from ember.compiler.runtime.isolate import run_isolated

        result = run_isolated(_compile_and_save, args, what="compilation", progress=progress,
                              timeout=args.timeout)
    else:
        result = _compile_and_save(args, progress)
    if args.print_pass_times:
        print(result["pass_times"])
    meta = result["metadata"]
    print(f"compiled {args.model} for {meta['target']['triple']} in {result['seconds']:.1f} s -> {args.output}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from ember.compiler.ir import onnx_io
    from ember.passes import optimize
    from ember.passes.manager import PassTiming, format_pipeline

    load_plugins(args.plugin)
    from ember.compiler.input.validate import Limits, validate

    model = onnx_io.load(args.model)
    validate(model, Limits(memory_budget=args.memory_budget) if args.memory_budget else Limits())
    before = len(list(model.graph.all_nodes()))
    timing = PassTiming()
    passes = optimize(model, args.pipeline, opt_level=args.opt_level, instruments=[timing],
                      disabled=args.disable or ())
    onnx_io.save(model, args.output)
    if args.print_pass_times:
        print(timing.table())
    after = len(list(model.graph.all_nodes()))
    print(f"optimized {args.model}: {before} -> {after} nodes with '{format_pipeline(passes)}' -> {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ember.compiler.ir import onnx_io
    from ember.compiler.ir.stats import collect, format_stats

    model = onnx_io.load(args.model)
    print(format_stats(collect(model)))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    import dataclasses

    import ember.passes  # noqa: F401

    from ember.passes.manager import registry

    from ember.passes import DEFAULT_LEVEL, LEVELS

    load_plugins(args.plugin)
    for level, spec in LEVELS.items():
        print(f"-O{level}{' (default)' if level == DEFAULT_LEVEL else '':10s} {spec or '(no passes)'}")
    print()
    for name in registry.names():
        cls = registry.get(name)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:24s} {doc}" + (f"  [{opts}]" if opts else ""))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from ember import targets

    print("\n".join(targets.describe_all()))
    return 0


def add_commands(sub) -> None:
    c = sub.add_parser("compile", help="compile an ONNX model into an artifact directory")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, help="artifact directory to write")
    c.add_argument("--target", default="host", help="target triple or 'host' (default: host)")
    c.add_argument("--mcpu", default=None, help="CPU to tune code generation for (e.g. skylake-avx512)")
    c.add_argument("--mattr", default=None, help="comma-separated features, e.g. +avx512vnni or +neon,+dotprod")
    pipeline_options(c)
    c.add_argument("--bind", action="append", metavar="NAME=V[,V...]",
                   help="compile for this value of a graph input (one TVM needs at compile time: a Reduce's "
                        "axes, a Reshape's shape, ...); a .npy file also works; repeatable")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="compile for this shape of an input with symbolic dims (e.g. x=1,3,640,640); the "
                        "artifact then refuses other shapes; repeatable")
    precision_option(c)
    c.add_argument("--dump-ir-after", action="append", metavar="PASS",
                   help="print the IR after this pass ('all' for every pass; repeatable)")
    c.add_argument("--dump-dir", default=None, help="write IR dumps to this directory instead of stderr")
    quantize_options(c, flag=True)
    step_options(c)
    c.add_argument("--db", default=None, help="tuning database (from `ember tune`) whose schedules to use")
    c.set_defaults(fn=cmd_compile)

    o = sub.add_parser("optimize", help="run graph passes and write the optimized model as ONNX")
    o.add_argument("model", help="ONNX model file")
    o.add_argument("-o", "--output", required=True, help="ONNX file to write")
    pipeline_options(o)
    o.set_defaults(fn=cmd_optimize)

    i = sub.add_parser("inspect", help="summarise an ONNX model: ops, parameters, FLOPs")
    i.add_argument("model")
    i.set_defaults(fn=cmd_inspect)

    ps = sub.add_parser("passes", help="list the registered passes and their options")
    ps.add_argument("--plugin", action="append", help="Python file or module that registers passes")
    ps.set_defaults(fn=cmd_passes)
    t = sub.add_parser("targets", help="list the known target triples")
    t.set_defaults(fn=cmd_targets)
