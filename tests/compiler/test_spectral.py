"""DFT and STFT as products with cosine/sine tables: equal to numpy's FFT."""

import numpy as np
import pytest
from helpers import init, model, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember

RNG = np.random.default_rng(0)


def dft_model(shape, out_shape, axis, **attrs):
    return model([h.make_node("DFT", ["x", "", "axis"], ["y"], **attrs)], [tensor("x", shape)],
                 [tensor("y", out_shape)], [init("axis", np.array(axis, np.int64))], opset=20)


def complex_of(a):
    return a[..., 0] + 1j * a[..., 1] if a.shape[-1] == 2 else a[..., 0]


def as_pairs(c):
    return np.stack([c.real, c.imag], -1).astype(np.float32)


@pytest.mark.parametrize("axis, inverse", [(1, 0), (2, 1), (-2, 0)])
def test_complex_dft_along_an_axis(axis, inverse):
    x = RNG.standard_normal((2, 6, 5, 2)).astype(np.float32)
    got = ember.compile(dft_model([2, 6, 5, 2], [2, 6, 5, 2], axis, inverse=inverse)).run({"x": x})["y"]
    fft = np.fft.ifft if inverse else np.fft.fft
    np.testing.assert_allclose(got, as_pairs(fft(complex_of(x), axis=axis % 4)), rtol=1e-5, atol=1e-5)


def test_real_onesided_and_back():
    x = RNG.standard_normal((3, 8, 1)).astype(np.float32)
    spectrum = ember.compile(dft_model([3, 8, 1], [3, 5, 2], 1, onesided=1)).run({"x": x})["y"]
    np.testing.assert_allclose(spectrum, as_pairs(np.fft.rfft(x[..., 0], axis=1)), rtol=1e-5, atol=1e-5)
    back = ember.compile(dft_model([3, 5, 2], [3, 8, 1], 1, onesided=1, inverse=1)).run({"x": spectrum})["y"]
    np.testing.assert_allclose(back[..., 0], x[..., 0], rtol=1e-5, atol=1e-5)


def test_stft_with_window():
    signal = RNG.standard_normal((1, 64, 1)).astype(np.float32)
    window = np.hanning(16).astype(np.float32)
    m = model([h.make_node("STFT", ["s", "step", "w"], ["y"])], [tensor("s", [1, 64, 1]), tensor("w", [16])],
              [tensor("y", [1, 7, 9, 2])], [init("step", np.array(8, np.int64))], opset=17)
    got = ember.compile(m).run({"s": signal, "w": window})["y"]
    frames = np.stack([signal[0, i * 8:i * 8 + 16, 0] * window for i in range(7)])
    np.testing.assert_allclose(got[0], as_pairs(np.fft.rfft(frames, axis=1)), rtol=1e-5, atol=1e-5)


def test_run_time_axis_is_named():
    m = model([h.make_node("DFT", ["x", "", "axis"], ["y"])], [tensor("x", [1, 4, 1]), tensor("axis", [], T.INT64)],
              [tensor("y", [1, 4, 2])], opset=20)
    with pytest.raises(ember.errors.CompileError, match="DFT's axis"):
        ember.compile(m)
