import numpy as np
import pytest
from helpers import conv_relu_gemm, if_model

from ember.compiler import ir
from ember.compiler.ir import onnx_io
from ember.errors import IRError


def small_graph():
    g = ir.Graph("g")
    x = g.add_input(ir.Value("x", dtype=1, shape=(2, "n")))
    a = g.make_node("Relu", [x])
    b = g.make_node("Neg", [a.outputs[0]])
    g.outputs.append(b.outputs[0])
    return g, x, a, b


def test_use_def_links_follow_edits():
    g, x, a, b = small_graph()
    assert x.uses == [(a, 0)] and a.outputs[0].uses == [(b, 0)]
    assert b.outputs[0].producer is b
    g.set_input(b, 0, x)
    assert a.outputs[0].uses == [] and (b, 0) in x.uses
    g.verify()


def test_safe_remove_refuses_and_changes_nothing():
    g, x, a, b = small_graph()
    with pytest.raises(IRError, match="still used"):
        g.remove(a)
    with pytest.raises(IRError, match="graph output"):
        g.remove(b)
    assert len(g.nodes) == 2 and x.uses == [(a, 0)]
    g.verify()


def test_replace_all_uses_updates_outputs():
    g, x, a, b = small_graph()
    g.replace_all_uses(b.outputs[0], a.outputs[0])
    assert g.outputs == [a.outputs[0]]
    g.remove(b)
    g.verify()


def test_forward_keeps_graph_output_name():
    g = ir.Graph("g")
    x = g.add_input(ir.Value("x", dtype=1, shape=(2,)))
    r = g.make_node("Relu", [x])
    ident = ir.Node("Identity", [r.outputs[0]], [ir.Value("y", dtype=1, shape=(2,))])
    g.insert(ident)
    g.outputs.append(ident.outputs[0])
    assert g.forward(ident)
    assert [n.op_type for n in g.nodes] == ["Relu"] and g.outputs[0].name == "y"
    assert r.outputs[0].name == "y"
    g.verify()


def test_forward_refuses_input_to_output():
    g = ir.Graph("g")
    x = g.add_input(ir.Value("x", dtype=1, shape=(2,)))
    ident = ir.Node("Identity", [x], [ir.Value("y", dtype=1, shape=(2,))])
    g.insert(ident)
    g.outputs.append(ident.outputs[0])
    assert not g.forward(ident)
    assert len(g.nodes) == 1
    g.verify()


@pytest.mark.parametrize("breakage, message", [
    ("dup", "defined twice"),
    ("order", "not defined before use"),
    ("stale", "stale use"),
    ("dtype", "unknown dtype"),
])
def test_verify_catches_broken_invariants(breakage, message):
    g, x, a, b = small_graph()
    if breakage == "dup":
        b.outputs[0].name = a.outputs[0].name
    elif breakage == "order":
        g.nodes.reverse()
    elif breakage == "stale":
        x.uses.append((b, 0))
    elif breakage == "dtype":
        a.outputs[0].dtype = 999
    with pytest.raises(IRError, match=message):
        g.verify()


def test_subgraph_uses_are_recorded_on_outer_values():
    m = onnx_io.import_model(if_model())
    m.verify()
    k = m.graph.initializers["k"]
    x = next(v for v in m.graph.inputs if v.name == "x")
    (if_node,) = m.graph.nodes
    then_g = if_node.attrs["then_branch"]
    assert then_g.parent is m.graph
    assert any(n.graph is then_g for n, _ in k.uses)
    assert {n.graph.name for n, _ in x.uses} == {"then", "else"}


def test_networkx_view_and_sort():
    m = onnx_io.import_model(conv_relu_gemm())
    import networkx as nx

    view = m.graph.to_networkx()
    assert nx.is_directed_acyclic_graph(view)
    order = [n.op_type for n in nx.topological_sort(view) if isinstance(n, ir.Node)]
    assert order == ["Conv", "Relu", "Flatten", "Gemm"]
    m.graph.nodes.reverse()
    m.graph.sort()
    m.verify()


def test_fresh_names_are_unique_across_subgraphs():
    m = onnx_io.import_model(if_model())
    names = {m.graph.fresh_name("t") for _ in range(50)}
    assert len(names) == 50
    assert not names & {v.name for g in m.graph.all_graphs() for v in g.values()}


def test_make_const_and_printer():
    g, x, a, b = small_graph()
    c = g.make_const(np.ones((2, 2), np.float32), "ones")
    assert c.shape == (2, 2) and c.dtype == 1
    text = str(g)
    assert "Relu(%x)" in text and "float[2,n]" in text
