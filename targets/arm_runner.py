"""Runs compiled artifacts inside the emulated aarch64 Python (under qemu).

Standalone on purpose: the emulated tree has the TVM runtime and numpy, not
ember. Reads a JSON job list [{"library", "inputs", "outputs"}], runs each
library's `main` on the .npz inputs (in order) and writes the outputs .npz.
"""

import json
import sys

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine


def flatten(result):
    if hasattr(result, "numpy"):
        return [result.numpy()]
    if isinstance(result, tvm.runtime.ShapeTuple):
        return [np.array(list(result), dtype=np.int64)]
    out = []
    for r in result:
        out.extend(flatten(r))
    return out


def main(job_file):
    with open(job_file) as f:
        jobs = json.load(f)
    dev = tvm.cpu(0)
    for job in jobs:
        vm = VirtualMachine(tvm.runtime.load_module(job["library"]), dev)
        with np.load(job["inputs"]) as z:
            args = [tvm.runtime.tensor(z[name], dev) for name in job["input_names"]]
        outs = flatten(vm["main"](*args))
        np.savez(job["outputs"], *outs)


if __name__ == "__main__":
    main(sys.argv[1])
