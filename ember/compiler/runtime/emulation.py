"""Run aarch64 artifacts on this x86-64 machine under qemu user-mode emulation.

`scripts/setup_arm_emulation.sh` prepares the emulated tree (qemu-aarch64, a
minimal Debian arm64 Python, the TVM runtime). qemu emulates the artifact's
named core (`qemu_cpu`), so code using a feature that core lacks dies with
SIGILL instead of passing silently (qemu's default CPU accepts everything).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from ember.errors import EmberError

DEFAULT_ROOTFS = Path.home() / ".cache" / "ember" / "arm64-rootfs"
SETUP_HINT = "run scripts/setup_arm_emulation.sh first"
OPTIONAL = ("sve", "sve2", "i8mm", "sme")  # extensions no named core of older qemu versions has


class EmulationError(EmberError):
    """The emulated runtime is missing, or the artifact failed under emulation."""


def rootfs_ready(rootfs: Path = DEFAULT_ROOTFS) -> bool:
    return (rootfs / ".ember-ready").is_file() and shutil.which("qemu-aarch64") is not None


@cache
def qemu_cpus() -> frozenset[str]:
    """The CPU models the installed qemu-aarch64 emulates (7.2 stops at
    neoverse-n1: no neoverse-n2, cortex-a710 or neoverse-v1)."""
    try:
        out = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def qemu_cpu(mcpu: str, features: list[str]) -> str:
    """The qemu core to emulate: the artifact's CPU when qemu knows it; 'max'
    (every extension) for a CPU it does not model or for optional extensions
    (SVE, i8mm) no named core has; otherwise a generic v8.2 or v8.0 core."""
    if mcpu in qemu_cpus():
        return mcpu
    if mcpu or any(f.lstrip("+") in OPTIONAL for f in features):
        return "max"
    return "cortex-a76" if any(f.lstrip("+") in ("dotprod", "fullfp16") for f in features) else "cortex-a72"


def run(jobs: list[tuple[Path, dict[str, np.ndarray], list[str]]], cpu: str,
        rootfs: Path = DEFAULT_ROOTFS, timeout: float = 900) -> list[list[np.ndarray]]:
    """Run (library, inputs, input_names) jobs in one emulated process (its
    ~3 s start-up is paid once); returns each job's outputs."""
    if not rootfs_ready(rootfs):
        raise EmulationError(f"no emulated aarch64 runtime at {rootfs}; {SETUP_HINT}")
    with tempfile.TemporaryDirectory(prefix="ember-arm-") as tmp:
        spec = []
        for i, (lib, inputs, names) in enumerate(jobs):
            np.savez(f"{tmp}/in{i}.npz", **{k: _as_bits(v) for k, v in inputs.items()})
            spec.append({"library": str(Path(lib).resolve()), "inputs": f"{tmp}/in{i}.npz",
                         "outputs": f"{tmp}/out{i}.npz", "input_names": names,
                         "dtypes": {k: v.dtype.name for k, v in inputs.items() if _is_ml_dtype(v)}})
        Path(tmp, "jobs.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(QEMU_CPU=cpu, TVM_USE_RUNTIME_LIB="1", PYTHONNOUSERSITE="1")
        cmd = ["qemu-aarch64", "-L", str(rootfs), str(rootfs / "usr/bin/python3.11"),
               str(Path(__file__).with_name("arm_runner.py")), f"{tmp}/jobs.json"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"emulated run timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            if proc.returncode < 0:
                name = signal.Signals(-proc.returncode).name
                hint = (" (an instruction this CPU lacks: the artifact was built for features "
                        f"the emulated {cpu} does not have)") if name == "SIGILL" else ""
                raise EmulationError(f"artifact killed by {name} on emulated {cpu}{hint}")
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise EmulationError(f"emulated run failed on {cpu}: {tail[0][:300]}")
        results = []
        for s in spec:
            dtypes = json.loads(Path(s["outputs"] + ".json").read_text())
            with np.load(s["outputs"]) as z:
                results.append([_from_bits(z[f"arr_{k}"], dtypes[k]) for k in range(len(z.files))])
        return results


def _is_ml_dtype(a: np.ndarray) -> bool:
    """bfloat16, float8...: ml_dtypes types, which npz stores as raw void bytes
    and the emulated Python (no ml_dtypes) could not read."""
    return a.dtype.kind == "V"


def _as_bits(a: np.ndarray) -> np.ndarray:
    """An ml_dtypes array as unsigned integers of its width (its bits), any other as it is."""
    return a.view(f"uint{8 * a.dtype.itemsize}") if _is_ml_dtype(a) else a


def _from_bits(a: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return a
    import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 types with numpy)

    return a.view(np.dtype(dtype))


def start_rpc_server(port: int, cpu: str = "cortex-a72", rootfs: Path = DEFAULT_ROOTFS,
                     workdir: Path | None = None, tracker: str | None = None,
                     key: str | None = None) -> subprocess.Popen:
    """Start a TVM RPC server inside the emulated aarch64 Python, listening on
    127.0.0.1:`port`, in its own process group (stop it with os.killpg).
    With `tracker` (HOST:PORT) and `key` it registers with that tracker, as a
    device `ember tune --tracker HOST:PORT --key KEY` can measure on.

    The server runs each session in a worker it starts through sys.executable,
    which inside qemu (no binfmt) cannot exec an aarch64 binary; sys.executable
    is pointed at a host shell script that starts the emulated interpreter."""
    if not rootfs_ready(rootfs):
        raise EmulationError(f"no emulated aarch64 runtime at {rootfs}; {SETUP_HINT}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ember-arm-rpc-"))
    python = rootfs / "usr/bin/python3.11"
    wrapper = workdir / "python-aarch64"
    wrapper.write_text(f'#!/bin/sh\nexec qemu-aarch64 -L "{rootfs}" "{python}" "$@"\n')
    wrapper.chmod(0o755)
    launcher = workdir / "rpc_server.py"
    launcher.write_text("import runpy, sys\n"
                        f"sys.executable = {str(wrapper)!r}\n"
                        "sys.argv = ['rpc_server'] + sys.argv[1:]\n"
                        "runpy.run_module('tvm.exec.rpc_server', run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(QEMU_CPU=cpu, TVM_USE_RUNTIME_LIB="1", PYTHONNOUSERSITE="1")
    args = [str(wrapper), str(launcher), "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
    # the runtime-only mode leaves out libtvm_runtime_extra.so, which has the random
    # fill MetaSchedule's RPC runner calls on the device
    extra = next((rootfs / "usr/local/lib").glob("python3*/dist-packages/tvm/lib/libtvm_runtime_extra.so"), None)
    if extra is not None:
        args += ["--load-library", str(extra)]
    if tracker:
        args += ["--tracker", tracker, "--key", key or "aarch64"]
    return subprocess.Popen(args, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
