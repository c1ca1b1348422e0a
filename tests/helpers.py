"""Small model builders shared by the tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h


def model(nodes, inputs, outputs, inits=(), opset=17, **kw) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], **kw)


def tensor(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def conv_relu_gemm(seed: int = 0) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> Relu -> Flatten -> Gemm -> y[1,10]."""
    rng = np.random.default_rng(seed)
    return model(
        [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         h.make_node("Relu", ["c"], ["r"], name="relu"),
         h.make_node("Flatten", ["r"], ["f"], name="flatten"),
         h.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, name="gemm")],
        [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 10])],
        [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
         init("b", rng.standard_normal(4).astype(np.float32)),
         init("gw", rng.standard_normal((10, 256)).astype(np.float32) * 0.1),
         init("gb", rng.standard_normal(10).astype(np.float32))])


def if_model() -> onnx.ModelProto:
    """y = If(c, then: Relu(x) + k, else: Neg(x)), with outer x and k used inside."""
    then_g = h.make_graph([h.make_node("Relu", ["x"], ["t0"]), h.make_node("Add", ["t0", "k"], ["t"])],
                          "then", [], [tensor("t", [2, 3])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [tensor("e", [2, 3])])
    return model([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if")],
                 [tensor("c", [], T.BOOL), tensor("x", [2, 3])], [tensor("y", [2, 3])],
                 [init("k", np.full((2, 3), 0.5, np.float32))])


def ort_run(m: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
