"""Target triples: parsing, capabilities, clear errors, CUDA builds, RPC."""

import os
import re
import shutil
import subprocess
import sys
import time

import onnx
import pytest
from helpers import conv_relu_gemm, error_line, free_port, stop_group, wait_port

from ember import targets
from ember.errors import TargetError


def test_host_is_detected():
    h = targets.parse("host")
    assert h.is_host and h.triple == "x86_64-linux-gnu" and h.num_cores >= 1
    assert h.runner == "local" and h.tvm_dict["kind"] == "llvm"


@pytest.mark.parametrize("triple, mcpu, features, message", [
    ("x86-64-linux-gnu", None, None, "did you mean x86_64-linux-gnu"),
    ("riscv64-linux-gnu", None, None, "unknown target triple"),
    ("aarch64-linux-gnu", "cortex-a72x", None, "did you mean cortex-a72"),
    ("aarch64-linux-gnu", None, "+neom", "did you mean neon"),
    ("aarch64-linux-gnu", "cortex-a72", "+sve", "cortex-a72 does not support +sve"),
    ("cuda", None, None, "--mcpu sm_XX"),
    ("cuda", "sm_91", None, "unknown CUDA architecture"),
    ("nvptx64-nvidia-cuda", "sm_80", "+neon", "takes no features"),
])
def test_bad_targets(triple, mcpu, features, message):
    with pytest.raises(TargetError, match=re.escape(message)):
        targets.parse(triple, mcpu=mcpu, features=features)


def test_capabilities():
    a72 = targets.parse("aarch64-linux-gnu", mcpu="cortex-a72")
    n1 = targets.parse("aarch64", mcpu="neoverse-n1")
    assert not a72.int8_dot and n1.int8_dot and "dotprod" in n1.all_features
    assert targets.parse("aarch64-linux-gnu", features="+neon,+dotprod").int8_dot
    assert a72.runner == "emulated" and a72.vector_bits == 128 and a72.info.linker == "aarch64-linux-gnu-g++"
    skx = targets.parse("x86_64-linux-gnu", mcpu="skylake-avx512")
    assert skx.vector_bits == 512 and not skx.int8_dot
    assert targets.parse("x86_64-linux-gnu", mcpu="sapphirerapids").int8_dot
    cuda = targets.parse("cuda", mcpu="sm_90")
    assert cuda.runner == "gpu" and cuda.tensor_cores and cuda.int8_dot
    assert cuda.tvm_dict["arch"] == "sm_90" and cuda.tvm_dict["host"]["kind"] == "llvm"
    assert not targets.parse("cuda", mcpu="sm_60").tensor_cores
    assert a72.tvm_dict == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}


def ember_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ember", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def one_error_line(proc, fragment):
    assert fragment in error_line(proc), proc.stderr


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "m.onnx"
    onnx.save(conv_relu_gemm(), str(path))
    return path


def _path_without(*tools):
    """A PATH where none of `tools` can be found (python itself stays reachable)."""
    keep = []
    for d in os.environ["PATH"].split(os.pathsep):
        if not any(os.path.exists(os.path.join(d, t)) for t in tools):
            keep.append(d)
    return {**os.environ, "PATH": os.pathsep.join(keep)}


def test_missing_cross_compiler_and_nvcc(model_file, tmp_path):
    env = _path_without("aarch64-linux-gnu-g++")
    one_error_line(ember_cli("compile", model_file, "-o", tmp_path / "a", "--target", "aarch64-linux-gnu", env=env),
                   "apt-get install g++-aarch64-linux-gnu")
    env = _path_without("nvcc")
    one_error_line(ember_cli("compile", model_file, "-o", tmp_path / "c", "--target", "cuda", "--mcpu", "sm_80",
                             env=env), "needs nvcc")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
def test_architecture_the_toolkit_cannot_build_is_refused(model_file, tmp_path):
    old = [a for a in targets.CUDA_ARCHS if a.rstrip("a") not in targets.nvcc_architectures()]
    if not old or not targets.nvcc_architectures():
        pytest.skip("this nvcc builds every architecture Ember knows")
    one_error_line(ember_cli("compile", model_file, "-o", tmp_path / "c", "--target", "cuda", "--mcpu", old[0]),
                   f"cannot build for {old[0]}")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
@pytest.mark.parametrize("sm", ["sm_80", "sm_90"])
def test_cuda_artifacts_build_here(model_file, tmp_path, sm):
    """CUDA code generation needs no GPU: the artifact is built and its kernels are CUDA."""
    import ember

    cm = ember.compile(model_file, target="cuda", mcpu=sm)
    cuda_modules = [m for m in cm._executable.mod.imports[0].imports if m.kind == "cuda"]
    assert cuda_modules and "__global__" in cuda_modules[0].inspect_source()
    cm.save(tmp_path / sm)
    meta = ember.load(tmp_path / sm).metadata
    assert meta["target"]["tvm"]["arch"] == sm and meta["target"]["runner"] == "gpu"
    assert (tmp_path / sm / "model.so").stat().st_size > 20_000
    import tvm

    if not tvm.cuda(0).exist:
        one_error_line(ember_cli("run", tmp_path / sm, "--random-inputs"), "no CUDA GPU")
    elif sm == "sm_" + tvm.cuda(0).compute_version.replace(".", ""):  # machine code runs on its architecture
        r = ember_cli("run", tmp_path / sm, "--random-inputs", "--check", model_file, "--time", "10")
        assert r.returncode == 0 and "(ok at" in r.stdout and "MISMATCH" not in r.stdout, r.stdout + r.stderr


def _start(args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.fixture(scope="module")
def rpc_servers():
    """An RPC server on loopback, and a tracker with one server registered under key 'ember-test'."""
    port, tracker_port = free_port(), free_port()
    procs = [_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]),
             _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tracker_port),
                     "--port-end", str(tracker_port + 1)])]
    try:
        wait_port(port)
        wait_port(tracker_port)
        third = free_port()
        procs.append(_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(third),
                             "--port-end", str(third + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                             "--key", "ember-test"]))
        time.sleep(3)
        yield f"127.0.0.1:{port}", f"127.0.0.1:{tracker_port}"
    finally:
        for p in procs:
            stop_group(p)


def test_run_over_rpc(model_file, tmp_path, rpc_servers):
    server, tracker = rpc_servers
    assert ember_cli("compile", model_file, "-o", tmp_path / "art").returncode == 0
    proc = ember_cli("run", tmp_path / "art", "--random-inputs", "--rpc", server, "--check", model_file, "--time", "3")
    assert proc.returncode == 0 and "(ok at" in proc.stdout and "latency" in proc.stdout, proc.stderr
    proc = ember_cli("run", tmp_path / "art", "--random-inputs", "--tracker", tracker, "--key", "ember-test",
                     "--check", model_file)
    assert proc.returncode == 0 and "(ok at" in proc.stdout, proc.stderr
    one_error_line(ember_cli("run", tmp_path / "art", "--random-inputs", "--rpc", f"127.0.0.1:{free_port()}"),
                   "cannot reach the RPC server")
    one_error_line(ember_cli("run", tmp_path / "art", "--random-inputs", "--tracker", tracker), "needs --key")


def test_qemu_core_for_an_artifact(monkeypatch):
    """The artifact's CPU when this qemu models it; 'max' for one it does not
    (qemu 7.2 has no neoverse-n2) or for SVE / i8mm without a CPU."""
    from ember.compiler.runtime import emulation

    monkeypatch.setattr(emulation, "qemu_cpus", lambda: frozenset({"cortex-a72", "cortex-a76", "max"}))
    assert emulation.qemu_cpu("cortex-a76", []) == "cortex-a76"
    assert emulation.qemu_cpu("neoverse-n2", []) == "max"
    assert emulation.qemu_cpu("", ["dotprod", "i8mm"]) == "max"
    assert emulation.qemu_cpu("", ["+dotprod"]) == "cortex-a76"
    assert emulation.qemu_cpu("", []) == "cortex-a72"


def test_runtime_only_devices_refuse_compiler_library_ops():
    """NonZero runs through relax.run.nonzero, a function of TVM's compiler
    library: refused (one clear error) for a device running the TVM runtime
    alone, compiled for this machine."""
    import numpy as np
    from helpers import model, tensor
    from onnx import TensorProto as T
    from onnx import helper as h

    import ember
    from ember.errors import UnsupportedError

    m = model([h.make_node("NonZero", ["x"], ["y"])], [tensor("x", [2, 3])], [tensor("y", None, T.INT64)])
    with pytest.raises(UnsupportedError, match=r"NonZero.*relax\.run\.nonzero.*TVM runtime alone"):
        ember.compile(m, target="aarch64-linux-gnu")
    x = np.array([[1, 0, 2], [0, 3, 0]], np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], np.array(np.nonzero(x)))
