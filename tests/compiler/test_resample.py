"""Resize computed as ONNX's reference does (compiler/resample.py): Ember
against onnx's ReferenceEvaluator."""

import numpy as np
import pytest
from helpers import init, model, tensor
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import ember
from ember.compiler.backend.tvm import lower, resample
from ember.compiler.ir import onnx_io

RNG = np.random.default_rng(0)


def _resize(shape, roi=None, scales=None, sizes=None, **attrs):
    names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else "",
             "sizes" if sizes is not None else ""]
    while names[-1] == "":
        names.pop()
    inits = [init(n, np.array(v, dt)) for n, v, dt in (("roi", roi, np.float32), ("scales", scales, np.float32),
                                                       ("sizes", sizes, np.int64)) if v is not None]
    return model([h.make_node("Resize", names, ["y"], **attrs)], [tensor("x", list(shape))], [tensor("y", None)],
                 inits, opset=19)


CASES = {
    "downsample-fractional-linear": dict(shape=[1, 1, 4, 4], scales=[1, 1, 0.6, 0.6], mode="linear"),
    "downsample-cubic-antialias": dict(shape=[1, 1, 7, 6], scales=[1, 1, 0.6, 0.55], mode="cubic", antialias=1),
    "linear-antialias-sizes": dict(shape=[1, 2, 9, 9], sizes=[1, 2, 4, 5], mode="linear", antialias=1),
    "cubic-exclude-outside": dict(shape=[1, 1, 5, 5], scales=[1, 1, 1.7, 2.3], mode="cubic", exclude_outside=1,
                                  cubic_coeff_a=-0.5),
    "nearest-fractional-up-ceil": dict(shape=[1, 1, 3, 4], sizes=[1, 1, 7, 9], mode="nearest",
                                       coordinate_transformation_mode="half_pixel",
                                       nearest_mode="round_prefer_ceil"),
    "not-larger-with-axes": dict(shape=[1, 1, 4, 6], sizes=[7, 8], axes=[2, 3], keep_aspect_ratio_policy="not_larger",
                                 mode="linear"),
    "not-smaller": dict(shape=[1, 1, 4, 6], sizes=[1, 1, 7, 8], keep_aspect_ratio_policy="not_smaller",
                        mode="nearest"),
    "crop-and-resize-extrapolation": dict(shape=[1, 1, 5, 5], roi=[0, 0, -0.2, 0.3, 1, 1, 0.9, 1.4],
                                          sizes=[1, 1, 4, 6], mode="linear",
                                          coordinate_transformation_mode="tf_crop_and_resize",
                                          extrapolation_value=7.5),
    "half-pixel-symmetric": dict(shape=[1, 1, 5, 3], scales=[1, 1, 1.7, 0.5], mode="linear",
                                 coordinate_transformation_mode="half_pixel_symmetric"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resize_matches_the_reference(case):
    kw = dict(CASES[case])
    m = _resize(**kw)
    x = RNG.standard_normal(kw["shape"]).astype(np.float32)
    assert lower.known_wrong(onnx_io.import_model(m).graph.nodes[0]) is None  # no longer refused
    got = ember.compile(m).run({"x": x})["y"]
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nearest_is_one_gather_per_axis():
    maps = resample.plan([1, 1, 3, 4], "float32", {"mode": b"nearest"}, None, np.array([1, 1, 2, 1.5]), None)
    assert [m.axis for m in maps] == [2, 3] and all(m.is_gather for m in maps)


def test_unplannable_resize_keeps_tvm_or_refuses():
    """Integer images and run-time scales are not planned (TVM's converter, or
    the clear refusal where TVM would be wrong)."""
    assert resample.plan([1, 1, 4, 4], "uint8", {"mode": b"linear"}, None, np.array([1, 1, 2, 2]), None) is None
    m = model([h.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", antialias=1)],
              [tensor("x", [1, 1, 8, 8]), tensor("s", [4])], [tensor("y", None)], opset=19)
    reason = lower.known_wrong(onnx_io.import_model(m).graph.nodes[0])
    assert reason == "antialias is not supported"


@pytest.mark.parametrize("scales, attrs, resize2d", [
    ([1, 1, 2, 2], dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"), True),
    ([1, 1, 4, 2], dict(mode="nearest"), True),  # half_pixel, round_prefer_floor: also every row 4 and 2 times
    ([1, 1, 2, 2], dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode="round_prefer_ceil"), False),  # row 1 from row 1: not a repeat
    ([1, 1, 1, 8], dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"), True),
    ([1, 1, 3, 3], dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"), False),
])
def test_whole_power_of_two_repeats_are_resize2d_between_convolutions(scales, attrs, resize2d):
    """Nearest upsampling that repeats every row and column 2^k times (an FPN's 2x) is TVM's
    resize2d, which layout conversion carries between NHWC convolutions (takes stay NCHW
    between two transposes); 3x (1/3 is inexact in float) and other tap patterns keep the
    takes. Exact either way."""
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Resize", ["c", "", "s"], ["r"], **attrs),
             h.make_node("Conv", ["r", "w2"], ["y"])]
    m = model(nodes, [tensor("x", [1, 3, 5, 6])], [tensor("y", None)],
              [init("w", RNG.standard_normal((8, 3, 1, 1)).astype(np.float32)), init("s", np.array(scales, np.float32)),
               init("w2", RNG.standard_normal((4, 8, 1, 1)).astype(np.float32))], opset=19)
    text = lower.to_relax(onnx_io.import_model(m)).script()
    assert ("resize2d" in text) == resize2d and ("take" in text) != resize2d
    x = RNG.standard_normal((1, 3, 5, 6)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
