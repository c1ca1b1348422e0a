"""Run an artifact on a remote device over TVM RPC (an RPC server, or a
tracker and a device key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ember.errors import EmberError


class RemoteError(EmberError):
    """The RPC server or tracker cannot be reached, or the remote run failed."""


def parse_address(addr: str, what: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise RemoteError(f"{what} {addr!r}: expected HOST:PORT")
    return host, int(port)


def connect(rpc: str | None = None, tracker: str | None = None, key: str | None = None, timeout: float = 60):
    from tvm import rpc as tvm_rpc

    try:
        if tracker:
            if not key:
                raise RemoteError("--tracker needs --key (the device key servers registered with)")
            host, port = parse_address(tracker, "--tracker")
            return tvm_rpc.connect_tracker(host, port).request(key, session_timeout=timeout)
        host, port = parse_address(rpc or "", "--rpc")
        return tvm_rpc.connect(host, port, session_timeout=timeout)
    except RemoteError:
        raise
    except Exception as e:
        where = tracker or rpc
        raise RemoteError(f"cannot reach the RPC {'tracker' if tracker else 'server'} at {where}: "
                          f"{str(e).strip().splitlines()[-1][:200]}") from None


def run(library: Path, inputs: list[np.ndarray], outputs: list[dict], device: str = "cpu", rpc: str | None = None,
        tracker: str | None = None, key: str | None = None, repeat: int = 0) -> tuple[list, list[float]]:
    """Upload the library, run `main` on the remote device; returns the outputs
    (as the artifact's output specs `outputs` describe) and `repeat` timings
    measured on the remote side."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from ember.compiler.runtime.artifact import vm_outputs

    sess = connect(rpc, tracker, key)
    try:
        sess.upload(str(library))
        lib = sess.load_module(Path(library).name)
        dev = sess.cuda(0) if device == "cuda" else sess.cpu(0)
        vm = VirtualMachine(lib, dev)
        args = [tvm.runtime.tensor(a, dev) for a in inputs]
        results = vm_outputs(vm["main"](*args), outputs)
        times: list[float] = []
        if repeat:
            timer = vm.time_evaluator("main", dev, number=1, repeat=repeat)
            times = list(timer(*args).results)
        return results, times
    except RemoteError:
        raise
    except Exception as e:
        raise RemoteError(f"remote run failed: {str(e).strip().splitlines()[-1][:300]}") from None
