"""The declarative rewrite engine: matching, refusal reasons, replacement."""

import numpy as np
import pytest
from helpers import init, model, ort_run, tensor
from onnx import helper as h

from ember.compiler.ir import onnx_io
from ember.compiler.ir import Graph
from ember.passes.rewrite import Const, Match, NoMatch, Op, Rule, RuleSet, Var, explain, match

X = Var("x")


class ReluRelu(Rule):
    """Relu(Relu(x)) -> Relu(x)."""

    name = "relu-relu"
    pattern = Op("Relu", Op("Relu", X))

    def rewrite(self, m: Match, graph: Graph):
        return [graph.make_node("Relu", [m["x"]], before=m.root).outputs[0]]


class AddZero(Rule):
    name = "add-zero"
    pattern = Op("Add", X, Const("c"), commutative=True)

    def check(self, m):
        return None if np.all(m.const("c") == 0) else "the constant is not zero"

    def rewrite(self, m, graph):
        return [m["x"]]


def g(nodes, inits=(), outs=("y",)):
    return onnx_io.import_model(model(nodes, [tensor("x", [3])], [tensor(o, [3]) for o in outs], list(inits)))


def test_match_binds_and_commutes():
    m = g([h.make_node("Add", ["c", "x"], ["y"])], [init("c", np.zeros(3, np.float32))])
    mt = match(AddZero.pattern, m.graph.nodes[0])
    assert mt["x"].name == "x" and mt.const("c").shape == (3,)


def test_explain_reasons():
    m = g([h.make_node("Add", ["x", "c"], ["y"])], [init("c", np.ones(3, np.float32))])
    assert "refuses: the constant is not zero" in explain(AddZero(), m.graph.nodes[0])
    m2 = g([h.make_node("Sigmoid", ["x"], ["a"]), h.make_node("Relu", ["a"], ["y"])])
    assert "expected Relu, found Sigmoid" in explain(ReluRelu(), m2.graph.nodes[1])
    m3 = g([h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["y"]), h.make_node("Neg", ["a"], ["z"])],
           outs=("y", "z"))
    assert "also used by Neg" in explain(ReluRelu(), m3.graph.nodes[1])


def test_same_variable_must_bind_same_value():
    m = onnx_io.import_model(model([h.make_node("Sigmoid", ["a"], ["s"]), h.make_node("Mul", ["x", "s"], ["y"])],
                                   [tensor("x", [3]), tensor("a", [3])], [tensor("y", [3])]))
    with pytest.raises(NoMatch, match="variable 'x' bound to %x and %a"):
        match(Op("Mul", X, Op("Sigmoid", X), commutative=True), m.graph.nodes[1])


def test_ruleset_to_fixed_point_keeps_output_names():
    class Simplify(RuleSet):
        name = "simplify-test"
        rules = (ReluRelu(), AddZero())

    src = model([h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
                 h.make_node("Relu", ["b"], ["c"]), h.make_node("Add", ["c", "zero"], ["y"])],
                [tensor("x", [3])], [tensor("y", [3])], [init("zero", np.zeros(3, np.float32))])
    m = onnx_io.import_model(src)
    assert Simplify().run(m.graph)
    m.verify()
    assert [n.op_type for n in m.graph.nodes] == ["Relu"] and m.graph.outputs[0].name == "y"
    x = np.array([-1, 0, 2], np.float32)
    np.testing.assert_array_equal(ort_run(onnx_io.export_model(m), {"x": x})[0], ort_run(src, {"x": x})[0])
    assert not Simplify().run(m.graph)


def test_substitute_input_for_output_inserts_identity():
    m = g([h.make_node("Add", ["x", "c"], ["y"])], [init("c", np.zeros(3, np.float32))])

    class S(RuleSet):
        name = "s-test"
        rules = (AddZero(),)

    assert S().run(m.graph)
    m.verify()
    assert [n.op_type for n in m.graph.nodes] == ["Identity"] and m.graph.outputs[0].name == "y"
