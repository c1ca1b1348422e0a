"""Small model builders shared by the tests."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h


def model(nodes, inputs, outputs, inits=(), opset=17, **kw) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], **kw)


def tensor(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def conv_relu_gemm(seed: int = 0) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> Relu -> Flatten -> Gemm -> y[1,10]."""
    rng = np.random.default_rng(seed)
    return model(
        [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         h.make_node("Relu", ["c"], ["r"], name="relu"),
         h.make_node("Flatten", ["r"], ["f"], name="flatten"),
         h.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, name="gemm")],
        [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 10])],
        [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
         init("b", rng.standard_normal(4).astype(np.float32)),
         init("gw", rng.standard_normal((10, 256)).astype(np.float32) * 0.1),
         init("gb", rng.standard_normal(10).astype(np.float32))])


def cnn(seed: int = 0, width: int = 16, opset: int = 17) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> Relu -> Conv -> +residual -> Relu -> pool -> Gemm -> y[1,10]."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("Add", ["c2", "r1"], ["a"]),
             h.make_node("Relu", ["a"], ["r2"]),
             h.make_node("GlobalAveragePool", ["r2"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    inits = [init("w1", w(width, 3, 3, 3)), init("b1", w(width)), init("w2", w(width, width, 3, 3)),
             init("b2", w(width)), init("wg", w(10, width)), init("bg", w(10))]
    return model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 10])], inits, opset=opset)


def residual_cnn(after: str) -> onnx.ModelProto:
    """x -> Conv -> Relu (r1) -> Conv (c2) -> Add(c2, r1) -> `after`: Relu then Conv,
    or Relu, MaxPool then Conv (a CNN's residual join, between quantized
    layers), or LayerNormalization (a transformer's, which feeds float ops)."""
    rng = np.random.default_rng(1)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    pool = [h.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2])] if after == "pool" else []
    tail = ([h.make_node("Relu", ["a"], ["r2"]), *pool,
             h.make_node("Conv", ["p" if pool else "r2", "w3"], ["y"], pads=[1, 1, 1, 1])]
            if after != "layernorm" else [h.make_node("LayerNormalization", ["a", "g", "b"], ["y"], axis=1)])
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), h.make_node("Add", ["c2", "r1"], ["a"]),
             *tail]
    inits = [init("w1", w(8, 3, 3, 3)), init("w2", w(8, 8, 3, 3)), init("w3", w(4, 8, 3, 3)),
             init("g", np.ones((8, 6, 6), np.float32)), init("b", np.zeros((8, 6, 6), np.float32))]
    return model(nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", None)], inits)


def calib(n: int = 24) -> list[dict]:
    """Random calibration batches for `cnn`."""
    from ember.passes import calibration

    return calibration.random_batches([{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}], n)


def qdq_cnn() -> onnx.ModelProto:
    """`cnn` quantized by Ember (QDQ: int8 weights, uint8 activations)."""
    from ember.compiler.ir import onnx_io
    from ember.passes.quantization.quantize import quantize

    q, _ = quantize(cnn(width=16), calib())
    return onnx_io.export_model(q)


def if_model() -> onnx.ModelProto:
    """y = If(c, then: Relu(x) + k, else: Neg(x)), with outer x and k used inside."""
    then_g = h.make_graph([h.make_node("Relu", ["x"], ["t0"]), h.make_node("Add", ["t0", "k"], ["t"])],
                          "then", [], [tensor("t", [2, 3])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [tensor("e", [2, 3])])
    return model([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if")],
                 [tensor("c", [], T.BOOL), tensor("x", [2, 3])], [tensor("y", [2, 3])],
                 [init("k", np.full((2, 3), 0.5, np.float32))])


def ort_run(m: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def legalized(m: onnx.ModelProto):
    """The module the host CPU pipeline schedules for a model (optimized, lowered, legalized, fused)."""
    import tvm
    from ember import passes, targets
    from ember.compiler.backend.tvm import lower, pipeline
    from ember.compiler.ir import onnx_io

    ir_model = onnx_io.as_ir(m)
    passes.optimize(ir_model)
    tgt = targets.parse("host")
    mod = lower.to_relax(ir_model, tgt)
    with tgt.tvm_target():
        return tvm.transform.Sequential(pipeline.legalize_passes(tgt))(mod)


def run_pass(m: onnx.ModelProto, spec: str):
    """Import, run a pipeline, verify; returns (ir_model, changed)."""
    import ember.passes  # noqa: F401
    from ember.compiler.ir import onnx_io
    from ember.passes.manager import PassManager

    ir_model = onnx_io.import_model(m)
    changed = PassManager(spec).run(ir_model)
    ir_model.verify()
    return ir_model, changed


def op_types(ir_model) -> list[str]:
    return [n.op_type for n in ir_model.graph.nodes]


def assert_pass(m: onnx.ModelProto, spec: str, feeds: dict, expect_ops=None, rtol=1e-5, atol=1e-6):
    """The pass fires, the result runs in onnxruntime with the same outputs,
    and a second run changes nothing. Returns the optimised IR model."""
    from ember.compiler.ir import onnx_io

    out, changed = run_pass(m, spec)
    assert changed, f"{spec} did not fire"
    if expect_ops is not None:
        assert op_types(out) == expect_ops
    exported = onnx_io.export_model(out)
    onnx.checker.check_model(exported)
    for a, b in zip(ort_run(m, feeds), ort_run(exported, feeds)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    again, changed_again = run_pass(exported, spec)
    assert not changed_again, f"{spec} is not idempotent"
    return out


def assert_no_fire(m: onnx.ModelProto, spec: str):
    out, changed = run_pass(m, spec)
    assert not changed, f"{spec} fired: {op_types(out)}"
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    import socket
    import time

    t_end = time.time() + timeout
    while time.time() < t_end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop_group(proc) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def ember_cli(*args, timeout: float = 600):
    """`python -m ember ARGS` in a subprocess (what a user's shell runs)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ember", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


PROGRESS_LINE = re.compile(r"^\[\s*\d+\.\ds\] ")


def error_line(proc, exit_code: int | None = None) -> str:
    """The CLI's one error line: apart from progress lines ("[  1.2s] ..."), stderr holds exactly
    one line, starting "ember: " (no traceback, no message spilling onto more lines)."""
    assert proc.returncode != 0 if exit_code is None else proc.returncode == exit_code, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("ember: "), proc.stderr
    return lines[0]


def assert_matches_reference(got, ref, other_ref, tol: float = 1e-4, name: str = "") -> None:
    """`got` within `tol` of the reference's scale (max |ref|: logits of random deep nets reach 1e5,
    where elementwise rtol means nothing near zero), and the reference for another input
    (`other_ref`) farther than 10x that from `ref`: the comparison could see an output that ignores
    its input. Float32 engines summing in different orders (Winograd, packed GEMMs) differ by
    about 1e-6 of the scale on these models; the inputs move them by 1e-3 or more."""
    got, ref, other_ref = (np.asarray(a, np.float64) for a in (got, ref, other_ref))
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    scale = float(np.abs(ref).max())
    assert scale > 0, f"{name}: the reference output is all zeros"
    err = float(np.abs(got - ref).max())
    assert err <= tol * scale, f"{name}: max |error| {err:.3g} > {tol:g} x scale {scale:.3g}"
    moved = float(np.abs(other_ref - ref).max())
    assert moved > 10 * tol * scale, f"{name}: another input moves the output by only {moved:.3g} (scale {scale:.3g})"


def assert_same_int8_result(got, ref) -> None:
    """Ember and onnxruntime running the same QDQ file compute the same int32 sums; only the
    float rescale after them may round differently. Within 4 float32 ulps of the output's scale
    (they agree exactly on this machine): a 1% requantization-scale error is 20,000x that."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    bound = 4 * np.finfo(np.float32).eps * float(np.abs(ref).max()) if ref.dtype.kind == "f" else 0
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= bound, f"max |error| {err:.3g} > {bound:.3g} (4 ulps of the scale)"


def as_bf16(a: np.ndarray) -> np.ndarray:
    """`a` rounded to bfloat16 (ml_dtypes: to nearest, ties to even), as float64."""
    import ml_dtypes

    return a.astype(ml_dtypes.bfloat16).astype(np.float64)


def bf16_conv_reference(x, w, pads, stride):
    """NCHW conv on bfloat16-rounded operands, summed in float64."""
    x, w = as_bf16(x), as_bf16(w)
    pt, pl, pb, pr = pads
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    o, _, kh, kw = w.shape
    oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], o, oh, ow))
    for dy in range(kh):
        for dx in range(kw):
            patch = x[:, :, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, dy, dx])
    return out


def bf16_conv_model(c, o, k, pads, stride, hw=11, seed=0):
    """A Conv (no bias) with random weights, and the weights."""
    w = np.random.default_rng(seed).standard_normal((o, c, k, k)).astype(np.float32)
    node = h.make_node("Conv", ["x", "w"], ["y"], pads=list(pads), strides=[stride, stride])
    return model([node], [tensor("x", [1, c, hw, hw])], [tensor("y", None)], [init("w", w)]), w
