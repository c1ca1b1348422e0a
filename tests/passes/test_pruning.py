"""Pruning: channel removal (fires, must not fire, valid and consistent graphs),
magnitude and N:M masks, least-squares reconstruction, sensitivity-chosen
ratios, `ember prune`, and a pruned real architecture compiled by Ember."""

import numpy as np
import onnx
import pytest
from ember import passes
from ember.passes import calibration
from ember.compiler.ir import onnx_io
from ember.passes.pruning.prune import Size, prune
from ember.passes.pruning import PruneChannels, PruneMagnitude, PruneNM
from ember.passes.pruning.channels import find_spaces
from helpers import assert_matches_reference, ember_cli, error_line, init, model, ort_run, tensor
from onnx import helper as h

import ember

X = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)


def residual_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu, a residual block (Add), a depthwise conv, a 1x1 conv,
    Flatten and Gemm: every kind of consumer a channel space has."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    pos = lambda n: (np.abs(rng.standard_normal(n)) + 0.5).astype(np.float32)  # noqa: E731
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c1", "s", "bb", "mu", "var"], ["bn"]),
             h.make_node("Relu", ["bn"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("Add", ["c2", "r1"], ["a"]),
             h.make_node("Relu", ["a"], ["r2"]),
             h.make_node("Conv", ["r2", "wd"], ["d"], group=16, pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["d"], ["r3"]),
             h.make_node("Conv", ["r3", "w3", "b3"], ["c3"]),
             h.make_node("Relu", ["c3"], ["r4"]),
             h.make_node("Flatten", ["r4"], ["f"]),
             h.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    inits = [init("w1", w(16, 3, 3, 3)), init("b1", w(16)), init("s", pos(16)), init("bb", w(16)),
             init("mu", w(16)), init("var", pos(16)), init("w2", w(16, 16, 3, 3)), init("b2", w(16)),
             init("wd", w(16, 1, 3, 3)), init("w3", w(12, 16, 1, 1)), init("b3", w(12)),
             init("wg", w(10, 12 * 36)), init("bg", w(10))]
    return model(nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", [1, 10])], inits)


def _ir(m):
    ir_model = onnx_io.as_ir(m)
    passes.optimize(ir_model, "cleanup,fold-batchnorm")
    return ir_model


def _calib(n: int = 32):
    return calibration.random_batches([{"name": "x", "shape": [1, 3, 6, 6], "dtype": "float32"}], n)


def test_channel_spaces_of_a_residual_net():
    spaces = {sp.name: sp for sp in find_spaces(_ir(residual_net()).graph)}
    res = next(sp for sp in spaces.values() if len(sp.producers) == 2)  # conv1 and conv2 meet at the Add
    assert not res.frozen and res.depthwise and {n.op_type for n, _ in res.sinks} == {"Conv"}
    tail = spaces["c3"]
    assert not tail.frozen and tail.flattens and [(n.op_type, b) for n, b in tail.sinks] == [("Gemm", 36)]
    assert spaces["y"].frozen  # the model's output keeps its channels


def test_channel_pruning_shrinks_and_stays_valid():
    m = _ir(residual_net())
    before = Size.of(onnx_io.export_model(m)).params
    assert PruneChannels(sparsity=0.5, multiple=1).run(m.graph)
    m.verify()
    proto = onnx_io.export_model(m)
    onnx.checker.check_model(proto, full_check=True)
    assert Size.of(proto).params < 0.5 * before
    ws = {i.name: onnx.numpy_helper.to_array(i).shape for i in proto.graph.initializer}
    assert (8, 1, 3, 3) in ws.values() and (6, 8, 1, 1) in ws.values() and (10, 6 * 36) in ws.values()
    got = ort_run(proto, {"x": X})[0]
    np.testing.assert_allclose(ember.compile(proto).run({"x": X})["y"], got, rtol=1e-4, atol=1e-5)


def test_channel_pruning_zero_sparsity_changes_nothing():
    m = _ir(residual_net())
    assert not PruneChannels(sparsity=0.0).run(m.graph)


@pytest.mark.parametrize("consumer", ["output", "softmax", "concat"])
def test_channel_pruning_must_not_fire(consumer):
    """A conv whose channels reach a graph output, a Softmax over channels or a Concat keeps them."""
    w = init("w", np.ones((8, 3, 1, 1), np.float32))
    nodes = [h.make_node("Conv", ["x", "w"], ["c"])]
    if consumer == "softmax":
        nodes.append(h.make_node("Softmax", ["c"], ["y"], axis=1))
    elif consumer == "concat":
        nodes.append(h.make_node("Concat", ["c", "c"], ["y"], axis=1))
    else:
        nodes.append(h.make_node("Relu", ["c"], ["y"]))
    m = _ir(model(nodes, [tensor("x", [1, 3, 4, 4])], [tensor("y", None)], [w]))
    assert not PruneChannels(sparsity=0.5).run(m.graph)
    assert all(sp.frozen for sp in find_spaces(m.graph))


def test_magnitude_and_nm_masks():
    m = _ir(residual_net())
    assert PruneMagnitude(sparsity=0.5).run(m.graph)
    for n in m.graph.nodes:
        if n.op_type in ("Conv", "Gemm"):
            w = n.inputs[1].const.numpy()
            assert abs(np.mean(w == 0) - 0.5) < 0.02, n
    m = _ir(residual_net())
    assert PruneNM(n=2, m=4).run(m.graph)
    w2 = next(n for n in m.graph.nodes if n.op_type == "Conv" and n.inputs[1].const.shape == (16, 16, 3, 3))
    groups = np.moveaxis(w2.inputs[1].const.numpy(), 1, -1).reshape(-1, 4)
    assert (np.count_nonzero(groups, axis=1) <= 2).all()
    w1 = next(n for n in m.graph.nodes if n.op_type == "Conv" and n.inputs[1].const.shape[1] == 3)
    assert np.count_nonzero(w1.inputs[1].const.numpy()) == w1.inputs[1].const.numpy().size  # 3 % 4: left dense
    assert not PruneNM(n=2, m=4).run(m.graph)  # idempotent


@pytest.mark.parametrize("method", ["channel", "magnitude", "n:m"])
def test_reconstruction_reduces_the_error(method):
    calib = _calib()
    _, plain = prune(residual_net(), method, 0.5, calib=calib, multiple=1)
    pruned, rec = prune(residual_net(), method, 0.5, calib=calib, multiple=1, reconstruct=True)
    assert rec.reconstructed >= 2
    assert rec.error_reconstructed < 0.6 * plain.error_pruned
    assert rec.after.nonzero <= plain.after.nonzero  # the zeros stay zeros
    proto = onnx_io.export_model(pruned)
    np.testing.assert_allclose(ember.compile(proto).run({"x": X})["y"], ort_run(proto, {"x": X})[0],
                               rtol=1e-4, atol=1e-5)


def _twin_channels():
    """x[.,3] -> Gemm -> 4 hidden channels -> Relu -> Gemm -> y[.,2]: channels 0 and 1 are
    the same large one, channel 2 a smaller independent one, channel 3 tiny."""
    w1 = np.array([[3, 0, 0], [3, 0, 0], [0, 1, 0], [0, 0, 0.05]], np.float32)
    w2 = np.array([[1, 1, 1, 1], [1, -1, 2, 1]], np.float32)
    nodes = [h.make_node("Gemm", ["x", "w1"], ["hid"], transB=1), h.make_node("Relu", ["hid"], ["r"]),
             h.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    return model(nodes, [tensor("x", [1, 3])], [tensor("y", [1, 2])], [init("w1", w1), init("w2", w2)])


@pytest.mark.parametrize("select, keeps", [("reconstruction", {2}), ("energy", {0, 1})])
def test_channels_are_chosen_by_what_the_rest_can_rebuild(select, keeps):
    """Keeping half of the channels: energy keeps both copies of the large one and loses
    the independent one for good; chosen by reconstruction, one copy and the independent
    channel are kept, and the refit rebuilds the output (the copy takes the other's role)."""
    calib = [{"x": np.random.default_rng(i).standard_normal((1, 3)).astype(np.float32)} for i in range(64)]
    pruned, rep = prune(_twin_channels(), "channel", 0.5, calib=calib, multiple=1, reconstruct=True, select=select)
    w1 = next(n for n in pruned.graph.nodes if n.op_type == "Gemm").inputs[1].const.numpy()
    kept = {2 if abs(r[1]) > 0.5 else 0 for r in w1}  # rows left: the large channel's copies or the other
    assert len(w1) == 2 and kept == ({0, 2} if 2 in keeps else {0})
    if select == "reconstruction":
        assert rep.error_reconstructed < 0.05
    else:
        assert rep.error_reconstructed > 0.2


def test_sensitivity_meets_the_target():
    _, rep = prune(residual_net(), "channel", calib=_calib(), target_sparsity=0.4, multiple=1)
    assert rep.sensitivity and 1 - rep.after.params / rep.before.params >= 0.4
    assert any(d["kept"] < d["channels"] for d in rep.layers)


def test_cli_prune(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(residual_net(), src)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, 3, 6, 6)).astype(np.float32))
    proc = ember_cli("prune", src, "-o", out, "--sparsity", "0.5", "--reconstruct", "--calib-data",
                  tmp_path / "calib.npz", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "removed" in proc.stdout and "after reconstructing" in proc.stdout
    onnx.checker.check_model(onnx.load(out), full_check=True)
    proc = ember_cli("prune", src, "-o", out, "--method", "n:m", "--nm", "2:4", "-q")
    assert proc.returncode == 0 and "no faster" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--reconstruct"], "need calibration data"),
    (["--calib-data", "missing.npz", "--reconstruct"], "does not exist"),
    (["--calib-data", "bad.npz", "--reconstruct"], "no array for model input"),
    (["--method", "n:m", "--nm", "two:four"], "expected N:M"),
    (["--sparsity", "1.5"], "must be in [0, 1)"),
])
def test_cli_prune_errors(tmp_path, args, message):
    src = tmp_path / "m.onnx"
    onnx.save(residual_net(), src)
    np.savez(tmp_path / "bad.npz", z=np.zeros((4, 3, 6, 6), np.float32))
    args = [str(tmp_path / a) if a.endswith(".npz") else a for a in args]
    proc = ember_cli("prune", src, "-o", tmp_path / "p.onnx", *args)
    assert message in error_line(proc, 1), proc.stderr


def test_prune_as_a_compile_pipeline_pass():
    pipeline = "cleanup,fold-batchnorm,prune-channels{sparsity=0.5},cleanup"
    cm = ember.compile(residual_net(), pipeline=pipeline)
    ref = onnx_io.as_ir(residual_net())
    passes.optimize(ref, pipeline)
    np.testing.assert_allclose(cm.run({"x": X})["y"], ort_run(onnx_io.export_model(ref), {"x": X})[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_pruned_resnet50_runs_in_ember_and_onnxruntime():
    from ember.models import zoo

    m = zoo.light_model("resnet50", seed=0, logits=True)
    pruned, rep = prune(m, "channel", 0.5)
    assert rep.after.params < 0.45 * rep.before.params
    assert sum(d["kept"] < d["channels"] for d in rep.layers) >= 10
    proto = onnx_io.export_model(pruned)
    onnx.checker.check_model(proto, full_check=True)
    feeds = zoo.random_inputs(m, seed=1)
    ref, other_ref = ort_run(proto, feeds)[0], ort_run(proto, zoo.random_inputs(m, seed=2))[0]
    got = next(iter(ember.compile(proto).run(feeds).values()))
    assert_matches_reference(got, ref, other_ref, name="pruned resnet50")


def test_join_then_per_channel_constant_in_one_op():
    """Sum(branch, other branch, per-channel constant): the constant is sliced
    too (recorded after the two branches' spaces merged)."""
    rng = np.random.default_rng(3)
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    nodes = [h.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1]),
             h.make_node("Sum", ["a", "b", "k"], ["s"]),
             h.make_node("Relu", ["s"], ["r"]),
             h.make_node("Conv", ["r", "wc"], ["y"])]
    m = model(nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", [1, 4, 6, 6])],
              [init("wa", w(16, 3, 3, 3)), init("wb", w(16, 3, 3, 3)), init("k", w(16, 1, 1)),
               init("wc", w(4, 16, 1, 1))])
    pm, rep = prune(m, "channel", 0.5, multiple=1)
    assert [(d["channels"], d["kept"]) for d in rep.layers] == [(16, 8)]
    proto = onnx_io.export_model(pm)
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_allclose(ember.compile(proto).run({"x": X})["y"], ort_run(proto, {"x": X})[0],
                               rtol=1e-4, atol=1e-5)
