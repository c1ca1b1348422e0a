"""Ember as an ONNX backend, driven by onnx's own BackendTest harness on the
suites the onnx wheel ships as data."""

import re

import numpy as np
import onnx.backend.test
import pytest
from helpers import conv_relu_gemm, ort_run

import ember.backend as eb

# a spread of the shipped "simple" and pytorch-operator/converted suites, each compiled by ember
INCLUDED = re.compile("^(" + "|".join((
    r"test_single_relu_model", r"test_sign_model", r"test_operator_add_broadcast", r"test_operator_conv",
    r"test_operator_maxpool", r"test_operator_pad", r"test_operator_mm", r"test_Conv2d", r"test_Linear",
    r"test_BatchNorm2d_eval", r"test_Softmax", r"test_PReLU_2d", r"test_operator_concat2",
    r"test_operator_flatten")) + ")_cpu$")

backend_test = onnx.backend.test.BackendTest(eb, __name__)
CASES = backend_test.test_cases  # a property that builds new classes on each access: read it once
for case in CASES.values():
    for attr in [a for a in vars(case) if a.startswith("test_") and not INCLUDED.match(a)]:
        delattr(case, attr)  # keep the report short: only the included tests exist
globals().update(CASES)


def test_prepare_and_run_positional_and_named():
    m = conv_relu_gemm()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    rep = eb.prepare(m, "CPU")
    (y,) = rep.run([x])
    np.testing.assert_allclose(y, ort_run(m, {"x": x})[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rep.run({"x": x})[0], y)
    assert eb.supports_device("CPU") and not eb.supports_device("CUDA")


def test_run_node():
    import onnx.helper as h

    a = np.array([[1.0, -2.0]], np.float32)
    (out,) = eb.run_node(h.make_node("Relu", ["a"], ["b"]), [a])
    np.testing.assert_array_equal(out, [[1.0, 0.0]])


def test_wrong_arity():
    from ember.errors import RuntimeInputError

    rep = eb.prepare(conv_relu_gemm())
    with pytest.raises(RuntimeInputError, match="takes 1 inputs"):
        rep.run([])


def test_sequence_output_is_a_list():
    """A graph output of sequence type comes back as a list of arrays (ORT's form)."""
    from helpers import init, model, tensor
    from onnx import TensorProto as T
    from onnx import helper as h

    import ember

    m = model([h.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1)], [tensor("x", [2, 6])],
              [h.make_tensor_sequence_value_info("seq", T.FLOAT, None)],
              [init("split", np.array([1, 2, 3], np.int64))], opset=13)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    got = ember.compile(m).run({"x": x})["seq"]
    want = ort_run(m, {"x": x})[0]
    assert isinstance(got, list) and len(got) == 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
