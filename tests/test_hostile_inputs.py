"""Hostile and broken inputs, each with its expected behaviour: a clear
EmberError naming the problem, or a correct result. None may crash the
interpreter, hang, or return silently wrong numbers."""

import json
import shutil

import numpy as np
import onnx
import pytest
from helpers import conv_relu_gemm, init, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember
from ember.errors import ArtifactError, EmberError, ModelLoadError, RuntimeInputError, UnsupportedError
from ember.compiler.input.validate import InvalidModelError

GOOD = conv_relu_gemm().SerializeToString()


def compile_bytes(data: bytes, tmp_path, **kw):
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    return ember.compile(path, **kw)


def compile_model(m, **kw):
    return ember.compile(m, **kw)


def _with_ir_version(m: onnx.ModelProto, version: int) -> onnx.ModelProto:
    m.ir_version = version
    return m


def _with_opset(m, version):
    m.opset_import[0].version = version
    return m


def _nested_ifs(depth):
    def leaf(name):
        return h.make_graph([h.make_node("Identity", ["x"], [name])], name, [], [tensor(name, [1])])

    body = leaf("o0")
    for d in range(1, depth):
        body = h.make_graph([h.make_node("If", ["c"], [f"o{d}"], then_branch=body, else_branch=leaf(f"e{d}"))],
                            f"b{d}", [], [tensor(f"o{d}", [1])])
    return model([h.make_node("If", ["c"], ["y"], then_branch=body, else_branch=leaf("e"))],
                 [tensor("c", [], T.BOOL), tensor("x", [1])], [tensor("y", [1])])


def _bad_raw():
    t = init("w", np.ones(4, np.float32))
    t.raw_data = t.raw_data[:7]
    return model([h.make_node("Add", ["x", "w"], ["y"])], [tensor("x", [4])], [tensor("y", [4])], [t])


def _claims_huge():
    t = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 16)
    return model([h.make_node("Add", ["x", "w"], ["y"])], [tensor("x", [1])], [tensor("y", None)], [t])


def _neg_init():
    t = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[-4], raw_data=b"")
    return model([h.make_node("Add", ["x", "w"], ["y"])], [tensor("x", [4])], [tensor("y", [4])], [t])


def _bad_dtype_init():
    t = onnx.TensorProto(name="w", data_type=999, dims=[1], raw_data=b"\0" * 4)
    return model([h.make_node("Add", ["x", "w"], ["y"])], [tensor("x", [1])], [tensor("y", [1])], [t])


def _cycle():
    return model([h.make_node("Relu", ["b"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
                  h.make_node("Add", ["x", "a"], ["y"])], [tensor("x", [2])], [tensor("y", [2])])


def _domain_model(domain, declare=True):
    ops = [h.make_opsetid("", 17)] + ([h.make_opsetid(domain, 1)] if declare else [])
    return h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["y"], domain=domain)], "g",
                                     [tensor("x", [2])], [tensor("y", [2])]), opset_imports=ops)


X2 = [tensor("x", [2])]
Y2 = [tensor("y", [2])]

# (id, model builder, expected error class, message fragment)
COMPILE_ERRORS = [
    ("undefined-input", lambda: model([h.make_node("Relu", ["ghost"], ["y"])], X2, Y2), ModelLoadError, "undefined value 'ghost'"),
    ("two-writers", lambda: model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Neg", ["x"], ["y"])], X2, Y2),
     ModelLoadError, "defined twice"),
    ("output-not-produced", lambda: model([h.make_node("Relu", ["x"], ["a"])], X2, Y2), ModelLoadError, "not produced"),
    ("cycle", _cycle, EmberError, "cycle"),
    ("input-twice", lambda: model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [2]), tensor("x", [2])], Y2),
     ModelLoadError, "defined twice"),
    ("raw-data-size", _bad_raw, InvalidModelError, "7 bytes of data"),
    ("negative-init-dim", _neg_init, InvalidModelError, "negative dimension"),
    ("bad-init-dtype", _bad_dtype_init, InvalidModelError, "data type"),
    ("unknown-op", lambda: model([h.make_node("Frobnicate", ["x"], ["y"])], X2, Y2), UnsupportedError, "Frobnicate"),
    ("foreign-domain", lambda: _domain_model("com.evil"), UnsupportedError, "com.evil"),
    ("undeclared-domain", lambda: _domain_model("com.evil", declare=False), InvalidModelError, "not declared"),
    ("opset-999", lambda: _with_opset(model([h.make_node("Relu", ["x"], ["y"])], X2, Y2), 999),
     InvalidModelError, "opset 999"),
    ("ir-version-1000", lambda: _with_ir_version(model([h.make_node("Relu", ["x"], ["y"])], X2, Y2), 1000),
     InvalidModelError, "IR version 1000 is newer"),
    ("op-not-in-opset", lambda: model([h.make_node("LayerNormalization", ["x", "s"], ["y"])], X2, Y2,
                                      [init("s", np.ones(2, np.float32))], opset=13), InvalidModelError,
     "does not exist in opset 13"),
    ("attr-wrong-type", lambda: model([h.make_node("Gather", ["x", "i"], ["y"], axis=0.5)], X2, Y2,
                                      [init("i", np.array([0], np.int64))]), InvalidModelError, "must be INT"),
    ("attr-unknown", lambda: model([h.make_node("Relu", ["x"], ["y"], colour=3)], X2, Y2), InvalidModelError,
     "no attribute 'colour'"),
    ("attr-missing", lambda: model([h.make_node("Cast", ["x"], ["y"])], X2, Y2), InvalidModelError,
     "required attribute 'to'"),
    ("too-many-inputs", lambda: model([h.make_node("Relu", ["x", "x"], ["y"])], X2, Y2), InvalidModelError,
     "2 inputs"),
    ("constantofshape-bomb", lambda: model([h.make_node("ConstantOfShape", ["s"], ["z"]), h.make_node("Add", ["x", "z"], ["y"])],
                                           [tensor("x", [1])], [tensor("y", None)], [init("s", np.array([1 << 40], np.int64))]),
     InvalidModelError, "memory budget"),
    ("expand-bomb", lambda: model([h.make_node("Expand", ["x", "s"], ["y"])], [tensor("x", [1])], [tensor("y", None)],
                                  [init("s", np.array([1 << 20, 1 << 20], np.int64))]), InvalidModelError, "memory budget"),
    ("range-bomb", lambda: model([h.make_node("Range", ["a", "b", "c"], ["y"])], [], [tensor("y", None)],
                                 [init("a", np.float32(0)), init("b", np.float32(1e15)), init("c", np.float32(1))]),
     InvalidModelError, "memory budget"),
    ("huge-declared-input", lambda: model([h.make_node("Relu", ["x"], ["y"])], [tensor("x", [1 << 20, 1 << 20])],
                                          [tensor("y", None)]), InvalidModelError, "memory budget"),
    ("claims-huge-initializer", _claims_huge, InvalidModelError, "memory budget"),
    ("deep-subgraphs", lambda: _nested_ifs(20), InvalidModelError, "nested deeper"),
    ("constant-index-oob", lambda: model([h.make_node("Gather", ["x", "i"], ["y"], axis=0)], X2, [tensor("y", [1])],
                                         [init("i", np.array([5], np.int64))]), InvalidModelError, "index 5 out of range"),
    ("sequence-input", lambda: model([h.make_node("SequenceLength", ["s"], ["y"])],
                                     [h.make_tensor_sequence_value_info("s", T.FLOAT, None)], [tensor("y", [], T.INT64)]),
     UnsupportedError, "seq(tensor(float))"),
    ("int4-add", lambda: model([h.make_node("Add", ["x", "x"], ["y"])], [tensor("x", [2], T.INT4)],
                               [tensor("y", [2], T.INT4)]), UnsupportedError, "INT4"),
]


@pytest.mark.parametrize("name, build, error, fragment", COMPILE_ERRORS, ids=[c[0] for c in COMPILE_ERRORS])
def test_compile_refuses(name, build, error, fragment):
    with pytest.raises(error, match=None) as info:
        compile_model(build())
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("data, fragment", [
    (b"", "not an ONNX model"),
    (bytes(range(256)) * 8, "not"),
    (GOOD[: len(GOOD) // 3], "not"),
    (b"ir_version: 7\ngraph { name: 'g' }\n", "not"),
    (onnx.numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString(), "ONNX model"),
    (b"\x08\x07" + b"\x3a\x05\xff\xff\xff\xff\xff", "protobuf decode failed"),
    (model([h.make_node("Relu", ["x"], ["y"], name="QQQQ")], [tensor("x", [2])], [tensor("y", [2])])
     .SerializeToString().replace(b"QQQQ", b"\xff\xfe\xb6\xfc"), "invalid UTF-8"),
], ids=["empty", "random-bytes", "truncated", "text", "tensor-not-model", "garbage-graph-field", "invalid-utf8-name"])
def test_malformed_files(tmp_path, data, fragment):
    with pytest.raises(ModelLoadError) as info:
        compile_bytes(data, tmp_path)
    assert fragment in str(info.value)


def test_memory_budget_is_configurable():
    with pytest.raises(InvalidModelError, match="memory budget"):
        compile_model(conv_relu_gemm(), memory_budget=4096)


def test_external_data_traversal_through_compile(tmp_path):
    m = conv_relu_gemm()
    onnx.save_model(m, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    saved = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in saved.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save(saved, str(tmp_path / "evil.onnx"))
    with pytest.raises(ModelLoadError, match="inside the model's directory"):
        ember.compile(tmp_path / "evil.onnx")


# ---------------------------------------------------------------- run time
@pytest.fixture(scope="module")
def gather_models():
    def two_inputs(op, data_shape, idx_shape, idx_type=T.INT64, **attrs):
        return ember.compile(model([h.make_node(op, ["d", "i"], ["y"], **attrs)],
                                   [tensor("d", data_shape), tensor("i", idx_shape, idx_type)], [tensor("y", None)]))

    return {
        "Gather": two_inputs("Gather", [5, 3], [2], axis=0),
        "GatherElements": two_inputs("GatherElements", [2, 3], [2, 2], axis=1),
        "GatherND": two_inputs("GatherND", [4, 3], [2, 2]),
    }


D53 = np.arange(15, dtype=np.float32).reshape(5, 3)


@pytest.mark.parametrize("op, feeds", [
    ("Gather", {"d": D53, "i": np.array([1, 5])}),
    ("Gather", {"d": D53, "i": np.array([-6, 0])}),
    ("GatherElements", {"d": np.ones((2, 3), np.float32), "i": np.array([[0, 3], [1, 2]])}),
    ("GatherND", {"d": np.ones((4, 3), np.float32), "i": np.array([[0, 1], [4, 0]])}),
], ids=["gather-high", "gather-low", "gatherelements", "gathernd"])
def test_runtime_index_out_of_range(gather_models, op, feeds):
    with pytest.raises(RuntimeInputError, match="out of range"):
        gather_models[op].run(feeds)


@pytest.mark.parametrize("op, axis, data, idx, feeds", [
    ("Gather", 0, [5, "c"], ["k"], {"d": D53, "i": np.array([0, 5, 1])}),
    ("GatherElements", 1, ["r", 3], ["r", "k"], {"d": np.ones((2, 3), np.float32), "i": np.array([[0, 3], [1, 2]])}),
    ("GatherND", None, [4, 3], ["k", 2], {"d": np.ones((4, 3), np.float32), "i": np.array([[0, 1], [1, 3], [0, 0]])}),
], ids=["gather", "gatherelements", "gathernd"])
def test_indices_of_a_run_time_count_are_checked(op, axis, data, idx, feeds):
    """Only the dims the indices address must be static for the check: an index count (a
    sequence) or another data dim of run-time size once left the indices unchecked, and an
    out-of-range one read outside the data."""
    attrs = {} if axis is None else {"axis": axis}
    m = model([h.make_node(op, ["d", "i"], ["y"], **attrs)], [tensor("d", data), tensor("i", idx, T.INT64)],
              [tensor("y", None)])
    cm = ember.compile(m)
    with pytest.raises(RuntimeInputError, match="out of range"):
        cm.run(feeds)
    ok = {"d": feeds["d"], "i": np.minimum(feeds["i"], 1)}
    np.testing.assert_array_equal(cm.run(ok)["y"], ort_run(m, ok)[0])


def test_index_checks_run_in_a_kernel_on_cpus_and_on_the_vm_on_cuda():
    """CPU artifacts may run where only the TVM runtime is (a board, the
    emulator): the check is compiled into a kernel there. On CUDA the flag
    sits in GPU memory, which the VM's assert_op reads (GPU artifacts run
    where TVM is installed). On a CPU the check is one kernel call, no flag reduced beside it."""
    from ember import targets
    from ember.compiler import driver

    m = model([h.make_node("Gather", ["d", "i"], ["y"], axis=0)], [tensor("d", [5, 3]), tensor("i", [2], T.INT64)],
              [tensor("y", None)])
    for target, kernel in ((targets.host(), True), (targets.parse("cuda", mcpu="sm_80"), False)):
        text = driver.lower_model(m, target)[1].script()
        assert ("ember_check_bounds" in text, "R.assert_op" in text) == (kernel, not kernel), target.describe()
        assert ("R.min(" in text) == (not kernel), text


def test_runtime_indices_in_range_are_correct(gather_models):
    out = gather_models["Gather"].run({"d": D53, "i": np.array([4, -5])})["y"]
    np.testing.assert_array_equal(out, D53[[4, 0]])


def test_scatter_elements_out_of_range():
    cm = ember.compile(model([h.make_node("ScatterElements", ["d", "i", "u"], ["y"], axis=0)],
                             [tensor("d", [3, 2]), tensor("i", [1, 2], T.INT64), tensor("u", [1, 2])], [tensor("y", [3, 2])]))
    with pytest.raises(RuntimeInputError, match="out of range"):
        cm.run({"d": np.zeros((3, 2), np.float32), "i": np.array([[0, 3]]), "u": np.ones((1, 2), np.float32)})


@pytest.mark.parametrize("op", ["Div", "Mod"])
def test_integer_division_by_zero(op):
    cm = ember.compile(model([h.make_node(op, ["a", "b"], ["y"])], [tensor("a", [3], T.INT32), tensor("b", [3], T.INT32)],
                             [tensor("y", [3], T.INT32)]))
    a = np.array([7, 8, 9], np.int32)
    np.testing.assert_array_equal(cm.run({"a": a, "b": np.array([2, 3, 4], np.int32)})["y"],
                                  a // [2, 3, 4] if op == "Div" else a % [2, 3, 4])
    with pytest.raises(RuntimeInputError, match="division by zero"):
        cm.run({"a": a, "b": np.array([2, 0, 4], np.int32)})


def test_float_division_by_zero_is_inf():
    cm = ember.compile(model([h.make_node("Div", ["a", "b"], ["y"])], [tensor("a", [2]), tensor("b", [2])], [tensor("y", [2])]))
    out = cm.run({"a": np.array([1, -1], np.float32), "b": np.zeros(2, np.float32)})["y"]
    np.testing.assert_array_equal(out, [np.inf, -np.inf])


def test_nan_propagates():
    cm = ember.compile(model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Max", ["x", "z"], ["mx"]),
                              h.make_node("Min", ["x", "z"], ["mn"]),
                              h.make_node("ReduceMax", ["x"], ["rm"], axes=[1], keepdims=0)],
                             [tensor("x", [2, 3]), tensor("z", [2, 3])],
                             [tensor("r", [2, 3]), tensor("mx", [2, 3]), tensor("mn", [2, 3]), tensor("rm", [2])]))
    x = np.array([[np.nan, -1, 2], [1, 2, 3]], np.float32)
    z = np.zeros((2, 3), np.float32)
    z[1, 1] = np.nan
    out = cm.run({"x": x, "z": z})
    np.testing.assert_array_equal(out["r"], [[np.nan, 0, 2], [1, 2, 3]])
    np.testing.assert_array_equal(out["mx"], [[np.nan, 0, 2], [1, np.nan, 3]])
    np.testing.assert_array_equal(out["mn"], [[np.nan, -1, 0], [0, np.nan, 0]])
    np.testing.assert_array_equal(out["rm"], [np.nan, 3])


def test_empty_reductions_give_identity():
    cm = ember.compile(model([h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                              h.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=0),
                              h.make_node("ReduceProd", ["x"], ["p"], axes=[1], keepdims=1)],
                             [tensor("x", [2, 0])], [tensor("s", []), tensor("m", [2]), tensor("p", [2, 1])], opset=11))
    out = cm.run({"x": np.zeros((2, 0), np.float32)})
    assert out["s"] == 0 and np.all(out["m"] == -np.inf) and np.all(out["p"] == 1)


@pytest.fixture(scope="module")
def small():
    return ember.compile(conv_relu_gemm())


@pytest.mark.parametrize("feeds, fragment", [
    ({"x": np.zeros((1, 3, 8, 8), np.float64)}, "must be float32"),
    ({"x": np.zeros((1, 3, 8), np.float32)}, "must have shape"),
    ({}, "missing input 'x'"),
    ({"x": np.zeros((1, 3, 8, 8), np.float32), "extra": np.zeros(1)}, "unknown input 'extra'"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32)}, "must have shape [1, 3, 8, 8]"),
], ids=["dtype", "rank", "missing", "unknown", "batch"])
def test_bad_runtime_inputs(small, feeds, fragment):
    with pytest.raises(RuntimeInputError) as info:
        small.run(feeds)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- artifacts
@pytest.fixture(scope="module")
def artifact(tmp_path_factory, small):
    return small.save(tmp_path_factory.mktemp("art") / "a")


def _corrupt(artifact, tmp_path, how):
    d = tmp_path / "c"
    shutil.copytree(artifact, d)
    meta = d / "ember.json"
    if how == "not-json":
        meta.write_text("{ this is not json")
    elif how == "format":
        m = json.loads(meta.read_text()); m["format_version"] = 99; meta.write_text(json.dumps(m))
    elif how == "tvm-version":
        m = json.loads(meta.read_text()); m["tvm_version"] = "0.1.0"; meta.write_text(json.dumps(m))
    elif how == "no-library":
        (d / "model.so").unlink()
    elif how == "truncated-library":
        data = (d / "model.so").read_bytes()
        (d / "model.so").write_bytes(data[: len(data) // 2])
    elif how == "list-metadata":
        meta.write_text("[1, 2, 3]")
    return d


@pytest.mark.parametrize("how, fragment", [
    ("not-json", "corrupt metadata"), ("format", "artifact format 99"), ("tvm-version", "TVM 0.1.0"),
    ("no-library", "incomplete artifact"), ("truncated-library", "does not match its metadata"),
    ("list-metadata", "corrupt metadata"),
])
def test_corrupt_artifacts(artifact, tmp_path, how, fragment):
    with pytest.raises(ArtifactError) as info:
        ember.load(_corrupt(artifact, tmp_path, how))
    assert fragment in str(info.value)


@pytest.mark.parametrize("build, fragment", [
    (lambda: model([h.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=1)],
                   [tensor("x", [1, 1, 4, 4], T.UINT8)], [tensor("y", [1, 1, 2, 2], T.UINT8)],
                   [init("sizes", np.array([1, 1, 2, 2], np.int64))], opset=18), "antialias"),  # 8-bit: TVM's path
    (lambda: model([h.make_node("Dropout", ["x", "r", "t"], ["y", "mask"])],
                   [*X2, tensor("r", [], T.FLOAT), tensor("t", [], T.BOOL)],
                   [tensor("y", [2]), tensor("mask", [2], T.BOOL)], opset=13), "not an inference op"),
    (lambda: model([h.make_node("Cast", ["x"], ["y"], to=T.FLOAT8E8M0)], X2, [tensor("y", [2], T.FLOAT8E8M0)],
                   opset=24), "FLOAT8E8M0"),
], ids=["resize-antialias", "training-dropout", "float8e8m0-cast"])
def test_known_wrong_uses_are_refused(build, fragment):
    """What TVM computes wrongly is refused with a reason, never answered silently wrong."""
    with pytest.raises(UnsupportedError) as info:
        compile_model(build())
    assert fragment in str(info.value)
