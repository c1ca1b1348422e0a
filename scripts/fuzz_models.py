"""Mutation fuzzer: corrupt serialized ONNX models and check that Ember never
crashes, hangs or fails with anything but a clear EmberError.

    python scripts/fuzz_models.py [--iterations N] [--seed S] [--timeout SECONDS] [--run]

Each mutant (bytes flipped, runs zeroed or duplicated, cuts, splices of two
models) goes through `ember.compile` and, with --run, one run on random
inputs, in a forked child with a time limit. Outcomes: ok (compiled), refused
(EmberError: the expected answer to broken input), bug (any other exception),
crash (signal), hang (timeout). Exit status 1 if any bug, crash or hang.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections import Counter

import numpy as np


def seeds() -> list[bytes]:
    from ember.models import zoo

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
    from helpers import conv_relu_gemm, if_model  # noqa: E402

    models = [conv_relu_gemm(), if_model(), zoo.light_model("squeezenet"), zoo.light_model("bvlc_alexnet")]
    return [m.SerializeToString() for m in models]


def mutate(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 6)
    if kind == 0:  # flip a few random bytes
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(0, len(b))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # small integers are lengths, dims, enum values: bump one
        i = rng.integers(0, len(b))
        b[i] = int(rng.choice([0, 1, 0x7F, 0xFF, b[i] + 1 & 0xFF]))
    elif kind == 2:  # zero a run
        i = rng.integers(0, len(b))
        b[i:i + int(rng.integers(1, 64))] = bytes(min(len(b) - i, 64))
    elif kind == 3:  # cut
        b = b[: rng.integers(1, len(b))]
    elif kind == 4:  # duplicate a slice somewhere else
        i, j = sorted(rng.integers(0, len(b), 2))
        k = rng.integers(0, len(b))
        b[k:k] = b[i:j][:256]
    else:  # splice two models
        i, j = rng.integers(0, len(b)), rng.integers(0, len(other))
        b = b[:i] + bytearray(other[j:])
    return bytes(b)


def _child(conn, data: bytes, run: bool) -> None:
    import ember
    from ember.errors import EmberError
    from ember.compiler.runtime.isolate import after_fork

    after_fork()
    try:
        cm = ember.compile(_parse(data))
        if run:
            feeds = {}
            rng = np.random.default_rng(0)
            for spec in cm.inputs:
                shape = [d if isinstance(d, int) else 1 for d in spec["shape"] or []]
                dt = np.dtype(spec["dtype"] or "float32")
                feeds[spec["name"]] = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt)
            cm.run(feeds)
        conn.send(("ok", ""))
    except EmberError as e:
        conn.send(("refused", type(e).__name__))
    except BaseException as e:  # noqa: BLE001
        conn.send(("bug", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
    finally:
        import os

        os._exit(0)


def _parse(data: bytes):
    from ember.compiler.ir import onnx_io

    return onnx_io.import_model(onnx_io.parse_proto(data, "mutant"))


def try_one(data: bytes, run: bool, timeout: float) -> tuple[str, str]:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, data, run), daemon=True)
    p.start()
    send.close()
    if not recv.poll(timeout):
        p.kill()
        p.join()
        return "hang", f"no answer in {timeout:.0f} s"
    try:
        outcome = recv.recv()
    except EOFError:
        p.join()
        import signal

        return "crash", signal.Signals(-p.exitcode).name if p.exitcode and p.exitcode < 0 else f"exit {p.exitcode}"
    p.join()
    return outcome


def fuzz(iterations: int, seed: int, timeout: float, run: bool, quiet: bool = False):
    """Returns (outcome counts, [(mutant index, outcome, detail)] for bugs, crashes and hangs)."""
    import ember  # noqa: F401  (imported once; every child is a fork)

    rng = np.random.default_rng(seed)
    corpus = seeds()
    counts: Counter = Counter()
    problems = []
    t0 = time.perf_counter()
    for i in range(iterations):
        a, b = rng.integers(0, len(corpus), 2)
        data = mutate(corpus[a], corpus[b], rng)
        outcome, detail = try_one(data, run, timeout)
        counts[outcome] += 1
        if outcome in ("bug", "crash", "hang"):
            problems.append((i, outcome, detail))
        if not quiet and (i + 1) % 50 == 0:
            print(f"[{i + 1}/{iterations}] {dict(counts)} {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if not quiet:
        print(f"{iterations} mutants in {time.perf_counter() - t0:.0f} s: {dict(counts)}")
        for i, outcome, detail in problems[:30]:
            print(f"  mutant {i}: {outcome}: {detail}")
    return counts, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--run", action="store_true", help="also run models that compile")
    args = ap.parse_args()
    _, problems = fuzz(args.iterations, args.seed, args.timeout, args.run)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
