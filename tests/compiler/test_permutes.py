"""Transposes that layout conversion leaves (permutes.fold): around a shape cast between two
symbolic dims, and around the NHWC overlap-add of a transposed convolution and the bias and
activation after it. They go (fires), a cast read by anything else and a permute that is not
undone stay (must not fire), the model still matches onnxruntime, and folding twice changes
nothing."""

import numpy as np
import onnx
import tvm
from helpers import model, ort_run, tensor
from onnx import helper as h
from tvm import relax

import ember
from ember import targets
from ember.compiler.backend.tvm import permutes
from ember.compiler.backend.tvm.pipeline import cpu
from ember.compiler.backend.tvm.relax_util import calls
from ember.compiler.driver import lower_model


def fpn_head(transposed: bool = True):
    """An FPN merge (a map upsampled 2x added to the skip connection: two symbolic dims that
    must meet, so a shape cast) and a DB head (ConvTranspose stride 2, bias, ReLU, a 1x1 Conv)."""
    rng = np.random.default_rng(3)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    nodes = [h.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Resize", ["b", "", "scales"], ["up"], mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor"),
             h.make_node("Add", ["a", "up"], ["m"])]
    if transposed:
        nodes += [h.make_node("ConvTranspose", ["m", "wt", "bt"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
                  h.make_node("Relu", ["t"], ["r"]), h.make_node("Conv", ["r", "w3"], ["y"])]
    else:
        nodes += [h.make_node("Conv", ["m", "w3"], ["y"])]
    inits = [onnx.numpy_helper.from_array(v, n) for n, v in [
        ("w1", w(8, 3, 3, 3)), ("w2", w(8, 8, 3, 3)), ("wt", w(8, 8, 2, 2)), ("bt", w(8)), ("w3", w(4, 8, 1, 1)),
        ("scales", np.array([1, 1, 2, 2], np.float32))]]
    return model(nodes, [tensor("x", ["n", 3, "h", "w"])], [tensor("y", None)], inits)


def _converted(m):
    tgt = targets.parse("host")
    _, mod, _ = lower_model(m, tgt, None)
    with tgt.tvm_target():
        return tvm.transform.Sequential(cpu.layout_passes())(mod)


def _activation_permutes(mod) -> int:
    """permute_dims of run-time tensors (weights' permutes fold into constants at build time)."""
    return sum(not isinstance(c.args[0], tvm.ir.expr.Constant) for c in calls(mod, "relax.permute_dims"))


def test_casts_and_the_overlap_add_keep_the_network_nhwc():
    mod = _converted(fpn_head())
    assert relax.analysis.check_well_formed(mod)
    assert _activation_permutes(mod) == 2  # the input to NHWC, the output back: nothing between
    again = permutes.fold()(mod)
    assert _activation_permutes(again) == 2
    tvm.ir.assert_structural_equal(again, permutes.fold()(again))
    m = fpn_head()
    cm = ember.compile(m)
    outs = []
    for shape in [(1, 3, 8, 12), (2, 3, 16, 8)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        got, want = cm.run({"x": x})["y"], ort_run(m, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        outs.append(want)
    assert outs[0].shape != outs[1].shape


def test_permutes_that_are_not_undone_stay():
    """A cast also read directly keeps its permute; a permute followed by a different one stays."""
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, n, 3], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            p = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
            c = bb.match_cast(p, relax.TensorType([1, n, 3, 4], "float32"))
            back = bb.emit(relax.op.permute_dims(c, [0, 3, 1, 2]))
            other = bb.emit(relax.op.permute_dims(back, [0, 1, 3, 2]))
            s = bb.emit(relax.op.add(other, relax.op.sum(c)))  # the cast read directly too
            out = bb.emit_output(s)
        bb.emit_func_output(out)
    mod = bb.get()
    folded = permutes.fold()(mod)
    assert relax.analysis.check_well_formed(folded)
    assert _activation_permutes(folded) == _activation_permutes(mod) == 3
