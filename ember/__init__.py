"""Ember: compile ONNX models for a target triple through Ember's graph IR and
Apache TVM.

    import ember
    m = ember.compile("model.onnx", target="host")
    outputs = m.run({"input": x})
    m.save("out/"); m2 = ember.load("out/")
"""

__version__ = "0.1.0"

from ember.compiler.artifact import CompiledModel, load  # noqa: E402
from ember.compiler.driver import compile, optimize  # noqa: E402
from ember.compiler.errors import EmberError  # noqa: E402

__all__ = ["CompiledModel", "EmberError", "compile", "load", "optimize", "__version__"]
