#!/usr/bin/env python3
"""Run the ONNX backend conformance tests through Ember, with onnxruntime as the anchor.

    python scripts/conformance.py                        # everything (~2,000 tests)
    python scripts/conformance.py --limit 60             # a quick sample
    python scripts/conformance.py -k test_gather --suite node

The test set (the onnx wheel's node tests plus the suites it ships as data) is
written once, in onnx's on-disk layout, to the cache directory. Every test runs
in a forked child, so a crash or hang inside TVM is recorded and the run goes
on. See docs/conformance.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

SUITES = ("node", "simple", "pytorch-converted", "pytorch-operator", "light")
CATEGORIES = ("pass", "import error", "compile error", "runtime error", "wrong result", "crash", "timeout")
SIDES = ("ember", "ort")  # report order; a child runs ORT first
LABELS = {"ember": "Ember", "ort": "ORT"}
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7  # onnx's defaults
ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
STAMP = ".complete"  # written last into a built suite; holds the onnx version it came from
ORT_LOAD_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoModel", "NoSuchFile")
PROGRESS_EVERY = 50
TOP_CAUSES = 25


@dataclass(frozen=True)
class Test:
    """One conformance test: a directory with model.onnx and test_data_set_*/."""

    name: str
    suite: str
    path: Path
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL


# ----------------------------------------------------------------------------- building the cache
def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers: what a test feeds, in order."""
    inits = {i.name for i in model.graph.initializer}
    return [x for x in model.graph.input if x.name not in inits]


def write_test(dest: Path, model: onnx.ModelProto, data_sets, tolerances: dict | None = None) -> None:
    """Write a test in onnx's layout: model.onnx, [data.json,] test_data_set_N/{input,output}_K.pb."""
    dest.mkdir(parents=True)
    (dest / "model.onnx").write_bytes(model.SerializeToString())
    if tolerances:
        (dest / "data.json").write_text(json.dumps(tolerances))
    for n, (inputs, outputs) in enumerate(data_sets):
        (dest / f"test_data_set_{n}").mkdir()
        for kind, values, infos in (("input", inputs, graph_inputs(model)), ("output", outputs, model.graph.output)):
            for k, value in enumerate(values):
                proto = to_proto(value, infos[k])
                (dest / f"test_data_set_{n}" / f"{kind}_{k}.pb").write_bytes(proto.SerializeToString())


def to_proto(value, info: onnx.ValueInfoProto):
    """A test value as the proto its declared type calls for (what read_value reads back)."""
    convert = {"map_type": numpy_helper.from_dict, "sequence_type": numpy_helper.from_list,
               "optional_type": numpy_helper.from_optional}.get(info.type.WhichOneof("value"))
    if convert:
        return convert(value, info.name)
    if isinstance(value, onnx.TensorProto):  # some generators give these (float8, int4, ...)
        return value
    return numpy_helper.from_array(np.asarray(value), info.name)


def generate_node(dest: Path) -> None:
    """The node tests, from the case generators in the onnx wheel (which does not ship them as data)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        write_test(dest / case.name, case.model, case.data_sets)


def generate_light(dest: Path) -> None:
    """The light models, fed as onnx's runner feeds them: float inputs arange(n)/n with unknown
    dims set to 1; expected outputs the shipped light_NAME_output_K.pb; rtol/atol from
    data/real/test_NAME/data.json. Tests are named as onnx names them: test_NAME."""
    for info in sorted((ONNX_DATA / "real").glob("*/data.json")):
        meta = json.loads(info.read_text())
        src = ONNX_DATA / "light" / f"light_{meta['model_name']}.onnx"
        if not src.exists():
            continue
        model, inputs = onnx.load(src), []
        for x in graph_inputs(model):
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
        shipped = [src.with_name(f"{src.stem}_output_{i}.pb") for i in range(len(model.graph.output))]
        outputs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in shipped]
        tolerances = {"rtol": meta.get("rtol", DEFAULT_RTOL), "atol": meta.get("atol", DEFAULT_ATOL)}
        write_test(dest / info.parent.name, model, [(inputs, outputs)], tolerances)


def ensure_suite(cache: Path, suite: str) -> Path:
    """The suite's directory in the cache, built first if it is missing, incomplete or from another onnx."""
    dest = cache / suite
    if (dest / STAMP).exists() and (dest / STAMP).read_text().strip() == onnx.__version__:
        return dest
    print(f"conformance: building the {suite} tests in {dest} ...", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{suite}-", dir=cache))
    try:
        if suite == "node":
            generate_node(tmp)
        elif suite == "light":
            generate_light(tmp)
        else:  # shipped in onnx's layout already
            for case in sorted((ONNX_DATA / suite).iterdir()):
                if (case / "model.onnx").exists():
                    shutil.copytree(case, tmp / case.name)
        (tmp / STAMP).write_text(onnx.__version__ + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def collect_tests(cache: Path, suites, patterns: list[str], limit: int | None) -> list[Test]:
    """The tests of the chosen suites whose name contains one of the patterns (any case)."""
    tests = []
    for suite in suites:
        for d in sorted(p for p in ensure_suite(cache, suite).iterdir() if (p / "model.onnx").exists()):
            if patterns and not any(k.lower() in d.name.lower() for k in patterns):
                continue
            tol = json.loads((d / "data.json").read_text()) if (d / "data.json").exists() else {}
            tests.append(Test(d.name, suite, d, tol.get("rtol", DEFAULT_RTOL), tol.get("atol", DEFAULT_ATOL)))
    return tests[:limit] if limit else tests


# ----------------------------------------------------------------------------- loading and comparing
def read_value(path: Path, type_proto: onnx.TypeProto):
    """Load a .pb test value (tensor, sequence, optional or map) as numpy/Python data."""
    proto, convert = {
        "sequence_type": (onnx.SequenceProto, numpy_helper.to_list),
        "optional_type": (onnx.OptionalProto, numpy_helper.to_optional),
        "map_type": (onnx.MapProto, numpy_helper.to_dict),
    }.get(type_proto.WhichOneof("value"), (onnx.TensorProto, numpy_helper.to_array))
    p = proto()
    p.ParseFromString(path.read_bytes())
    return convert(p)


def load_test(test: Test):
    """The test's model and its data sets, as [(inputs, expected_outputs)]."""
    model = onnx.load(test.path / "model.onnx")
    ins, outs = graph_inputs(model), model.graph.output
    data_sets = []
    for ds in sorted(test.path.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
        n_in, n_out = (len(list(ds.glob(f"{kind}_*.pb"))) for kind in ("input", "output"))
        data_sets.append(([read_value(ds / f"input_{k}.pb", ins[k].type) for k in range(n_in)],
                          [read_value(ds / f"output_{k}.pb", outs[k].type) for k in range(n_out)]))
    return model, data_sets


def compare(expected, actual, rtol: float, atol: float, where: str = "output") -> str | None:
    """None when `actual` matches `expected` as onnx's runner checks it (same count, type, shape
    and dtype; allclose with NaN equal to NaN; strings exactly), else what differs."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, actual)):
        at = f"{where} {i}"
        want = (list, tuple) if isinstance(ref, (list, tuple)) else type(None) if ref is None else np.ndarray
        if not isinstance(out, want):
            return f"{at}: got {type(out).__name__}, expected {type(ref).__name__}"
        if isinstance(ref, (list, tuple)):  # a sequence: item by item
            if msg := compare(ref, out, rtol, atol, f"{at} item"):
                return msg
        elif ref is None:  # an empty optional
            continue
        elif out.shape != ref.shape:
            return f"{at}: shape {list(out.shape)}, expected {list(ref.shape)}"
        elif ref.dtype == object:
            if not np.array_equal(out, ref):
                return f"{at}: strings differ"
        elif out.dtype != ref.dtype:
            return f"{at}: dtype {out.dtype}, expected {ref.dtype}"
        elif msg := compare_values(ref, out, rtol, atol):
            return f"{at}: {msg}"
    return None


def compare_values(ref: np.ndarray, out: np.ndarray, rtol: float, atol: float) -> str | None:
    """np.testing.assert_allclose's test: |out - ref| <= atol + rtol * |ref|, NaN equal to NaN."""
    if ref.dtype.type.__module__.startswith("ml_dtypes"):  # bfloat16, float8, int4: numpy cannot promote
        rtol = max(rtol, 2**-6) if ref.dtype.name == "bfloat16" else rtol  # as onnx's runner does
        out, ref = out.astype(np.float32), ref.astype(np.float32)
    with np.errstate(all="ignore"):
        bad = ~np.isclose(out, ref, rtol=rtol, atol=atol, equal_nan=True)
        if not bad.any():
            return None
        diff = np.nanmax(np.abs(out[bad].astype(np.float64) - ref[bad].astype(np.float64)), initial=0)
    return f"values differ ({int(bad.sum())}/{bad.size} elements, max abs diff {diff:.3g})"


# ----------------------------------------------------------------------------- the child process
def describe(e: BaseException) -> str:
    """One line for an exception: its type and the first informative line of its message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Traceback", "File "))] or [""]
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def undefined_elements(model: onnx.ModelProto, inputs: list) -> dict[int, np.ndarray]:
    """{output index: mask} of the output elements ONNX leaves undefined: a graph output cast
    (Cast/CastLike) from a float graph input to an integer type, where the input's integer part
    is out of the type's range, NaN or infinite ("undefined if OOR" in the Cast spec). The
    reference's values there are whatever its numpy/ml_dtypes release gives."""
    names = [vi.name for vi in graph_inputs(model)]
    outputs = [o.name for o in model.graph.output]
    masks = {}
    for node in model.graph.node:
        if node.op_type not in ("Cast", "CastLike") or node.domain not in ("", "ai.onnx") \
                or node.output[0] not in outputs or node.input[0] not in names:
            continue
        out = next(o for o in model.graph.output if o.name == node.output[0])
        to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(out.type.tensor_type.elem_type))
        x = inputs[names.index(node.input[0])]
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f" and "float" not in x.dtype.name:
            continue
        narrow = to.type.__module__.startswith("ml_dtypes")  # int4, uint2, ... (float8 too: excluded)
        if not (to.kind in "iu" or narrow and "int" in to.name and "float" not in to.name):
            continue
        info = ml_dtypes.iinfo(to.type) if narrow else np.iinfo(to)
        with np.errstate(all="ignore"):
            whole = np.trunc(x.astype(np.float64))
            masks[outputs.index(node.output[0])] = ~np.isfinite(whole) | (whole < info.min) | (whole > info.max)
    return masks


def check_outputs(run, test: Test, data_sets, model: onnx.ModelProto) -> tuple[str, str]:
    """(category, detail) of running `run(inputs)` on every data set and comparing the outputs
    (not where ONNX leaves them undefined: `undefined_elements`)."""
    for inputs, expected in data_sets:
        try:
            outputs = list(run(inputs))
        except Exception as e:  # noqa: BLE001 - anything raised while running
            return "runtime error", describe(e)
        for i, mask in undefined_elements(model, inputs).items():
            if i < len(outputs) and isinstance(outputs[i], np.ndarray) and outputs[i].shape == mask.shape \
                    and outputs[i].dtype == expected[i].dtype:
                outputs[i] = np.where(mask, expected[i], outputs[i])
        if msg := compare(expected, outputs, test.rtol, test.atol):
            return "wrong result", msg
    return "pass", ""


def run_ort(test: Test, model: onnx.ModelProto, data_sets, threads: int) -> tuple[str, str]:
    """(category, detail) of the test on onnxruntime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        return ("import error" if type(e).__name__ in ORT_LOAD_ERRORS else "compile error"), describe(e)
    names = [x.name for x in graph_inputs(model)]
    return check_outputs(lambda inputs: sess.run(None, dict(zip(names, inputs))), test, data_sets, model)


def run_ember(test: Test, model: onnx.ModelProto, data_sets, pipeline: str | None) -> tuple[str, str]:
    """(category, detail) of the test on Ember's ONNX backend."""
    import ember.backend as eb
    from ember.errors import ModelLoadError, UnsupportedError

    try:
        rep = eb.prepare(model, "CPU", pipeline=pipeline)
    except (ModelLoadError, UnsupportedError) as e:
        return "import error", describe(e)
    except Exception as e:  # noqa: BLE001 - CompileError, or anything else while preparing
        return "compile error", describe(e)
    return check_outputs(lambda inputs: rep.run(list(inputs)), test, data_sets, model)


def child_main(conn, test: Test, sides: tuple[str, ...], threads: int, pipeline: str | None, log) -> None:
    """In the forked child: ORT first, then Ember, sending each (side, category, detail) as soon
    as it is known, so a crash in Ember still leaves ORT's result. Output goes to `log`."""
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    model, data_sets = load_test(test)
    if "ort" in sides:
        conn.send(("ort", *run_ort(test, model, data_sets, threads)))
    if "ember" in sides:
        conn.send(("ember", *run_ember(test, model, data_sets, pipeline)))
    conn.close()
    os._exit(0)  # skip interpreter teardown: TVM can crash there too


# ----------------------------------------------------------------------------- scheduling
def start(ctx, test: Test, sides: tuple[str, ...], threads: int, timeout: float, pipeline: str | None) -> dict:
    """Fork a child for one test; returns its bookkeeping record."""
    log = tempfile.TemporaryFile()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(send, test, sides, threads, pipeline, log), daemon=True)
    proc.start()
    send.close()
    now = time.monotonic()
    return {"test": test, "sides": sides, "proc": proc, "conn": recv, "log": log,
            "start": now, "deadline": now + timeout, "got": {}, "eof": False}


def drain(job: dict) -> None:
    """Receive whatever results the child has sent so far."""
    try:
        while not job["eof"] and job["conn"].poll():
            side, category, detail = job["conn"].recv()
            job["got"][side] = (category, detail)
    except (EOFError, OSError):
        job["eof"] = True  # the child closed its end: stop waiting on it


def finish(job: dict, timed_out: bool, timeout: float) -> dict[str, tuple[str, str]]:
    """Reap the child (killing it if it ran out of time); results it did not send become
    timeout or crash (with the signal name and a hint from its output)."""
    if timed_out:
        job["proc"].kill()
    job["proc"].join()
    drain(job)
    job["conn"].close()
    job["log"].seek(0)
    hint = crash_hint(job["log"].read()[-20000:].decode(errors="replace"))
    job["log"].close()
    code = job["proc"].exitcode
    if timed_out:
        missing = ("timeout", f"no result after {timeout:g} s")
    else:
        how = signal.Signals(-code).name if code and code < 0 else f"exit code {code}"
        missing = ("crash", how + (f": {hint[:200]}" if hint else ""))
    return {side: job["got"].get(side, missing) for side in job["sides"]}


def crash_hint(log: str) -> str:
    """What a dead child's output says about its death: the innermost frame of TVM's segfault
    backtrace (past the signal handler), else the last line that is not a stack frame."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    banners = [i for i, ln in enumerate(lines) if ln.startswith("!!!!!!!")]
    for ln in lines[banners[-1] + 1:] if banners else []:
        if ln.startswith("File ") and "sysdeps" not in ln and "libc_" not in ln:
            return "in " + ln.rsplit(" in ", 1)[-1]
    text = [ln for ln in lines if not ln.startswith(("File ", "!!!!!!!", "Traceback", "at "))]
    return text[-1] if text else ""


def run_all(tests: list[Test], sides, jobs: int, timeout: float, threads: int,
            pipeline: str | None = None) -> dict[Test, dict]:
    """Run the tests, `jobs` children at a time: {test: {side: (category, detail), "seconds": s}}.
    A test whose child dies before ORT reports is rerun for Ember alone. Ctrl-C stops early."""
    ctx = mp.get_context("fork")
    queue = [(t, sides) for t in reversed(tests)]
    results: dict[Test, dict] = {}
    running: list[dict] = []
    t0, reported = time.monotonic(), 0
    try:
        while queue or running:
            while queue and len(running) < jobs:
                running.append(start(ctx, *queue.pop(), threads, timeout, pipeline))
            wait([j["conn"] for j in running if not j["eof"]] + [j["proc"].sentinel for j in running],
                 timeout=max(0.0, min(j["deadline"] for j in running) - time.monotonic()))
            for job in list(running):
                drain(job)
                timed_out = time.monotonic() > job["deadline"]
                if job["proc"].is_alive() and not timed_out:
                    continue
                running.remove(job)
                got, test = finish(job, timed_out, timeout), job["test"]
                if len(job["sides"]) == 2 and not job["got"]:  # died in ORT: Ember never ran
                    del got["ember"]
                    queue.append((test, ("ember",)))
                results.setdefault(test, {"seconds": 0.0}).update(got)
                results[test]["seconds"] = round(results[test]["seconds"] + time.monotonic() - job["start"], 2)
            done = sum(all(s in r for s in sides) for r in results.values())
            if done - reported >= PROGRESS_EVERY or (done == len(tests) and done != reported):
                reported = done
                report_progress(results, done, len(tests), sides, time.monotonic() - t0)
    except KeyboardInterrupt:
        print("\nconformance: interrupted; reporting the tests that finished", file=sys.stderr)
        for job in running:
            job["proc"].kill()
            job["proc"].join()
    return {t: r for t, r in results.items() if all(s in r for s in sides)}


def report_progress(results: dict, done: int, total: int, sides, elapsed: float) -> None:
    """One progress line on stderr: done/total, passes so far, elapsed, ETA."""
    passed = ", ".join(f"{LABELS[s]} {sum(r.get(s, ('',))[0] == 'pass' for r in results.values())}" for s in sides)
    eta = elapsed / done * (total - done) if done else 0
    print(f"[{done:5d}/{total}] pass: {passed}  elapsed {fmt_time(elapsed)}  ETA {fmt_time(eta)}",
          file=sys.stderr, flush=True)


def fmt_time(seconds: float) -> str:
    """'1h02m', '3m05s' or '42s'."""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ----------------------------------------------------------------------------- reporting
UNSUPPORTED_OP = re.compile(r"(?<=unsupported operator )[\w.:]+")
NORMALISE = (  # (pattern, replacement), in order: turns a detail line into its cause template
    (UNSUPPORTED_OP, "<op>"),
    (re.compile(r"\b[A-Z]\w* node\b"), "<op> node"),
    (re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\""), "'…'"),
    (re.compile(r"(?:/[\w.@+-]+){2,}/?"), "<path>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x…"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)"), "N"),
    (re.compile(r"N(?:\s*[,x*]\s*N)+"), "N, …"),
)


def cause_of(detail: str) -> str:
    """The cause template of a detail line: names, paths and numbers replaced, so similar errors group."""
    for pattern, repl in NORMALISE:
        detail = pattern.sub(repl, detail)
    return detail


def print_summary(results: dict[Test, dict], sides, verbose: bool) -> None:
    """The category table, per-suite pass counts and the top causes of each failure category."""
    total = len(results)
    counts = {s: Counter(r[s][0] for r in results.values()) for s in sides}
    pct = lambda n: f"{100 * n / total:5.1f}%" if total else "    -"  # noqa: E731
    print(f"\n{'category':<15}" + "".join(f"{LABELS[s]:>17}" for s in sides))
    for cat in CATEGORIES:
        print(f"{cat:<15}" + "".join(f"{counts[s][cat]:>10d} {pct(counts[s][cat])}" for s in sides))
    print(f"{'total':<15}" + "".join(f"{total:>10d}       " for s in sides))
    print(f"{'pass rate':<15}" + "".join(f"{pct(counts[s]['pass']):>17}" for s in sides))
    if len(sides) == 2:
        gap = sum(r["ort"][0] == "pass" and r["ember"][0] != "pass" for r in results.values())
        print(f"\nEmber fails where ORT passes: {gap}")
    print("\nper suite (pass/total):")
    for suite in SUITES:
        if rs := [r for t, r in results.items() if t.suite == suite]:
            print(f"  {suite:<18} " + "  ".join(f"{LABELS[s]} {sum(r[s][0] == 'pass' for r in rs)}/{len(rs)}"
                                               for s in sides))
    for side in sides:
        for cat in CATEGORIES[1:]:
            details = [r[side][1] for r in results.values() if r[side][0] == cat]
            causes = Counter(cause_of(d) for d in details)
            if not causes:
                continue
            shown = causes.most_common(None if verbose else TOP_CAUSES)
            print(f"\n{LABELS[side]} {cat}: {counts[side][cat]} tests, {len(causes)} causes")
            for cause, n in shown:
                print(f"  {n:5d}  {cause}")
                ops = Counter(op for d in details if cause_of(d) == cause for op in UNSUPPORTED_OP.findall(d))
                if ops:  # which operators, most common first
                    print("         " + ", ".join(f"{op} {k}" for op, k in ops.most_common(None if verbose else 12))
                          + (" ..." if len(ops) > 12 and not verbose else ""))
            if len(shown) < len(causes):
                print(f"         ... {len(causes) - len(shown)} more (--verbose lists them)")


def write_json(path: Path, results: dict[Test, dict], sides, elapsed: float) -> None:
    """Every test's outcome (result, cause template, detail line), plus failing names per category."""
    import onnxruntime
    import tvm

    import ember

    tests, failing = [], {s: defaultdict(list) for s in sides}
    for t, r in sorted(results.items(), key=lambda kv: (SUITES.index(kv[0].suite), kv[0].name)):
        entry = {"name": t.name, "suite": t.suite, "path": str(t.path), "seconds": r["seconds"]}
        for s in sides:
            entry[s] = {"result": r[s][0], "cause": cause_of(r[s][1]), "detail": r[s][1]}
            if r[s][0] != "pass":
                failing[s][r[s][0]].append(t.name)
        tests.append(entry)
    doc = {"versions": {"ember": ember.__version__, "tvm": tvm.__version__, "onnx": onnx.__version__,
                        "onnxruntime": onnxruntime.__version__},
           "command": sys.argv, "elapsed_s": round(elapsed, 1), "total": len(tests),
           "counts": {s: dict(Counter(r[s][0] for r in results.values())) for s in sides},
           "tests": tests, "failing": failing}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTRING",
                   help="run only tests whose name contains SUBSTRING, any case (repeatable)")
    p.add_argument("--suite", action="append", choices=SUITES, help="run only this suite (repeatable)")
    p.add_argument("--limit", type=int, help="run only the first N selected tests")
    p.add_argument("--jobs", "-j", type=int, default=2, help="tests run in parallel (default 2)")
    p.add_argument("--timeout", type=float, default=60, help="seconds per test (default 60)")
    p.add_argument("--threads", type=int, default=1, help="threads per test for TVM and ORT (default 1)")
    p.add_argument("--no-ort", action="store_true", help="do not run onnxruntime as the anchor")
    p.add_argument("--pipeline", default=None, help="Ember pass pipeline (default: ember's default)")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/ember/conformance").expanduser(),
                   help="where the test set is built (default %(default)s)")
    p.add_argument("--json", type=Path, default=Path("conformance-results.json"),
                   help="results file (default %(default)s)")
    p.add_argument("--verbose", "-v", action="store_true", help=f"list every cause, not the top {TOP_CAUSES}")
    return p.parse_args(argv)


def main(argv=None) -> None:
    """Build the test set, run it, print the summary and write the JSON."""
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    suites = [s for s in SUITES if not args.suite or s in args.suite]
    tests = collect_tests(args.cache, suites, args.patterns, args.limit)
    if not tests:
        sys.exit("conformance: no tests selected")
    import onnxruntime  # noqa: F401  (imported once here: every child is a fork of this process)
    import tvm.relax.frontend.onnx  # noqa: F401

    import ember.backend  # noqa: F401

    sides = ("ember",) if args.no_ort else SIDES
    per_suite = ", ".join(f"{s} {n}" for s, n in Counter(t.suite for t in tests).items())
    print(f"conformance: {len(tests)} tests ({per_suite}), {args.jobs} jobs, {args.timeout:g} s timeout",
          file=sys.stderr)
    t0 = time.monotonic()
    results = run_all(tests, sides, max(1, args.jobs), args.timeout, max(1, args.threads), args.pipeline)
    print_summary(results, sides, args.verbose)
    write_json(args.json, results, sides, time.monotonic() - t0)
    print(f"\nresults: {args.json}  ({fmt_time(time.monotonic() - t0)})")


if __name__ == "__main__":
    main()
