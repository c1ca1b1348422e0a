"""exp, sigmoid and tanh as vectorizable arithmetic (vector_math), and the legalizations on them."""

import numpy as np
import pytest
import tvm
from ember import targets
from ember.compiler.backend.tvm import vector_math
from helpers import legalized, model, ort_run, tensor
from onnx import helper as h

import ember


def _vectorized(f, x: np.ndarray) -> np.ndarray:
    from tvm import te
    from tvm.s_tir import Schedule

    a = te.placeholder(x.shape, "float32", name="a")
    b = te.compute(x.shape, lambda i: f(a[i]), name="b")
    sch = Schedule(te.create_prim_func([a, b]))
    _, inner = sch.split(sch.get_loops(sch.get_sblock("b"))[0], [None, 16])
    sch.vectorize(inner)
    lib = tvm.compile(sch.mod, target=targets.parse("host").tvm_target())
    out = tvm.runtime.tensor(np.zeros(x.shape, np.float32))
    lib(tvm.runtime.tensor(x), out)
    return out.numpy()


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


def test_exp_is_within_two_ulp():
    x = np.linspace(-87.3, 88.3, 1 << 16).astype(np.float32)
    assert _ulps(_vectorized(vector_math.exp_f32, x), np.exp(x.astype(np.float64))).max() <= 2.0


# measured at most: sigmoid 2.3 ulp, tanh 5.2 ulp (near +-8, 3e-7 relative); libm within 1-2
@pytest.mark.parametrize("name, f, ref, ulps", [
    ("sigmoid", vector_math.sigmoid_f32, lambda x: 1 / (1 + np.exp(-x)), 3.0),
    ("tanh", vector_math.tanh_f32, np.tanh, 6.0),
])
def test_sigmoid_and_tanh_are_within_a_few_ulp(name, f, ref, ulps):
    tiny = np.geomspace(1e-8, 20, 1 << 14)
    x = np.concatenate([np.linspace(-30, 30, 1 << 15), tiny, -tiny]).astype(np.float32)
    assert _ulps(_vectorized(f, x), ref(x.astype(np.float64))).max() <= ulps


def test_nan_and_infinities():
    x = np.array([np.nan, np.inf, -np.inf, 0] * 4, np.float32)
    np.testing.assert_array_equal(_vectorized(vector_math.exp_f32, x)[:4], [np.nan, np.inf, 0, 1])
    np.testing.assert_array_equal(_vectorized(vector_math.sigmoid_f32, x)[:4], [np.nan, 1, 0, 0.5])
    np.testing.assert_array_equal(_vectorized(vector_math.tanh_f32, x)[:4], [np.nan, 1, -1, 0])


def _calls(mod) -> set[str]:
    """The TIR math calls (T.exp, T.tanh, T.sigmoid) in a module's PrimFuncs."""
    import re

    text = "".join(f.script() for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    return set(re.findall(r"T\.(exp|tanh|sigmoid)\(", text))


def test_activations_legalize_to_arithmetic_and_match_onnxruntime():
    """Sigmoid, Tanh, Exp and a SiLU (x * sigmoid x, fused by the frontend) leave no call to
    TVM's exp/tanh/sigmoid (libm, one element at a time) and match onnxruntime."""
    nodes = [h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Mul", ["x", "s"], ["silu"]),
             h.make_node("Tanh", ["silu"], ["t"]), h.make_node("Exp", ["t"], ["y"])]
    m = model(nodes, [tensor("x", [2, 37])], [tensor("y", [2, 37])], [])
    calls = _calls(legalized(m))
    assert not calls, calls
    cm = ember.compile(m)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((2, 37)).astype(np.float32) * 3 for _ in range(2))
    ya, yb = cm.run({"x": a})["y"], cm.run({"x": b})["y"]
    assert not np.allclose(ya, yb)
    np.testing.assert_allclose(ya, ort_run(m, {"x": a})[0], rtol=2e-6)
