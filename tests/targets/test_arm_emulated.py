"""AArch64 artifacts, cross-compiled here and run for real under qemu
(scripts/setup_arm_emulation.sh prepares the emulated runtime; CI runs it).
Outputs must match onnxruntime on x86: the light models' logits within 1e-4 of
their scale (and two inputs must give different logits), the small models
within rtol 1e-3 / atol 1e-5."""

import numpy as np
import onnx
import pytest
from helpers import (as_bf16, assert_matches_reference, bf16_conv_model, bf16_conv_reference, conv_relu_gemm,
                     free_port, if_model, init, model, ort_run, qdq_cnn,
                     stop_group, tensor, wait_port)
from onnx import TensorProto as T
from onnx import helper as h

import ember
from ember import targets
from ember.models import zoo
from ember.compiler.runtime import emulation

pytestmark = [pytest.mark.arm, pytest.mark.skipif(not emulation.rootfs_ready(),
                                                  reason="emulated aarch64 runtime not set up "
                                                         "(scripts/setup_arm_emulation.sh)")]

LIGHT = ("squeezenet", "shufflenet", "bvlc_alexnet", "inception_v1")


def cases(light=LIGHT):
    for name in light:  # logits (a random net's softmax saturates), for two inputs
        m = zoo.light_model(name, seed=0, logits=True)
        yield name, m, zoo.random_inputs(m, seed=1)
        yield name + "/other input", m, zoo.random_inputs(m, seed=2)
    yield "conv_relu_gemm", conv_relu_gemm(), {"x": np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    yield "if_true", if_model(), {"c": np.array(True), "x": x}
    yield "if_false", if_model(), {"c": np.array(False), "x": x}
    # indices checked at run time (guards.py), inside a kernel: the runtime has no Relax assert_op
    yield "gather", gather_model(), {"d": np.arange(15, dtype=np.float32).reshape(5, 3), "i": np.array([[4, -5]])}
    # no kernel at all: the host code is a C module, linked with the VM code packed for aarch64
    yield "identity", model([h.make_node("Identity", ["x"], ["y"])], [tensor("x", [2, 3])], [tensor("y", [2, 3])]), \
        {"x": x}


def gather_model() -> onnx.ModelProto:
    return model([h.make_node("Gather", ["d", "i"], ["y"], axis=0)],
                 [tensor("d", [5, 3]), tensor("i", [1, 2], T.INT64)], [tensor("y", [1, 2, 3])])


def test_index_out_of_range_under_emulation(tmp_path):
    """The run-time index check works on a device with only the TVM runtime:
    one clear error, not a missing-function error or an out-of-bounds read."""
    cm = ember.compile(gather_model(), target="aarch64-linux-gnu")
    lib = cm.save(tmp_path / "g") / "model.so"
    feeds = {"d": np.zeros((5, 3), np.float32), "i": np.array([[1, 5]])}
    with pytest.raises(emulation.EmulationError, match="Gather node: index out of range for axis 0 of size 5"):
        emulation.run([(lib, feeds, cm.input_names)], cpu="cortex-a72")


@pytest.mark.parametrize("mcpu, features, cpu, light", [  # each light model on one of the two CPUs
    (None, "+neon", "cortex-a72", LIGHT[0::2]),
    ("cortex-a76", "+dotprod", "cortex-a76", LIGHT[1::2]),
])
def test_models_match_onnxruntime_under_emulation(tmp_path, mcpu, features, cpu, light):
    jobs, refs, built = [], [], {}
    for name, m, feeds in cases(light):
        model_name = name.split("/")[0]  # a model's two inputs run one artifact (not id(m): ids are reused)
        if model_name not in built:
            cm = ember.compile(m, target="aarch64-linux-gnu", mcpu=mcpu, features=features)
            built[model_name] = (cm.save(tmp_path / model_name), cm.input_names)
        out, input_names = built[model_name]
        jobs.append((out / "model.so", feeds, input_names))
        refs.append((name, ort_run(m, feeds)))
    results = emulation.run(jobs, cpu=cpu)
    by_name = dict(refs)
    for (name, ref), got in zip(refs, results):
        assert len(got) == len(ref), name
        if name.split("/")[0] in LIGHT:  # within 1e-4 of the scale; the other input's output differs
            other = by_name[name + "/other input"] if "/" not in name else by_name[name.split("/")[0]]
            assert_matches_reference(got[0], ref[0], other[0], name=name)
            continue
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5, err_msg=name)


def _assembly(m: onnx.ModelProto, mcpu, features, precision: str = "fp32") -> str:
    from ember import passes
    from ember.compiler.backend.tvm import lower
    from ember.compiler.ir import onnx_io

    ir_model = onnx_io.as_ir(m)
    passes.optimize(ir_model)
    ex = lower.build(lower.to_relax(ir_model), targets.parse("aarch64-linux-gnu", mcpu=mcpu, features=features),
                     precision=precision)
    return "\n".join(mod.inspect_source("s") for mod in ex.mod.imports if mod.kind == "llvm")


@pytest.mark.parametrize("mcpu, features, cpu, instructions", [
    ("cortex-a76", "+dotprod", "cortex-a76", {"sdot"}),
    (None, "+dotprod,+i8mm", "max", {"usmmla", "sdot"}),
    (None, "+neon", "cortex-a72", set()),
])
def test_int8_model_matches_x86_under_emulation(tmp_path, mcpu, features, cpu, instructions):
    """A QDQ model on integer kernels: with +dotprod they use sdot, with +i8mm
    usmmla where the rows pair up (its two 8x8 convolutions; the batch-1
    Gemm takes sdot), without either plain int32 loops (checked in the
    machine code); all give the x86 int8 result."""
    m = qdq_cnn()
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    cm = ember.compile(m, target="aarch64-linux-gnu", mcpu=mcpu, features=features)
    out = cm.save(tmp_path / "int8")
    (got,), = emulation.run([(out / "model.so", {"x": x}, cm.input_names)], cpu=cpu)
    np.testing.assert_allclose(got, ember.compile(m).run({"x": x})["y"], rtol=1e-5, atol=1e-6)
    asm = _assembly(m, mcpu, features)
    assert {i for i in ("sdot", "usmmla") if f"\t{i}\t" in asm} == instructions


def test_bf16_layers_on_bfdot_under_emulation(tmp_path):
    """precision bf16 with +bf16: a padded, strided conv with odd channels and a matmul with an
    odd reduction run on bfdot (in the machine code) and match numpy on bfloat16-rounded
    operands summed in float64 within float32 summation error (bfdot rounds the pair's sum its
    own way); without +bf16 the plain-loop kernel gives the same."""
    conv, w = bf16_conv_model(5, 20, 3, (1, 0, 2, 1), 2)
    x = np.random.default_rng(4).standard_normal((1, 5, 11, 11)).astype(np.float32)
    ref = bf16_conv_reference(x, w, (1, 0, 2, 1), 2)
    wm = np.random.default_rng(5).standard_normal((33, 12)).astype(np.float32)
    mm = model([h.make_node("MatMul", ["a", "w"], ["y"])], [tensor("a", [3, 33])], [tensor("y", [3, 12])],
               [init("w", wm)])
    a = np.random.default_rng(6).standard_normal((3, 33)).astype(np.float32)
    jobs = []
    for features in ("+neon,+bf16", "+neon"):
        for name, m, feeds in (("conv", conv, {"x": x}), ("matmul", mm, {"a": a})):
            cm = ember.compile(m, target="aarch64-linux-gnu", features=features, precision="bf16")
            jobs.append((cm.save(tmp_path / f"{name}{features}") / "model.so", feeds, cm.input_names))
        asm = _assembly(conv, None, features, precision="bf16")
        assert ("\tbfdot\t" in asm) == ("bf16" in features)
    results = emulation.run(jobs, cpu="max")
    for (got,), want in zip(results, [ref, as_bf16(a) @ as_bf16(wm)] * 2):
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


def _integer_layers() -> tuple[onnx.ModelProto, dict]:
    """ConvInteger / MatMulInteger layers side by side, one per output, for
    usmmla's cases: rows in pairs with input rows 1, 2 and 4 apart (strides),
    channels, outputs and depths not multiples of 8, signed activations
    (sign-flipped for usmmla), zero points, and rows that do not pair (sdot)."""
    rng = np.random.default_rng(5)
    nodes, inputs, outputs, inits, feeds = [], [], [], [], {}
    convs = [  # (activation type, zero point, channels, outputs, kernel, pads, stride, size)
        (T.UINT8, 0, 16, 32, 3, 1, 1, 10),    # 10 output columns: pairs, stride 1
        (T.UINT8, 131, 3, 20, 3, 1, 2, 12),   # stride 2, 3 channels (padded to 8)
        (T.INT8, -5, 8, 16, 1, 0, 1, 8),      # signed input, flipped
        (T.INT8, 0, 5, 16, 3, 1, 1, 9),       # 9 output columns: sdot
        (T.UINT8, 7, 12, 10, 5, 0, 4, 27),    # stride 4, 10 outputs (padded to 12, cropped)
    ]
    for i, (dt, zp, c, o, k, pad, stride, size) in enumerate(convs):
        np_dt = np.uint8 if dt == T.UINT8 else np.int8
        inits += [init(f"w{i}", rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)),
                  init(f"z{i}", np.array(zp, np_dt))]
        nodes.append(h.make_node("ConvInteger", [f"x{i}", f"w{i}", f"z{i}"], [f"y{i}"], pads=[pad] * 4,
                                 strides=[stride, stride]))
        inputs.append(tensor(f"x{i}", [1, c, size, size], dt))
        outputs.append(tensor(f"y{i}", None, T.INT32))
        info = np.iinfo(np_dt)
        feeds[f"x{i}"] = rng.integers(info.min, info.max + 1, (1, c, size, size)).astype(np_dt)
    for j, shape in enumerate(([2, 6, 20], [5, 20])):  # 6 rows: pairs, depth 20 padded to 24; 5 rows: sdot
        inits += [init(f"b{j}", rng.integers(-127, 128, (20, 24)).astype(np.int8)),
                  init(f"za{j}", np.array(100, np.uint8))]
        nodes.append(h.make_node("MatMulInteger", [f"a{j}", f"b{j}", f"za{j}"], [f"m{j}"]))
        inputs.append(tensor(f"a{j}", shape, T.UINT8))
        outputs.append(tensor(f"m{j}", None, T.INT32))
        feeds[f"a{j}"] = rng.integers(0, 256, shape).astype(np.uint8)
    return model(nodes, inputs, outputs, inits), feeds


def test_i8mm_layers_match_onnxruntime_exactly(tmp_path):
    m, feeds = _integer_layers()
    cm = ember.compile(m, target="aarch64-linux-gnu", features="+dotprod,+i8mm")
    (got,) = emulation.run([(cm.save(tmp_path / "i8mm") / "model.so", feeds, cm.input_names)], cpu="max")
    for g, r, name in zip(got, ort_run(m, feeds), [o.name for o in m.graph.output]):
        np.testing.assert_array_equal(g, r, err_msg=name)


def test_sve_build_is_refused_on_cortex_a72(tmp_path):
    m = zoo.light_model("squeezenet")
    feeds = zoo.random_inputs(m)
    cm = ember.compile(m, target="aarch64-linux-gnu", features="+sve")
    lib = cm.save(tmp_path / "sve") / "model.so"
    with pytest.raises(emulation.EmulationError, match="SIGILL on emulated cortex-a72"):
        emulation.run([(lib, feeds, cm.input_names)], cpu="cortex-a72")
    (out,) = emulation.run([(lib, feeds, cm.input_names)], cpu="max")  # a core with SVE runs it
    np.testing.assert_allclose(out[0], ort_run(m, feeds)[0], rtol=1e-3, atol=1e-5)


def test_narrow_float_types_cross_the_emulator(tmp_path):
    """bfloat16 and float8 inputs and outputs (the emulated Python has no
    ml_dtypes: they travel as their bits) give the host's results, through
    the API and through `ember run --emulate --check`."""
    import ml_dtypes

    m = model([h.make_node("Cast", ["x"], ["f"], to=T.FLOAT), h.make_node("Relu", ["f"], ["r"]),
               h.make_node("Cast", ["r"], ["y"], to=T.BFLOAT16), h.make_node("Cast", ["f"], ["z"], to=T.FLOAT8E4M3FN)],
              [tensor("x", [2, 3], T.BFLOAT16)], [tensor("y", [2, 3], T.BFLOAT16), tensor("z", [2, 3], T.FLOAT8E4M3FN)],
              opset=19)
    x = np.array([[-1.5, 0.25, 3.0], [100.0, -0.0, 7.75]], ml_dtypes.bfloat16)
    cm = ember.compile(m, target="aarch64-linux-gnu")
    (got,) = emulation.run([(cm.save(tmp_path / "a") / "model.so", {"x": x}, cm.input_names)], cpu="cortex-a72")
    ref = ember.compile(m).run({"x": x})
    assert got[0].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got[0].astype(np.float32), ref["y"].astype(np.float32))
    np.testing.assert_array_equal(got[1], ref["z"].view(np.uint8))  # float8 is stored as bytes (narrow.py)


def test_cli_emulate(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "m.onnx"
    onnx.save(conv_relu_gemm(), str(path))
    run = lambda *a: subprocess.run([sys.executable, "-m", "ember", *map(str, a)], capture_output=True, text=True)
    assert run("compile", path, "-o", tmp_path / "a", "--target", "aarch64-linux-gnu", "--mcpu", "cortex-a72").returncode == 0
    proc = run("run", tmp_path / "a", "--random-inputs", "--emulate", "--check", path, "--target", "aarch64-linux-gnu")
    assert proc.returncode == 0 and "(ok at" in proc.stdout, proc.stderr
    proc = run("run", tmp_path / "a", "--random-inputs")
    assert proc.returncode == 1 and "run it with --emulate" in proc.stderr


@pytest.fixture(scope="module")
def arm_rpc_server():
    """A TVM RPC server running inside the emulated aarch64 Python (Cortex-A72)."""
    port = free_port()
    proc = emulation.start_rpc_server(port, cpu="cortex-a72")
    try:
        wait_port(port, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc)


@pytest.mark.parametrize("name", ["squeezenet", "conv_relu_gemm"])
def test_run_over_rpc_on_emulated_arm(tmp_path, arm_rpc_server, name):
    import subprocess
    import sys

    m = zoo.light_model(name, logits=True) if name in zoo.LIGHT_MODELS else conv_relu_gemm()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    run = lambda *a: subprocess.run([sys.executable, "-m", "ember", *map(str, a)], capture_output=True, text=True)
    assert run("compile", path, "-o", tmp_path / "a", "--target", "aarch64-linux-gnu", "--mcpu", "cortex-a72").returncode == 0
    proc = run("run", tmp_path / "a", "--random-inputs", "--rpc", arm_rpc_server, "--check", path)
    assert proc.returncode == 0 and "(ok at" in proc.stdout, proc.stderr


def test_tune_on_emulated_arm_through_tracker(tmp_path):
    """`ember tune` for aarch64 measures on an emulated core registered with an
    RPC tracker (builds cross-linked here): first Ember's default schedules
    (the int8 model's usmmla and sdot kernels), kept as the records to beat,
    then MetaSchedule's candidates; the tuned model still gives the x86
    result under emulation. Emulated timings only prove the path."""
    import json
    import subprocess
    import sys

    tracker = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(tracker), "--port-end", str(tracker + 1)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        wait_port(tracker)
        port = free_port()
        procs.append(emulation.start_rpc_server(port, cpu="max", tracker=f"127.0.0.1:{tracker}",
                                                key="ember-arm"))
        wait_port(port, timeout=120)
        path = tmp_path / "m.onnx"
        onnx.save(qdq_cnn(), str(path))
        run = lambda *a: subprocess.run([sys.executable, "-m", "ember", *map(str, a)], capture_output=True,
                                        text=True, timeout=900)
        arm = ["--target", "aarch64-linux-gnu", "--mattr", "+dotprod,+i8mm"]
        db = tmp_path / "db"
        proc = run("tune", path, "--db", db, *arm, "--trials", "8", "--tracker", f"127.0.0.1:{tracker}",
                   "--key", "ember-arm")
        assert proc.returncode == 0, proc.stderr
        report = json.loads((db / "report" / "tuning-report.json").read_text())
        assert all(t["default_ms"] is not None for t in report["tasks"])  # measured on the emulated device
        assert any(t["best_ms"] is not None for t in report["tasks"])
        assert "usmmla" in (db / "records.json").read_text()  # the default int8 kernels are records
        proc = run("compile", path, "-o", tmp_path / "a", *arm, "--db", db)
        assert proc.returncode == 0 and "schedules from tuning database" in proc.stderr, proc.stderr
        assert "for 0 of" not in proc.stderr
        proc = run("run", tmp_path / "a", "--random-inputs", "--emulate", "--check", path, "--target",
                   "aarch64-linux-gnu")
        assert proc.returncode == 0 and "(ok at" in proc.stdout, proc.stderr
    finally:
        for p in procs:
            stop_group(p)
