"""Graph inputs whose values TVM needs at compile time (a Reduce's axes, a
Range's limit, ...): named with one clear error, bound with bind=/--bind, and
specialised per value by the ONNX backend at the first run; never a wrong shape."""

import warnings

import numpy as np
import onnx
import pytest
from ember.compiler.ir import onnx_io
from ember.compiler.input import specialize
from ember.errors import CompileError, RuntimeInputError
from helpers import ember_cli, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember
import ember.backend as eb


def reduce_model() -> onnx.ModelProto:
    return model([h.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
                 [tensor("x", [2, 3, 4]), tensor("axes", [1], T.INT64)], [tensor("y", None)])


X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


def test_needed_inputs_named_in_one_error():
    assert specialize.needed_inputs(onnx_io.import_model(reduce_model())) == {"axes": "ReduceSum's axes"}
    with pytest.raises(specialize.NeedsInputValues, match=r"input 'axes' \(ReduceSum's axes\) must be known at "
                                                           r"compile time.*--bind axes="):
        ember.compile(reduce_model())


def test_bind_compiles_for_the_value():
    cm = ember.compile(reduce_model(), bind={"axes": [2]})
    assert cm.input_names == ["x"] and cm.metadata["bound_inputs"] == {"axes": [2]}
    np.testing.assert_allclose(cm.run({"x": X})["y"], ort_run(reduce_model(), {"x": X, "axes": np.array([2])})[0],
                               rtol=1e-6)


def test_backend_specialises_per_value_and_says_so():
    rep, seen = eb.prepare(reduce_model()), set()
    for axes, shape in (([1], (2, 4)), ([2], (2, 3)), ([1], (2, 4)), ([0], (3, 4))):
        feeds = {"x": X, "axes": np.array(axes)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = rep.run(feeds)[0]
        assert out.shape == shape
        np.testing.assert_allclose(out, ort_run(reduce_model(), feeds)[0], rtol=1e-6)
        assert bool(caught) == (tuple(axes) not in seen)  # said once per value set, when it compiles
        seen.add(tuple(axes))
    assert len(rep.compiled.variants) == 3


def test_values_reached_through_arithmetic_but_not_through_shapes():
    # Range(0, n + 1, 1): n's value decides the output's length
    rng = model([h.make_node("Add", ["n", "one"], ["limit"]), h.make_node("Range", ["zero", "limit", "one"], ["y"])],
                [tensor("n", [], T.INT64)], [tensor("y", None, T.INT64)],
                [onnx.numpy_helper.from_array(np.array(1, np.int64), "one"),
                 onnx.numpy_helper.from_array(np.array(0, np.int64), "zero")])
    assert set(specialize.needed_inputs(onnx_io.import_model(rng))) == {"n"}
    np.testing.assert_array_equal(eb.prepare(rng).run({"n": np.array(4)})[0], np.arange(5))
    # Reshape to Shape(y): only y's shape matters, known at compile time
    shaped = model([h.make_node("Shape", ["y"], ["s"]), h.make_node("Reshape", ["x", "s"], ["z"])],
                   [tensor("x", [2, 6]), tensor("y", [3, 4])], [tensor("z", [3, 4])])
    assert specialize.needed_inputs(onnx_io.import_model(shaped)) == {}


@pytest.mark.parametrize("values, message", [
    ({"nope": [1]}, "no such input"),
    ({"axes": [1, 2]}, r"has shape \[1\]; cannot bind a value of shape \[2\]"),
    ({"axes": [1.5]}, "is int64; cannot bind"),
])
def test_bad_bindings(values, message):
    with pytest.raises(CompileError, match=message):
        ember.compile(reduce_model(), bind=values)


def test_cli_bind(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(reduce_model(), path)
    bad = ember_cli("compile", path, "-o", tmp_path / "a", "-q")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "must be known at compile time" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = ember_cli("compile", path, "-o", tmp_path / "b", "--bind", "axes=2", "-q")
    assert ok.returncode == 0, ok.stderr
    assert ember.load(tmp_path / "b").run({"x": X})["y"].shape == (2, 3)


def test_shapes_folding_made_static_are_inferred_again():
    """CenterCropPad to a bound size: its body pads by constants, then takes Shape of the padded
    tensor; shape inference must run again for that Shape to fold (TVM cannot do arithmetic on it)."""
    m = model([h.make_node("CenterCropPad", ["x", "shape"], ["y"])],
              [tensor("x", [10, 7, 3]), tensor("shape", [3], T.INT64)], [tensor("y", None)], opset=18)
    x = np.random.default_rng(0).standard_normal((10, 7, 3)).astype(np.float32)
    size = np.array([20, 5, 3])
    got = ember.compile(m, bind={"shape": size}).run({"x": x})["y"]
    np.testing.assert_array_equal(got, ort_run(m, {"x": x, "shape": size})[0])


def symbolic_model() -> onnx.ModelProto:
    """Two inputs sharing the symbolic batch N; the spatial dims H, W are x's alone."""
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("ReduceMean", ["c"], ["m"],
                                                                                     axes=[2, 3], keepdims=0),
             h.make_node("Add", ["m", "b"], ["y"])]
    return model(nodes, [tensor("x", ["N", 3, "H", "W"]), tensor("b", ["N", 4])], [tensor("y", ["N", 4])],
                 [onnx.numpy_helper.from_array(w, "w")], opset=17)


def test_input_shapes_specialize_symbolic_dims_everywhere_they_appear():
    m = symbolic_model()
    cm = ember.compile(m, input_shapes={"x": [2, 3, 6, 5]})
    # N came from x's shape, so b (which shares it) is [2, 4] too: both are static in the artifact
    assert [s["shape"] for s in cm.metadata["inputs"]] == [[2, 3, 6, 5], [2, 4]]
    assert cm.metadata["input_shapes"] == {"x": [2, 3, 6, 5]}
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((2, 3, 6, 5)).astype(np.float32),
             "b": rng.standard_normal((2, 4)).astype(np.float32)}
    np.testing.assert_allclose(cm.run(feeds)["y"], ort_run(m, feeds)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeInputError, match=r"input 'x' must have shape \[2, 3, 6, 5\], got \[2, 3, 6, 6\]"):
        cm.run({**feeds, "x": np.zeros((2, 3, 6, 6), np.float32)})
    # the symbolic artifact runs any size
    dyn = ember.compile(m)
    for n, hw in [(1, 4), (3, 9)]:
        f = {"x": rng.standard_normal((n, 3, hw, hw + 1)).astype(np.float32),
             "b": rng.standard_normal((n, 4)).astype(np.float32)}
        np.testing.assert_allclose(dyn.run(f)["y"], ort_run(m, f)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes, message", [
    ({"z": [1]}, "cannot set the shape of 'z': the model has no such input (inputs: x, b)"),
    ({"x": [1, 3, 4]}, "input 'x' has 4 dims [N, 3, H, W]; the shape given has 3: [1, 3, 4]"),
    ({"x": [1, 4, 4, 4]}, "input 'x' has shape [N, 3, H, W]: its dim 1 is 3, not 4"),
    ({"x": [1, 3, -4, 4]}, "sizes must not be negative"),
    ({"x": [1, 3, 4, 4], "b": [2, 4]}, "dim 'N' is 1 in input 'x' but 2 in 'b'"),
])
def test_input_shapes_that_cannot_apply_are_refused(shapes, message):
    with pytest.raises(CompileError) as e:
        ember.compile(symbolic_model(), input_shapes=shapes)
    assert message in str(e.value)


def test_input_shape_on_the_command_line(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(symbolic_model(), str(path))
    proc = ember_cli("compile", path, "-o", tmp_path / "art", "--input-shape", "x=1,3,8,8")
    assert proc.returncode == 0, proc.stderr
    proc = ember_cli("run", tmp_path / "art", "--random-inputs")
    assert proc.returncode == 0, proc.stderr
    bad = ember_cli("compile", path, "-o", tmp_path / "art2", "--input-shape", "x=1,3,a,8")
    assert bad.returncode == 1 and "expected NAME=D0,D1,..." in bad.stderr
