"""Where TVM's ONNX converters give wrong answers, Ember's replacements give
onnxruntime's (or the node is refused with one clear line): IsInf's
detect_* attributes, SpaceToDepth's CRD mode, float Mod by infinities, Expand
to a run-time shape, Softplus/Mish of very negative inputs, SequenceInsert at
a negative position, Upsample's scales input, PRelu's per-channel slope
before opset 7, OneHot's negative axis, MaxPool's Indices output, TopK of
uint64; training-mode Dropout and RoiAlign's max mode refused."""

import numpy as np
import pytest
from ember.errors import UnsupportedError
from helpers import init, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import ember

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("neg, pos", [(1, 0), (0, 1), (0, 0)])
def test_isinf_detect_attributes(neg, pos):
    m = model([h.make_node("IsInf", ["x"], ["y"], detect_negative=neg, detect_positive=pos)],
              [tensor("x", [6])], [tensor("y", [6], T.BOOL)], opset=20)
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -1.0, 3.0], np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0])


def test_space_to_depth_crd():
    m = model([h.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, mode="CRD")], [tensor("x", [1, 3, 4, 6])],
              [tensor("y", [1, 12, 2, 3])], opset=28)
    x = np.arange(72, dtype=np.float32).reshape(1, 3, 4, 6)
    ref = x.reshape(1, 3, 2, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4).reshape(1, 12, 2, 3)  # ONNX's CRD definition
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ref)


def test_float_mod_zero_results_take_the_divisors_sign():
    """fmod=0 is Python's %: 4.0 % -2.0 and 0.0 % -2.0 are -0.0, -4.0 % 2.0 and -0.0 % 2.0 are 0.0
    (onnx's test_mod_fmod_0_signed_zero_* cases, which the wheel's test data does not ship)."""
    m = model([h.make_node("Mod", ["x", "y"], ["z"])], [tensor("x", [8]), tensor("y", [8])], [tensor("z", [8])])
    x = np.array([4, 0, -4, -0.0, 0, -0.0, 6, 7.5], np.float32)
    y = np.array([-2, -2, 2, 2, -np.inf, np.inf, -3, -2.5], np.float32)
    got, want = ember.compile(m).run({"x": x, "y": y})["z"], np.mod(x, y)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    assert 0 < np.signbit(want).sum() < want.size  # both signs occur: the check means something


def test_float_mod_by_infinity_is_numpys():
    m = model([h.make_node("Mod", ["x", "y"], ["z"])], [tensor("x", [8]), tensor("y", [8])], [tensor("z", [8])])
    x = np.array([5, -5, 5, -5, 0, np.inf, 7.5, -7.5], np.float32)
    y = np.array([np.inf, np.inf, -np.inf, -np.inf, np.inf, 3, 2, 2], np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x, "y": y})["z"], np.mod(x, y))


def test_training_dropout_and_roialign_max_are_refused():
    drop = model([h.make_node("Dropout", ["x", "r", "t"], ["y"])],
                 [tensor("x", [4]), tensor("r", [], T.FLOAT), tensor("t", [], T.BOOL)], [tensor("y", [4])], opset=13)
    with pytest.raises(UnsupportedError, match="not an inference op"):
        ember.compile(drop)
    off = model([h.make_node("Dropout", ["x", "r", "t"], ["y"])], [tensor("x", [4])], [tensor("y", [4])],
                [init("r", np.array(0.5, np.float32)), init("t", np.array(False))], opset=13)
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(ember.compile(off).run({"x": x})["y"], x)  # inference mode: identity
    roi = model([h.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], mode="max", output_height=2, output_width=2)],
                [tensor("x", [1, 1, 4, 4]), tensor("rois", [1, 4]), tensor("idx", [1], T.INT64)],
                [tensor("y", [1, 1, 2, 2])], opset=16)
    with pytest.raises(UnsupportedError, match="mode=max"):
        ember.compile(roi)


@pytest.mark.parametrize("shape", [[2, 1, 6], [3, 1], [1, 1, 1, 4]])
def test_expand_to_a_runtime_shape_broadcasts(shape):
    m = model([h.make_node("Expand", ["x", "s"], ["y"])], [tensor("x", [3, 1]), tensor("s", [len(shape)], T.INT64)],
              [tensor("y", None)])
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    s = np.array(shape, np.int64)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x, "s": s})["y"], ort_run(m, {"x": x, "s": s})[0])


def test_softplus_and_mish_keep_precision_for_negative_inputs():
    x = np.linspace(-40, 40, 161).astype(np.float32)
    for op, ref in (("Softplus", np.logaddexp(0, x.astype(np.float64))),
                    ("Mish", x * np.tanh(np.logaddexp(0, x.astype(np.float64))))):
        m = model([h.make_node(op, ["x"], ["y"])], [tensor("x", [161])], [tensor("y", [161])], opset=18)
        np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ref, rtol=1e-5, atol=1e-30, err_msg=op)


def test_sequence_insert_at_a_negative_position():
    """[X, Y, Z] minus position -3, then X inserted at -1 (before the last), then the last: Z."""
    nodes = [h.make_node("SequenceConstruct", ["x", "y", "z"], ["s1"]), h.make_node("SequenceErase", ["s1", "pe"], ["s2"]),
             h.make_node("SequenceInsert", ["s2", "x", "pi"], ["s3"]), h.make_node("SequenceAt", ["s3", "pa"], ["out"])]
    m = model(nodes, [tensor(n, [2]) for n in "xyz"], [tensor("out", [2])],
              [init("pe", np.array(-3, np.int64)), init("pi", np.array(-1, np.int64)), init("pa", np.array(-1, np.int64))],
              opset=12)
    feeds = {n: np.full(2, v, np.float32) for n, v in zip("xyz", (0, 1, 2))}
    np.testing.assert_array_equal(ember.compile(m).run(feeds)["out"], feeds["z"])
    np.testing.assert_array_equal(ort_run(m, feeds)[0], feeds["z"])


@pytest.mark.parametrize("op, bound", [("ReduceMax", -np.inf), ("ReduceMin", np.inf)])
def test_reduce_extreme_of_all_infinite_rows(op, bound):
    """TVM starts max/min at the lowest/highest finite float: a row of -inf (max) gave -3.4e38."""
    m = model([h.make_node(op, ["x"], ["y"], keepdims=1, axes=[1])], [tensor("x", [4, 2])], [tensor("y", [4, 1])])
    x = np.array([[bound, bound], [np.nan, 1], [bound, -bound], [3.4028235e38 * np.sign(bound), bound]], np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0])


def test_float16_matmul_and_softmax_round_like_numpy():
    """float16 sums accumulate in float32 and round once, as ONNX's numpy reference does."""
    m = model([h.make_node("MatMul", ["a", "b"], ["p"]), h.make_node("Softmax", ["p"], ["y"], axis=-1)],
              [tensor("a", [8, 64], T.FLOAT16), tensor("b", [64, 48], T.FLOAT16)], [tensor("y", [8, 48], T.FLOAT16)])
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float16) for s in ((8, 64), (64, 48)))
    p = a @ b  # numpy: float32 accumulation, one rounding
    e = np.exp(p - p.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    np.testing.assert_array_equal(ember.compile(m).run({"a": a, "b": b})["y"], ref)


def test_legacy_softmax_still_flattens():
    """Before opset 13 Softmax normalises over all dims from `axis` on (float16 fix must keep that)."""
    m = model([h.make_node("Softmax", ["x"], ["y"], axis=1)], [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])],
              opset=11)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-7)


def test_float16_conv_without_bias_and_clip():
    """The float16 Conv fix keeps TVM's optional-input list (no bias); Clip still converts."""
    m = model([h.make_node("Conv", ["x", "w"], ["c"], group=4), h.make_node("Clip", ["c", "lo", "hi"], ["y"])],
              [tensor("x", [1, 4, 9], T.FLOAT16), tensor("w", [4, 1, 3], T.FLOAT16)], [tensor("y", [1, 4, 7], T.FLOAT16)],
              [init("lo", np.float16(-1)), init("hi", np.float16(1))])
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 4, 9)).astype(np.float16), "w": rng.standard_normal((4, 1, 3)).astype(np.float16)}
    want = np.clip(np.stack([np.convolve(feeds["x"][0, c].astype(np.float32), feeds["w"][c, 0, ::-1].astype(np.float32),
                                         "valid") for c in range(4)])[None], -1, 1).astype(np.float16)
    np.testing.assert_array_equal(ember.compile(m).run(feeds)["y"], want)


@pytest.mark.parametrize("op, fn", [("Cosh", np.cosh), ("Sinh", np.sinh)])
def test_hyperbolic(op, fn):
    m = model([h.make_node(op, ["x"], ["y"])], [tensor("x", [6])], [tensor("y", [6])])
    x = np.array([-3, -1e-5, 0, 2e-3, 0.5, 4], np.float32)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], fn(x), rtol=1e-6)


def test_integer_pow_and_integer_exponent():
    m = model([h.make_node("Pow", ["a", "b"], ["c"]), h.make_node("Pow", ["x", "b"], ["y"])],
              [tensor("a", [3], T.INT64), tensor("b", [3], T.INT64), tensor("x", [3])],
              [tensor("c", [3], T.INT64), tensor("y", [3])], opset=15)
    feeds = {"a": np.array([2, -3, 7]), "b": np.array([10, 3, 0]), "x": np.array([1.5, -2, 3], np.float32)}
    got = ember.compile(m).run(feeds)
    np.testing.assert_array_equal(got["c"], [1024, -27, 1])
    np.testing.assert_allclose(got["y"], feeds["x"] ** feeds["b"], rtol=1e-6)


def test_onehot_float_depth_and_negative_indices():
    m = model([h.make_node("OneHot", ["i", "d", "v"], ["y"], axis=1)], [tensor("i", [3], T.INT64)],
              [tensor("y", [3, 4])], [init("d", np.array(4.0, np.float32)), init("v", np.array([0, 5], np.float32))],
              opset=11)
    i = np.array([0, -1, 7])
    np.testing.assert_array_equal(ember.compile(m).run({"i": i})["y"], ort_run(m, {"i": i})[0])


def test_prelu_broadcasts_like_numpy_and_bool_reduce_max():
    m = model([h.make_node("PRelu", ["x", "s"], ["y"]), h.make_node("ReduceMax", ["b", "ax"], ["any"], keepdims=0)],
              [tensor("x", [2, 3, 2]), tensor("b", [2, 3], T.BOOL)], [tensor("y", [2, 3, 2]), tensor("any", [2], T.BOOL)],
              [init("s", np.array([[0.1], [0.2], [0.3]], np.float32)), init("ax", np.array([1]))], opset=20)
    feeds = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 3, 2),
             "b": np.array([[False, True, False], [False, False, False]])}
    got, want = ember.compile(m).run(feeds), ort_run(m, feeds)
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-6)
    np.testing.assert_array_equal(got["any"], want[1])


def test_resize_axes_and_keep_aspect_ratio():
    """Float Resize with constant parameters is computed as the reference does
    (compiler/resample.py, tested there); an 8-bit one still needs TVM's
    converter, which knows no keep_aspect_ratio_policy: refused."""
    m = model([h.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", axes=[3, 2])],
              [tensor("x", [1, 2, 2, 3])], [tensor("y", [1, 2, 4, 9])],
              [init("scales", np.array([3, 2], np.float32))], opset=18)
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0])

    def policy(dtype):
        return model([h.make_node("Resize", ["x", "", "", "sizes"], ["y"], keep_aspect_ratio_policy="not_larger")],
                     [tensor("x", [1, 1, 2, 4], dtype)], [tensor("y", None, dtype)],
                     [init("sizes", np.array([1, 1, 4, 4]))], opset=18)

    x = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    np.testing.assert_array_equal(ember.compile(policy(T.FLOAT)).run({"x": x})["y"], ort_run(policy(T.FLOAT),
                                                                                            {"x": x})[0])
    with pytest.raises(UnsupportedError, match="keep_aspect_ratio_policy"):
        ember.compile(policy(T.UINT8))


def test_eyelike_with_dtype_and_offset():
    m = model([h.make_node("EyeLike", ["x"], ["y"], k=-1, dtype=T.DOUBLE)], [tensor("x", [3, 4], T.INT32)],
              [tensor("y", [3, 4], T.DOUBLE)], opset=9)
    got = ember.compile(m).run({"x": np.zeros((3, 4), np.int32)})["y"]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.eye(3, 4, k=-1))


@pytest.mark.parametrize("limits", [
    {"m": np.array([3]), "iou": np.array([1 / 7], np.float32), "score": np.array([0.0], np.float32)},
    {"m": np.array([3]), "iou": np.array([0.5], np.float32), "score": np.array([0.75], np.float32)},
    {"m": np.array([2])},  # IoU 0 and no score filter by default (TVM assumed 0.5 and 0)
])
def test_nms_limits(limits):
    names = ["boxes", "scores", *limits]
    m = model([h.make_node("NonMaxSuppression", names, ["sel"])],
              [tensor("boxes", [1, 4, 4]), tensor("scores", [1, 1, 4])], [tensor("sel", None, T.INT64)],
              [init(k, v) for k, v in limits.items()], opset=11)
    feeds = {"boxes": np.array([[[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5], [0, 0, 1, 1.1], [3, 3, 4, 4]]], np.float32),
             "scores": np.array([[[0.9, 0.8, 0.7, -0.1]]], np.float32)}
    np.testing.assert_array_equal(ember.compile(m).run(feeds)["sel"], ort_run(m, feeds)[0])


@pytest.mark.parametrize("mode, scales", [("nearest", [1, 1, 2, 3]), ("nearest", [1, 1, 2.5, 1.5]),
                                          ("linear", [1, 1, 2.5, 1.5])])
def test_upsample_with_scales_input(mode, scales):
    """Against onnxruntime (ONNX's reference implements integer nearest scales only)."""
    m = model([h.make_node("Upsample", ["x", "s"], ["y"], mode=mode)], [tensor("x", [1, 2, 3, 4])],
              [tensor("y", None)], [init("s", np.array(scales, np.float32))], opset=9)
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    got = ember.compile(m).run({"x": x})["y"]
    np.testing.assert_allclose(got, ort_run(m, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_prelu_before_opset_7_is_per_channel():
    m = model([h.make_node("PRelu", ["x", "slope"], ["y"])], [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])],
              [init("slope", np.array([0.1, 0.2, 0.3], np.float32))], opset=6)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    want = np.where(x < 0, x * np.array([0.1, 0.2, 0.3], np.float32)[:, None], x)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], want, rtol=1e-6)


def test_onehot_negative_axis_counts_from_the_output_rank():
    m = model([h.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-2)], [tensor("i", [2, 2], T.INT64)],
              [tensor("y", None)], [init("d", np.array(3, np.int64)), init("v", np.array([0.0, 1.0], np.float32))])
    i = np.array([[0, 2], [1, -1]], np.int64)
    np.testing.assert_array_equal(ember.compile(m).run({"i": i})["y"], ReferenceEvaluator(m).run(None, {"i": i})[0])


@pytest.mark.parametrize("kw, shape", [
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 2, 7, 7]),
    (dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1], ceil_mode=1), [2, 3, 8, 9]),
    (dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", storage_order=1), [1, 2, 5, 6]),
    (dict(kernel_shape=[3], strides=[2], pads=[1, 0]), [1, 3, 10]),
], ids=["padded", "dilated-ceil", "same-upper-column-major", "1d"])
def test_maxpool_indices_match_onnxruntime(kw, shape):
    m = model([h.make_node("MaxPool", ["x"], ["y", "i"], **kw)], [tensor("x", shape)],
              [tensor("y", None), tensor("i", None, T.INT64)], opset=12)
    x = RNG.standard_normal(shape).astype(np.float32)
    got, want = ember.compile(m).run({"x": x}), ort_run(m, {"x": x})
    np.testing.assert_array_equal(got["y"], want[0])
    assert got["i"].dtype == np.int64
    np.testing.assert_array_equal(got["i"], want[1])


def test_topk_of_uint64_orders_the_full_range():
    m = model([h.make_node("TopK", ["x", "k"], ["v", "i"])], [tensor("x", [6], T.UINT64)],
              [tensor("v", None, T.UINT64), tensor("i", None, T.INT64)], [init("k", np.array([4], np.int64))])
    x = np.array([3, 2**64 - 1, 2**63, 2**63 - 1, 0, 7], np.uint64)
    got = ember.compile(m).run({"x": x})
    np.testing.assert_array_equal(got["v"], [2**64 - 1, 2**63, 2**63 - 1, 7])
    np.testing.assert_array_equal(got["i"], [1, 2, 3, 5])


def test_unsqueeze_squeeze_with_scalar_axes():
    m = model([h.make_node("Unsqueeze", ["x", "a"], ["u"]), h.make_node("Squeeze", ["u", "a"], ["y"])],
              [tensor("x", [2, 3])], [tensor("y", [2, 3])], [init("a", np.array(-1, np.int64))], opset=13)
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], x)
    unsqueeze = model([h.make_node("Unsqueeze", ["x", "a"], ["y"])], [tensor("x", [2, 3])], [tensor("y", [2, 3, 1])],
                      [init("a", np.array(-1, np.int64))], opset=13)
    np.testing.assert_array_equal(ember.compile(unsqueeze).run({"x": x})["y"],
                                  ReferenceEvaluator(unsqueeze).run(None, {"x": x})[0])


@pytest.mark.parametrize("both", [True, False], ids=["beside-a-real-output", "only-empty-outputs"])
def test_outputs_with_no_elements(tmp_path, both):
    """Outputs with no elements are not computed (TVM cannot load the empty
    constants they fold to): the artifact returns empty arrays of the right
    shape and type, also after save and load."""
    nodes = [h.make_node("ReduceSum", ["x", "ax"], ["e"], keepdims=1)]
    outputs = [tensor("e", [2, 0, 1])]
    if both:
        nodes.append(h.make_node("Relu", ["w"], ["r"]))
        outputs.append(tensor("r", [3]))
    m = model(nodes, [tensor("x", [2, 0, 4]), tensor("w", [3])], outputs, [init("ax", np.array([2], np.int64))],
              opset=18)
    feeds = {"x": np.zeros((2, 0, 4), np.float32), "w": np.array([-1, 0, 2], np.float32)}
    cm = ember.compile(m)
    for c in (cm, ember.load(cm.save(tmp_path / "a"))):
        got = c.run(feeds)
        assert got["e"].shape == (2, 0, 1) and got["e"].dtype == np.float32
        if both:
            np.testing.assert_array_equal(got["r"], [0, 0, 2])


def test_maxunpool_to_a_larger_output_shape():
    """Indices address the unpooled (inferred) shape; output_shape pads its end."""
    m = model([h.make_node("MaxUnpool", ["x", "i", "s"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
              [tensor("x", [1, 1, 2, 2]), tensor("i", [1, 1, 2, 2], T.INT64)], [tensor("y", [1, 1, 5, 5])],
              [init("s", np.array([1, 1, 5, 5], np.int64))], opset=11)
    feeds = {"x": np.array([[[[5, 6], [7, 8]]]], np.float32), "i": np.array([[[[5, 7], [13, 15]]]], np.int64)}
    np.testing.assert_array_equal(ember.compile(m).run(feeds)["y"], ReferenceEvaluator(m).run(None, feeds)[0])


def test_sequence_length_of_a_split():
    m = model([h.make_node("SplitToSequence", ["x"], ["s"], axis=-1), h.make_node("SequenceLength", ["s"], ["n"])],
              [tensor("x", [2, 3, 4])], [tensor("n", [], T.INT64)], opset=12)
    assert int(ember.compile(m).run({"x": np.zeros((2, 3, 4), np.float32)})["n"]) == 4


def test_empty_outputs_put_back_in_a_flat_result():
    """How emulated runs (a flat list of arrays) get their empty outputs back."""
    from ember.compiler.runtime.artifact import with_empty_outputs
    from ember.errors import ArtifactError

    specs = [{"name": "a", "dtype": "float32", "shape": [2, 0], "empty": True},
             {"name": "b", "dtype": "int64", "shape": [3]}]
    a, b = with_empty_outputs([np.arange(3)], specs)
    assert a.shape == (2, 0) and a.dtype == np.float32 and list(b) == [0, 1, 2]
    only_empty = with_empty_outputs([np.zeros((), np.uint8)], specs[:1])  # the ignored byte
    assert len(only_empty) == 1 and only_empty[0].shape == (2, 0)
    with pytest.raises(ArtifactError):
        with_empty_outputs([], specs)


def test_hard_sigmoid_and_hard_swish_stay_in_the_convolutions_layout():
    """An SE block's gate between two convolutions: HardSigmoid and HardSwish are
    maximum/minimum, which layout conversion carries through (TVM's clip is an opaque
    call that ran the gate in NCHW, transposing the map twice), with onnxruntime's
    values at the clamps, in between, at infinities and for NaN."""
    from ember.compiler.backend.tvm.lower import to_relax
    from ember.compiler.ir import onnx_io

    rng = np.random.default_rng(0)
    nodes = [h.make_node("Conv", ["x", "w1"], ["c"]), h.make_node("GlobalAveragePool", ["c"], ["g"]),
             h.make_node("HardSigmoid", ["g"], ["s"], alpha=0.3, beta=0.4), h.make_node("Mul", ["c", "s"], ["m"]),
             h.make_node("HardSwish", ["m"], ["hs"]), h.make_node("Conv", ["hs", "w2"], ["y"]),
             h.make_node("HardSigmoid", ["z"], ["hx"]), h.make_node("HardSwish", ["z"], ["sx"])]
    m = model(nodes, [tensor("x", [1, 8, 6, 6]), tensor("z", [2, 8])],
              [tensor("y", None), tensor("hx", None), tensor("sx", None)],
              [init("w1", rng.standard_normal((16, 8, 1, 1)).astype(np.float32)),
               init("w2", rng.standard_normal((8, 16, 1, 1)).astype(np.float32))], opset=17)
    assert "clip" not in to_relax(onnx_io.import_model(m)).script()
    feeds = {"x": (rng.standard_normal((1, 8, 6, 6)) * 4).astype(np.float32),
             "z": (rng.standard_normal((2, 8)) * 4).astype(np.float32)}
    feeds["z"][0, :4] = [np.nan, np.inf, -np.inf, -3.0]
    got, want = ember.compile(m).run(feeds), ort_run(m, feeds)
    for name, ref in zip(("y", "hx", "sx"), want):
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(ref))
        np.testing.assert_allclose(got[name][finite], ref[finite], rtol=1e-5, atol=1e-5 * np.abs(ref[finite]).max())
    assert 0 < (want[1] == 0).sum() and 0 < (want[1] == 1).sum() and 0 < ((want[1] > 0) & (want[1] < 1)).sum()
