"""CUDA int8 kernels on dp4a (compiler/dp4a.py): the packed-word formulation
computed on this CPU (the same TE, bytes multiplied in int32 arithmetic)
against numpy; the CUDA build uses __dp4a from sm_61 and not below; on a
GPU (marker `cuda`), integer ops bit-exact against onnxruntime and a QDQ
model equal to Ember's CPU integer kernels."""

import shutil

import numpy as np
import pytest
import tvm
from ember.compiler.backend.tvm import dp4a
from ember.compiler.ir import onnx_io
from ember.passes.quantization.quantize import quantize
from helpers import calib, cnn, init, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember
from ember import targets

RNG = np.random.default_rng(0)
IR = 8  # the IR version of opset 17: the GPU machine's onnxruntime may be older than this one's
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
needs_gpu = pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU")


def _bytes(dtype, shape):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return RNG.integers(lo, hi, shape).astype(dtype)


def _build(tensors, *arrays):
    from tvm import te

    f = tvm.compile(te.create_prim_func(list(tensors)), target="llvm")
    out = tensors[-1]
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
    f(*[tvm.runtime.tensor(a) for a in arrays], result)
    return result.numpy()


def _conv_ref(x, w, pads, strides, dilation):
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    o, _, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], o, oh, ow), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            win = xp[:, :, ky * dh:ky * dh + sh * oh:sh, kx * dw:kx * dw + sw * ow:sw]
            out += np.einsum("bchw,oc->bohw", win, w[:, :, ky, kx].astype(np.int64))
    return out


def test_dot4_is_the_sum_of_signed_byte_products():
    from tvm import te

    a = te.placeholder((64,), "int32", name="a")
    b = te.placeholder((64,), "int32", name="b")
    out = te.compute((64,), lambda i: dp4a.dot4(a[i], b[i], native=False))
    av = RNG.integers(-2**31, 2**31, 64).astype(np.int32)
    bv = RNG.integers(-2**31, 2**31, 64).astype(np.int32)
    av[:2], bv[:2] = np.int32(-2**31), np.int32(0x80808080 - 2**32)  # -128 * -128 in every byte
    got = _build([a, b, out], av, bv)
    want = (av.view(np.int8).reshape(-1, 4).astype(np.int64) * bv.view(np.int8).reshape(-1, 4)).sum(1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype, c, o, k, pads, strides, dilation", [
    ("uint8", 16, 8, 3, (1, 1, 1, 1), (1, 1), (1, 1)),
    ("uint8", 3, 5, 3, (1, 2, 0, 1), (2, 1), (1, 1)),   # 3 channels, asymmetric padding (flipped pads count)
    ("int8", 5, 6, 3, (2, 2, 2, 2), (1, 2), (2, 1)),    # channels not a multiple of 4, dilation
    ("int8", 8, 4, 1, (0, 0, 0, 0), (1, 1), (1, 1)),
])
def test_packed_conv_matches_numpy(dtype, c, o, k, pads, strides, dilation):
    from tvm import te

    x = te.placeholder((2, c, 7, 6), dtype, name="x")
    w = te.placeholder((o, c, k, k), "int8", name="w")
    wsum = dp4a.weight_sums(w, 0) if dtype == "uint8" else None
    out = dp4a.qconv2d_nchw(x, dp4a.pack_conv_weights(w), wsum, (k, k), strides, pads, dilation, native=False)
    xv, wv = _bytes(dtype, (2, c, 7, 6)), _bytes("int8", (o, c, k, k))
    np.testing.assert_array_equal(_build([x, w, out], xv, wv), _conv_ref(xv, wv, pads, strides, dilation))


@pytest.mark.parametrize("dtype, shape, n", [("uint8", (2, 3, 10), 7), ("int8", (5, 16), 12),
                                             ("uint8", (4, 33), 1)])
def test_packed_matmul_matches_numpy(dtype, shape, n):
    from tvm import te

    a = te.placeholder(shape, dtype, name="a")
    w = te.placeholder((shape[-1], n), "int8", name="w")
    wsum = dp4a.weight_sums(w, 1) if dtype == "uint8" else None
    out = dp4a.qmatmul(a, dp4a.pack_matmul_weights(w), wsum, native=False)
    av, wv = _bytes(dtype, shape), _bytes("int8", (shape[-1], n))
    np.testing.assert_array_equal(_build([a, w, out], av, wv), av.astype(np.int64) @ wv.astype(np.int64))


def _conv_integer(x_dtype=T.UINT8, c=6, o=8):
    w = RNG.integers(-127, 128, (o, c, 3, 3)).astype(np.int8)
    node = h.make_node("ConvInteger", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    return model([node], [tensor("x", [1, c, 9, 9], x_dtype)], [tensor("y", None, T.INT32)], [init("w", w)],
                 ir_version=IR)


def _matmul_integer(a_dtype=T.UINT8, k=20, n=12):
    w = RNG.integers(-127, 128, (k, n)).astype(np.int8)
    node = h.make_node("MatMulInteger", ["a", "w"], ["y"])
    return model([node], [tensor("a", [2, 5, k], a_dtype)], [tensor("y", None, T.INT32)], [init("w", w)],
                 ir_version=IR)


def _cuda_source(m, sm: str) -> str:
    cm = ember.compile(m, target="cuda", mcpu=sm)
    return "".join(x.inspect_source() for x in cm._executable.mod.imports[0].imports if x.kind == "cuda")


@needs_nvcc
def test_cuda_build_uses_dp4a_where_the_gpu_has_it(monkeypatch):
    for m in (_conv_integer(), _matmul_integer()):
        assert "__dp4a" in _cuda_source(m, "sm_80")
    # a GPU without dp4a (below sm_61, which CUDA 13's nvcc no longer builds for): the same words,
    # byte products in int32
    monkeypatch.setattr(targets.Target, "int8_dot", property(lambda self: False))
    for m in (_conv_integer(), _matmul_integer()):
        assert "__dp4a" not in _cuda_source(m, "sm_80")


@pytest.mark.parametrize("m, name", [(_conv_integer(T.UINT8), "x"), (_conv_integer(T.INT8, c=8), "x"),
                                     (_matmul_integer(T.UINT8), "a"), (_matmul_integer(T.INT8, k=16), "a")])
@pytest.mark.parametrize("native", [True, False])
@pytest.mark.cuda
@needs_gpu
def test_integer_ops_on_gpu_match_onnxruntime(m, name, native, monkeypatch):
    if not native:  # the code a GPU without dp4a gets, built for this one (machine code is per architecture)
        monkeypatch.setattr(targets.Target, "int8_dot", property(lambda self: False))
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = _bytes("uint8" if m.graph.input[0].type.tensor_type.elem_type == T.UINT8 else "int8", shape)
    got = ember.compile(m, target="cuda", mcpu=_device_sm()).run({name: x})["y"]
    np.testing.assert_array_equal(got, ort_run(m, {name: x})[0])


def _device_sm() -> str:
    return "sm_" + tvm.cuda(0).compute_version.replace(".", "")


@pytest.mark.cuda
@needs_gpu
def test_qdq_model_on_gpu_matches_cpu_integer_kernels():
    fp = cnn(width=16)
    fp.ir_version = IR
    q = onnx_io.export_model(quantize(fp, calib())[0])
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    gpu = ember.compile(q, target="cuda", mcpu=_device_sm()).run({"x": x})["y"]
    cpu = ember.compile(q).run({"x": x})["y"]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-6)
