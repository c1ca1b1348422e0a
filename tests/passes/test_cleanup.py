"""Cleanup passes: fire, must not fire, numerically equal, idempotent."""

import numpy as np
import onnx
import pytest
from helpers import init, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember.passes  # noqa: F401
from ember.compiler.ir import onnx_io
from ember.passes.manager import PassManager


def apply(m: onnx.ModelProto, spec: str):
    ir_model = onnx_io.import_model(m)
    changed = PassManager(spec).run(ir_model)
    ir_model.verify()
    return ir_model, changed


def ops(ir_model):
    return [n.op_type for n in ir_model.graph.nodes]


def check_same_outputs(before: onnx.ModelProto, after_ir, feeds):
    after = onnx_io.export_model(after_ir)
    onnx.checker.check_model(after)
    for a, b in zip(ort_run(before, feeds), ort_run(after, feeds)):
        np.testing.assert_array_equal(a, b)


X = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)


def test_drop_identity_fires_keeps_names_and_is_idempotent():
    m = model([h.make_node("Identity", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
               h.make_node("Dropout", ["b"], ["c"]), h.make_node("Identity", ["c"], ["y"])],
              [tensor("x", [2, 4])], [tensor("y", [2, 4])])
    out, changed = apply(m, "drop-identity")
    assert changed and ops(out) == ["Relu"]
    assert out.graph.outputs[0].name == "y"
    check_same_outputs(m, out, {"x": X})
    assert not PassManager("drop-identity").run(out)


def test_drop_identity_must_not_fire():
    # input passed straight to an output, a used Dropout mask, training-mode dropout
    m = model([h.make_node("Identity", ["x"], ["y"]),
               h.make_node("Dropout", ["x", "ratio", "train"], ["d", "mask"]),
               h.make_node("Cast", ["mask"], ["z"], to=T.FLOAT)],
              [tensor("x", [2, 4])], [tensor("y", [2, 4]), tensor("z", [2, 4]), tensor("d", [2, 4])],
              [init("ratio", np.float32(0.5)), init("train", np.bool_(True))])
    out, changed = apply(m, "drop-identity")
    assert not changed and ops(out) == ["Identity", "Dropout", "Cast"]


def test_dce_fires_on_dead_nodes_initializers_and_subgraphs():
    then_g = h.make_graph([h.make_node("Neg", ["x"], ["dead"]), h.make_node("Relu", ["x"], ["t"])], "then", [],
                          [tensor("t", [2, 4])])
    else_g = h.make_graph([h.make_node("Abs", ["x"], ["e"])], "else", [], [tensor("e", [2, 4])])
    m = model([h.make_node("Add", ["x", "k"], ["unused"]), h.make_node("Exp", ["unused"], ["unused2"]),
               h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
              [tensor("c", [], T.BOOL), tensor("x", [2, 4])], [tensor("y", [2, 4])],
              [init("k", np.ones((2, 4), np.float32)), init("never", np.zeros(3, np.float32))])
    out, changed = apply(m, "dce")
    assert changed and ops(out) == ["If"]
    assert not out.graph.initializers
    assert [n.op_type for n in out.graph.nodes[0].attrs["then_branch"].nodes] == ["Relu"]
    for c in (True, False):
        check_same_outputs(m, out, {"c": np.array(c), "x": X})
    assert not PassManager("dce").run(out)


def test_dce_must_not_fire_on_live_graph():
    m = model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [2, 4]), tensor("unused_input", [1])],
              [tensor("y", [2, 4])])
    out, changed = apply(m, "dce")
    assert not changed and len(out.graph.inputs) == 2


@pytest.mark.parametrize("spec", ["cleanup", "drop-identity,dce"])
def test_cleanup_combined(spec):
    m = model([h.make_node("Identity", ["x"], ["a"]), h.make_node("Neg", ["a"], ["dead"]),
               h.make_node("Relu", ["a"], ["y"])], [tensor("x", [2, 4])], [tensor("y", [2, 4])])
    out, changed = apply(m, spec)
    assert changed and ops(out) == ["Relu"]
    check_same_outputs(m, out, {"x": X})
    assert not apply(onnx_io.export_model(out), spec)[1]


def _if_model(cond, nested=False):
    then_nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("Mul", ["r", "two"], ["t"])]
    if nested:
        inner = h.make_graph([h.make_node("Neg", ["x"], ["n"])], "inner", [], [tensor("n", [2, 4])])
        then_nodes = [h.make_node("If", ["b"], ["t"], then_branch=inner, else_branch=inner)]
    then_g = h.make_graph(then_nodes, "then", [], [tensor("t", [2, 4])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [tensor("e", [2, 4])])
    inputs = [tensor("x", [2, 4])] + ([tensor("b", [], T.BOOL)] if nested else [])
    inits = [init("two", np.float32(2))]
    if cond is None:
        inputs.append(tensor("c", [], T.BOOL))
    else:
        inits.append(init("c", np.bool_(cond)))
    return model([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], inputs,
                 [tensor("y", [2, 4])], inits)


@pytest.mark.parametrize("cond, expect", [(True, ["Relu", "Mul"]), (False, ["Neg"])])
def test_fold_if_inlines_the_taken_branch(cond, expect):
    m = _if_model(cond)
    out, changed = apply(m, "fold-if")
    assert changed and ops(out) == expect and out.graph.outputs[0].name == "y"
    check_same_outputs(m, out, {"x": X})
    assert not PassManager("fold-if").run(out)


@pytest.mark.parametrize("kw", [{"cond": None}, {"cond": True, "nested": True}],
                         ids=["run-time", "branch-holds-a-run-time-if"])
def test_fold_if_must_not_fire(kw):
    out, changed = apply(_if_model(**kw), "fold-if")
    assert not changed and ops(out) == ["If"]


def test_cast_like_becomes_cast_and_folds():
    m = model([h.make_node("CastLike", ["k", "x"], ["kf"]), h.make_node("Add", ["x", "kf"], ["y"])],
              [tensor("x", [2, 4], T.DOUBLE)], [tensor("y", [2, 4], T.DOUBLE)], [init("k", np.int64(3))])
    out, changed = apply(m, "cleanup")
    assert changed and ops(out) == ["Add"]
    assert out.graph.nodes[0].inputs[1].const.numpy().dtype == np.float64
    check_same_outputs(m, out, {"x": X.astype(np.float64)})
