"""8-bit floats, FLOAT4E2M1 and 2/4-bit integers: casts and Q/DQ bit-exact
against ONNX's reference, across the run-time boundary as ml_dtypes arrays."""

import ml_dtypes
import numpy as np
import onnx
import pytest
from helpers import model, tensor
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import ember
from ember.compiler.runtime import storage

FLOAT_FORMATS = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1"]
INT_FORMATS = ["INT4", "UINT4", "INT2", "UINT2"]
# ties, subnormals, the largest values and past them, signed zeros, NaN and infinities
SPECIAL = np.array([0.0, -0.0, 0.1, -0.3, 0.5, 1.5, 2.5, 1.0625, 1.1875, 3 * 2**-10, 2**-9, 2**-17, 2**-18, 5.5,
                    240, 248, 256, 448, 460, 464, 470, 500, 57344, 61440, 70000, -1e6, np.nan, np.inf, -np.inf],
                   np.float32)


def reference(m, feeds):
    return ReferenceEvaluator(m).run(None, feeds)[0]


def cast_model(src: int, to: int, n: int, saturate: int = 1) -> onnx.ModelProto:
    return model([h.make_node("Cast", ["x"], ["y"], to=to, saturate=saturate)], [tensor("x", [n], src)],
                 [tensor("y", [n], to)], opset=25)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8) if a.dtype.itemsize == 1 and a.dtype.kind == "V" or "float" in a.dtype.name else a


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_cast_to_float_formats_rounds_like_onnx(fmt, saturate):
    m = cast_model(T.FLOAT, getattr(T, fmt), SPECIAL.size, saturate)
    x = np.concatenate([SPECIAL[:-3], -SPECIAL[:-3], SPECIAL[-3:]])  # every value with both signs
    m = cast_model(T.FLOAT, getattr(T, fmt), x.size, saturate)
    got, want = ember.compile(m).run({"x": x})["y"], reference(m, {"x": x})
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))  # NaN == NaN here
    np.testing.assert_array_equal(np.signbit(got.astype(np.float32)), np.signbit(want.astype(np.float32)))


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_every_code_decodes(fmt):
    np_type = onnx.helper.tensor_dtype_to_np_dtype(getattr(T, fmt))
    n = 16 if fmt == "FLOAT4E2M1" else 256
    codes = np.arange(n, dtype=np.uint8).view(np_type)
    m = cast_model(getattr(T, fmt), T.FLOAT16, n)
    np.testing.assert_array_equal(ember.compile(m).run({"x": codes})["y"], codes.astype(np.float16))


def wrapped(x: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Ember's definition of float -> narrow integer: the integer part modulo 2**bits, two's
    complement; NaN and +-inf give 0. Computed with Python integers (exact for any float)."""
    out = []
    for v in x.astype(np.float64):
        low = int(v) % (1 << bits) if np.isfinite(v) else 0
        out.append(low - (1 << bits) if signed and low >= 1 << (bits - 1) else low)
    return np.array(out, np.int8)


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_integer_formats_truncate_and_wrap(fmt):
    """ONNX defines float -> integer casts only in range (there onnx's reference must agree);
    out of range Ember wraps, as ONNX's integer -> integer casts do (see `wrapped`)."""
    _, width, signed = storage.INTS[getattr(T, fmt)]
    x = np.array([0.4, 0.5, 1.5, 2.5, -2.5, -0.9, 7.6, 8, 100, -9, -100, 3e9, -2.0**62 - 2**40, 2.0**62, 1e30,
                  -3.4e38, np.nan, np.inf, -np.inf], np.float32)
    to = cast_model(T.FLOAT, getattr(T, fmt), x.size)
    got = ember.compile(to).run({"x": x})["y"]
    want = wrapped(x, width, signed)
    assert got.dtype == onnx.helper.tensor_dtype_to_np_dtype(getattr(T, fmt))
    np.testing.assert_array_equal(got.astype(np.int8), want)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    inside = np.isfinite(x) & (np.trunc(x) >= lo) & (np.trunc(x) <= hi)
    assert inside.sum() >= 4 and (~inside).sum() >= 10
    np.testing.assert_array_equal(want[inside], reference(to, {"x": x})[inside].astype(np.int8))
    back = cast_model(getattr(T, fmt), T.INT8, x.size)  # narrow -> int8 is exact
    codes = got
    np.testing.assert_array_equal(ember.compile(back).run({"x": codes})["y"], want)


@pytest.mark.parametrize("fmt", ["INT4", "UINT2", "FLOAT8E4M3FN"])
def test_quantize_dequantize_per_axis_with_runtime_parameters(fmt):
    ftype = getattr(T, fmt)
    np_type = onnx.helper.tensor_dtype_to_np_dtype(ftype)
    m = model([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
               h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
              [tensor("x", [2, 3, 4]), tensor("s", [3]), tensor("z", [3], ftype)],
              [tensor("q", [2, 3, 4], ftype), tensor("y", [2, 3, 4])], opset=25)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 4)).astype(np.float32) * 3,
             "s": np.array([0.5, 0.25, 1.0], np.float32), "z": np.array([0, 0, 0] if "FLOAT" in fmt else [1, 0, 2]).astype(np_type)}
    got = ember.compile(m).run(feeds)
    want = ReferenceEvaluator(m).run(None, feeds)
    assert got["q"].dtype == want[0].dtype
    np.testing.assert_array_equal(got["q"].astype(np.float32), want[0].astype(np.float32))
    np.testing.assert_allclose(got["y"], want[1], rtol=1e-6)


def test_float8e8m0_still_refused_clearly():
    m = cast_model(T.FLOAT, T.FLOAT8E8M0, 4)
    with pytest.raises(ember.errors.UnsupportedError, match="FLOAT8E8M0"):
        ember.compile(m)


def test_artifact_keeps_ml_dtypes_at_its_boundary(tmp_path):
    m = cast_model(T.FLOAT8E5M2, T.FLOAT8E4M3FN, 4)
    ember.compile(m).save(tmp_path / "a")
    loaded = ember.load(tmp_path / "a")
    x = np.array([1.5, -3, 448, 57344], np.float32).astype(ml_dtypes.float8_e5m2)
    y = loaded.run({"x": x})["y"]
    assert y.dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(y.astype(np.float32), [1.5, -3, 448, 448])
    with pytest.raises(ember.errors.RuntimeInputError, match="must be float8_e5m2"):
        loaded.run({"x": x.astype(np.float32)})


def test_chained_casts_through_a_narrow_type():
    """float -> e4m3fn -> float16 -> int4 -> float: each cast sees the type the previous one made."""
    m = model([h.make_node("Cast", ["x"], ["a"], to=T.FLOAT8E4M3FN), h.make_node("Cast", ["a"], ["b"], to=T.FLOAT16),
               h.make_node("Cast", ["b"], ["c"], to=T.INT4), h.make_node("Cast", ["c"], ["y"], to=T.FLOAT)],
              [tensor("x", [6])], [tensor("y", [6])], opset=25)
    x = np.array([0.3, -1.7, 3.4, 6.9, -7.2, 100], np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": x})["y"], reference(m, {"x": x}))


@pytest.mark.parametrize("fmt", ["INT4", "INT8", "UINT8"])
def test_blocked_quantize_dequantize(fmt):
    """block_size (opset 21): one scale per block of 4 along axis 1, C = 10 not a multiple of it."""
    ftype = getattr(T, fmt)
    np_type = onnx.helper.tensor_dtype_to_np_dtype(ftype)
    m = model([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, block_size=4),
               h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=4)],
              [tensor("x", [2, 10]), tensor("s", [2, 3]), tensor("z", [2, 3], ftype)],
              [tensor("q", [2, 10], ftype), tensor("y", [2, 10])], opset=21)
    rng = np.random.default_rng(0)
    feeds = {"x": (rng.standard_normal((2, 10)) * 4).astype(np.float32),
             "s": rng.uniform(0.2, 1.0, (2, 3)).astype(np.float32), "z": np.array([[1, 0, 2], [0, 3, 1]]).astype(np_type)}
    got = ember.compile(m).run(feeds)
    want = ReferenceEvaluator(m).run(None, feeds)
    np.testing.assert_array_equal(got["q"].astype(np.int32), want[0].astype(np.int32))
    np.testing.assert_allclose(got["y"], want[1], rtol=1e-6)
