"""Ember as an ONNX backend (`onnx.backend.base.Backend`), so onnx's own
`BackendTest` harness and other ONNX tooling can drive it:

    import ember.backend as backend
    rep = backend.prepare(model_proto, "CPU")
    outputs = rep.run([x])            # or rep.run({"x": x})
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from ember.compiler.runtime.artifact import CompiledModel
from ember.compiler.driver import compile as ember_compile
from ember.compiler.input.specialize import NeedsInputValues, Specializing


class EmberRep(BackendRep):
    """A prepared model: compiled, or (where TVM needs some inputs' values at
    compile time) compiled at the first run for the values given then."""

    def __init__(self, compiled: CompiledModel | Specializing):
        self.compiled = compiled

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        names = self.compiled.input_names
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(names):
                from ember.errors import RuntimeInputError

                raise RuntimeInputError(f"model takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
            feed = dict(zip(names, inputs))
        out = self.compiled.run(feed)
        return tuple(out[n] for n in self.compiled.output_names)


class EmberBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EmberRep:
        if not cls.supports_device(device):
            from ember.errors import TargetError

            raise TargetError(f"device {device!r} is not supported by the ember backend (use CPU)")
        pipeline = kwargs.get("pipeline")
        try:
            return EmberRep(ember_compile(model, target="host", pipeline=pipeline))
        except NeedsInputValues as e:
            names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
            outputs = [o.name for o in model.graph.output]
            return EmberRep(Specializing(lambda values: ember_compile(model, target="host", pipeline=pipeline,
                                                                      bind=values), e.needed, names, outputs))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Sequence[tuple] | None = None, **kwargs: Any) -> tuple:
        names = [f"input_{i}" for i in range(len(inputs))]
        node2 = onnx.NodeProto()
        node2.CopyFrom(node)
        del node2.input[:]
        node2.input.extend(names)
        ins = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in zip(names, inputs)]
        outs = [onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output]
        graph = onnx.helper.make_graph([node2], "run_node", ins, outs)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", kwargs.get("opset", 17))])
        return cls.run_model(model, list(inputs), device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().split(":")[0] == "CPU"


prepare = EmberBackend.prepare
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
is_compatible = EmberBackend.is_compatible
