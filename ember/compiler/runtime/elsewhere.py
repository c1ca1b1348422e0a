"""Run a saved artifact somewhere other than this process: an aarch64 one under
qemu on this machine, or any over TVM RPC on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ember.compiler.runtime.artifact import LIBRARY, CompiledModel, array_outputs, device_name


def run_elsewhere(directory: str | Path, meta: dict[str, Any], inputs: dict[str, np.ndarray], *,
                  rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                  qemu_cpu: str | None = None, repeat: int = 0,
                  say: Callable[[str], None] = lambda msg: None) -> tuple[dict[str, Any], list[float]]:
    """Outputs by name and `repeat` timings (RPC only) of the artifact in `directory`
    (metadata `meta`): over RPC when `rpc` or `tracker` is given, else under emulation."""
    signature = CompiledModel(None, meta)
    arrays = signature.check_inputs(inputs)
    library = Path(directory) / LIBRARY
    if rpc or tracker:
        from ember.compiler.runtime import remote

        say(f"running on {tracker or rpc} over RPC")
        outs, times = remote.run(library, arrays, signature.outputs, device=device_name(meta["target"]), rpc=rpc,
                                 tracker=tracker, key=key, repeat=repeat)
    else:
        from ember.compiler.runtime import emulation

        cpu = qemu_cpu or emulation.qemu_cpu(meta["target"].get("mcpu", ""), meta["target"].get("features", []))
        say(f"running under emulation (qemu-aarch64, CPU {cpu})")
        (flat,) = emulation.run([(library, dict(zip(signature.input_names, arrays)), signature.input_names)], cpu)
        outs, times = array_outputs(list(flat), signature.outputs), []
    return dict(zip(signature.output_names, outs)), times
