"""Bias adds of GEMMs over rows of a run-time count (gemm_rows.fold): the add moves to the 2-D
side of the reshape, so it fuses into the GEMM (fires); a bias that broadcasts along another
dim, static rows and a GEMM read twice stay (must not fire); the model matches onnxruntime at
several sizes, and folding twice changes nothing."""

import numpy as np
import onnx
import pytest
import tvm
from helpers import model, ort_run, tensor
from onnx import helper as h
from tvm import relax

import ember
from ember import targets
from ember.compiler.backend.tvm import gemm_rows
from ember.compiler.backend.tvm.pipeline import legalize_passes
from ember.compiler.backend.tvm.relax_util import calls
from ember.compiler.driver import lower_model

RNG = np.random.default_rng(5)


def linear(x_dims, bias_shape=(8,), extra_reader=False, activation="Relu"):
    """x [.., 16] @ W [16, 8] + bias, then `activation` and Neg (and the GEMM also read by a Sigmoid)."""
    nodes = [h.make_node("MatMul", ["x", "w"], ["g"]), h.make_node("Add", ["g", "b"], ["a" if activation else "y"])]
    if activation:  # then a Neg: the output stays as written
        nodes += [h.make_node(activation, ["a"], ["r"]), h.make_node("Neg", ["r"], ["y"])]
    outputs = [tensor("y", None)]
    if extra_reader:
        nodes.append(h.make_node("Sigmoid", ["g"], ["s"]))
        outputs.append(tensor("s", None))
    inits = [onnx.numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "w"),
             onnx.numpy_helper.from_array(RNG.standard_normal(bias_shape).astype(np.float32), "b")]
    return model(nodes, [tensor("x", x_dims)], outputs, inits)


def _relax(m):
    _, mod, _ = lower_model(m, targets.parse("host"), None)
    return mod


def _ranks(mod, op: str) -> list[int]:
    """The rank of each `op` call's result."""
    return [len(c.ty.shape.values) for c in calls(mod, op)]


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", None])
def test_the_bias_moves_to_the_gemm_rows_and_matches(activation):
    m = linear(["n", "t", 16], activation=activation)
    mod = _relax(m)
    assert _ranks(mod, "relax.add") == [3]
    folded = gemm_rows.fold()(mod)
    assert relax.analysis.check_well_formed(folded)
    # beside the GEMM over n * t rows, FuseOps fuses them into it; an add that is the output stays
    assert _ranks(folded, "relax.add") == [3 if activation is None else 2]
    if activation:
        assert _ranks(folded, f"relax.{'nn.' if activation == 'Relu' else ''}{activation.lower()}") == [2]
    assert [len(c.args[0].ty.shape.values) for c in calls(folded, "relax.matmul")] == [3 if activation is None else 2]
    tvm.ir.assert_structural_equal(folded, gemm_rows.fold()(folded))
    if activation is None:
        return
    tgt = targets.parse("host")
    with tgt.tvm_target():
        legal = tvm.transform.Sequential(legalize_passes(tgt))(mod)
    kernels = [gv.name_hint for gv, f in legal.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("matmul" in k and "add" in k for k in kernels), kernels  # one kernel: GEMM and bias
    cm = ember.compile(m)
    outs = []
    for shape in [(1, 5, 16), (3, 2, 16)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        got, want = cm.run({"x": x})["y"], ort_run(m, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        outs.append(want)
    assert outs[0].shape != outs[1].shape


@pytest.mark.parametrize("kw", [dict(x_dims=["n", "t", 16], bias_shape=(2, 1, 8)),  # not along N only
                                dict(x_dims=[2, 5, 16]),  # static rows
                                dict(x_dims=["n", "t", 16], extra_reader=True)])  # the GEMM read twice
def test_other_gemms_and_biases_stay(kw):
    mod = _relax(linear(**kw))
    folded = gemm_rows.fold()(mod)
    tvm.ir.assert_structural_equal(folded, mod)
    if kw.get("extra_reader"):
        m = linear(**kw)
        x = RNG.standard_normal((2, 3, 16)).astype(np.float32)
        got, want = ember.compile(m).run({"x": x}), ort_run(m, {"x": x})
        for name, ref in zip(["y", "s"], want):
            np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)
