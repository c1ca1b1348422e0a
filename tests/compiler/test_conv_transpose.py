"""ConvTranspose with constant weights lowered to Ember's convolutions
(conv_transpose.py): a flipped convolution at stride 1, a 1x1 convolution and
its overlap-add at larger strides. Every geometry is compared with onnxruntime,
and the lowered module must hold no conv2d_transpose where the rewrite applies."""

import numpy as np
import onnx
import pytest
from helpers import init, model, ort_run, tensor
from onnx import helper as h

import ember
from ember.compiler.backend.tvm.lower import to_relax
from ember.compiler.ir import onnx_io

CASES = {  # name: (Ci, Co, kernel, attributes, group)
    "k2s2 (DB head, UNet)": (16, 8, (2, 2), {"strides": [2, 2]}, 1),
    "k4s2p1 (GAN, decoder)": (6, 5, (4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 1),
    "k3s2p1op1 (segmentation)": (5, 7, (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                                "output_padding": [1, 1]}, 1),
    "k3s2 asymmetric pads": (4, 3, (3, 2), {"strides": [2, 3], "pads": [0, 1, 2, 0]}, 1),
    "k2s3 (gaps between taps)": (4, 3, (2, 2), {"strides": [3, 3]}, 1),
    "k2s3 output_padding past the taps": (3, 2, (2, 2), {"strides": [3, 3], "output_padding": [2, 1]}, 1),
    "k4s2 grouped": (8, 6, (4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 2),
    "k2s2 depthwise": (6, 6, (2, 2), {"strides": [2, 2]}, 6),
    "k3s1p1 (stride 1)": (5, 7, (3, 3), {"pads": [1, 1, 1, 1]}, 1),
    "k3s1 dilated grouped": (6, 4, (3, 3), {"dilations": [2, 2], "pads": [1, 2, 0, 1]}, 2),
    "k3s2 SAME_UPPER": (4, 3, (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 1),
    "k3s2 SAME_LOWER": (4, 3, (3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, 1),
}


def conv_transpose_model(ci, co, kernel, attrs, group, spatial=(7, 6), batch="n", bias=True, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((ci, co // group, *kernel)).astype(np.float32) * 0.3
    b = rng.standard_normal(co).astype(np.float32)
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    node = h.make_node("ConvTranspose", inputs, ["y"], kernel_shape=list(kernel), group=group, **attrs)
    inits = [init("w", w)] + ([init("b", b)] if bias else [])
    return model([node], [tensor("x", [batch, ci, *spatial])], [tensor("y", None)], inits)


def relax_ops(m: onnx.ModelProto) -> str:
    return to_relax(onnx_io.import_model(m)).script()


@pytest.mark.parametrize("case", CASES)
def test_matches_onnxruntime_without_tvms_conv_transpose(case):
    ci, co, kernel, attrs, group = CASES[case]
    m = conv_transpose_model(ci, co, kernel, attrs, group)
    assert "conv2d_transpose" not in relax_ops(m)
    cm = ember.compile(m)
    rng = np.random.default_rng(1)
    for n in (1, 2):
        x = rng.standard_normal((n, ci, 7, 6)).astype(np.float32)
        want = ort_run(m, {"x": x})[0]
        got = cm.run({"x": x})["y"]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_over_run_time_image_sizes_and_without_bias():
    """One artifact with symbolic height and width: the crop is a constant distance from the end."""
    m = conv_transpose_model(6, 5, (4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 1,
                             spatial=("h", "w"), bias=False)
    cm = ember.compile(m)
    outs = []
    for shape in ((1, 6, 5, 9), (2, 6, 11, 4)):
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        want = ort_run(m, {"x": x})[0]
        got = cm.run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        outs.append(want.shape)
    assert outs == [(1, 5, 10, 18), (2, 5, 22, 8)]


def test_one_dimensional():
    node = h.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[4], strides=[2], pads=[1, 1])
    rng = np.random.default_rng(3)
    m = model([node], [tensor("x", [1, 6, "t"])], [tensor("y", None)],
              [init("w", rng.standard_normal((6, 3, 4)).astype(np.float32)),
               init("b", rng.standard_normal(3).astype(np.float32))])
    assert "conv1d_transpose" not in relax_ops(m)
    x = rng.standard_normal((1, 6, 13)).astype(np.float32)
    want = ort_run(m, {"x": x})[0]
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_run_time_weights_stay_tvms():
    node = h.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    m = model([node], [tensor("x", [1, 3, 4, 4]), tensor("w", [3, 2, 2, 2])], [tensor("y", None)])
    assert "conv2d_transpose" in relax_ops(m)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32),
             "w": rng.standard_normal((3, 2, 2, 2)).astype(np.float32)}
    np.testing.assert_allclose(ember.compile(m).run(feeds)["y"], ort_run(m, feeds)[0], rtol=1e-5, atol=1e-5)
