"""A small emitter of ONNX function bodies (NodeProtos with fresh value
names), for the operators Ember defines by a body itself (recurrent.py,
spectral.py); functions.py expands them like ONNX's own."""

from __future__ import annotations

import numpy as np
from onnx import helper as h
from onnx import numpy_helper


class Body:
    """Emits the nodes of one function body; every value gets a fresh name."""

    def __init__(self, opset: int, dtype):
        self.opset, self.dtype, self.nodes, self.count = opset, dtype, [], 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(h.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=None) -> str:
        return self.op("Constant", value=numpy_helper.from_array(np.asarray(value, dtype or self.dtype)))

    def unsqueeze(self, x: str, axis: int) -> str:
        if self.opset < 13:
            return self.op("Unsqueeze", x, axes=[axis])
        return self.op("Unsqueeze", x, self.const([axis], np.int64))

    def cols(self, x: str, start: int, stop: int, axis: int = -1) -> str:
        if self.opset < 10:
            return self.op("Slice", x, axes=[axis], starts=[start], ends=[stop])
        return self.op("Slice", x, self.const([start], np.int64), self.const([stop], np.int64),
                       self.const([axis], np.int64))

    def index_last(self, x: str, i: int) -> str:
        return self.op("Gather", x, self.const(i, np.int64), axis=-1)

    def index(self, x: str, i: int) -> str:
        return self.op("Gather", x, self.const(i, np.int64), axis=0)

    def activation(self, name: str, x: str, alpha: float | None, beta: float | None) -> str:
        simple = {"Sigmoid", "Tanh", "Relu", "Softsign", "Softplus"}
        if name in simple:
            return self.op(name, x)
        if name in ("LeakyRelu", "ThresholdedRelu", "Elu"):
            default = {"LeakyRelu": 0.01, "ThresholdedRelu": 1.0, "Elu": 1.0}[name]
            return self.op(name, x, alpha=default if alpha is None else alpha)
        if name == "HardSigmoid":
            return self.op(name, x, alpha=0.2 if alpha is None else alpha, beta=0.5 if beta is None else beta)
        if name == "Affine":
            return self.op("Add", self.op("Mul", x, self.const(1.0 if alpha is None else alpha)),
                           self.const(0.0 if beta is None else beta))
        if name == "ScaledTanh":
            scaled = self.op("Mul", x, self.const(1.0 if beta is None else beta))
            return self.op("Mul", self.op("Tanh", scaled), self.const(1.0 if alpha is None else alpha))
        raise ValueError(name)
