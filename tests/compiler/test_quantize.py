"""int8 quantization to QDQ: observers, the rewrite (valid ONNX that
onnxruntime runs, close to the float model, same numbers in Ember), the
accuracy tools and the CLI."""

import numpy as np
import onnx
import pytest
from ember.compiler.ir import onnx_io
from ember.passes.pruning.prune import Size
from ember.passes.quantization.quantize import activation_range, qparams, quantize
from helpers import assert_same_int8_result, calib, cnn, ember_cli, error_line, init, model, ort_run, residual_cnn, tensor
from onnx import helper as h

import ember

RNG = np.random.default_rng(0)


def test_observers():
    x = np.concatenate([RNG.standard_normal(100000), [40.0]]).astype(np.float32)
    lo, hi = activation_range(x, "minmax")
    assert hi == 40.0 and lo < 0
    for method in ("percentile", "entropy"):
        lo, hi = activation_range(x, method)
        assert 2.0 < hi < 20.0 and lo < 0, method  # the outlier is clipped
    lo, hi = activation_range(x, "mse")  # one outlier in 1e5 costs less kept than clipped to ~4
    assert 8.0 <= hi < 40.0 and lo == -hi
    relu = np.abs(x)
    assert activation_range(relu, "entropy")[0] == 0.0
    assert qparams(-1.0, 3.0, symmetric=True) == (3.0 / 127, 0)
    s, z = qparams(-1.0, 3.0, symmetric=False)
    assert abs(s - 4.0 / 255) < 1e-9 and 0 < z < 255


@pytest.mark.parametrize("calibrate", ["minmax", "percentile", "entropy", "mse"])
def test_quantized_model_is_close_and_runs_in_ort_and_ember(calibrate):
    m = cnn()
    q, report = quantize(m, calib(), calibrate=calibrate)
    proto = onnx_io.export_model(q)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == 3  # x, r1, f: one per distinct activation
    assert {str(onnx.numpy_helper.to_array(i).dtype) for i in proto.graph.initializer} >= {"int8", "int32"}
    assert len(report.layers) == 3 and all(d["sqnr_db"] > 15 for d in report.layers)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort_run(m, {"x": x})[0]
    got = ort_run(proto, {"x": x})[0]
    assert np.linalg.norm(got - ref) < 0.1 * np.linalg.norm(ref)
    mine = ember.compile(proto).run({"x": x})["y"]
    assert_same_int8_result(mine, got)


def test_old_opset_is_converted():
    q, _ = quantize(cnn(opset=9), calib(8))
    proto = onnx_io.export_model(q)
    assert proto.opset_import[0].version >= 13
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert np.isfinite(ort_run(proto, {"x": x})[0]).all()


def test_embedding_tables_are_int8():
    rng = np.random.default_rng(0)
    m = model([h.make_node("Gather", ["table", "ids"], ["e"]), h.make_node("MatMul", ["e", "w"], ["y"])],
              [tensor("ids", [2, 5], onnx.TensorProto.INT64)], [tensor("y", [2, 5, 8])],
              [init("table", rng.standard_normal((1000, 16)).astype(np.float32)),
               init("w", rng.standard_normal((16, 8)).astype(np.float32))])
    feeds = [{"ids": rng.integers(0, 1000, (2, 5))} for _ in range(4)]
    q, rep = quantize(m, feeds)
    assert rep.embeddings == 1 and rep.after.file_bytes < 0.35 * rep.before.file_bytes
    proto = onnx_io.export_model(q)
    onnx.checker.check_model(proto, full_check=True)
    ref, got = ort_run(m, feeds[0])[0], ort_run(proto, feeds[0])[0]
    assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)
    _, rep = quantize(m, feeds, exclude={"Gather"})
    assert rep.embeddings == 0


def test_int8_file_is_smaller():
    m = cnn(width=64)
    q, report = quantize(m, calib(8))
    assert report.after.file_bytes < 0.4 * report.before.file_bytes
    assert Size.of(onnx_io.export_model(q)).file_bytes == report.after.file_bytes


def test_max_drop_puts_layers_back_to_float():
    m = cnn()
    _, full = quantize(m, calib())
    q, rep = quantize(m, calib(), max_drop=full.error / 10)
    assert rep.in_float and rep.error < full.error
    proto = onnx_io.export_model(q)
    assert [n.op_type for n in proto.graph.node].count("QuantizeLinear") < 3


def test_exclude_and_bias_correction():
    q, rep = quantize(cnn(), calib(), exclude={"Gemm"}, bias_correction=True)
    assert [d["op"] for d in rep.layers] == ["Conv", "Conv"]
    gemm = next(n for n in q.graph.nodes if n.op_type == "Gemm")
    assert gemm.inputs[1].const is not None  # still float


def test_cli_quantize(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(cnn(), src)
    proc = ember_cli("quantize", src, "-o", out)
    assert "calibration data" in error_line(proc, 1)
    np.savez(tmp_path / "c.npz", x=RNG.standard_normal((16, 3, 8, 8)).astype(np.float32))
    proc = ember_cli("quantize", src, "-o", out, "--calib-data", tmp_path / "c.npz", "--calibrate", "entropy", "-q")
    assert proc.returncode == 0 and "3 layers int8" in proc.stdout, proc.stderr
    onnx.checker.check_model(onnx.load(out), full_check=True)
    proc = ember_cli("quantize", src, "-o", out, "--random-calib", "-q")
    assert proc.returncode == 0 and "random data" in proc.stderr
    proc = ember_cli("compile", src, "-o", tmp_path / "art", "--quantize", "int8", "--calib-data", tmp_path / "c.npz")
    assert proc.returncode == 0 and "layers int8" in proc.stderr, proc.stderr


@pytest.mark.parametrize("content, fragment", [
    (b"not a zip file at all", "cannot read calibration file"),
    ("pickled", "cannot read calibration file"),
    ("rank", "has rank 3; the model takes rank 4"),
    ("labels", "labels for 8 samples"),
    ("counts", "different sample counts"),
    ("empty_dir", "has no .npz files"),
])
def test_bad_calibration_data(tmp_path, content, fragment):
    """Broken or hostile calibration data: one error line, exit 1, never a traceback or a pickle load."""
    src = tmp_path / "m.onnx"
    onnx.save(cnn(), src)
    path = tmp_path / "c.npz"
    x = RNG.standard_normal((8, 3, 8, 8)).astype(np.float32)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "pickled":
        np.savez(path, x=np.array([{"evil": 1}] * 8, dtype=object))
    elif content == "rank":
        np.savez(path, x=x[:, 0])
    elif content == "labels":
        np.savez(path, x=x, labels=np.zeros(3, np.int64))
    elif content == "counts":
        model2 = model([h.make_node("Add", ["x", "z"], ["y"])], [tensor("x", [1, 3, 8, 8]), tensor("z", [1, 3, 8, 8])],
                       [tensor("y", [1, 3, 8, 8])])
        onnx.save(model2, src)
        np.savez(path, x=x, z=x[:4])
    else:
        path = tmp_path / "calib_dir"
        path.mkdir()
    for cmd in (["quantize", src, "-o", tmp_path / "q.onnx"], ["prune", src, "-o", tmp_path / "p.onnx", "--reconstruct"]):
        if content == "counts" and cmd[0] == "prune":
            continue
        proc = ember_cli(*cmd, "--calib-data", path)
        assert fragment in error_line(proc, 1), proc.stderr


@pytest.mark.parametrize("after, joined", [("conv", True), ("pool", True), ("layernorm", False)])
def test_residual_join_reads_the_quantized_tensor(after, joined):
    """An Add between quantized layers reads r1's quantized form (as
    onnxruntime's QLinearAdd does), so r1 is stored in 8 bits; one feeding
    float ops keeps reading the float tensor. Either way onnxruntime and
    Ember agree and stay close to the float model."""
    m = residual_cnn(after)
    feeds = [{"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(8)]
    q, _ = quantize(m, feeds)
    proto = onnx_io.export_model(q)
    onnx.checker.check_model(proto, full_check=True)
    producer = {o: n for n in proto.graph.node for o in n.output}
    add = next(n for n in proto.graph.node if n.op_type == "Add")
    assert (producer[add.input[1]].op_type == "DequantizeLinear") == joined
    ref, got = ort_run(m, feeds[0])[0], ort_run(proto, feeds[0])[0]
    assert np.linalg.norm(got - ref) < 0.1 * np.linalg.norm(ref)
    assert_same_int8_result(ember.compile(proto).run(feeds[0])["y"], got)
