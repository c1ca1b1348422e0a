"""Chains of small kernels a big kernel broadcasts run once in a kernel of their own
(`broadcast_operands.py`): fires on a run-time quantized bias, not on a single
scale multiply; numerically equal; idempotent; valid where two chains share a
scalar but one of them waits for a later kernel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from helpers import init, legalized, model, ort_run, tensor

C = 24


def _quantized_bias(prefix: str, scale: str, bias: str) -> list:
    """bias / scale, floored, cast to int32 and back: onnxruntime's dynamically quantized
    convolutions compute their bias in the accumulator's units so (TVM lowers the cast to nine
    wrapping ops)."""
    p = prefix
    return [h.make_node("Div", [bias, scale], [p + "q"]), h.make_node("Floor", [p + "q"], [p + "f"]),
            h.make_node("Cast", [p + "f"], [p + "i"], to=T.INT32),
            h.make_node("Cast", [p + "i"], [p + "b"], to=T.FLOAT),
            h.make_node("Reshape", [p + "b", "shape"], [p + "b4"])]


def _bias_model(chain: bool = True, second_layer: bool = False) -> onnx.ModelProto:
    """A convolution plus a bias computed at run time from the scalar input s, then SiLU. With
    `second_layer`, a second convolution's bias divides by s and by the first layer's maximum:
    its chain shares s * c with the first one but cannot run before the first layer does."""
    rng = np.random.default_rng(0)
    inits = [init("w", rng.standard_normal((C, 8, 3, 3)).astype(np.float32)),
             init("bias", (rng.standard_normal(C) * 30).astype(np.float32)),
             init("c", np.float32(0.05)), init("shape", np.array([1, C, 1, 1], np.int64))]
    nodes = [h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), h.make_node("Mul", ["s", "c"], ["sc"])]
    if chain:
        nodes += _quantized_bias("a_", "sc", "bias") + [h.make_node("Add", ["y", "a_b4"], ["z"])]
    else:
        nodes += [h.make_node("Reshape", ["sc", "one"], ["sc4"]), h.make_node("Mul", ["y", "sc4"], ["z"])]
        inits.append(init("one", np.array([1, 1, 1, 1], np.int64)))
    nodes += [h.make_node("Sigmoid", ["z"], ["g"]), h.make_node("Mul", ["z", "g"], ["out"])]
    if second_layer:
        inits.append(init("w2", rng.standard_normal((C, C, 1, 1)).astype(np.float32)))
        nodes[-1].output[0] = "act"
        nodes += [h.make_node("ReduceMax", ["act"], ["top"], keepdims=0), h.make_node("Mul", ["sc", "top"], ["st"]),
                  h.make_node("Conv", ["act", "w2"], ["y2"])]
        nodes += _quantized_bias("b_", "st", "bias") + [h.make_node("Add", ["y2", "b_b4"], ["out"])]
    return model(nodes, [tensor("x", [1, 8, 16, 16]), tensor("s", [])], [tensor("out", None)], inits)


def _before_and_after(m):
    """The Relax module just before the pass, and the pass's result."""
    import tvm

    from ember import passes, targets
    from ember.compiler.backend.tvm import lower, pipeline
    from ember.compiler.ir import onnx_io

    ir_model = onnx_io.as_ir(m)
    passes.optimize(ir_model)
    tgt = targets.parse("host")
    seq = pipeline.legalize_passes(tgt)
    at = next(k for k, p in enumerate(seq) if p.info.name == "EmberIsolateBroadcastOperands")
    with tgt.tvm_target():
        before = tvm.transform.Sequential(seq[:at])(lower.to_relax(ir_model, tgt))
        return before, seq[at](before)


def _isolated(mod) -> list[str]:
    from tvm import relax

    return [gv.name_hint for gv, f in mod.functions_items()
            if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Primitive")]


def _feeds(s: float) -> dict:
    return {"x": np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32),
            "s": np.array(s, np.float32)}


def test_a_run_time_bias_chain_is_one_kernel_outside_the_convolution():
    import tvm

    kernels = [gv.name_hint for gv, f in legalized(_bias_model()).functions_items()
               if isinstance(f, tvm.tirx.PrimFunc)]
    conv = [name for name in kernels if "conv2d" in name]
    chain = [name for name in kernels if "floor_mod" in name]
    assert len(conv) == 1 and "floor" not in conv[0], kernels
    assert len(chain) == 1 and "divide" in chain[0] and "conv2d" not in chain[0], kernels


def test_a_single_scale_multiply_is_left_to_fusion():
    import tvm

    before, after = _before_and_after(_bias_model(chain=False))
    assert not _isolated(after)
    tvm.ir.assert_structural_equal(before, after)


@pytest.mark.parametrize("second_layer", [False, True])
def test_isolated_chains_compute_what_onnxruntime_does(second_layer):
    import ember

    m = _bias_model(second_layer=second_layer)
    compiled = ember.compile(m)
    got = [compiled.run(_feeds(s))["out"] for s in (0.7, 1.9)]
    ref = [ort_run(m, _feeds(s))[0] for s in (0.7, 1.9)]
    assert np.abs(ref[0] - ref[1]).max() > 0.1 * np.abs(ref[0]).max()  # the bias follows s
    for g, r in zip(got, ref):
        # float32 convolutions summing in another order: ~1e-6 of the scale; the floored bias is
        # the same integer on both sides (no quotient lies within rounding of an integer here)
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-5 * np.abs(r).max())


def test_isolating_twice_changes_nothing():
    import tvm

    from ember.compiler.backend.tvm.broadcast_operands import isolate_broadcast_operands

    _, once = _before_and_after(_bias_model(second_layer=True))
    assert len(_isolated(once)) == 2
    tvm.ir.assert_structural_equal(once, isolate_broadcast_operands()(once))
