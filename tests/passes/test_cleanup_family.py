"""fold-constants, fold-shapes, cse, drop-noops: fire, must not fire, numerics, idempotence."""

import numpy as np
import pytest
from helpers import assert_no_fire, assert_pass, init, model, run_pass, tensor
from onnx import TensorProto as T
from onnx import helper as h

X = {"x": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)}


def test_fold_constants_fires_on_constant_subgraph():
    m = model([h.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0, 4.0]),
               h.make_node("Mul", ["c", "two"], ["c2"]), h.make_node("Sqrt", ["c2"], ["s"]),
               h.make_node("Add", ["x", "s"], ["y"])],
              [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])], [init("two", np.float32(2))])
    out = assert_pass(m, "fold-constants,dce", X, ["Add"])
    folded = out.graph.nodes[0].inputs[1]
    np.testing.assert_allclose(folded.const.numpy(), np.sqrt([2.0, 4.0, 6.0, 8.0]), rtol=1e-6)


def test_fold_constants_size_cap_and_randomness():
    big = model([h.make_node("ConstantOfShape", ["shape"], ["z"]), h.make_node("Add", ["x", "z"], ["y"])],
                [tensor("x", [1])], [tensor("y", None)], [init("shape", np.array([1 << 40], np.int64))])
    assert_no_fire(big, "fold-constants")  # never materialises 2**40 elements
    rnd = model([h.make_node("RandomUniform", [], ["r"], shape=[3]), h.make_node("Add", ["x", "r"], ["y"])],
                [tensor("x", [3])], [tensor("y", [3])])
    assert_no_fire(rnd, "fold-constants")


@pytest.mark.parametrize("op, start", [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceLogSumExp", -np.inf),
                                       ("ReduceMax", -np.inf)])
def test_fold_constants_knows_empty_tensors(op, start):
    """A tensor with no elements has known contents: a reduction over it folds to its start
    value (TVM left such outputs unwritten)."""
    m = model([h.make_node(op, ["x", "axes"], ["r"], keepdims=1), h.make_node("Add", ["r", "b"], ["y"])],
              [tensor("x", [2, 0, 4]), tensor("b", [2, 1, 4])], [tensor("y", [2, 1, 4])],
              [init("axes", np.array([1], np.int64))], opset=18)
    feeds = {"x": np.zeros((2, 0, 4), np.float32), "b": np.ones((2, 1, 4), np.float32)}
    out = assert_pass(m, "fold-constants,dce", feeds, ["Add"])
    np.testing.assert_array_equal(out.graph.nodes[0].inputs[0].const.numpy(), np.full((2, 1, 4), start, np.float32))


def test_fold_constants_keeps_output_names():
    m = model([h.make_node("Add", ["a", "b"], ["y"]), h.make_node("Relu", ["x"], ["z"])],
              [tensor("x", [2])], [tensor("y", [2]), tensor("z", [2])],
              [init("a", np.ones(2, np.float32)), init("b", np.ones(2, np.float32))])
    out = assert_pass(m, "fold-constants", {"x": np.ones(2, np.float32)})
    assert [o.name for o in out.graph.outputs] == ["y", "z"]


def test_fold_shapes_chain():
    m = model([h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "i0"], ["d0"], axis=0),
               h.make_node("Unsqueeze", ["d0", "ax"], ["d0u"]),
               h.make_node("Concat", ["d0u", "minus1"], ["shape"], axis=0),
               h.make_node("Reshape", ["x", "shape"], ["y"])],
              [tensor("x", [2, 3, 4])], [tensor("y", [2, 12])],
              [init("i0", np.array(0, np.int64)), init("ax", np.array([0], np.int64)),
               init("minus1", np.array([-1], np.int64))], opset=13)
    out = assert_pass(m, "cleanup", X, ["Reshape"])
    np.testing.assert_array_equal(out.graph.nodes[0].inputs[1].const.numpy(), [2, -1])


def test_fold_shapes_must_not_fire_on_dynamic_shape():
    m = model([h.make_node("Shape", ["x"], ["s"]), h.make_node("Reshape", ["x", "s"], ["y"])],
              [tensor("x", ["n", 4])], [tensor("y", None)])
    assert_no_fire(m, "fold-shapes")


def test_cse_merges_nodes_and_constants():
    m = model([h.make_node("Add", ["x", "c1"], ["a"]), h.make_node("Add", ["x", "c2"], ["b"]),
               h.make_node("Relu", ["a"], ["ra"]), h.make_node("Relu", ["b"], ["rb"]),
               h.make_node("Mul", ["ra", "rb"], ["y"])],
              [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])],
              [init("c1", np.float32(0.5)), init("c2", np.float32(0.5))])
    out = assert_pass(m, "cse,dce", X, ["Add", "Relu", "Mul"])
    assert len(out.graph.initializers) == 1


def test_cse_must_not_merge_different_attributes_or_random():
    m = model([h.make_node("Softmax", ["x"], ["a"], axis=1), h.make_node("Softmax", ["x"], ["b"], axis=2),
               h.make_node("Add", ["a", "b"], ["y"])], [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])])
    assert_no_fire(m, "cse")
    r = model([h.make_node("RandomNormalLike", ["x"], ["a"]), h.make_node("RandomNormalLike", ["x"], ["b"]),
               h.make_node("Add", ["a", "b"], ["y"])], [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])])
    assert_no_fire(r, "cse")


@pytest.mark.parametrize("node, inits", [
    (h.make_node("Reshape", ["x", "s"], ["y"]), [init("s", np.array([2, 3, 4], np.int64))]),
    (h.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 2]), []),
    (h.make_node("Cast", ["x"], ["y"], to=T.FLOAT), []),
    (h.make_node("Pad", ["x", "p"], ["y"]), [init("p", np.zeros(6, np.int64))]),
    (h.make_node("Add", ["z", "x"], ["y"]), [init("z", np.zeros((1, 1, 4), np.float32))]),
    (h.make_node("Mul", ["x", "one"], ["y"]), [init("one", np.float32(1))]),
    (h.make_node("Concat", ["x"], ["y"], axis=0), []),
])
def test_drop_noops_fires(node, inits):
    m = model([h.make_node("Relu", ["x0"], ["x"]), node], [tensor("x0", [2, 3, 4])], [tensor("y", [2, 3, 4])], inits)
    out = assert_pass(m, "drop-noops", {"x0": X["x"]}, ["Relu"])
    assert out.graph.outputs[0].name == "y"


@pytest.mark.parametrize("node, inits", [
    (h.make_node("Reshape", ["x", "s"], ["y"]), [init("s", np.array([6, 4], np.int64))]),
    (h.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1]), []),
    (h.make_node("Cast", ["x"], ["y"], to=T.DOUBLE), []),
    (h.make_node("Add", ["x", "z"], ["y"]), [init("z", np.zeros((2, 2, 3, 4), np.float32))]),  # broadcasts
    (h.make_node("Sub", ["z", "x"], ["y"]), [init("z", np.float32(0))]),  # 0 - x is not x
    # a reversed Slice (torch.flip, TF-style padding's reversed pads) keeps the shape, not the order
    (h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"]),
     [init("s", np.array([-1], np.int64)), init("e", np.array([-(2**63) + 1], np.int64)),
      init("a", np.array([2], np.int64)), init("st", np.array([-1], np.int64))]),
])
def test_drop_noops_must_not_fire(node, inits):
    m = model([h.make_node("Relu", ["x0"], ["x"]), node], [tensor("x0", [2, 3, 4])], [tensor("y", None)], inits)
    assert_no_fire(m, "drop-noops")


def test_prune_inputs():
    m = model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [2]), tensor("unused", [3]), tensor("w", [1])],
              [tensor("y", [2])], [init("w", np.ones(1, np.float32))])
    out, changed = run_pass(m, "prune-inputs")
    assert changed and [v.name for v in out.graph.inputs] == ["x"] and not out.graph.initializers
    assert not run_pass(m, "dce")[1]  # dce keeps the signature
    assert_no_fire(model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [2])], [tensor("y", [2])]), "prune-inputs")
