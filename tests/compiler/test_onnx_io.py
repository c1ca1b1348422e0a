import os

import numpy as np
import onnx
import pytest
from helpers import conv_relu_gemm, if_model, init, model, ort_run, tensor
from onnx import helper as h

from ember.compiler.ir import onnx_io
from ember.errors import ModelLoadError


def roundtrip(m: onnx.ModelProto) -> onnx.ModelProto:
    return onnx_io.export_model(onnx_io.import_model(m))


def test_roundtrip_keeps_everything_that_matters():
    m = conv_relu_gemm()
    m.doc_string = "model doc"
    m.graph.node[0].doc_string = "conv doc"
    h.set_model_props(m, {"author": "ember"})
    m.producer_name = "tests"
    out = roundtrip(m)
    assert out.doc_string == "model doc" and out.graph.node[0].doc_string == "conv doc"
    assert {p.key: p.value for p in out.metadata_props} == {"author": "ember"}
    assert out.producer_name == "tests"
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in m.graph.node]
    assert {t.name: t.raw_data for t in out.graph.initializer} == {t.name: t.raw_data for t in m.graph.initializer}
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(m, {"x": x})[0], ort_run(out, {"x": x})[0])


def test_roundtrip_subgraphs_and_value_info():
    m = if_model()
    out = roundtrip(m)
    onnx.checker.check_model(out)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_array_equal(ort_run(m, feeds)[0], ort_run(out, feeds)[0])


def test_roundtrip_local_functions_and_symbolic_dims():
    f = h.make_function("custom", "Double", ["a"], ["b"], [h.make_node("Add", ["a", "a"], ["b"])],
                        [h.make_opsetid("", 17)])
    m = h.make_model(h.make_graph([h.make_node("Double", ["x"], ["y"], domain="custom")], "g",
                                  [tensor("x", ["batch", 4])], [tensor("y", ["batch", 4])]),
                     opset_imports=[h.make_opsetid("", 17), h.make_opsetid("custom", 1)], functions=[f])
    out = roundtrip(m)
    assert out.functions[0].name == "Double"
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(ort_run(out, {"x": x})[0], 2 * x)


def test_shape_inference_fills_missing_types():
    m = conv_relu_gemm()
    del m.graph.value_info[:]
    g = onnx_io.import_model(m).graph
    relu = next(n for n in g.nodes if n.op_type == "Relu")
    assert relu.outputs[0].shape == (1, 4, 8, 8)


def test_omitted_optional_inputs_and_outputs():
    m = model([h.make_node("Clip", ["x", "", "hi"], ["y"]),
               h.make_node("Dropout", ["y"], ["z", ""])],
              [tensor("x", [4])], [tensor("z", [4])], [init("hi", np.float32(1.0))])
    ir_model = onnx_io.import_model(m)
    clip, drop = ir_model.graph.nodes
    assert clip.inputs[1] is None and len(drop.outputs) == 1
    out = onnx_io.export_model(ir_model)
    assert list(out.graph.node[0].input) == ["x", "", "hi"]


def test_out_of_order_nodes_are_sorted():
    m = model([h.make_node("Neg", ["a"], ["y"]), h.make_node("Relu", ["x"], ["a"])],
              [tensor("x", [2])], [tensor("y", [2])])
    g = onnx_io.import_model(m).graph
    assert [n.op_type for n in g.nodes] == ["Relu", "Neg"]


@pytest.mark.parametrize("nodes, message", [
    ([h.make_node("Relu", ["nope"], ["y"])], "undefined value 'nope'"),
    ([h.make_node("Relu", ["x"], ["y"]), h.make_node("Neg", ["x"], ["y"])], "defined twice"),
])
def test_malformed_graphs(nodes, message):
    with pytest.raises(ModelLoadError, match=message):
        onnx_io.import_model(model(nodes, [tensor("x", [2])], [tensor("y", [2])]))


def test_not_onnx_and_truncated(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(ModelLoadError, match="not"):
        onnx_io.load(bad)
    good = conv_relu_gemm().SerializeToString()
    (tmp_path / "t.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError):
        onnx_io.load(tmp_path / "t.onnx")
    with pytest.raises(ModelLoadError, match="no such file"):
        onnx_io.load(tmp_path / "missing.onnx")


def _external_model(tmp_path, location: str):
    m = conv_relu_gemm()
    onnx.save_model(m, str(tmp_path / "m.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    saved = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in saved.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path = tmp_path / "evil.onnx"
    onnx.save(saved, str(path))
    return path


def test_external_data_inside_model_dir_loads(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    g = onnx_io.load(path).graph
    assert g.initializers["w"].const.numpy().shape == (4, 3, 3, 3)


@pytest.mark.parametrize("location", ["/etc/passwd", "../weights.bin", "sub/../../weights.bin", "link.bin"])
def test_external_data_outside_model_dir_is_refused(tmp_path, location):
    inner = tmp_path / "inner"
    inner.mkdir()
    path = _external_model(inner, location)
    (tmp_path / "weights.bin").write_bytes((inner / "weights.bin").read_bytes())
    os.symlink(tmp_path / "weights.bin", inner / "link.bin")
    with pytest.raises(ModelLoadError, match="external data"):
        onnx_io.load(path)


def test_external_data_offset_past_end_is_refused(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    saved = onnx.load(str(path), load_external_data=False)
    for e in saved.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = str(10**9)
    onnx.save(saved, str(path))
    with pytest.raises(ModelLoadError, match="offset"):
        onnx_io.load(path)


def test_save_is_loadable(tmp_path):
    m = onnx_io.import_model(conv_relu_gemm())
    onnx_io.save(m, tmp_path / "out.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")))


def test_a_graph_outputs_declared_dims_are_checked_not_trusted():
    """Exporters write the output dims they saw at export, also where the dim follows a
    symbolic input: the inferred dim wins (and the model runs at other sizes, as in
    onnxruntime); a fixed declared dim that inference contradicts is warned about (and
    kept: onnx's inference is wrong for some operators)."""
    import ember

    shifted = model([h.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [tensor("x", ["w", 1])],
                    [tensor("y", [1, 19])])
    out = onnx_io.import_model(shifted).graph.outputs[0]
    assert out.shape == (1, "w")
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    np.testing.assert_array_equal(ember.compile(shifted).run({"x": x})["y"], x.T)
    fixed = model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [1, 4])], [tensor("y", [1, 3])])
    with pytest.warns(UserWarning, match="output 'y' is declared with dim 1 = 3 but computes 4"):
        assert onnx_io.import_model(fixed).graph.outputs[0].shape == (1, 3)
    # where inference knows no dim, a symbolic model keeps the declared names, not its fixed dims
    unknown = model([h.make_node("Reshape", ["x", "s"], ["y"])], [tensor("x", ["n", 4]), tensor("s", [2], 7)],
                    [tensor("y", [2, "m"])])
    first, second = onnx_io.import_model(unknown).graph.outputs[0].shape
    assert first != 2 and second == "m"
