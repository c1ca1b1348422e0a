"""Operators ONNX defines by a function body are expanded into that body where
TVM has no converter (or a wrong one for the node's use): fires, stays out,
gives ONNX's reference numbers, reaches into subgraphs, is idempotent."""

import numpy as np
import onnx
import pytest
from ember.compiler.input import functions
from ember.compiler.backend.tvm import lower
from ember.compiler.ir import onnx_io
from ember.errors import UnsupportedError
from helpers import model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import ember


def expanded(m: onnx.ModelProto):
    return functions.expand(onnx_io.import_model(m), lower.needs_body)


def reference(m: onnx.ModelProto, feeds: dict) -> list:
    return ReferenceEvaluator(m).run(None, feeds)


def test_context_dependent_body_nll_loss():
    m = model([h.make_node("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["loss"], reduction="mean",
                           ignore_index=1)],
              [tensor("x", [3, 5, 2]), tensor("t", [3, 2], T.INT64), tensor("w", [5])], [tensor("loss", [])],
              opset=22)
    ops = {n.op_type for n in expanded(m).graph.all_nodes()}
    assert "NegativeLogLikelihoodLoss" not in ops and "GatherElements" in ops
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 5, 2)).astype(np.float32), "t": rng.integers(0, 5, (3, 2)),
             "w": rng.random(5).astype(np.float32)}
    np.testing.assert_allclose(ember.compile(m).run(feeds)["loss"], reference(m, feeds)[0], rtol=1e-5)


def test_plain_body_nested_swiglu_uses_swish():
    """SwiGLU's body calls Swish, which has a body of its own (written for opset 24)."""
    m = model([h.make_node("SwiGLU", ["a", "b"], ["y"], alpha=1.5)], [tensor("a", [2, 8]), tensor("b", [2, 8])],
              [tensor("y", [2, 8])], opset=28)
    assert {n.op_type for n in expanded(m).graph.all_nodes()} <= {"Constant", "CastLike", "Mul", "Sigmoid"}
    rng = np.random.default_rng(1)
    feeds = {k: rng.standard_normal((2, 8)).astype(np.float32) for k in "ab"}
    np.testing.assert_allclose(ember.compile(m).run(feeds)["y"], reference(m, feeds)[0], rtol=1e-5, atol=1e-6)


def test_onnx_attention_is_not_tvms_com_microsoft_one():
    m = model([h.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)],
              [tensor(n, [1, 2, 4, 8]) for n in "qkv"], [tensor("y", [1, 2, 4, 8])], opset=23)
    rng = np.random.default_rng(2)
    feeds = {n: rng.standard_normal((1, 2, 4, 8)).astype(np.float32) for n in "qkv"}
    np.testing.assert_allclose(ember.compile(m).run(feeds)["y"], reference(m, feeds)[0], rtol=1e-5, atol=1e-6)


def test_layernorm_expands_only_where_its_statistics_are_used():
    nodes = [h.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv"], axis=-1)]
    ins = [tensor("x", [3, 6]), tensor("g", [6]), tensor("b", [6])]
    stats = model(nodes, ins, [tensor("y", [3, 6]), tensor("mean", [3, 1]), tensor("inv", [3, 1])])
    assert "LayerNormalization" not in {n.op_type for n in expanded(stats).graph.all_nodes()}
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((3, 6)).astype(np.float32), "g": rng.random(6).astype(np.float32),
             "b": rng.random(6).astype(np.float32)}
    got = ember.compile(stats).run(feeds)
    for name, want in zip(("y", "mean", "inv"), ort_run(stats, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)
    plain = model([h.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)], ins, [tensor("y", [3, 6])])
    ir_model = onnx_io.import_model(plain)
    assert functions.expand(ir_model, lower.needs_body) is ir_model  # nothing to expand: untouched


def test_body_inside_a_subgraph():
    branch = lambda name, op: h.make_graph(  # noqa: E731
        [h.make_node(op, ["x"], [name + "_y"])], name, [], [tensor(name + "_y", [4])])
    m = model([h.make_node("If", ["c"], ["y"], then_branch=branch("then", "Swish"), else_branch=branch("else", "Neg"))],
              [tensor("c", [], T.BOOL), tensor("x", [4])], [tensor("y", [4])], opset=24)
    assert "Swish" not in {n.op_type for n in expanded(m).graph.all_nodes()}
    x = np.array([-2, -0.5, 0.5, 3], np.float32)
    cm = ember.compile(m)
    np.testing.assert_allclose(cm.run({"c": np.array(True), "x": x})["y"], x / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_array_equal(cm.run({"c": np.array(False), "x": x})["y"], -x)


def test_idempotent_and_ops_without_a_body_still_refused():
    m = model([h.make_node("Celu", ["x"], ["y"], alpha=2.0)], [tensor("x", [5])], [tensor("y", [5])], opset=12)
    once = expanded(m)
    assert functions.expand(once, lower.needs_body) is once
    nobody = model([h.make_node("Det", ["x"], ["y"])], [tensor("x", [3, 3])], [tensor("y", [])], opset=22)
    with pytest.raises(UnsupportedError, match="unsupported operator Det"):
        ember.compile(nobody)


def test_inference_dropout_mask_is_all_true():
    m = model([h.make_node("Dropout", ["x", "r"], ["y", "mask"])], [tensor("x", [2, 3]), tensor("r", [])],
              [tensor("y", [2, 3]), tensor("mask", [2, 3], T.BOOL)], opset=13)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = ember.compile(m).run({"x": x, "r": np.array(0.5, np.float32)})
    np.testing.assert_array_equal(got["y"], x)
    np.testing.assert_array_equal(got["mask"], np.ones((2, 3), bool))
