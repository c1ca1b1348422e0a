"""Integer compute: the int8-compute pass (fires, stays out, same numbers,
idempotent), ConvInteger / MatMulInteger / Q / DQ lowering against
onnxruntime, the dot-product kernels on every instruction this CPU runs,
and QDQ models (Ember's and onnxruntime's quantizers) end to end."""

import numpy as np
import onnx
import pytest
import tvm
from ember import passes
from ember.compiler.backend.tvm import intrinsics, lower
from ember.compiler.ir import onnx_io
from ember.passes.quantization.quantize import quantize
from helpers import (assert_no_fire, assert_pass, assert_same_int8_result, calib, cnn, init, model, op_types, ort_run, qdq_cnn, residual_cnn,
                     run_pass, tensor)
from onnx import TensorProto as T
from onnx import helper as h

import ember
from ember import targets

RNG = np.random.default_rng(0)


def _integer_conv_model(x_dtype, w, zx, pads, strides=(1, 1), group=1, w_zp=None, hw=9):
    c = w.shape[1] * group
    inputs = ["x", "w", "zx"] + (["wz"] if w_zp is not None else [])
    inits = [init("w", w), init("zx", np.array(zx, np.uint8 if x_dtype == T.UINT8 else np.int8))]
    if w_zp is not None:
        inits.append(init("wz", w_zp))
    node = h.make_node("ConvInteger", inputs, ["y"], pads=list(pads), strides=list(strides), group=group)
    return model([node], [tensor("x", [1, c, hw, hw], x_dtype)], [tensor("y", None, T.INT32)], inits)


def _int8_input(dtype, shape):
    lo, hi = (0, 256) if dtype == T.UINT8 else (-128, 128)
    return RNG.integers(lo, hi, shape).astype(np.uint8 if dtype == T.UINT8 else np.int8)


@pytest.mark.parametrize("x_dtype, zx, c, o, k, pads, strides", [
    (T.UINT8, 0, 16, 32, 3, (1, 1, 1, 1), (1, 1)),     # post-ReLU activations: zero point 0
    (T.UINT8, 131, 3, 20, 3, (1, 2, 1, 0), (2, 1)),    # zero point with asymmetric padding; 3 channels, 20 outputs
    (T.INT8, -5, 8, 16, 1, (0, 0, 0, 0), (1, 1)),      # signed activations (sign-flipped for vpdpbusd)
    (T.INT8, 0, 5, 16, 3, (1, 1, 1, 1), (1, 1)),       # channels not a multiple of 4
])
def test_conv_integer_matches_onnxruntime(x_dtype, zx, c, o, k, pads, strides):
    w = RNG.integers(-127, 128, (o, c, k, k)).astype(np.int8)
    m = _integer_conv_model(x_dtype, w, zx, pads, strides)
    x = _int8_input(x_dtype, (1, c, 9, 9))
    got = ember.compile(m).run({"x": x})["y"]
    np.testing.assert_array_equal(got, ort_run(m, {"x": x})[0])


@pytest.mark.parametrize("zx, stride", [(0, 1), (77, 2)])
def test_depthwise_conv_integer_matches_onnxruntime(zx, stride):
    w = RNG.integers(-127, 128, (24, 1, 3, 3)).astype(np.int8)
    m = _integer_conv_model(T.UINT8, w, zx, (1, 1, 1, 1), (stride, stride), group=24)
    x = _int8_input(T.UINT8, (1, 24, 9, 9))
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0])


def test_conv_integer_general_forms_are_exact():
    """Grouped, and with a per-channel weight zero point (onnxruntime refuses
    those): computed in int32, checked against a float convolution of
    (x - zx) and (w - zw), exact at these magnitudes."""
    w = RNG.integers(0, 256, (8, 2, 3, 3)).astype(np.uint8)
    zw = RNG.integers(0, 256, 8).astype(np.uint8)
    m = _integer_conv_model(T.UINT8, w, 17, (1, 1, 1, 1), group=2, w_zp=zw)
    x = _int8_input(T.UINT8, (1, 4, 9, 9))
    ref_model = model([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=2)], [tensor("x", [1, 4, 9, 9])],
                      [tensor("y", None)], [init("w", w.astype(np.float32) - zw.reshape(8, 1, 1, 1))])
    ref = ort_run(ref_model, {"x": x.astype(np.float32) - 17})[0]
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], ref.astype(np.int32))


@pytest.mark.parametrize("a_dtype, za, k", [(T.UINT8, 100, 64), (T.INT8, 3, 30)])
def test_matmul_integer_matches_onnxruntime(a_dtype, za, k):
    b = RNG.integers(-127, 128, (k, 24)).astype(np.int8)
    zp = np.array(za, np.uint8 if a_dtype == T.UINT8 else np.int8)
    m = model([h.make_node("MatMulInteger", ["a", "b", "za"], ["y"])], [tensor("a", [2, 5, k], a_dtype)],
              [tensor("y", None, T.INT32)], [init("b", b), init("za", zp)])
    a = _int8_input(a_dtype, (2, 5, k))
    np.testing.assert_array_equal(ember.compile(m).run({"a": a})["y"], ort_run(m, {"a": a})[0])


def test_matmul_integer_over_run_time_rows_is_exact():
    """A MatMulInteger over a symbolic sequence and batch (rows folded together) runs on
    Ember's integer kernel and equals onnxruntime at every row count, bit for bit."""
    import tvm

    from ember import targets
    from ember.compiler.backend.tvm import pipeline
    from ember.compiler.driver import lower_model

    b = RNG.integers(-127, 128, (40, 48)).astype(np.int8)
    m = model([h.make_node("MatMulInteger", ["a", "b", "za"], ["y"])], [tensor("a", ["seq", "batch", 40], T.UINT8)],
              [tensor("y", None, T.INT32)], [init("b", b), init("za", np.array(7, np.uint8))])
    tgt = targets.parse("host")
    _, mod, _ = lower_model(m, tgt, None)
    with tgt.tvm_target():
        mod = tvm.transform.Sequential(pipeline.legalize_passes(tgt))(mod)
    assert any("ember_qmatmul" in gv.name_hint for gv in mod.functions)
    cm = ember.compile(m)
    for seq, batch in [(1, 1), (13, 3), (64, 1)]:
        a = RNG.integers(0, 256, (seq, batch, 40)).astype(np.uint8)
        np.testing.assert_array_equal(cm.run({"a": a})["y"], ort_run(m, {"a": a})[0])

@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger", "DepthwiseConvInteger"])
def test_dynamically_quantized_layers_with_uint8_weights_are_exact(op):
    """What onnxruntime's older quantize_dynamic writes: DynamicQuantizeLinear, then
    ConvInteger / MatMulInteger with uint8 weights and a weight zero point. Ember runs them
    on its int8 kernels (w - 128, plus 128 - zw times the input's window or row sums, and the
    run-time input zero point times the weight sums): bit-exact, padding included."""
    import tvm

    from ember import targets
    from ember.compiler.backend.tvm import pipeline
    from ember.compiler.driver import lower_model

    depthwise = op == "DepthwiseConvInteger"
    conv = op != "MatMulInteger"
    shape = [1, 8, 9, 11] if conv else [3, 5, 40]
    w = RNG.integers(0, 256, (8, 1, 3, 3) if depthwise else (6, 8, 3, 3) if conv else (40, 24)).astype(np.uint8)
    attrs = dict(pads=[1, 1, 1, 1], group=8 if depthwise else 1) if conv else {}
    nodes = [h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             h.make_node("ConvInteger" if conv else "MatMulInteger", ["xq", "w", "xz", "wz"], ["y"], **attrs)]
    m = model(nodes, [tensor("x", shape)], [tensor("y", None, T.INT32)],
              [init("w", w), init("wz", np.array(121, np.uint8))])
    tgt = targets.parse("host")
    _, mod, _ = lower_model(m, tgt, None)
    with tgt.tvm_target():
        mod = tvm.transform.Sequential(pipeline.legalize_passes(tgt))(mod)
    assert any(k in gv.name_hint for gv in mod.functions for k in ("ember_qconv2d", "ember_qdepthwise", "ember_qmatmul"))
    cm = ember.compile(m)
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * (seed + 1)
        np.testing.assert_array_equal(cm.run({"x": x})["y"], ort_run(m, {"x": x})[0])

@pytest.mark.parametrize("zero_point", ["constant", "run-time"])
@pytest.mark.parametrize("group", [1, 8])
def test_integer_convolutions_over_run_time_sizes_are_exact(zero_point, group):
    """A ConvInteger over a symbolic height and width runs on Ember's int8 kernels (it fell
    back to TVM's int32 convolution, 10x slower): the padded taps' share of the input zero
    point cannot be tabulated for a size known only at run time, so the input is padded with
    the zero point itself (a constant, or DynamicQuantizeLinear's run-time one) and the
    correction is the weight sums, the same everywhere. Bit-exact at widths that do and do
    not fill the kernel's row tile."""
    import tvm

    from ember import targets
    from ember.compiler.backend.tvm import pipeline
    from ember.compiler.driver import lower_model

    w = RNG.integers(-127, 128, (8, 8 // group, 3, 3)).astype(np.int8)
    attrs = dict(pads=[1, 2, 1, 0], group=group)
    if zero_point == "constant":
        nodes = [h.make_node("ConvInteger", ["x", "w", "zx"], ["y"], **attrs)]
        inputs, inits = [tensor("x", [1, 8, "h", "w"], T.UINT8)], [init("w", w), init("zx", np.array(131, np.uint8))]
    else:
        nodes = [h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                 h.make_node("ConvInteger", ["xq", "w", "xz"], ["y"], **attrs)]
        inputs, inits = [tensor("x", [1, 8, "h", "w"])], [init("w", w)]
    m = model(nodes, inputs, [tensor("y", None, T.INT32)], inits)
    tgt = targets.parse("host")
    _, mod, _ = lower_model(m, tgt, None)
    with tgt.tvm_target():
        mod = tvm.transform.Sequential(pipeline.legalize_passes(tgt))(mod)
    assert any(k in gv.name_hint for gv in mod.functions for k in ("ember_qconv2d", "ember_qdepthwise"))
    cm = ember.compile(m)
    outputs = []
    for hw in [(9, 11), (5, 6), (3, 13)]:
        if zero_point == "constant":
            x = _int8_input(T.UINT8, (1, 8, *hw))
        else:
            x = (RNG.standard_normal((1, 8, *hw)) * 3 + 2).astype(np.float32)  # zero point far from 0
        got = cm.run({"x": x})["y"]
        np.testing.assert_array_equal(got, ort_run(m, {"x": x})[0])
        outputs.append(got)
    assert outputs[0].std() > 0


def test_qlinear_ops_match_the_reference():
    """QLinearMatMul and QLinearConv (per-channel weight scales, int32 bias):
    within one quantization step of onnx's reference (which rescales in
    float64; Ember in float32, so a tie may round the other way)."""
    from onnx.reference import ReferenceEvaluator

    f = lambda v: np.array(v, np.float32)  # noqa: E731
    w = RNG.integers(-127, 128, (6, 4, 3, 3)).astype(np.int8)
    conv = model([h.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["y"],
                              pads=[1, 1, 1, 1])],
                 [tensor("x", [1, 4, 7, 7], T.UINT8)], [tensor("y", None, T.UINT8)],
                 [init("sx", f(0.02)), init("zx", np.array(120, np.uint8)), init("w", w),
                  init("sw", RNG.uniform(0.001, 0.01, 6).astype(np.float32)), init("zw", np.zeros(6, np.int8)),
                  init("sy", f(0.05)), init("zy", np.array(100, np.uint8)),
                  init("b", RNG.integers(-500, 500, 6).astype(np.int32))])
    b = RNG.integers(-127, 128, (16, 8)).astype(np.int8)
    mm = model([h.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
               [tensor("a", [3, 16], T.INT8)], [tensor("y", None, T.INT8)],
               [init("sa", f(0.03)), init("za", np.array(-3, np.int8)), init("b", b),
                init("sb", RNG.uniform(0.001, 0.01, 8).astype(np.float32)), init("zb", np.zeros(8, np.int8)),
                init("sy", f(0.04)), init("zy", np.array(5, np.int8))])
    for m, feeds in ((conv, {"x": _int8_input(T.UINT8, (1, 4, 7, 7))}), (mm, {"a": _int8_input(T.INT8, (3, 16))})):
        ref = ReferenceEvaluator(m).run(None, feeds)[0]
        got = ember.compile(m).run(feeds)["y"]
        assert got.dtype == ref.dtype
        assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).max() <= 1


def test_quantize_dequantize_match_onnxruntime():
    """Ties round to even, saturation, per-axis scales and zero points."""
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 300.0], [126.5, 127.5, -300.0, 0.1, 3.49, -2.5]], np.float32)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             h.make_node("DequantizeLinear", ["q", "s2", "z2"], ["y"], axis=0)]
    m = model(nodes, [tensor("x", [2, 6])], [tensor("q", [2, 6], T.INT8), tensor("y", [2, 6])],
              [init("s", np.array(1.0, np.float32)), init("z", np.array(0, np.int8)),
               init("s2", np.array([0.5, 2.0], np.float32)), init("z2", np.array([3, -4], np.int8))], opset=13)
    got = ember.compile(m).run({"x": x})
    ref = ort_run(m, {"x": x})
    np.testing.assert_array_equal(got["q"], ref[0])
    np.testing.assert_array_equal(got["y"], ref[1])


def _dot_targets():
    """The dot-product instructions this CPU can run, and none (plain int32 loops)."""
    host = targets.host()
    out = [pytest.param("avx2,fma", None, id="no-dot-product")]
    if intrinsics.for_target(host) is intrinsics.VNNI_512:
        out.append(pytest.param(",".join(host.features), intrinsics.VNNI_512, id="avx512-vnni"))
    if "avxvnni" in host.all_features:
        out.append(pytest.param("avx2,fma,avxvnni", intrinsics.VNNI_256, id="avx-vnni"))
    return out


@pytest.mark.skipif(not targets.host().triple.startswith("x86_64"), reason="x86 instructions")
@pytest.mark.parametrize("features, dot", _dot_targets())
def test_kernels_on_each_instruction(features, dot):
    """The same integer conv through each kernel flavour, checked against
    onnxruntime, and the instruction really in the machine code."""
    tgt = targets.parse("x86_64-linux-gnu", features=features)
    assert intrinsics.for_target(tgt) == dot
    w = RNG.integers(-127, 128, (40, 12, 3, 3)).astype(np.int8)
    m = _integer_conv_model(T.UINT8, w, 9, (1, 1, 1, 1), hw=10)
    x = _int8_input(T.UINT8, (1, 12, 10, 10))
    cm = ember.compile(m, target="x86_64-linux-gnu", features=features)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], ort_run(m, {"x": x})[0])
    asm = _assembly(m, tgt)
    assert ("vpdpbusd" in asm) == (dot is not None)
    if dot is intrinsics.VNNI_512:
        assert "zmm" in asm


def _assembly(m, tgt) -> str:
    ir_model = onnx_io.as_ir(m)
    passes.optimize(ir_model)
    ex = lower.build(lower.to_relax(ir_model), tgt)
    return "\n".join(mod.inspect_source("s") for mod in ex.mod.imports if mod.kind == "llvm")


def test_pass_fires_on_qdq_layers_and_keeps_the_numbers():
    proto = qdq_cnn()
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    # exact int32 sums: the same outputs in onnxruntime up to float rounding; idempotent
    ir_model = assert_pass(proto, "int8-compute", {"x": x}, rtol=1e-5, atol=1e-5)
    ops = op_types(ir_model)
    assert ops.count("ConvInteger") == 2 and ops.count("MatMulInteger") == 1
    assert "Conv" not in ops and "Gemm" not in ops
    assert ops.count("DequantizeLinear") == 0  # every weight, bias and activation DQ was absorbed
    onnx.checker.check_model(onnx_io.export_model(ir_model), full_check=True)
    ref = ort_run(proto, {"x": x})[0]
    mine = ember.compile(proto).run({"x": x})["y"]
    assert_same_int8_result(mine, ref)


def test_requantization_is_folded_into_the_rescale():
    """Conv -> Relu / Clip / MaxPool -> QuantizeLinear: the quantizer's scale
    moves into the layer's rescale (one multiply per output, no division);
    outputs stay within a quantization step of the QDQ model's."""
    rng = np.random.default_rng(1)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("Clip", ["c2", "lo", "hi"], ["r2"]), h.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2],
                                                                          strides=[2, 2]),
             h.make_node("Conv", ["p", "w3"], ["y"])]
    m = model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 4, 4])],
              [init("w1", w(8, 3, 3, 3)), init("w2", w(8, 8, 3, 3)), init("b2", w(8)), init("w3", w(4, 8, 1, 1)),
               init("lo", np.array(0.0, np.float32)), init("hi", np.array(0.8, np.float32))])
    q, _ = quantize(m, calib())
    proto = onnx_io.export_model(q)
    out, changed = run_pass(proto, "int8-compute")
    assert changed
    units = [n for n in out.graph.nodes if n.op_type == "QuantizeLinear"
             and float(n.inputs[1].const.numpy()) == 1.0]
    assert len(units) == 2  # after Relu, and after Clip + MaxPool; the input's quantizer keeps its scale
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort_run(proto, {"x": x})[0]
    step = float(np.abs(ref).max()) / 50
    np.testing.assert_allclose(ort_run(onnx_io.export_model(out), {"x": x})[0], ref, atol=step)
    np.testing.assert_allclose(ember.compile(proto).run({"x": x})["y"], ref, atol=step)


def _qdq_conv(w_zp=0, group=1, weight_const=True):
    c = 4
    wq = RNG.integers(-127, 128, (8, c // group, 3, 3)).astype(np.int8)
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             h.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             h.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1], group=group)]
    inits = [init("sx", np.array(0.05, np.float32)), init("zx", np.array(128, np.uint8)),
             init("sw", np.full(8, 0.01, np.float32)), init("zw", np.full(8, w_zp, np.int8))]
    inputs = [tensor("x", [1, c, 6, 6])]
    if weight_const:
        inits.append(init("wq", wq))
    else:
        inputs.append(tensor("wq", [8, c // group, 3, 3], T.INT8))
    return model(nodes, inputs, [tensor("y", [1, 8, 6, 6])], inits, opset=13)


@pytest.mark.parametrize("kw", [{"w_zp": 3}, {"group": 2}, {"weight_const": False}],
                         ids=["weight-zero-point", "grouped", "runtime-weights"])
def test_pass_stays_out(kw):
    assert_no_fire(_qdq_conv(**kw), "int8-compute")


def test_onnxruntime_quantized_model_runs_on_integer_kernels(tmp_path):
    """A QDQ model from onnxruntime's own quantizer: Ember computes its
    layers in integers and agrees with onnxruntime."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    batches = iter(calib(8))

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    onnx.save(cnn(width=16), tmp_path / "m.onnx")
    quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    proto = onnx.load(str(tmp_path / "q.onnx"))
    ir_model = onnx_io.as_ir(proto)
    passes.optimize(ir_model)
    assert "ConvInteger" in op_types(ir_model)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort_run(proto, {"x": x})[0]
    assert_same_int8_result(ember.compile(proto).run({"x": x})["y"], ref)


def test_window_sums_match_a_real_convolution():
    """The zero-point correction for padded convolutions equals the
    convolution of an all-ones input, border effects included."""
    from ember.compiler.backend.tvm.int8_lowering import _window_sums

    w = RNG.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    m = _integer_conv_model(T.UINT8, w, 0, (1, 2, 0, 1), strides=(2, 1), hw=7)
    ones = np.ones((1, 2, 7, 7), np.uint8)
    np.testing.assert_array_equal(_window_sums(w, (7, 7), (2, 1), (1, 2, 0, 1), (1, 1)), ort_run(m, {"x": ones})[0])


def test_intrinsic_choice_per_target():
    assert intrinsics.for_target(targets.parse("x86_64-linux-gnu", features="avx512f,avx512bw,avx512vnni")) \
        is intrinsics.VNNI_512
    assert intrinsics.for_target(targets.parse("x86_64-linux-gnu", features="avx2,avxvnni")) is intrinsics.VNNI_256
    assert intrinsics.for_target(targets.parse("aarch64-linux-gnu", features="neon,dotprod")) is intrinsics.SDOT
    assert intrinsics.for_target(targets.parse("aarch64-linux-gnu", features="neon")) is None
    assert tvm.s_tir.TensorIntrin.get(intrinsics.register(intrinsics.SDOT)) is not None
    # i8mm first, sdot for layers whose rows do not pair up (odd row runs, strides over 4)
    i8mm = intrinsics.available(targets.parse("aarch64-linux-gnu", mcpu="neoverse-n2"))
    assert i8mm == (intrinsics.USMMLA, intrinsics.SDOT)
    assert intrinsics.pick(i8mm, 56, 2) is intrinsics.USMMLA
    assert intrinsics.pick(i8mm, 7) is intrinsics.SDOT and intrinsics.pick(i8mm, 8, 5) is intrinsics.SDOT
    assert intrinsics.pick((intrinsics.USMMLA,), 7) is None
    name = intrinsics.register(intrinsics.USMMLA, 2)
    assert name == "ember_usmmla_2x2x8_s2" and tvm.s_tir.TensorIntrin.get(name) is not None


def test_pair_tiles():
    """usmmla's register tile: rows and columns in pairs, at most 16 2x2
    accumulators, columns chosen to waste little zero-padding."""
    from ember.compiler.backend.tvm import kernels

    for m, n in ((56, 64), (14, 256), (10, 20), (2, 1000), (6, 10)):
        t = kernels.pair_tiles(m, n)
        assert m % t.mr == 0 and t.mr % 2 == 0 and t.nr % 4 == 0 and (t.mr // 2) * (t.nr // 2) <= 16
    assert kernels.pair_tiles(56, 64) == kernels.Tiles(4, 16)
    assert kernels.pair_tiles(14, 256) == kernels.Tiles(14, 4)  # 14 rows: 7 pairs x 2 column pairs


def _clip_quantize(clip: str, lo=0.0, hi=6.0, scale=6 / 255, zp=0, zp_dtype=np.uint8, extra_use=False):
    """x -> Relu or Clip(lo, hi) -> QuantizeLinear(scale, zp) -> DequantizeLinear."""
    nodes = [h.make_node("Relu", ["x"], ["c"]) if clip == "Relu" else h.make_node("Clip", ["x", "lo", "hi"], ["c"]),
             h.make_node("QuantizeLinear", ["c", "s", "z"], ["q"]),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    outputs = [tensor("y", [2, 64])] + ([tensor("c", [2, 64])] if extra_use else [])
    return model(nodes, [tensor("x", [2, 64])], outputs,
                 [init("lo", np.array(lo, np.float32)), init("hi", np.array(hi, np.float32)),
                  init("s", np.array(scale, np.float32)), init("z", np.array(zp, zp_dtype))], opset=13)


@pytest.mark.parametrize("kw", [{"clip": "Clip"}, {"clip": "Relu"}, {"clip": "Clip", "hi": 9.0},
                                {"clip": "Clip", "lo": -1.5, "hi": 1.0, "scale": 1 / 127, "zp_dtype": np.int8}],
                         ids=["relu6-calibrated", "relu", "clip-looser-than-range", "signed"])
def test_saturated_clip_is_dropped(kw):
    """Fires where QuantizeLinear's saturation clamps at least as tightly,
    with the same quantized outputs (values far outside the range included);
    idempotent."""
    x = (RNG.standard_normal((2, 64)) * 8).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 1e30, -1e30]
    out = assert_pass(_clip_quantize(**kw), "drop-saturated-clips", {"x": x}, rtol=0, atol=0)
    assert op_types(out) == ["QuantizeLinear", "DequantizeLinear"]


@pytest.mark.parametrize("kw", [{"clip": "Clip", "hi": 3.0}, {"clip": "Clip", "lo": 0.5},
                                {"clip": "Relu", "zp": 3}, {"clip": "Relu", "zp_dtype": np.int8},
                                {"clip": "Clip", "extra_use": True},
                                {"clip": "Clip", "lo": -1.0, "hi": 1.0, "scale": 1 / 127, "zp_dtype": np.int8}],
                         ids=["clip-tighter-above", "clip-tighter-below", "zero-point-above-0", "signed-relu",
                              "clip-output-also-used", "symmetric-clip-stops-at-minus-127"])
def test_saturated_clip_must_not_fire(kw):
    assert_no_fire(_clip_quantize(**kw), "drop-saturated-clips")


def test_integer_offsets_fold_into_one_constant():
    """(x - c1) + c2 on int32 becomes x + (c2 - c1), wrapping as int32 does;
    float offsets are left alone (their sum would round differently)."""
    from tvm import relax
    from tvm.script import relax as R

    from ember.compiler.backend.tvm.pipeline.common import _fold_integer_offsets

    big = np.array([2**31 - 1, 5], np.int32)

    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2,), "int32"), f: R.Tensor((2,), "float32")):
            a = R.add(R.subtract(x, R.const(np.array([-3, 7], np.int32))), R.const(big))
            b = R.add(R.subtract(f, R.const(np.array([1.0, 2.0], np.float32))), R.const(np.array([3.0, 4.0],
                                                                                                   np.float32)))
            return (a, b)

    out = _fold_integer_offsets()(Mod)
    text = out.script()
    assert text.count("R.subtract") == 1  # the float one stays
    x, f = np.array([2**31 - 1, -9], np.int32), np.array([0.5, 1.5], np.float32)
    with tvm.transform.PassContext(opt_level=3):
        vm = relax.VirtualMachine(tvm.compile(out, target="llvm"), tvm.cpu())
    a, b = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(f))
    wrapped = ((x.astype(np.int64) - [-3, 7] + big + 2**31) % 2**32 - 2**31).astype(np.int32)
    np.testing.assert_array_equal(a.numpy(), wrapped)
    np.testing.assert_array_equal(b.numpy(), (f - [1, 2]) + [3, 4])


def test_round_is_half_to_even_in_vectorized_loops():
    """Round (and QuantizeLinear's rounding) lowers to a vectorizable
    round-half-to-even on CPU targets: ties of a 64-wide vector go to even."""
    x = np.tile(np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5000002, 254.5], np.float32), (1, 8))
    m = model([h.make_node("Round", ["x"], ["y"])], [tensor("x", [1, 64])], [tensor("y", [1, 64])])
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], np.round(x))


def test_quantize_converts_once_with_ties_to_even():
    """QuantizeLinear's round-then-int32 is one conversion on CPUs (llvm.lrint:
    vcvtps2dq here), with onnxruntime's results: ties to even, saturation,
    and inf / NaN / out-of-range inputs as before."""
    m = model([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], [tensor("x", [1, 64])],
              [tensor("q", [1, 64], T.UINT8)], [init("s", np.array(0.5, np.float32)), init("z", np.array(3, np.uint8))])
    ties = np.array([0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 126.25, 1e9, -1e9, np.inf, -np.inf, 300.0], np.float32)
    x = np.concatenate([ties, np.linspace(-3, 130, 52, dtype=np.float32)])[None]
    got, ref = ember.compile(m).run({"x": x})["q"], ort_run(m, {"x": x})[0]
    finite = np.isfinite(x)
    np.testing.assert_array_equal(got[finite], ref[finite])  # ties (0.5, 1.5, 2.5 ... steps) go to even
    if targets.host().triple.startswith("x86_64"):
        asm = _assembly(m, targets.host())
        assert "vcvtps2dq" in asm and "vrndscaleps" not in asm
        # +inf converts to x86's "integer indefinite" 0x80000000, clamped to 0 (onnxruntime: 255), as
        # it did before through round then a truncating conversion
        assert got[0, 9] == 0 and got[0, 10] == 0


def _pool_concat_q(axis_scale=False, extra_use=False):
    """x -> MaxPool -> Q -> DQ  and  [a, b] -> Concat -> Q -> DQ."""
    s = init("s", np.array([0.05, 0.07, 0.09] if axis_scale else 0.05, np.float32))
    z = init("z", np.array([3, 3, 3] if axis_scale else 3, np.uint8))
    nodes = [h.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             h.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"], axis=1),
             h.make_node("DequantizeLinear", ["pq", "s", "z"], ["py"], axis=1),
             h.make_node("Concat", ["a", "b"], ["c"], axis=1),
             h.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], axis=1),
             h.make_node("DequantizeLinear", ["cq", "s", "z"], ["cy"], axis=1)]
    outputs = [tensor("py", [1, 3, 4, 4]), tensor("cy", [1, 3, 4, 4])] + ([tensor("p", [1, 3, 4, 4])] if extra_use
                                                                        else [])
    return model(nodes, [tensor("x", [1, 3, 8, 8]), tensor("a", [1, 1, 4, 4]), tensor("b", [1, 2, 4, 4])], outputs,
                 [s, z], opset=13)


def test_quantize_moves_above_maxpool_and_concat():
    """Exact: the same quantized values (padding included), idempotent."""
    feeds = {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32) * 4,
             "a": RNG.standard_normal((1, 1, 4, 4)).astype(np.float32),
             "b": RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    feeds["x"][0, 0, :2, :2] = -100.0  # windows at the padded corner hold only very negative values
    out = assert_pass(_pool_concat_q(), "hoist-quantize", feeds, rtol=0, atol=0)
    assert op_types(out) == ["QuantizeLinear", "MaxPool", "DequantizeLinear", "QuantizeLinear", "QuantizeLinear",
                             "Concat", "DequantizeLinear"]
    m = _pool_concat_q()
    got, want = ember.compile(m).run(feeds), ort_run(m, feeds)
    np.testing.assert_array_equal(got["py"], want[0])
    np.testing.assert_array_equal(got["cy"], want[1])


@pytest.mark.parametrize("kw", [{"axis_scale": True}, {"extra_use": True}], ids=["per-channel", "float-also-used"])
def test_quantize_stays_below_maxpool(kw):
    out = run_pass(_pool_concat_q(**kw), "hoist-quantize")[0]
    assert op_types(out)[:2] == ["MaxPool", "QuantizeLinear"]


def test_residual_epilogue_folds_into_the_integer_kernel():
    """A residual join reading an 8-bit tensor: its dequantization (cast,
    scale) is computed in the conv kernel's tile writeback with the rest of
    the epilogue, not in whole-tensor passes after an unscheduled kernel."""
    from ember.compiler.backend.tvm import pipeline, schedule

    m = residual_cnn("conv")
    feeds = [{"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(8)]
    proto = onnx_io.export_model(quantize(m, feeds)[0])
    ir_model = onnx_io.as_ir(proto)
    passes.optimize(ir_model)
    tgt = targets.host()
    with tgt.tvm_target():
        mod = tvm.transform.Sequential(pipeline.legalize_passes(tgt))(lower.to_relax(ir_model))
    # the kernel of the second conv dequantizes its own input a second time, as the residual
    joins = [f for gv, f in mod.functions_items() if gv.name_hint.startswith("fused_cast") and "qconv2d" in gv.name_hint]
    assert len(joins) == 1
    for f in joins:
        blocks = schedule._blocks(schedule.default_schedule(f))
        assert all(b.startswith("ember_") for b in blocks), blocks
    assert_same_int8_result(ember.compile(proto).run(feeds[0])["y"], ort_run(proto, feeds[0])[0])
