"""Ember's graph IR: the core classes (`core.py`), ONNX import/export
(`onnx_io.py`), the text form (`printer.py`), statistics (`stats.py`), Ember's
own operators (`custom_ops.py`), ONNX function bodies built in code
(`body_builder.py`) and onnxruntime as the reference semantics
(`reference.py`). Plain Python and numpy: nothing here imports TVM."""

from ember.compiler.ir.core import (Dim, Graph, Model, Node, Tensor, Value, const_array,  # noqa: F401
                                    static_shape)
