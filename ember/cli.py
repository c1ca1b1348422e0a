"""The `ember` command line.

    ember compile MODEL.onnx [--target TRIPLE] -o OUT [-O0..3 | --pipeline SPEC] [--print-pass-times]
                  [--dump-ir-after PASS]
    ember optimize MODEL.onnx -o OUT.onnx [-O0..3 | --pipeline SPEC]
    ember run OUT [--input NAME=FILE.npy ... | --inputs FILE.npz | --random-inputs]
                  [--save outputs.npz] [--check MODEL.onnx] [--time N]
    ember inspect MODEL.onnx
    ember passes | ember targets

Every error is one line on stderr and a non-zero exit code. Steps that can
crash inside TVM run in a child process (disable with --no-isolate).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ember.errors import EmberError

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        sys.stderr.write(f"ember: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


class _Progress:
    """Progress lines on stderr with elapsed time, so long steps are visible."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}\n")
            sys.stderr.flush()


# ---------------------------------------------------------------- compile
def _load_plugins(paths: Sequence[str]) -> None:
    """Import user modules (files or module names) that register passes."""
    for p in paths or ():
        if p.endswith(".py") or "/" in p:
            path = Path(p)
            if not path.is_file():
                raise EmberError(f"plugin {p}: no such file")
            spec = importlib.util.spec_from_file_location(f"ember_plugin_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(mod)  # type: ignore[union-attr]
            except EmberError:
                raise
            except Exception as e:
                raise EmberError(f"plugin {p} failed to load: {type(e).__name__}: {e}") from None
        else:
            try:
                importlib.import_module(p)
            except ImportError as e:
                raise EmberError(f"plugin {p}: {e}") from None


def _compile_and_save(args: argparse.Namespace, progress) -> dict[str, Any]:
    from ember.compiler.driver import compile as ember_compile
    from ember.passes.manager import DumpIR, PassTiming

    _load_plugins(args.plugin)
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
        model = _quantized(args, progress)
        for ln in args.quant_report.lines():
            progress(ln)
    cm = ember_compile(model, target=args.target, pipeline=args.pipeline, opt_level=args.opt_level,
                       memory_budget=args.memory_budget, mcpu=args.mcpu,
                       features=args.mattr, db=args.db, instruments=instruments, disabled=args.disable or (),
                       progress=progress, bind=_parse_bind(args.bind),
                       input_shapes=_parse_input_shapes(args.input_shape))
    progress(f"writing {args.output}")
    cm.save(args.output)
    return {"pass_times": timing.table(), "metadata": cm.metadata, "seconds": cm.compile_seconds}


def _parse_bind(items: list[str] | None) -> dict[str, Any]:
    """--bind NAME=V[,V...] or NAME=FILE.npy -> {name: array}."""
    values: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise EmberError(f"--bind {item!r}: expected NAME=V[,V...] or NAME=FILE.npy")
        if text.endswith(".npy"):
            values[name] = _read_array(text, f"--bind {name}")
            continue
        try:
            numbers = [float(t) if any(c in t for c in ".eEn") else int(t) for t in text.split(",")]
        except ValueError:
            raise EmberError(f"--bind {name}: {text!r} is not a comma-separated list of numbers") from None
        values[name] = np.array(numbers)
    return values


def _parse_input_shapes(items: list[str] | None) -> dict[str, list[int]]:
    """--input-shape NAME=1,3,640,640 -> {name: sizes} (NAME= alone: a scalar)."""
    shapes: dict[str, list[int]] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(t) for t in text.replace("x", ",").split(",")] if text else []
        except ValueError:
            raise EmberError(f"--input-shape {item!r}: expected NAME=D0,D1,... (sizes, e.g. x=1,3,640,640)") from None
    return shapes


def cmd_compile(args: argparse.Namespace) -> int:
    progress = _Progress(args.quiet)
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


# ---------------------------------------------------------------- tune
def _tune(args: argparse.Namespace, progress):
    from ember.autotune.tune import tune

    _load_plugins(args.plugin)
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
                  bind=_parse_bind(args.bind), input_shapes=_parse_input_shapes(args.input_shape))
    return report.to_json()


def cmd_tune(args: argparse.Namespace) -> int:
    from ember.autotune.tune import parse_duration

    if args.trials is not None and args.trials <= 0:
        raise EmberError("--trials must be positive")
    try:
        args.time_budget = parse_duration(args.time) if args.time else None
    except ValueError as e:
        raise EmberError(str(e)) from None
    progress = _Progress(args.quiet)
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


# ---------------------------------------------------------------- prune
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

    progress = _Progress(args.quiet)
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


# ---------------------------------------------------------------- quantize
def _quantized(args: argparse.Namespace, progress):
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

    q = _quantized(args, _Progress(args.quiet))
    onnx_io.save(q, args.output)
    for ln in args.quant_report.lines():
        print(ln)
    print(f"wrote {args.output}")
    return 0


def _calib_options(sp: argparse.ArgumentParser) -> None:
    """The calibration data options `prune`, `quantize` and `compile --quantize` share."""
    sp.add_argument("--calib-data", metavar="FILE|DIR", help="calibration data: .npz with one array per input "
                    "(samples along axis 0, optional 'labels'), or a directory of .npz feed files")
    sp.add_argument("--random-calib", action="store_true", help="calibrate on random inputs (accuracy unknown)")


def _quantize_options(sp: argparse.ArgumentParser, flag: bool) -> None:
    if flag:
        sp.add_argument("--quantize", choices=["int8"], default=None, help="quantize to int8 (QDQ) on "
                        "--calib-data first; int8 arithmetic is simulated in float until integer kernels land")
    _calib_options(sp)
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


# ---------------------------------------------------------------- run
def _read_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise EmberError(f"{what}: no such file {path}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:
        raise EmberError(f"{what}: cannot read {path} as .npy ({type(e).__name__}: {e})") from None


def _gather_inputs(args: argparse.Namespace, specs: list[dict]) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    if args.inputs:
        p = Path(args.inputs)
        if not p.is_file():
            raise EmberError(f"--inputs: no such file {args.inputs}")
        try:
            with np.load(p, allow_pickle=False) as z:
                inputs.update({k: z[k] for k in z.files})
        except Exception as e:
            raise EmberError(f"--inputs: cannot read {args.inputs} as .npz ({type(e).__name__}: {e})") from None
    for item in args.input or ():
        if "=" not in item:
            raise EmberError(f"--input {item!r}: expected NAME=FILE.npy")
        name, path = item.split("=", 1)
        inputs[name] = _read_array(path, f"--input {name}")
    if args.random_inputs is not None:
        rng = np.random.default_rng(args.random_inputs)
        for s in specs:
            if s["name"] in inputs:
                continue
            shape = [d if isinstance(d, int) else 1 for d in (s["shape"] or [])]
            dt = np.dtype(s["dtype"] or "float32")
            inputs[s["name"]] = (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                                 else rng.integers(0, 2, shape).astype(dt))
    if not inputs and specs:
        raise EmberError("no inputs given: use --input NAME=FILE.npy, --inputs FILE.npz or --random-inputs "
                         f"(the model takes {', '.join(s['name'] for s in specs)})")
    return inputs


def _run_artifact(path: str, inputs: dict, repeat: int, progress) -> dict[str, Any]:
    from ember.compiler.runtime.artifact import load

    progress(f"loading {path}")
    cm = load(path)
    if cm.metadata["target"].get("runner") == "gpu":
        # checked here, in the (forked) child: the child of a process that touched CUDA cannot use it
        from ember.compiler.runtime.artifact import cuda_present

        if not cuda_present():
            raise EmberError(f"{path} is for CUDA and this machine has no CUDA GPU; "
                             "run it where one is, or over --rpc HOST:PORT")
    progress("running")
    outputs = cm.run(inputs)
    times = cm.time(inputs, repeat=repeat) if repeat else []
    return {"outputs": outputs, "times": times}


def _run_elsewhere(args: argparse.Namespace, meta: dict, inputs: dict, progress) -> dict[str, Any]:
    """Emulated or RPC runs: the library runs in another process or machine."""
    from ember.compiler.runtime.artifact import LIBRARY, CompiledModel, array_outputs, device_name

    signature = CompiledModel(None, meta)
    arrays = signature.check_inputs(inputs)
    library = Path(args.artifact) / LIBRARY
    if args.rpc or args.tracker:
        from ember.compiler.runtime import remote

        progress(f"running on {args.tracker or args.rpc} over RPC")
        outs, times = remote.run(library, arrays, signature.outputs, device=device_name(meta["target"]), rpc=args.rpc,
                                 tracker=args.tracker, key=args.key, repeat=args.time)
    else:
        from ember.compiler.runtime import emulation

        cpu = args.qemu_cpu or emulation.qemu_cpu(meta["target"].get("mcpu", ""), meta["target"].get("features", []))
        progress(f"running under emulation (qemu-aarch64, CPU {cpu})")
        (flat,) = emulation.run([(library, dict(zip(signature.input_names, arrays)), signature.input_names)], cpu)
        outs, times = array_outputs(list(flat), signature.outputs), []
    return {"outputs": dict(zip(signature.output_names, outs)), "times": times}


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from ember.compiler.runtime.artifact import METADATA

    progress = _Progress(args.quiet)
    meta_path = Path(args.artifact) / METADATA
    if not Path(args.artifact).is_dir():
        raise EmberError(f"{args.artifact}: not an artifact directory (compile a model with `ember compile`)")
    try:
        meta = json.loads(meta_path.read_text())
        specs, target = meta["inputs"], meta["target"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EmberError(f"{args.artifact}: missing or corrupt {METADATA}") from None
    if args.target:
        from ember import targets

        want = targets.parse(args.target).triple
        if want != target.get("triple"):
            raise EmberError(f"{args.artifact} was compiled for {target.get('triple')}, not {want}")
    runner = target.get("runner", "local")
    remote = bool(args.rpc or args.tracker)
    if runner == "emulated" and not (args.emulate or remote):
        raise EmberError(f"{args.artifact} is for {target.get('triple')}: run it with --emulate "
                         "(qemu, see scripts/setup_arm_emulation.sh) or on a device with --rpc HOST:PORT")
    if args.emulate and runner != "emulated":
        raise EmberError(f"--emulate runs aarch64 artifacts; {args.artifact} is for {target.get('triple')}")
    inputs = _gather_inputs(args, specs)
    if remote or args.emulate:
        result = _run_elsewhere(args, meta, inputs, progress)
    elif args.isolate:
        from ember.compiler.runtime.isolate import run_isolated

        result = run_isolated(_run_artifact, args.artifact, inputs, args.time, what="running the model",
                              progress=progress, timeout=args.timeout)
    else:
        result = _run_artifact(args.artifact, inputs, args.time, progress)
    outputs = _flat_outputs(result["outputs"])
    for name, v in outputs.items():
        finite = v[np.isfinite(v)] if np.issubdtype(v.dtype, np.floating) else v
        stats = (f" min {finite.min():.6g} max {finite.max():.6g} mean {finite.mean():.6g}"
                 if v.size and finite.size and np.issubdtype(v.dtype, np.number) else "")
        print(f"output {name}: {v.dtype}{list(v.shape)}{stats}")
    if args.save:
        np.savez(args.save, **outputs)
        print(f"saved outputs to {args.save}")
    if result["times"]:
        print(f"latency: median {np.median(result['times']) * 1e3:.3f} ms over {len(result['times'])} runs")
    if args.check:
        return _check(args, inputs, outputs, result["times"])
    return 0


def _flat_outputs(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Sequence outputs (lists) as NAME[i] entries, for printing, saving and checking."""
    flat: dict[str, np.ndarray] = {}
    for name, v in outputs.items():
        if isinstance(v, list):
            flat.update({f"{name}[{i}]": np.asarray(a) for i, a in enumerate(v)})
        else:
            flat[name] = v
    return flat


def _check(args, inputs, outputs, times) -> int:
    from ember.compiler.ir.reference import run_onnxruntime

    ref, ref_times = run_onnxruntime(args.check, inputs, repeat=args.time)
    ref = _flat_outputs(ref)
    worst, ok = 0.0, True
    for name, r in ref.items():
        if name not in outputs:
            raise EmberError(f"--check: output {name!r} of {args.check} is not an output of the artifact")
        got = outputs[name]
        if got.shape != r.shape:
            print(f"check {name}: shape {list(got.shape)} != onnxruntime {list(r.shape)}")
            ok = False
            continue
        if got.dtype.kind == "V" and r.dtype.kind in "ui" and r.dtype.itemsize == got.dtype.itemsize:
            r = r.view(got.dtype)  # onnxruntime returns float8 outputs as their bytes
        if got.dtype != r.dtype:
            print(f"check {name}: dtype {got.dtype} != onnxruntime {r.dtype}")
            ok = False
            continue
        got, r = got.astype(np.float64), r.astype(np.float64)
        err = float(np.max(np.abs(got - r))) if r.size else 0.0
        close = np.allclose(got, r, rtol=args.rtol, atol=args.atol, equal_nan=True)
        worst = max(worst, err)
        ok &= bool(close)
        print(f"check {name}: max |error| vs onnxruntime {err:.3g} ({'ok' if close else 'MISMATCH'} at "
              f"rtol={args.rtol:g}, atol={args.atol:g})")
    if times and ref_times:
        e, o = np.median(times), np.median(ref_times)
        print(f"speed: ember {e * 1e3:.3f} ms, onnxruntime {o * 1e3:.3f} ms "
              f"(ember takes {e / o:.2f}x onnxruntime's time)")
    if not ok:
        print("ember: error: outputs differ from onnxruntime", file=sys.stderr)
        return EXIT_ERROR
    return 0


# ---------------------------------------------------------------- optimize
def cmd_optimize(args: argparse.Namespace) -> int:
    from ember.compiler.ir import onnx_io
    from ember.passes import optimize
    from ember.passes.manager import PassTiming, format_pipeline

    _load_plugins(args.plugin)
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


# ---------------------------------------------------------------- inspect / lists
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

    _load_plugins(args.plugin)
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


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ember", description="Compile ONNX models for a target triple (Ember IR + Apache TVM).")
    p.add_argument("--version", action="store_true", help="print versions and exit")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks of internal errors")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)

    def common(sp):
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
        sp.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="run TVM steps in this process (a TVM crash then kills ember)")
        sp.add_argument("--timeout", type=float, default=3600,
                        help="seconds before an isolated step (a TVM build or run that may hang) is stopped "
                             "(default 3600)")

    c = sub.add_parser("compile", help="compile an ONNX model into an artifact directory")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, help="artifact directory to write")
    c.add_argument("--target", default="host", help="target triple or 'host' (default: host)")
    c.add_argument("--mcpu", default=None, help="CPU to tune code generation for (e.g. skylake-avx512)")
    c.add_argument("--mattr", default=None, help="comma-separated features, e.g. +avx512vnni or +neon,+dotprod")
    _pipeline_options(c)
    c.add_argument("--bind", action="append", metavar="NAME=V[,V...]",
                   help="compile for this value of a graph input (one TVM needs at compile time: a Reduce's "
                        "axes, a Reshape's shape, ...); a .npy file also works; repeatable")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="compile for this shape of an input with symbolic dims (e.g. x=1,3,640,640); the "
                        "artifact then refuses other shapes; repeatable")
    c.add_argument("--dump-ir-after", action="append", metavar="PASS",
                   help="print the IR after this pass ('all' for every pass; repeatable)")
    c.add_argument("--dump-dir", default=None, help="write IR dumps to this directory instead of stderr")
    _quantize_options(c, flag=True)
    common(c)
    c.set_defaults(fn=cmd_compile)

    c.add_argument("--db", default=None, help="tuning database (from `ember tune`) whose schedules to use")

    tn = sub.add_parser("tune", help="autotune a model's kernels for a target into a tuning database")
    tn.add_argument("model", help="ONNX model file")
    tn.add_argument("--bind", action="append", metavar="NAME=V[,V...]",
                    help="tune for this value of a graph input TVM needs at compile time (as in compile)")
    tn.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                    help="tune for this shape of an input with symbolic dims (as in compile)")
    tn.add_argument("--db", default="ember-tuning", help="tuning database directory (default: ember-tuning; "
                    "created if missing, resumed if present)")
    tn.add_argument("--target", default="host", help="target triple or 'host' (default: host)")
    tn.add_argument("--mcpu", default=None, help="CPU to generate code for")
    tn.add_argument("--mattr", default=None, help="comma-separated features")
    tn.add_argument("--trials", type=int, default=None, help="measurement budget over all kernels "
                    "(default 64 when --time is not given)")
    tn.add_argument("--time", default=None, metavar="DURATION", help="time budget, e.g. 20m, 1h, 600s")
    tn.add_argument("--tracker", metavar="HOST:PORT", help="measure on the devices registered with this "
                    "TVM RPC tracker (with --key); builds stay local")
    tn.add_argument("--key", help="device key registered with the tracker")
    tn.add_argument("--report", default=None, metavar="DIR", help="where to write the tuning report "
                    "(default: DB/report)")
    common(tn)
    _pipeline_options(tn)
    tn.set_defaults(fn=cmd_tune)

    qz = sub.add_parser("quantize", help="calibrated int8 quantization into a QDQ ONNX model")
    qz.add_argument("model", help="ONNX model file")
    qz.add_argument("-o", "--output", required=True, help="quantized ONNX model to write")
    _quantize_options(qz, flag=False)
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
    _calib_options(pr)
    pr.add_argument("--target-sparsity", type=float, default=None, help="channel ratios per layer chosen by "
                    "measured sensitivity so this fraction of the weights goes")
    pr.add_argument("--max-drop", type=float, default=None, help="with sensitivity analysis: the most error "
                    "allowed (accuracy points with labels, else relative output error)")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(fn=cmd_prune)

    d = sub.add_parser("db", help="tuning database housekeeping: stats, merge, prune")
    d.add_argument("action", choices=["stats", "merge", "prune"])
    d.add_argument("db", nargs="+", help="database directories (merge: DEST SRC...)")
    d.add_argument("--keep", type=int, default=1, help="prune: records kept per workload (default 1)")
    d.set_defaults(fn=cmd_db)

    o = sub.add_parser("optimize", help="run graph passes and write the optimized model as ONNX")
    o.add_argument("model", help="ONNX model file")
    o.add_argument("-o", "--output", required=True, help="ONNX file to write")
    _pipeline_options(o)
    o.set_defaults(fn=cmd_optimize)

    r = sub.add_parser("run", help="run a compiled artifact on inputs")
    r.add_argument("artifact", help="artifact directory written by `ember compile`")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="one input (repeatable)")
    r.add_argument("--inputs", metavar="FILE.npz", help="all inputs, by name, in one .npz")
    r.add_argument("--random-inputs", type=int, nargs="?", const=0, default=None, metavar="SEED",
                   help="fill missing inputs with seeded random data (symbolic dims = 1)")
    r.add_argument("--save", metavar="FILE.npz", help="write the outputs to this .npz")
    r.add_argument("--check", metavar="MODEL.onnx", help="compare with onnxruntime running this model")
    r.add_argument("--rtol", type=float, default=1e-3)
    r.add_argument("--atol", type=float, default=1e-5)
    r.add_argument("--time", type=int, default=0, metavar="N", help="also time N runs (and onnxruntime with --check)")
    r.add_argument("--target", default=None, help="expected target triple of the artifact (checked)")
    r.add_argument("--emulate", action="store_true", help="run an aarch64 artifact under qemu on this machine")
    r.add_argument("--qemu-cpu", default=None, help="core qemu emulates (default: the artifact's --mcpu)")
    r.add_argument("--rpc", metavar="HOST:PORT", help="run on a remote device through a TVM RPC server")
    r.add_argument("--tracker", metavar="HOST:PORT", help="run through a TVM RPC tracker (with --key)")
    r.add_argument("--key", help="device key registered with the tracker")
    common(r)
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("inspect", help="summarise an ONNX model: ops, parameters, FLOPs")
    i.add_argument("model")
    i.set_defaults(fn=cmd_inspect)

    ps = sub.add_parser("passes", help="list the registered passes and their options")
    ps.add_argument("--plugin", action="append", help="Python file or module that registers passes")
    ps.set_defaults(fn=cmd_passes)
    t = sub.add_parser("targets", help="list the known target triples")
    t.set_defaults(fn=cmd_targets)
    return p


def _pipeline_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-O", dest="opt_level", type=int, choices=[0, 1, 2, 3], default=None,
                    help="optimization level: 0 none, 1 cleanup, 2 cleanup+fusion (default), 3 = 2 for now; "
                         "`ember passes` prints each level's pipeline")
    sp.add_argument("--pipeline", default=None, help="explicit pass pipeline spec (overrides -O), "
                                                     "e.g. 'cleanup,fold-batchnorm'")
    sp.add_argument("--disable", action="append", help="skip this pass (repeatable)")
    sp.add_argument("--plugin", action="append", help="Python file or module that registers passes (repeatable)")
    sp.add_argument("--print-pass-times", action="store_true", help="print time spent in each pass")
    sp.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                    help="largest tensor a model may declare or make (e.g. 2G, 512M; default 8G)")


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 2G") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be positive")
    return int(value)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a model's -1 dims, a Specializing compile) as one `ember: warning:` line."""
    sys.stderr.write(f"ember: warning: {one_line(str(message))}\n")


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _warning_line
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ember.version import __version__

        print(f"ember {__version__}")
        return 0
    if not getattr(args, "cmd", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.fn(args)
    except EmberError as e:
        sys.stderr.write(f"ember: error: {one_line(str(e))}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("ember: interrupted\n")
        return 130
    except Exception as e:  # a bug in ember: still one line unless asked
        if args.traceback:
            raise
        sys.stderr.write(f"ember: internal error: {type(e).__name__}: {one_line(str(e))} (rerun with --traceback)\n")
        return EXIT_USAGE + 1


def one_line(text: str) -> str:
    """A message on one line: messages built from other tools' exception text (a plugin's
    SyntaxError, TVM's errors) can span several."""
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())


if __name__ == "__main__":
    raise SystemExit(main())
