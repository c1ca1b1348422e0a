"""`ember debug`: the stage, pass and layer where a model stops agreeing with onnxruntime."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

from ember.compiler import ir
from ember.compiler.debug import debug
from ember.compiler.debug.compare import error, sources
from ember.compiler.ir import onnx_io
from ember.passes.manager import Pass
from ember.passes.pruning.channels import set_const
from ember.passes.quantization.quantize import quantizable, quantize
from tests.helpers import ember_cli, error_line, model, tensor

from onnx import helper as h


def init(name: str, array) -> onnx.TensorProto:
    return nh.from_array(np.asarray(array, np.float32), name)


def tiny_cnn() -> onnx.ModelProto:
    """conv-bn-relu, a strided conv, a residual 1x1 conv, pooling and a classifier."""
    rng = np.random.default_rng(0)
    inits = [init("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), init("b1", rng.standard_normal(8) * 0.1),
             init("g", 1 + 0.1 * rng.standard_normal(8)), init("be", 0.1 * rng.standard_normal(8)),
             init("mu", 0.1 * rng.standard_normal(8)), init("var", 1 + 0.1 * rng.random(8)),
             init("w2", rng.standard_normal((16, 8, 3, 3)) * 0.2), init("b2", rng.standard_normal(16) * 0.1),
             init("w3", rng.standard_normal((16, 16, 1, 1)) * 0.3),
             init("fw", rng.standard_normal((16, 10)) * 0.3), init("fb", rng.standard_normal(10) * 0.1)]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn1"], name="bn1"),
             h.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             h.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
             h.make_node("Sub", ["c3", "r2"], ["s3"], name="sub3"),
             h.make_node("Relu", ["s3"], ["r3"], name="relu3"),
             h.make_node("GlobalAveragePool", ["r3"], ["gp"], name="gap"),
             h.make_node("Flatten", ["gp"], ["fl"], name="flatten"),
             h.make_node("MatMul", ["fl", "fw"], ["mm"], name="fc"),
             h.make_node("Add", ["mm", "fb"], ["logits"], name="fc_bias")]
    return model(nodes, [tensor("x", [2, 3, 16, 16])], [tensor("logits", [2, 10])], inits)


def feed(seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((2, 3, 16, 16)).astype(np.float32)}


def calib() -> list[dict[str, np.ndarray]]:
    return [feed(10 + i) for i in range(8)]


@dataclass(frozen=True)
class PerturbWeight(Pass):
    """Deliberately broken: moves one weight of the named node."""

    name: ClassVar[str] = "test-perturb-weight"
    node: str = ""

    def run(self, graph: ir.Graph) -> bool:
        for n in graph.nodes:
            if n.name == self.node:
                w = n.inputs[1].const.numpy().copy()
                w.flat[0] += 1.0
                set_const(graph, n, 1, w)
                return True
        return False


@dataclass(frozen=True)
class SwapInputs(Pass):
    """Deliberately broken: swaps the two inputs of the named node."""

    name: ClassVar[str] = "test-swap-inputs"
    node: str = ""

    def run(self, graph: ir.Graph) -> bool:
        for n in graph.nodes:
            if n.name == self.node:
                a, b = n.inputs[:2]
                graph.set_input(n, 0, b)
                graph.set_input(n, 1, a)
                return True
        return False


PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar
from ember.passes.manager import register_pass
from tests.test_debug import PerturbWeight

register_pass(PerturbWeight)
'''


# ---------------------------------------------------------------- the pieces
def test_error_is_relative_to_the_reference_scale_and_refuses_what_cannot_compare():
    ref = np.array([1.0, -4.0, 2.0], np.float32)
    assert error(ref, ref) == 0.0
    assert error(ref, ref + np.float32(0.04)) == pytest.approx(0.01)
    assert error(ref, ref[:2]) == math.inf
    assert error(ref, np.array([1.0, np.nan, 2.0], np.float32)) == math.inf
    assert error(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])) == 0.0
    assert error(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.25  # indices: the share that differ
    assert error(np.zeros(3), np.ones(3)) == math.inf


def test_passes_keep_the_source_names_of_what_they_replace():
    m = onnx_io.as_ir(tiny_cnn())
    from ember.passes import optimize

    optimize(m, "fold-batchnorm")
    names = sources(m.graph)
    assert names["bn1"] != "bn1" or m.graph.nodes[0].outputs[0].name == "bn1"
    conv = next(n for n in m.graph.nodes if n.op_type == "Conv")
    assert names["bn1"] == conv.outputs[0].name  # the folded conv computes what bn1 did
    copy = onnx_io.as_ir(m)  # a copy through ONNX keeps the provenance
    assert sources(copy.graph)["bn1"] == names["bn1"]
    # and `ember quantize --exclude` finds the layer by the source name
    assert [n.outputs[0].name for n in quantizable(copy.graph, {"bn1"})] == ["c2", "c3", "mm"]


# ---------------------------------------------------------------- broken passes
def test_a_pass_that_perturbs_a_weight_is_named_with_its_node(tmp_path):
    pytest.importorskip("onnxruntime")
    src = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), src)
    np.savez(tmp_path / "in.npz", **feed())
    (tmp_path / "plugin.py").write_text(PLUGIN)
    proc = ember_cli("debug", src, "--inputs", tmp_path / "in.npz", "--plugin", tmp_path / "plugin.py",
                     "--pipeline", "cleanup,test-perturb-weight{node=conv2},fold-batchnorm",
                     "--report", tmp_path / "rep", "-q")
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    first = report["stages"][report["first"]]
    assert first["name"] == "pass: test-perturb-weight{node=conv2}" and first["status"] == "over"
    assert report["divergence"]["node"] == "conv2" and report["divergence"]["tensor"] == "c2"
    # the layers before it agree exactly: the pass changed nothing else
    before = [r for r in report["layers"] if r["tensor"] in ("c1", "bn1", "r1")]
    assert len(before) == 3 and all(r["error"] == 0 for r in before)
    # the stages after the broken pass agree with it (each is held against the stage before)
    assert all(s["status"] in ("ok", "unchanged") for s in report["stages"][report["first"] + 1:])
    assert "conv2" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "FAIL" in proc.stderr and "conv2" in proc.stdout


def test_a_pass_that_swaps_two_inputs_is_named_with_its_node():
    r = debug(tiny_cnn(), feed(), pipeline=[SwapInputs(node="sub3")])
    assert r.failed and r.stages[r.first].name == "pass: test-swap-inputs{node=sub3}"
    assert r.divergence.node == "sub3" and r.divergence.tensor == "s3"


def test_a_healthy_pipeline_raises_no_alarm():
    r = debug(tiny_cnn(), feed(), opt_level=2)
    assert not r.failed, r.markdown()
    ran = [s for s in r.stages if s.status == "ok"]
    kinds = {s.kind for s in ran}
    assert {"reference", "import", "pass", "tvm"} <= kinds
    assert any(s.name.startswith("pass: fold-batchnorm") for s in ran)
    # the compiled stages really computed something: not bit-equal to onnxruntime, but within 1e-5
    tvm = [s for s in ran if s.kind == "tvm"]
    assert len(tvm) == 2 and all(0 < s.worst < 1e-5 for s in tvm)
    assert r.layers == [] and r.divergence is None
    assert all(s.seconds is not None and s.seconds >= 0 for s in r.stages if s.kind == "pass")  # --print-pass-times


def test_the_layers_of_a_compiled_stage_come_from_a_build_with_extra_outputs():
    """A threshold below float rounding makes the first TVM stage fail: its layers are
    compared by building the model again with the source's tensors as outputs."""
    r = debug(tiny_cnn(), feed(), opt_level=0, tol=1e-12)
    first = r.stages[r.first]
    assert first.kind == "tvm"
    assert [row.tensor for row in r.layers] == [o for n in tiny_cnn().graph.node for o in n.output]
    assert all(0 <= row.error < 1e-5 for row in r.layers)
    assert r.divergence is not None and r.divergence.error > 0


def test_bf16_error_shows_in_the_artifact_stage():
    """`precision="bf16"`: every pass and TVM's generic (fp32) build agree with onnxruntime;
    the artifact, on bfloat16 operands, is the first stage past 1e-3 and stays within 2e-2."""
    r = debug(tiny_cnn(), feed(), precision="bf16")
    assert r.failed and r.stages[r.first].name.startswith("artifact")
    assert all(s.status in ("ok", "unchanged") for s in r.stages[:r.first])
    assert 1e-3 < r.stages[r.first].worst < 2e-2
    assert not debug(tiny_cnn(), feed(), precision="bf16", tol=2e-2).failed


# ---------------------------------------------------------------- int8
def _qdq_with_narrow_input(layer: str) -> onnx.ModelProto:
    """The tiny CNN quantized, then the activation range of `layer`'s input cut to a tenth."""
    q = onnx_io.export_model(quantize(tiny_cnn(), calib())[0])
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    conv = next(n for n in q.graph.node if n.output[0] == layer)
    quant = producer[producer[conv.input[0]].input[0]]
    scale = inits[quant.input[1]]
    scale.CopyFrom(nh.from_array((nh.to_array(scale) * 0.1).astype(np.float32), scale.name))
    return q


def test_an_int8_layer_with_a_too_narrow_range_is_named_and_excluding_it_recovers(tmp_path):
    onnx.save(tiny_cnn(), tmp_path / "float.onnx")
    onnx.save(_qdq_with_narrow_input("c3"), tmp_path / "int8.onnx")
    r = debug(str(tmp_path / "int8.onnx"), feed(), reference=str(tmp_path / "float.onnx"))
    first = r.stages[r.first]
    assert first.name == "model as given" and first.worst > r.quant_tol
    assert r.divergence.tensor == "c3" and r.divergence.node == "conv3"
    by_layer = {row["layer"]: row for row in r.int8["layers"]}
    assert min(by_layer, key=lambda k: by_layer[k]["sqnr_db"] or 99) == "c3"
    assert r.int8["exclude"] == ["c3"]
    assert r.int8["error_excluded"] < r.quant_tol < r.int8["error"]
    assert by_layer["c3"]["error_in_float"] == r.int8["error_excluded"]
    # the stages after it hold: Ember computes the bad model as onnxruntime does
    assert all(s.status in ("ok", "unchanged") for s in r.stages[r.first + 1:]), r.markdown()


def test_quantization_in_the_chain_is_one_stage_with_a_per_layer_report():
    r = debug(tiny_cnn(), feed(), quantizer=lambda exclude: quantize(tiny_cnn(), calib(), exclude=exclude)[0])
    assert not r.failed, r.markdown()
    q = next(s for s in r.stages if s.kind == "quantize")
    assert 0 < q.worst < r.quant_tol
    # the later stages compute the quantized model: int8 threshold, and the integer kernels agree with it
    assert any(s.name == "pass: int8-compute" and s.status == "ok" for s in r.stages)
    layers = {row["layer"]: row for row in r.int8["layers"]}
    assert set(layers) == {"bn1", "c2", "c3", "mm"}  # bn1: the conv its batch norm folded into
    assert all(row["sqnr_db"] > 20 for row in layers.values())
    assert sum(row["compute_share"] for row in layers.values()) == pytest.approx(1.0)
    assert max(layers, key=lambda k: layers[k]["compute_share"]) == "c2"  # 16x8x3x3 on 8x8: the most MACs
    assert "exclude" not in r.int8  # nothing to suggest: within the threshold


# ---------------------------------------------------------------- devices and bad input
@pytest.mark.arm
def test_an_emulated_aarch64_stage_ends_the_chain():
    from ember.compiler.runtime import emulation

    if not emulation.rootfs_ready():
        pytest.skip("no emulated aarch64 runtime (scripts/setup_arm_emulation.sh)")
    r = debug(tiny_cnn(), feed(), target="aarch64-linux-gnu", mcpu="cortex-a76", remote={}, opt_level=1)
    assert not r.failed, r.markdown()
    last = r.stages[-1]
    assert last.kind == "target" and last.name.endswith("(emulated)") and last.status == "ok"
    assert 0 < last.worst < 1e-5


def test_bad_requests_get_one_error_line(tmp_path):
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", **feed())
    proc = ember_cli("debug", tmp_path / "m.onnx", "--inputs", tmp_path / "in.npz", "--emulate", "-q",
                     "--report", tmp_path / "r")
    assert "--emulate" in error_line(proc, 1)
    proc = ember_cli("debug", tmp_path / "m.onnx", "--inputs", tmp_path / "in.npz", "--pipeline", "nonsense", "-q",
                     "--report", tmp_path / "r")
    assert "unknown pass" in error_line(proc, 1)
    proc = ember_cli("debug", tmp_path / "missing.onnx", "-q")
    assert "no such file" in error_line(proc, 1)


def test_with_labels_a_stage_that_loses_accuracy_fails_even_within_the_error_threshold():
    from ember.compiler.ir.reference import run_onnxruntime

    labels = run_onnxruntime(tiny_cnn(), feed())[0]["logits"].argmax(-1)  # the reference is 100% right
    r = debug(tiny_cnn(), feed(), pipeline=[SwapInputs(node="sub3")], labels=labels, tol=1e3)
    first = r.stages[r.first]
    assert first.name == "pass: test-swap-inputs{node=sub3}" and first.accuracy < 1.0
    assert "accuracy" in first.note
    assert all(s.status in ("ok", "unchanged") for s in r.stages[r.first + 1:])  # held against the stage before
