"""Per-kernel time of a compiled model on this machine, with a roofline.

TVM's VM calls an instrument function before and after every call it makes
(kernels and its own builtins: allocations, shape checks); `profile` times
each call between the two, over several runs, and sums by kernel. The time
of a run not spent in kernels or builtins is the VM's own work between them
(plus the instrument's, about a microsecond a call), reported as such.

The roofline: each kernel's operations per call (TVM's count, recorded at
compile time for models whose input dims are all static, as `--input-shape`
makes them: `kernel_flops` in the artifact's metadata) and the bytes of its
tensor arguments (what it must read and write at least) give its achieved
GFLOP/s, GB/s and arithmetic intensity; this machine's peaks, measured here
(a float32 GEMM through numpy's BLAS on all cores, a large copy), give what
the kernel could attain at that intensity. A kernel is memory-bound where
intensity times bandwidth is below the compute peak, compute-bound
otherwise; "of roofline" is achieved over attainable. Kernels on 8-bit
operands are marked "int8" instead, and those on bfloat16 weights (stored as
uint16 bits) "bf16": their compute roofs (VNNI, dot products, vdpbf16ps) are
not float32's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

BUILTIN_PREFIX = "vm.builtin."


@dataclass
class Kernel:
    name: str
    calls: int = 0  # per run
    seconds: float = 0.0  # per run
    shapes: list = field(default_factory=list)  # argument shapes of its first call
    bytes: int = 0  # per run: the tensor arguments of every call
    flops: float | None = None  # per run, where known
    narrow: str = ""  # "int8" (an 8-bit operand) or "bf16" (bfloat16 bits): float32's compute roof does not apply

    def row(self, total: float, peaks: dict[str, float]) -> dict[str, Any]:
        r = asdict(self)
        r["ms"] = self.seconds * 1e3
        r["share"] = self.seconds / total if total else 0.0
        r["gbps"] = self.bytes / self.seconds / 1e9 if self.seconds else None
        r["gflops"] = self.flops / self.seconds / 1e9 if self.flops and self.seconds else None
        r["intensity"] = self.flops / self.bytes if self.flops and self.bytes else None
        r["bound"] = r["of_roofline"] = None
        if self.narrow:
            r["bound"] = self.narrow
        elif r["intensity"] is not None and r["gflops"] is not None:
            memory_roof = r["intensity"] * peaks["gbps"]
            r["bound"] = "memory" if memory_roof < peaks["gflops"] else "compute"
            r["of_roofline"] = r["gflops"] / min(memory_roof, peaks["gflops"])
        return r


def _narrow(dtypes) -> str:
    dtypes = set(dtypes)
    return "int8" if dtypes & {"int8", "uint8"} else "bf16" if "uint16" in dtypes else ""


def machine_peaks() -> dict[str, float]:
    """This machine's float32 GEMM rate (numpy's BLAS, all cores) and copy bandwidth
    (read + write of a 256 MB array), best of a few tries."""
    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    gflops = 2 * n ** 3 / best / 1e9
    src = np.ones(1 << 26, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return {"gflops": gflops, "gbps": 2 * src.nbytes / best / 1e9}


def _nbytes(arg) -> int:
    shape = getattr(arg, "shape", None)
    dtype = getattr(arg, "dtype", None)
    if shape is None or dtype is None:
        return 0
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) * np.dtype(str(dtype)).itemsize


def profile(cm, inputs: dict[str, Any], repeat: int = 10, warmup: int = 3) -> dict[str, Any]:
    """Time `cm` (a CompiledModel for this machine) kernel by kernel on `inputs`."""
    from tvm.runtime.vm import VirtualMachine

    plain = float(np.median(cm.time(inputs, repeat=repeat, warmup=warmup)))
    args = cm._stage(cm.check_inputs(inputs))
    vm = VirtualMachine(cm._module, cm._device)
    main = vm["main"]
    kernels: dict[str, Kernel] = {}
    started: list[float] = []

    def instrument(func, symbol, before, ret, *call_args):
        now = time.perf_counter()
        if before:
            started.append(now)
            return 0
        k = kernels.get(symbol)
        if k is None:
            tensors = [a for a in call_args if getattr(a, "shape", None) is not None]
            k = kernels[symbol] = Kernel(symbol, shapes=[list(map(int, a.shape)) for a in tensors],
                                         narrow=_narrow(str(a.dtype) for a in tensors))
        k.calls += 1
        k.seconds += now - started.pop()
        k.bytes += sum(_nbytes(a) for a in call_args)
        return 0

    vm.set_instrument(instrument)
    main(*args)  # the first instrumented run: counted out
    kernels.clear()
    t0 = time.perf_counter()
    for _ in range(repeat):
        main(*args)
    cm._device.sync()
    total = (time.perf_counter() - t0) / repeat
    flops = cm.metadata.get("kernel_flops", {})
    for k in kernels.values():
        k.calls //= repeat
        k.seconds /= repeat
        k.bytes //= repeat
        if k.name in flops:
            k.flops = flops[k.name] * k.calls
    peaks = machine_peaks()
    rows = [k.row(total, peaks) for k in sorted(kernels.values(), key=lambda k: -k.seconds)
            if not k.name.startswith(BUILTIN_PREFIX)]
    builtins = sum(k.seconds for k in kernels.values() if k.name.startswith(BUILTIN_PREFIX))
    in_kernels = sum(r["seconds"] for r in rows)
    return {"run_ms": plain * 1e3, "instrumented_ms": total * 1e3, "kernels_ms": in_kernels * 1e3,
            "builtins_ms": builtins * 1e3, "between_ms": max(total - in_kernels - builtins, 0.0) * 1e3,
            "peaks": peaks, "kernels": rows}


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(report: dict[str, Any], top: int | None = None) -> str:
    """The report as text: one line per kernel, the slowest first, then the totals."""
    p = report["peaks"]
    lines = [f"{'kernel':44} {'calls':>5} {'ms':>8} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7} {'flop/B':>7} "
             f"{'bound':>7} {'of roof':>7}  shapes"]
    rows = report["kernels"][:top] if top else report["kernels"]
    for r in rows:
        shapes = " ".join("x".join(map(str, s)) for s in r["shapes"])
        lines.append(f"{r['name'][:44]:44} {r['calls']:>5} {r['ms']:>8.3f} {r['share']:>6.1%} "
                     f"{_num(r['gflops'], '.1f'):>8} {_num(r['gbps'], '.1f'):>7} {_num(r['intensity'], '.1f'):>7} "
                     f"{r['bound'] or '-':>7} {_num(r['of_roofline'], '.0%'):>7}  "
                     f"{shapes}")
    if top and len(report["kernels"]) > top:
        rest = report["kernels"][top:]
        lines.append(f"{f'({len(rest)} more kernels)':44} {'':>5} {sum(r['ms'] for r in rest):>8.3f} "
                     f"{sum(r['share'] for r in rest):>6.1%}")
    lines.append(f"run {report['run_ms']:.3f} ms (instrumented {report['instrumented_ms']:.3f} ms: kernels "
                 f"{report['kernels_ms']:.3f}, VM builtins {report['builtins_ms']:.3f}, between calls "
                 f"{report['between_ms']:.3f})")
    lines.append(f"this machine: {p['gflops']:.0f} GFLOP/s float32 GEMM (numpy BLAS), {p['gbps']:.1f} GB/s copy")
    return "\n".join(lines)
