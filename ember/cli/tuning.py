"""`ember tune` (autotune a model's kernels into a tuning database) and `ember db`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ember.cli.common import (Progress, load_plugins, parse_bind, parse_input_shapes, pipeline_options,
                              precision_option, step_options)
from ember.errors import EmberError


def _tune(args: argparse.Namespace, progress):
    from ember.autotune.tune import tune

    load_plugins(args.plugin)
    rpc = None
    if args.tracker:
        from ember.compiler.runtime.remote import parse_address

        host, port = parse_address(args.tracker, "--tracker")
        if not args.key:
            raise EmberError("--tracker needs --key (the device key the RPC servers registered)")
        rpc = {"host": host, "port": port, "key": args.key}
    report = tune(args.model, args.target, args.db, trials=args.trials, seconds=args.time_budget,
                  pipeline=args.pipeline, opt_level=args.opt_level, mcpu=args.mcpu, features=args.mattr,
                  rpc=rpc, report_dir=args.report or str(Path(args.db) / "report"), progress=progress,
                  bind=parse_bind(args.bind), input_shapes=parse_input_shapes(args.input_shape), seed=args.seed,
                  warm_start=args.warm_start, precision=args.precision)
    return report.to_json()


def cmd_tune(args: argparse.Namespace) -> int:
    from ember.autotune.tune import parse_duration

    if args.trials is not None and args.trials <= 0:
        raise EmberError("--trials must be positive")
    try:
        args.time_budget = parse_duration(args.time) if args.time else None
    except ValueError as e:
        raise EmberError(str(e)) from None
    progress = Progress(args.quiet)
    if args.isolate:
        from ember.compiler.runtime.isolate import run_isolated

        result = run_isolated(_tune, args, what="tuning", progress=progress, timeout=args.timeout)
    else:
        result = _tune(args, progress)
    print(f"tuned {args.model} in {result['seconds']:.0f} s{' (interrupted)' if result['interrupted'] else ''}: "
          f"{result['summary']}; database {args.db}")
    e2e = result.get("end_to_end")
    if e2e:
        print(f"model latency end to end: {e2e['default_ms']:.3f} ms with default schedules, "
              f"{e2e['tuned_ms']:.3f} ms tuned")
        if e2e["tuned_ms"] > 1.05 * e2e["default_ms"]:
            print("the tuned schedules made this model slower: compile it without --db, or tune longer")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from ember.autotune.database import TuningDatabase

    if args.action == "stats":
        for path in args.db:
            st = TuningDatabase.open(path).stats()
            print(f"{st['path']}: {st['workloads']} workloads, {st['records']} records, "
                  f"{st['tuned_workloads']} with a measured schedule (best total {st['best_total_ms']:.3f} ms); "
                  f"tuned on {st['device']} with TVM {st['tvm_version']}")
        return 0
    if args.action == "merge":
        if len(args.db) < 2:
            raise EmberError("db merge needs a destination and at least one source database")
        dst = TuningDatabase.open(args.db[0])
        for src in args.db[1:]:
            n = dst.merge_from(TuningDatabase.open(src))
            print(f"merged {n} records from {src} into {args.db[0]}")
        return 0
    for path in args.db:  # prune
        n = TuningDatabase.open(path).prune(args.keep)
        print(f"{path}: dropped {n} records (kept the {args.keep} fastest per workload)")
    return 0


def add_commands(sub) -> None:
    tn = sub.add_parser("tune", help="autotune a model's kernels for a target into a tuning database")
    tn.add_argument("model", help="ONNX model file")
    tn.add_argument("--bind", action="append", metavar="NAME=V[,V...]",
                    help="tune for this value of a graph input TVM needs at compile time (as in compile)")
    tn.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                    help="tune for this shape of an input with symbolic dims (as in compile)")
    precision_option(tn)
    tn.add_argument("--db", default="ember-tuning", help="tuning database directory (default: ember-tuning; "
                    "created if missing, resumed if present)")
    tn.add_argument("--target", default="host", help="target triple or 'host' (default: host)")
    tn.add_argument("--mcpu", default=None, help="CPU to generate code for")
    tn.add_argument("--mattr", default=None, help="comma-separated features")
    tn.add_argument("--trials", type=int, default=None, help="measurement budget over all kernels "
                    "(default 64 when --time is not given)")
    tn.add_argument("--time", default=None, metavar="DURATION", help="time budget, e.g. 20m, 1h, 600s")
    tn.add_argument("--warm-start", metavar="DB", default=None, help="a tuning database from another CPU of "
                    "the same ISA: its best schedules for this model's kernels are measured here first and kept "
                    "as records (the report lists them)")
    tn.add_argument("--seed", type=int, default=None, help="seed the search: the same seed and the same "
                    "measurements draw the same candidates (recorded in the report)")
    tn.add_argument("--tracker", metavar="HOST:PORT", help="measure on the devices registered with this "
                    "TVM RPC tracker (with --key); builds stay local")
    tn.add_argument("--key", help="device key registered with the tracker")
    tn.add_argument("--report", default=None, metavar="DIR", help="where to write the tuning report "
                    "(default: DB/report)")
    step_options(tn)
    pipeline_options(tn)
    tn.set_defaults(fn=cmd_tune)

    d = sub.add_parser("db", help="tuning database housekeeping: stats, merge, prune")
    d.add_argument("action", choices=["stats", "merge", "prune"])
    d.add_argument("db", nargs="+", help="database directories (merge: DEST SRC...)")
    d.add_argument("--keep", type=int, default=1, help="prune: records kept per workload (default 1)")
    d.set_defaults(fn=cmd_db)

