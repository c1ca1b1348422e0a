"""The command line: main paths and broken inputs (one clear line, non-zero exit, no traceback)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import conv_relu_gemm, ember_cli, error_line, init, model, tensor
from onnx import TensorProto as T
from onnx import helper as h

ROOT = Path(__file__).resolve().parents[1]


def ember(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ember", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def assert_one_line_error(proc, *fragments):
    line = error_line(proc)
    for f in fragments:
        assert f in line, line


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    onnx.save(conv_relu_gemm(), str(path))
    return path


@pytest.fixture(scope="module")
def artifact(model_file):
    out = model_file.parent / "art"
    proc = ember("compile", model_file, "-o", out, "--print-pass-times")
    assert proc.returncode == 0, proc.stderr
    assert "cleanup" in proc.stdout and "compiled" in proc.stdout
    # the input phase runs as passes the instruments see, before the pipeline
    times = proc.stdout
    steps = ["bind-inputs", "set-input-shapes", "validate", "expand-functions", "unroll-loops", "tie-range-lengths",
             "require-input-values", "cleanup"]
    assert all(s in times for s in steps) and [times.index(s) for s in steps] == sorted(times.index(s) for s in steps)
    assert "building for x86_64-linux-gnu" in proc.stderr  # progress lines
    return out


def test_run_check_save(artifact, model_file, tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = ember("run", artifact, "--input", f"x={tmp_path / 'x.npy'}", "--save", tmp_path / "o.npz",
                 "--check", model_file, "--time", "3")
    assert proc.returncode == 0, proc.stderr
    assert "max |error| vs onnxruntime" in proc.stdout and "(ok at" in proc.stdout
    assert "speed: ember" in proc.stdout
    with np.load(tmp_path / "o.npz") as z:
        assert z["y"].shape == (1, 10)


def test_check_reports_mismatch(artifact, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(conv_relu_gemm(seed=5), str(other))
    proc = ember("run", artifact, "--random-inputs", "--check", other)
    assert "MISMATCH" in proc.stdout
    assert_one_line_error(proc, "differ from onnxruntime")


def test_inspect(model_file):
    proc = ember("inspect", model_file)
    assert proc.returncode == 0, proc.stderr
    assert "Conv" in proc.stdout and "parameters: 2,682" in proc.stdout and "FLOPs:      19.2 K" in proc.stdout


def test_passes_and_targets_lists():
    assert "drop-identity" in ember("passes").stdout
    assert "x86_64-linux-gnu" in ember("targets").stdout


def test_truncated_file(tmp_path, model_file):
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(model_file.read_bytes()[:300])
    assert_one_line_error(ember("compile", bad, "-o", tmp_path / "o"), "trunc.onnx")


def test_not_onnx(tmp_path):
    bad = tmp_path / "readme.onnx"
    bad.write_text("hello, I am a text file\n" * 20)
    assert_one_line_error(ember("compile", bad, "-o", tmp_path / "o"), "not")
    assert_one_line_error(ember("inspect", bad), "not")


def test_missing_model(tmp_path):
    assert_one_line_error(ember("compile", tmp_path / "nope.onnx", "-o", tmp_path / "o"), "no such file")


def test_unknown_op(tmp_path):
    path = tmp_path / "unknown.onnx"
    onnx.save(model([h.make_node("FrobnicateV2", ["x"], ["y"], name="frob")], [tensor("x", [2])],
                    [tensor("y", [2])]), str(path))
    assert_one_line_error(ember("compile", path, "-o", tmp_path / "o"), "unsupported operator FrobnicateV2", "frob")


def test_unknown_target(model_file, tmp_path):
    assert_one_line_error(ember("compile", model_file, "-o", tmp_path / "o", "--target", "x86-64-linux-gnu"),
                          "unknown target triple", "did you mean")


def test_unknown_cpu(model_file, tmp_path):
    assert_one_line_error(ember("compile", model_file, "-o", tmp_path / "o", "--mcpu", "skylake-avx513"),
                          "unknown CPU", "skylake-avx512")


def test_bad_pipeline(model_file, tmp_path):
    assert_one_line_error(ember("compile", model_file, "-o", tmp_path / "o", "--pipeline", "cleanup,fold-nothing"),
                          "unknown pass 'fold-nothing'")


def test_run_missing_input_file(artifact, tmp_path):
    assert_one_line_error(ember("run", artifact, "--input", f"x={tmp_path / 'missing.npy'}"), "no such file")


def test_run_wrong_shape_and_name(artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    assert_one_line_error(ember("run", artifact, "--input", f"x={tmp_path / 'x.npy'}"), "must have shape [1, 3, 8, 8]")
    assert_one_line_error(ember("run", artifact, "--input", f"q={tmp_path / 'x.npy'}"), "unknown input 'q'")
    assert_one_line_error(ember("run", artifact), "no inputs given")


def test_run_not_an_artifact(tmp_path):
    assert_one_line_error(ember("run", tmp_path, "--random-inputs"), "corrupt")
    assert_one_line_error(ember("run", tmp_path / "nope", "--random-inputs"), "not an artifact directory")


def test_tampered_artifact(artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    with open(copy / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert_one_line_error(ember("run", copy, "--random-inputs"), "does not match its metadata")


def test_usage_error_is_one_line():
    proc = ember("compile")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "required" in proc.stderr


def test_custom_pass_example_from_cli(tmp_path):
    path = tmp_path / "negneg.onnx"
    onnx.save(model([h.make_node("Neg", ["x"], ["a"]), h.make_node("Neg", ["a"], ["b"]),
                     h.make_node("Relu", ["b"], ["y"])], [tensor("x", [4])], [tensor("y", [4])]), str(path))
    proc = ember("compile", path, "-o", tmp_path / "o", "--plugin", ROOT / "examples" / "custom_pass.py",
                 "--pipeline", "drop-double-neg,cleanup", "--dump-ir-after", "cleanup")
    assert proc.returncode == 0, proc.stderr
    dump = proc.stderr.split("IR after")[1]
    assert "Neg" not in dump and "Relu(%x)" in dump
    proc = ember("run", tmp_path / "o", "--random-inputs", "--check", path)
    assert proc.returncode == 0 and "(ok at" in proc.stdout


def test_custom_rule_example_and_optimize(tmp_path):
    path = tmp_path / "rr.onnx"
    onnx.save(model([h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
                     h.make_node("Relu", ["b"], ["y"])], [tensor("x", [4])], [tensor("y", [4])]), str(path))
    out = tmp_path / "opt.onnx"
    proc = ember("optimize", path, "-o", out, "--plugin", ROOT / "examples" / "custom_rule.py",
                 "--pipeline", "fold-double-relu,dce")
    assert proc.returncode == 0, proc.stderr
    assert "3 -> 1 nodes" in proc.stdout
    opt = onnx.load(str(out))
    assert [n.op_type for n in opt.graph.node] == ["Relu"] and opt.graph.output[0].name == "y"
    proc = ember("compile", path, "-o", tmp_path / "art", "--plugin", ROOT / "examples" / "custom_rule.py",
                 "--pipeline", "fold-double-relu,cleanup")
    assert proc.returncode == 0, proc.stderr
    assert ember("run", tmp_path / "art", "--random-inputs", "--check", path).returncode == 0


def test_optimize_levels(model_file, tmp_path):
    for level in ("-O0", "-O1", "-O2", "-O3"):
        out = tmp_path / f"m{level}.onnx"
        proc = ember("optimize", model_file, "-o", out, level)
        assert proc.returncode == 0, proc.stderr
        onnx.checker.check_model(onnx.load(str(out)))
    assert_one_line_error(ember("optimize", model_file, "-o", tmp_path / "x.onnx", "-O7"), "invalid choice")


def test_hung_step_is_stopped(model_file, tmp_path):
    """A step that does not finish within --timeout ends with one clear line (here a 0.01 s budget)."""
    proc = ember("compile", model_file, "-o", tmp_path / "o", "--timeout", "0.01")
    assert_one_line_error(proc, "timed out after")


def test_crash_in_child_is_reported(tmp_path):
    """A signal in the isolated step (what a TVM segfault looks like) is reported, not fatal."""
    import signal

    from ember.errors import EmberError
    from ember.compiler.runtime.isolate import run_isolated

    def boom(progress):
        progress("building node 'conv1'")
        import os

        os.kill(os.getpid(), signal.SIGSEGV)

    with pytest.raises(EmberError, match=r"crashed in TVM while building node 'conv1' \(signal SIGSEGV\)"):
        run_isolated(boom, what="compilation")


def test_tune_for_a_device_this_machine_cannot_run(tmp_path, model_file):
    proc = ember("tune", model_file, "--db", tmp_path / "db", "--target", "aarch64-linux-gnu")
    assert_one_line_error(proc, "cannot be measured on this machine", "--tracker")


def test_run_check_with_a_sequence_output(tmp_path):
    m = model([h.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1)], [tensor("x", [2, 6])],
              [h.make_tensor_sequence_value_info("seq", T.FLOAT, None)],
              [init("split", np.array([1, 2, 3], np.int64))], opset=13)
    path = tmp_path / "seq.onnx"
    onnx.save(m, path)
    assert ember_cli("compile", path, "-o", tmp_path / "a", "-q").returncode == 0
    run = ember_cli("run", tmp_path / "a", "--random-inputs", "--check", path, "--save", tmp_path / "o.npz")
    assert run.returncode == 0, run.stderr
    assert "check seq[2]: max |error| vs onnxruntime 0" in run.stdout
    assert sorted(np.load(tmp_path / "o.npz").files) == ["seq[0]", "seq[1]", "seq[2]"]


def test_run_check_with_a_float8_output(tmp_path):
    """onnxruntime returns float8 outputs as their bytes: --check compares values."""
    m = model([h.make_node("Cast", ["x"], ["y"], to=T.FLOAT8E4M3FN)], [tensor("x", [3, 5])],
              [tensor("y", [3, 5], T.FLOAT8E4M3FN)], opset=19)
    path = tmp_path / "f8.onnx"
    onnx.save(m, path)
    assert ember_cli("compile", path, "-o", tmp_path / "a", "-q").returncode == 0
    run = ember_cli("run", tmp_path / "a", "--random-inputs", "--check", path)
    assert run.returncode == 0 and "check y: max |error| vs onnxruntime 0 (ok" in run.stdout, run.stdout + run.stderr


def test_dump_ir_after_an_input_step(model_file, tmp_path):
    np.save(tmp_path / "x.npy", np.full((1, 3, 8, 8), 0.5, np.float32))
    proc = ember("compile", model_file, "-o", tmp_path / "a", "--bind", f"x={tmp_path / 'x.npy'}",
                 "--dump-ir-after", "bind-inputs", "--dump-ir-after", "validate")
    assert proc.returncode == 0, proc.stderr
    dumps = proc.stderr.split("// ---- IR after ")[1:]
    assert [d.split("\n", 1)[0] for d in dumps] == ["001-bind-inputs", "002-validate"]
    assert "%x:" not in dumps[0].split("\n", 2)[1]  # bound: no longer a graph input


@pytest.mark.parametrize("source", ["def broken(:\n    pass\n", "raise ValueError('first\\nsecond\\nthird')\n"])
def test_a_plugin_that_fails_to_load_is_one_error_line(model_file, tmp_path, source):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(source)
    proc = ember("compile", model_file, "-o", tmp_path / "a", "--plugin", plugin)
    line = error_line(proc, 1)
    assert "plugin.py failed to load" in line


def test_check_compares_dtypes_before_values(tmp_path):
    """An artifact returning float where onnxruntime returns int32 of the same values is a
    mismatch (--check used to compare both as float64)."""
    floats = model([h.make_node("Identity", ["x"], ["y"])], [tensor("x", [4])], [tensor("y", [4])])
    ints = model([h.make_node("Cast", ["x"], ["y"], to=T.INT32)], [tensor("x", [4])], [tensor("y", [4], T.INT32)])
    onnx.save(floats, str(tmp_path / "f.onnx"))
    onnx.save(ints, str(tmp_path / "i.onnx"))
    assert ember("compile", tmp_path / "f.onnx", "-o", tmp_path / "a", "-q").returncode == 0
    np.save(tmp_path / "x.npy", np.array([1, 2, 3, 4], np.float32))
    proc = ember("run", tmp_path / "a", "--input", f"x={tmp_path / 'x.npy'}", "--check", tmp_path / "i.onnx")
    assert "dtype float32 != onnxruntime int32" in proc.stdout
    assert_one_line_error(proc, "differ from onnxruntime")


def test_dims_written_as_minus_one_are_unknown_with_one_warning_line(tmp_path):
    """paddle2onnx writes unknown dims as -1: onnxruntime reads them as unknown, so does Ember (warned)."""
    path, out = tmp_path / "m.onnx", tmp_path / "art"
    onnx.save(model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [-1, 3])], [tensor("y", [-1, 3])]), str(path))
    proc = ember("compile", path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert error_line(proc, 0) == ("ember: warning: dimensions written as negative numbers read as unknown "
                                   "(values 'x', 'y'), as onnxruntime does")
    x = np.array([[-1, 2, -3], [4, -5, 6]] * 2, np.float32)  # 4 rows: any batch size runs
    np.save(tmp_path / "x.npy", x)
    proc = ember("run", out, "--input", f"x={tmp_path / 'x.npy'}", "--save", tmp_path / "y.npz")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], np.maximum(x, 0))


def test_an_import_failure_inside_tvm_prints_nothing_but_the_error_line(tmp_path):
    """TVM's importer prints a failing node's operands on stdout: Ember's error line is all that
    shows. (Padding to a multiple of 8 computed from a symbolic dim: TVM's importer turns the
    scalar into a vector and then refuses the Concat.)"""
    path = tmp_path / "m.onnx"
    i64 = lambda name, v: onnx.numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "last"], ["w"], axis=0),
             h.make_node("Cast", ["w"], ["wf"], to=T.FLOAT), h.make_node("Div", ["wf", "eight"], ["q"]),
             h.make_node("Ceil", ["q"], ["c"]), h.make_node("Mul", ["c", "eight"], ["m"]),
             h.make_node("Sub", ["m", "wf"], ["pf"]), h.make_node("Cast", ["pf"], ["p"], to=T.INT64),
             h.make_node("Unsqueeze", ["p", "zero"], ["p1"]), h.make_node("Concat", ["zeros", "p1"], ["pads"], axis=0),
             h.make_node("Pad", ["x", "pads"], ["y"])]
    onnx.save(model(nodes, [tensor("x", [2, "w"])], [tensor("y", None)],
                    [i64("last", 1), i64("zero", [0]), i64("zeros", [0, 0, 0]),
                     onnx.numpy_helper.from_array(np.array(8.0, np.float32), "eight")]), str(path))
    proc = ember("compile", path, "-o", tmp_path / "art", "--no-isolate")
    assert "TVM's ONNX importer failed" in error_line(proc)
    assert proc.stdout == "", proc.stdout


def test_profile_times_each_kernel_with_its_operation_count(artifact, tmp_path):
    """`ember profile`: every kernel of the run, its time and share, and for the convolution
    (static shapes) TVM's operation count: at least the 2 x 8x8 positions x 4 channels x 27
    taps the layer needs (the packed weight panel is 16 channels wide, so up to 4x that, plus
    the bias and ReLU over those lanes)."""
    import json

    proc = ember("profile", artifact, "--random-inputs", "--repeat", "3", "--json", tmp_path / "p.json", "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    rows = {r["name"]: r for r in report["kernels"]}
    conv = next(r for name, r in rows.items() if "conv2d" in name)
    assert 2 * 64 * 4 * 27 <= conv["flops"] <= 4 * 2 * 64 * 4 * 27 + 2 * 64 * 16
    assert conv["calls"] == 1 and conv["shapes"][0] == [1, 8, 8, 3] and conv["gflops"] > 0
    assert abs(sum(r["share"] for r in report["kernels"]) - report["kernels_ms"] / report["instrumented_ms"]) < 1e-6
    assert report["peaks"]["gflops"] > 0 and report["peaks"]["gbps"] > 0
    assert conv["name"] in proc.stdout and "GFLOP/s" in proc.stdout


def test_profile_refuses_what_it_cannot_time(artifact, tmp_path):
    assert_one_line_error(ember("profile", tmp_path / "nope"), "not an artifact directory")
    assert_one_line_error(ember("profile", tmp_path), "incomplete artifact")
    assert_one_line_error(ember("profile", artifact), "no inputs given")
    assert_one_line_error(ember("profile", artifact, "--random-inputs", "--repeat", "0"), "--repeat must be at least 1")
