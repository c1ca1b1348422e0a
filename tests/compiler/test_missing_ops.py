"""Operators TVM's frontend lacks, converted by Ember: equal to ONNX's reference."""

import numpy as np
import pytest
from helpers import init, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import ember


def check(m, feeds):
    got = ember.compile(m).run(feeds)
    for name, want in zip(got, ReferenceEvaluator(m).run(None, feeds)):
        np.testing.assert_array_equal(got[name], want)


@pytest.mark.parametrize("src, to, x", [
    (T.FLOAT, T.INT32, np.array([1.0, -0.0, np.inf, np.nan], np.float32)),
    (T.UINT16, T.INT16, np.array([0, 1, 65535, 32768], np.uint16)),
    (T.BOOL, T.UINT8, np.array([True, False, True])),
])
def test_bitcast(src, to, x):
    check(model([h.make_node("BitCast", ["x"], ["y"], to=to)], [tensor("x", [x.size], src)],
                [tensor("y", [x.size], to)], opset=26), {"x": x})


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumprod(exclusive, reverse):
    m = model([h.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
              [tensor("x", [2, 4])], [tensor("y", [2, 4])], [init("axis", np.array(1, np.int64))], opset=26)
    check(m, {"x": np.array([[1, 2, -3, 0.5], [0, 4, 2, -1]], np.float32)})


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_keeps_zero_slices_zero(p):
    """Against onnxruntime: ONNX's reference forgets |x| in the L1 norm."""
    m = model([h.make_node("LpNormalization", ["x"], ["y"], axis=0, p=p)], [tensor("x", [2, 3])],
              [tensor("y", [2, 3])], opset=22)
    x = np.array([[3, 0, -1], [4, 0, 2]], np.float32)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-6)


@pytest.mark.parametrize("batch_axis, time_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis, time_axis):
    shape = [3, 4, 2] if batch_axis == 0 else [4, 3, 2]
    m = model([h.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=batch_axis, time_axis=time_axis)],
              [tensor("x", shape), tensor("lens", [3], T.INT64)], [tensor("y", shape)], opset=10)
    x = np.arange(24, dtype=np.float32).reshape(shape)
    check(m, {"x": x, "lens": np.array([4, 1, 3], np.int64)})


def test_col2im_with_strides_pads_dilations():
    m = model([h.make_node("Col2Im", ["x", "image", "block"], ["y"], strides=[1, 2], pads=[1, 0, 1, 1],
                           dilations=[2, 1])],
              [tensor("x", [1, 6, 15])], [tensor("y", [1, 1, 5, 6])],
              [init("image", np.array([5, 6], np.int64)), init("block", np.array([2, 3], np.int64))], opset=18)
    x = np.random.default_rng(0).standard_normal((1, 6, 15)).astype(np.float32)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ReferenceEvaluator(m).run(None, {"x": x})[0],
                               rtol=1e-6, atol=1e-6)
