"""`ember run`: run an artifact here, under emulation or over RPC, and check it against onnxruntime;
`ember profile`: time it kernel by kernel here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ember.cli.common import EXIT_ERROR, Progress, device_options, read_array, step_options
from ember.errors import EmberError


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
        inputs[name] = read_array(path, f"--input {name}")
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
    from ember.compiler.runtime.elsewhere import run_elsewhere

    outputs, times = run_elsewhere(args.artifact, meta, inputs, rpc=args.rpc, tracker=args.tracker, key=args.key,
                                   qemu_cpu=args.qemu_cpu, repeat=args.time, say=progress)
    return {"outputs": outputs, "times": times}


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from ember.compiler.runtime.artifact import METADATA

    progress = Progress(args.quiet)
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


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="one input (repeatable)")
    p.add_argument("--inputs", metavar="FILE.npz", help="all inputs, by name, in one .npz")
    p.add_argument("--random-inputs", type=int, nargs="?", const=0, default=None, metavar="SEED",
                   help="fill missing inputs with seeded random data (symbolic dims = 1)")


def add_commands(sub) -> None:
    r = sub.add_parser("run", help="run a compiled artifact on inputs")
    r.add_argument("artifact", help="artifact directory written by `ember compile`")
    _input_options(r)
    r.add_argument("--save", metavar="FILE.npz", help="write the outputs to this .npz")
    r.add_argument("--check", metavar="MODEL.onnx", help="compare with onnxruntime running this model")
    r.add_argument("--rtol", type=float, default=1e-3)
    r.add_argument("--atol", type=float, default=1e-5)
    r.add_argument("--time", type=int, default=0, metavar="N", help="also time N runs (and onnxruntime with --check)")
    r.add_argument("--target", default=None, help="expected target triple of the artifact (checked)")
    device_options(r, "the artifact")
    step_options(r)
    r.set_defaults(fn=cmd_run)

    pr = sub.add_parser("profile", help="time a compiled artifact kernel by kernel, with a roofline")
    pr.add_argument("artifact", help="artifact directory written by `ember compile` (for this machine)")
    _input_options(pr)
    pr.add_argument("--repeat", type=int, default=10, metavar="N", help="runs to average over (default 10)")
    pr.add_argument("--top", type=int, default=25, metavar="N", help="kernels listed (default 25; 0: all)")
    pr.add_argument("--json", metavar="FILE", help="also write the whole report as JSON")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(fn=cmd_profile)



def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from ember.compiler.runtime.artifact import load
    from ember.compiler.runtime.profile import profile, table

    progress = Progress(args.quiet)
    if not Path(args.artifact).is_dir():
        raise EmberError(f"{args.artifact}: not an artifact directory (compile a model with `ember compile`)")
    if args.repeat < 1:
        raise EmberError("--repeat must be at least 1")
    progress(f"loading {args.artifact}")
    cm = load(args.artifact)
    if cm.metadata["target"].get("runner", "local") != "local":
        raise EmberError(f"{args.artifact} is for {cm.metadata['target'].get('triple')}: `ember profile` times "
                         "artifacts for this machine")
    inputs = _gather_inputs(args, cm.inputs)
    progress(f"profiling {args.repeat} runs")
    report = profile(cm, inputs, repeat=args.repeat)
    print(table(report, top=args.top or None))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"saved the report to {args.json}")
    return 0
