"""Ember: compile ONNX models for a target triple through Ember's graph IR and
Apache TVM.

    import ember
    m = ember.compile("model.onnx", target="host")
    outputs = m.run({"input": x})
    m.save("out/"); m2 = ember.load("out/")
"""

from importlib import import_module

from ember.errors import EmberError
from ember.version import __version__

# the public names, imported on first use: `import ember` loads neither TVM nor the compiler
_LAZY = {"CompiledModel": "ember.compiler.runtime.artifact", "load": "ember.compiler.runtime.artifact",
         "compile": "ember.compiler.driver", "optimize": "ember.passes"}

__all__ = ["CompiledModel", "EmberError", "compile", "load", "optimize", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
