"""`precision="bf16"`: convolutions and matmuls by constant weights on bfloat16
operands, sums in float32. Each layer is checked against numpy computing the
same thing (operands rounded to bfloat16 with ml_dtypes, products summed in
float64): the two differ only by float32 rounding of the sums. The same layer
in fp32 differs from that reference by bfloat16's rounding, over 15 times
more, so the test sees a precision that was not applied. Both kernel
flavours are run where the CPU has them (vdpbf16ps, and plain loops on a target
without AVX-512 BF16), and the instruction is looked for in the machine code
on any x86 host."""

import numpy as np
import pytest
from helpers import as_bf16, bf16_conv_model, bf16_conv_reference, error_line, ember_cli, init, model, ort_run, tensor
from onnx import helper as h

import ember
from ember import targets
from ember.compiler.backend.tvm import intrinsics, lower
from ember.compiler.ir import onnx_io
from ember.models import zoo
from ember.passes import optimize

RNG = np.random.default_rng(0)
X86 = targets.host().triple.startswith("x86_64")
HAS_BF16 = bool(intrinsics.bf16_available(targets.host()))
NO_BF16_FEATURES = "avx2,fma"  # an x86 target without AVX-512 BF16: the plain-loop kernel


def _matmul_model(k, n, rows):
    w = RNG.standard_normal((k, n)).astype(np.float32)
    return model([h.make_node("MatMul", ["x", "w"], ["y"])], [tensor("x", [rows, k])], [tensor("y", None)],
                 [init("w", w)]), w


def _flavours():
    out = [pytest.param(None, id="host")]
    if HAS_BF16:  # the host runs vdpbf16ps: also the plain loops
        out.append(pytest.param(NO_BF16_FEATURES, id="no-avx512bf16"))
    return out


def _check(got, ref, fp32):
    """`got` within float32 summation error of the bfloat16 reference; fp32 is not."""
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 2e-5 * scale  # K <= 300 products of |x|, |w| ~ 1 rounded at 2^-24
    assert np.abs(fp32 - ref).max() > 3e-4 * scale  # bfloat16 rounding (2^-9 per operand) shows: 15x the above


@pytest.mark.parametrize("features", _flavours())
@pytest.mark.parametrize("c, o, k, pads, stride", [
    (16, 32, 3, (1, 1, 1, 1), 1),   # channels a multiple of the pair; padded
    (3, 20, 3, (1, 0, 2, 1), 2),    # odd channels (padded to 4), uneven pads, stride 2, N not a lane multiple
    (33, 48, 1, (0, 0, 0, 0), 1),   # 1x1, odd reduction
])
def test_conv_matches_bf16_reference(features, c, o, k, pads, stride):
    m, w = bf16_conv_model(c, o, k, pads, stride)
    x = RNG.standard_normal((1, c, 11, 11)).astype(np.float32)
    got = ember.compile(m, features=features, precision="bf16").run({"x": x})["y"]
    fp32 = ember.compile(m, features=features).run({"x": x})["y"]
    _check(got, bf16_conv_reference(x, w, pads, stride), fp32)


@pytest.mark.parametrize("width", [10, "w"])
def test_conv_with_symbolic_batch_and_height(width):
    """One artifact for a run-time batch and height (a static width: a row tile divides it; a
    symbolic one: computed padded to the tile and cropped)."""
    w = RNG.standard_normal((24, 16, 3, 3)).astype(np.float32)
    node = h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    m = model([node], [tensor("x", ["n", 16, "h", width])], [tensor("y", None)], [init("w", w)])
    cm, fp32_cm = ember.compile(m, precision="bf16"), ember.compile(m)
    for shape in ((1, 16, 7, 10), (3, 16, 12, 10)) if width == 10 else ((1, 16, 7, 5), (2, 16, 4, 13)):
        x = RNG.standard_normal(shape).astype(np.float32)
        _check(cm.run({"x": x})["y"], bf16_conv_reference(x, w, (1, 1, 1, 1), 1), fp32_cm.run({"x": x})["y"])
    if HAS_BF16:  # its schedule applied (a failed one would leave slow loops computing the same)
        assert "vdpbf16ps" in _assembly(m, targets.host(), "bf16")


@pytest.mark.parametrize("features", _flavours())
@pytest.mark.parametrize("k, n, rows", [(64, 48, 7), (33, 10, 4), (300, 16, "n")])  # "n": a run-time row count
def test_matmul_matches_bf16_reference(features, k, n, rows):
    m, w = _matmul_model(k, n, rows)
    cm, fp32_cm = ember.compile(m, features=features, precision="bf16"), ember.compile(m, features=features)
    for count in ([5, 9] if rows == "n" else [rows]):
        x = RNG.standard_normal((count, k)).astype(np.float32)
        _check(cm.run({"x": x})["y"], as_bf16(x) @ as_bf16(w), fp32_cm.run({"x": x})["y"])


def test_nan_and_inf_pass_through():
    """Rounding keeps NaN a NaN and infinities infinite: the row holding a NaN gives NaN,
    the one holding an inf gives infinities (inf x a nonzero weight), the others stay finite."""
    m, _ = _matmul_model(16, 8, 4)
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    x[1, 3], x[2, 5] = np.nan, np.inf
    y = ember.compile(m, precision="bf16").run({"x": x})["y"]
    assert np.isnan(y[1]).all() and np.isinf(y[2]).all()
    assert np.isfinite(y[[0, 3]]).all()


def _assembly(m, tgt, precision):
    ir_model = onnx_io.as_ir(m)
    optimize(ir_model)
    ex = lower.build(lower.to_relax(ir_model), tgt, precision=precision)
    return "\n".join(mod.inspect_source("s") for mod in [ex.mod, *ex.mod.imports] if mod.kind == "llvm")


@pytest.mark.skipif(not X86, reason="x86 instructions")
def test_vdpbf16ps_in_the_machine_code_where_the_target_has_it():
    """Built (not run) for a CPU with AVX-512 BF16, on any x86 host: the kernels use
    vdpbf16ps; for one without it, and in fp32, they do not."""
    m, _ = bf16_conv_model(16, 32, 3, (1, 1, 1, 1), 1)
    spr = targets.parse("x86_64-linux-gnu", mcpu="sapphirerapids")
    assert intrinsics.bf16_available(spr) == (intrinsics.DPBF16,)
    assert "vdpbf16ps" in _assembly(m, spr, "bf16")
    assert "vdpbf16ps" not in _assembly(m, spr, "fp32")
    plain = targets.parse("x86_64-linux-gnu", features=NO_BF16_FEATURES)
    assert not intrinsics.bf16_available(plain)
    assert "vdpbf16ps" not in _assembly(m, plain, "bf16")


def test_a_real_architecture_in_bf16_against_onnxruntime():
    """SqueezeNet's logits in bf16 against onnxruntime's fp32: bfloat16 rounds each operand
    by up to 2^-9 of its value; over its 26 convolutions the logits moved by 7e-3 of their
    scale (ResNet-50: 4e-3; fp32: 1e-6), where another input moves them by 2e-2 (a random
    net's logits hardly depend on the image)."""
    m = zoo.light_model("squeezenet", seed=0, logits=True)
    feeds, other = zoo.random_inputs(m, seed=1), zoo.random_inputs(m, seed=2)
    cm = ember.compile(m, precision="bf16")
    assert cm.metadata["precision"] == "bf16"
    ref, other_ref = ort_run(m, feeds)[0], ort_run(m, other)[0]
    got = cm.run(feeds)[cm.output_names[0]]
    scale = np.abs(ref).max()
    err = np.abs(got - ref).max()
    assert 1e-4 * scale < err <= 1e-2 * scale  # bf16 applied, and within its rounding
    assert np.abs(other_ref - ref).max() > 2 * err  # the comparison sees the input


def test_cli_precision(tmp_path):
    m, _ = bf16_conv_model(8, 16, 3, (1, 1, 1, 1), 1)
    path = tmp_path / "conv.onnx"
    path.write_bytes(m.SerializeToString())
    proc = ember_cli("compile", path, "-o", tmp_path / "out", "--precision", "bf16")
    assert proc.returncode == 0, proc.stderr
    assert "precision bf16" in proc.stderr
    proc = ember_cli("compile", path, "-o", tmp_path / "gpu", "--precision", "bf16", "--target", "cuda",
                     "--mcpu", "sm_80")
    assert "precision bf16 is for CPU targets" in error_line(proc)
    proc = ember_cli("compile", path, "-o", tmp_path / "x", "--precision", "fp8")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    with pytest.raises(ember.errors.UnsupportedError, match="unknown precision 'fp16'"):
        ember.compile(m, precision="fp16")
