"""Ember: compile ONNX models for a target triple through Ember's graph IR and
Apache TVM.

    import ember
    m = ember.compile("model.onnx", target="host")
    outputs = m.run({"input": x})
    m.save("out/"); m2 = ember.load("out/")
"""

from ember.version import __version__

import os as _os

# TVM's thread pool assumes two hyperthreads per core on x86 and uses half the
# logical CPUs it sees: one thread on a 2-core machine, halving every kernel.
# Run on all the cores this process may use, unless the user said otherwise.
if "TVM_NUM_THREADS" not in _os.environ and "OMP_NUM_THREADS" not in _os.environ:
    _os.environ["TVM_NUM_THREADS"] = str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                         else (_os.cpu_count() or 1))

from ember.compiler.artifact import CompiledModel, load  # noqa: E402
from ember.compiler.driver import compile, optimize  # noqa: E402
from ember.compiler.errors import EmberError  # noqa: E402

__all__ = ["CompiledModel", "EmberError", "compile", "load", "optimize", "__version__"]
