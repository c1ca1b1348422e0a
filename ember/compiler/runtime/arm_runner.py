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


def as_numpy(t):
    """A result tensor as numpy, and the TVM dtype name numpy lacks here (no
    ml_dtypes: bfloat16 and float8 come back as their bits), or None."""
    dtype = str(t.dtype)
    if dtype == "bfloat16" or dtype.startswith("float8"):
        return t._create_view(t.shape, "uint16" if dtype == "bfloat16" else "uint8").numpy(), dtype
    return t.numpy(), None


def flatten(result):
    if hasattr(result, "numpy"):
        return [as_numpy(result)]
    if isinstance(result, tvm.runtime.ShapeTuple):
        return [(np.array(list(result), dtype=np.int64), None)]
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
        args = []
        with np.load(job["inputs"]) as z:
            for name in job["input_names"]:
                t = tvm.runtime.tensor(z[name], dev)
                dtype = job.get("dtypes", {}).get(name)  # sent as its bits
                args.append(t._create_view(t.shape, dtype) if dtype else t)
        outs = flatten(vm["main"](*args))
        np.savez(job["outputs"], *[a for a, _ in outs])
        with open(job["outputs"] + ".json", "w") as f:
            json.dump([d for _, d in outs], f)


if __name__ == "__main__":
    main(sys.argv[1])
