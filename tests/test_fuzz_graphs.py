"""Property-based fuzzing: random small valid ONNX graphs built from supported
operators, compiled by Ember (default -O2) and compared with onnxruntime.

CI runs a bounded number of examples; a longer run by hand:
    python -m pytest tests/test_fuzz_graphs.py --hypothesis-profile=long
"""

import numpy as np
import onnx
from helpers import ort_run
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h

import ember

UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Softsign", "Erf", "Floor", "Ceil", "Identity"]
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def graphs(draw):
    rank = draw(st.integers(2, 4))
    shape = draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank))
    in_shape = list(shape)
    nodes, inits, cur, n = [], [], "x", 0
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def fresh():
        nonlocal n
        n += 1
        return f"v{n}"

    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "self", "transpose", "reduce", "softmax", "matmul",
                                     "concat", "gelu", "reshape"]))
        out = fresh()
        if kind == "unary":
            nodes.append(h.make_node(draw(st.sampled_from(UNARY)), [cur], [out]))
        elif kind in ("binary", "self"):
            op = draw(st.sampled_from(BINARY))
            if kind == "self":
                other = cur
            else:  # a constant broadcasting along a random subset of axes
                cshape = [d if draw(st.booleans()) else 1 for d in shape][draw(st.integers(0, len(shape))):]
                other = fresh()
                inits.append(onnx.numpy_helper.from_array(rng.standard_normal(cshape).astype(np.float32), other))
            nodes.append(h.make_node(op, [cur, other] if draw(st.booleans()) else [other, cur], [out]))
        elif kind == "transpose":
            perm = draw(st.permutations(range(len(shape))))
            nodes.append(h.make_node("Transpose", [cur], [out], perm=list(perm)))
            shape = [shape[p] for p in perm]
        elif kind == "reduce":
            axis = draw(st.integers(-len(shape), len(shape) - 1))
            op = draw(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax"]))
            if op == "ReduceSum":  # axes is an input from opset 13 on
                ax = fresh()
                inits.append(onnx.numpy_helper.from_array(np.array([axis], np.int64), ax))
                nodes.append(h.make_node(op, [cur, ax], [out], keepdims=1))
            else:
                nodes.append(h.make_node(op, [cur], [out], axes=[axis], keepdims=1))
            shape[axis] = 1
        elif kind == "softmax":
            nodes.append(h.make_node("Softmax", [cur], [out], axis=draw(st.integers(-len(shape), len(shape) - 1))))
        elif kind == "matmul":
            k, m = shape[-1], draw(st.integers(1, 5))
            w = fresh()
            inits.append(onnx.numpy_helper.from_array(rng.standard_normal((k, m)).astype(np.float32), w))
            nodes.append(h.make_node("MatMul", [cur, w], [out]))
            shape[-1] = m
        elif kind == "concat":
            axis = draw(st.integers(0, len(shape) - 1))
            nodes.append(h.make_node("Concat", [cur, cur], [out], axis=axis))
            shape[axis] *= 2
        elif kind == "gelu":  # the erf form -O2 recognises
            a, b, c, d = fresh(), fresh(), fresh(), fresh()
            inits += [onnx.numpy_helper.from_array(np.float32(v), k) for v, k in ((1.4142135, a), (1.0, b), (0.5, c))]
            e1, e2, e3 = fresh(), fresh(), fresh()
            nodes += [h.make_node("Div", [cur, a], [e1]), h.make_node("Erf", [e1], [e2]),
                      h.make_node("Add", [e2, b], [e3]), h.make_node("Mul", [cur, e3], [d]),
                      h.make_node("Mul", [d, c], [out])]
        elif kind == "reshape":
            total = int(np.prod(shape))
            new = [total] if draw(st.booleans()) else [1, total]
            s = fresh()
            inits.append(onnx.numpy_helper.from_array(np.array(new, np.int64), s))
            nodes.append(h.make_node("Reshape", [cur, s], [out]))
            shape = new
        cur = out
    graph = h.make_graph(nodes, "fuzz", [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                         [h.make_tensor_value_info(cur, T.FLOAT, None)], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), in_shape


@given(graphs(), st.integers(0, 2**16))
def test_random_graphs_match_onnxruntime(case, seed):
    model, in_shape = case
    x = np.random.default_rng(seed).standard_normal(in_shape).astype(np.float32)
    expected = ort_run(model, {"x": x})[0]
    got = ember.compile(model).run({"x": x})
    (out,) = got.values()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
