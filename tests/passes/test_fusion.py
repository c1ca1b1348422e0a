"""Fusion passes: fire, must not fire, numerically equal (onnxruntime on the
exported graph, and Ember's compiled code for ember's own ops), idempotent."""

import numpy as np
import pytest
from helpers import assert_no_fire, assert_pass, init, model, ort_run, tensor
from onnx import helper as h

RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def bn_params(c):
    return [init("s", rand(c) + 1.5), init("sh", rand(c)), init("mu", rand(c)), init("var", np.abs(rand(c)) + 0.5)]


X4 = {"x": rand(2, 3, 6, 6)}


def conv_bn(training=False, extra_use=False):
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "s", "sh", "mu", "var"], ["y"], epsilon=1e-3,
                         **({"training_mode": 1} if training else {}))]
    outs = [tensor("y", None)]
    if extra_use:
        nodes.append(h.make_node("Relu", ["c"], ["z"]))
        outs.append(tensor("z", None))
    return model(nodes, [tensor("x", [2, 3, 6, 6])], outs,
                 [init("w", rand(4, 3, 3, 3)), init("b", rand(4))] + bn_params(4), opset=14)


def test_fold_batchnorm_conv():
    assert_pass(conv_bn(), "fold-batchnorm", X4, ["Conv"], rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_must_not_fire():
    assert_no_fire(conv_bn(extra_use=True), "fold-batchnorm")


def test_fold_batchnorm_gemm_and_convtranspose():
    m = model([h.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
               h.make_node("BatchNormalization", ["g", "s", "sh", "mu", "var"], ["y"])],
              [tensor("x", [5, 8])], [tensor("y", [5, 4])], [init("w", rand(4, 8)), init("b", rand(4))] + bn_params(4))
    assert_pass(m, "fold-batchnorm", {"x": rand(5, 8)}, ["Gemm"], rtol=1e-4, atol=1e-5)
    m = model([h.make_node("ConvTranspose", ["x", "w"], ["c"], group=1),
               h.make_node("BatchNormalization", ["c", "s", "sh", "mu", "var"], ["y"])],
              [tensor("x", [1, 3, 5, 5])], [tensor("y", None)], [init("w", rand(3, 4, 3, 3))] + bn_params(4))
    assert_pass(m, "fold-batchnorm", {"x": rand(1, 3, 5, 5)}, ["ConvTranspose"], rtol=1e-4, atol=1e-5)


def conv_then(op, const):
    return model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node(op, ["c", "k"], ["y"])],
                 [tensor("x", [2, 3, 6, 6])], [tensor("y", None)], [init("w", rand(4, 3, 3, 3)), init("k", const)])


@pytest.mark.parametrize("op", ["Mul", "Add"])
@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (1,)])
def test_fold_affine_conv(op, shape):
    assert_pass(conv_then(op, rand(*shape)), "fold-affine", X4, ["Conv"], rtol=1e-4, atol=1e-5)


def test_fold_affine_must_not_fire_on_spatial_constant():
    assert_no_fire(conv_then("Mul", rand(1, 1, 4, 4)), "fold-affine")


def test_matmul_add_to_gemm_and_matmul_mul():
    m = model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["b", "m"], ["y"])],
              [tensor("x", [5, 8])], [tensor("y", [5, 4])], [init("w", rand(8, 4)), init("b", rand(4))])
    assert_pass(m, "fold-affine", {"x": rand(5, 8)}, ["Gemm"], rtol=1e-5, atol=1e-5)
    m3 = model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["y"])],
               [tensor("x", [2, 5, 8])], [tensor("y", None)], [init("w", rand(8, 4)), init("b", rand(4))])
    assert_no_fire(m3, "fold-affine")  # Gemm is 2-D only
    mm = model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Mul", ["m", "c"], ["y"])],
               [tensor("x", [2, 5, 8])], [tensor("y", None)], [init("w", rand(8, 4)), init("c", rand(4))])
    assert_pass(mm, "fold-affine", {"x": rand(2, 5, 8)}, ["MatMul"], rtol=1e-5, atol=1e-5)


def test_merge_transposes_and_reshapes():
    m = model([h.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
               h.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
               h.make_node("Transpose", ["b"], ["c"], perm=[1, 0, 2, 3]),
               h.make_node("Transpose", ["c"], ["y"], perm=[0, 1, 3, 2])],
              [tensor("x", [2, 3, 4, 5])], [tensor("y", None)])
    out = assert_pass(m, "merge-transposes", {"x": rand(2, 3, 4, 5)})
    assert [n.op_type for n in out.graph.nodes] == ["Transpose"] and out.graph.outputs[0].name == "y"
    r = model([h.make_node("Reshape", ["x", "s1"], ["a"]), h.make_node("Reshape", ["a", "s2"], ["y"])],
              [tensor("x", [2, 3, 4])], [tensor("y", [6, 4])],
              [init("s1", np.array([24], np.int64)), init("s2", np.array([6, 4], np.int64))])
    assert_pass(r, "merge-transposes", {"x": rand(2, 3, 4)}, ["Reshape"])
    keep0 = model([h.make_node("Reshape", ["x", "s1"], ["a"]), h.make_node("Reshape", ["a", "s2"], ["y"])],
                  [tensor("x", [2, 3, 4])], [tensor("y", None)],
                  [init("s1", np.array([6, 4], np.int64)), init("s2", np.array([0, 2, 2], np.int64))])
    assert_no_fire(keep0, "merge-transposes")


def gelu_erf(form: int, k=np.float32(1.4142135)):
    erf_nodes = [h.make_node("Div", ["x", "k"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
                 h.make_node("Add", ["e", "one"], ["p"])]
    outer = {0: [h.make_node("Mul", ["x", "p"], ["xp"]), h.make_node("Mul", ["xp", "half"], ["y"])],
             1: [h.make_node("Mul", ["half", "x"], ["hx"]), h.make_node("Mul", ["hx", "p"], ["y"])],
             2: [h.make_node("Mul", ["p", "half"], ["ph"]), h.make_node("Mul", ["x", "ph"], ["y"])]}[form]
    return model(erf_nodes + outer, [tensor("x", [3, 7])], [tensor("y", [3, 7])],
                 [init("k", k), init("one", np.float32(1)), init("half", np.float32(0.5))])


@pytest.mark.parametrize("form", [0, 1, 2])
def test_fuse_gelu_erf_forms(form):
    assert_pass(gelu_erf(form), "fuse-gelu", {"x": rand(3, 7)}, ["GeluErf"])


def test_fuse_gelu_wrong_constant_does_not_fire():
    assert_no_fire(gelu_erf(0, k=np.float32(1.5)), "fuse-gelu")


def test_fuse_gelu_tanh_and_silu():
    m = model([h.make_node("Pow", ["x", "three"], ["x3"]), h.make_node("Mul", ["x3", "k3"], ["kx3"]),
               h.make_node("Add", ["x", "kx3"], ["inner"]), h.make_node("Mul", ["inner", "c"], ["sc"]),
               h.make_node("Tanh", ["sc"], ["t"]), h.make_node("Add", ["t", "one"], ["p"]),
               h.make_node("Mul", ["x", "p"], ["xp"]), h.make_node("Mul", ["xp", "half"], ["y"])],
              [tensor("x", [3, 7])], [tensor("y", [3, 7])],
              [init("three", np.float32(3)), init("k3", np.float32(0.044715)), init("c", np.float32(0.7978845608)),
               init("one", np.float32(1)), init("half", np.float32(0.5))])
    assert_pass(m, "fuse-gelu", {"x": rand(3, 7)}, ["GeluTanh"])
    s = model([h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Mul", ["s", "x"], ["y"])],
              [tensor("x", [3, 7])], [tensor("y", [3, 7])])
    assert_pass(s, "fuse-silu", {"x": rand(3, 7)}, ["Silu"])
    other = model([h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Mul", ["s", "z"], ["y"])],
                  [tensor("x", [3, 7]), tensor("z", [3, 7])], [tensor("y", [3, 7])])
    assert_no_fire(other, "fuse-silu")


def layernorm(opset=17, pow_form=True):
    sq = h.make_node("Pow", ["d", "two"], ["sq"]) if pow_form else h.make_node("Mul", ["d", "d"], ["sq"])
    axes = {"axes": [-1]} if opset < 18 else {}
    ins = ["x"] + ([] if opset < 18 else ["ax"])
    nodes = [h.make_node("ReduceMean", ins, ["mean"], **axes), h.make_node("Sub", ["x", "mean"], ["d"]), sq,
             h.make_node("ReduceMean", ["sq"] + ins[1:], ["var"], **axes), h.make_node("Add", ["var", "eps"], ["ve"]),
             h.make_node("Sqrt", ["ve"], ["std"]), h.make_node("Div", ["d", "std"], ["n"]),
             h.make_node("Mul", ["n", "g"], ["ng"]), h.make_node("Add", ["ng", "b"], ["y"])]
    inits = [init("two", np.float32(2)), init("eps", np.float32(1e-5)), init("g", rand(16)), init("b", rand(16))]
    if opset >= 18:
        inits.append(init("ax", np.array([-1], np.int64)))
    return model(nodes, [tensor("x", [2, 5, 16])], [tensor("y", [2, 5, 16])], inits, opset=opset)


@pytest.mark.parametrize("opset, pow_form", [(17, True), (17, False), (18, True)])
def test_fuse_layernorm(opset, pow_form):
    assert_pass(layernorm(opset, pow_form), "fuse-layernorm", {"x": rand(2, 5, 16)}, ["LayerNormalization"],
                rtol=1e-4, atol=1e-5)


def test_fuse_layernorm_needs_opset_17():
    from ember.compiler.ir import onnx_io
    from ember.passes.rewrite import explain
    from ember.passes.fusion.layernorm import FuseLayerNorm

    m = onnx_io.import_model(layernorm(opset=13))
    root = m.graph.nodes[-1]
    assert "needs opset 17" in explain(FuseLayerNorm.rules[0], root, m.opset)
    assert_no_fire(layernorm(opset=13), "fuse-layernorm")


def attention(masked=True, scale_op="Mul"):
    nodes = [h.make_node("MatMul", ["q", "kt"], ["s"]), h.make_node(scale_op, ["s", "c"], ["sc"])]
    last = "sc"
    if masked:
        nodes.append(h.make_node("Add", ["sc", "mask"], ["sm"]))
        last = "sm"
    nodes += [h.make_node("Softmax", [last], ["p"], axis=-1), h.make_node("MatMul", ["p", "v"], ["y"])]
    ins = [tensor("q", [2, 3, 5, 8]), tensor("kt", [2, 3, 8, 6]), tensor("v", [2, 3, 6, 4])]
    if masked:
        ins.append(tensor("mask", [2, 1, 1, 6]))
    return model(nodes, ins, [tensor("y", [2, 3, 5, 4])], [init("c", np.float32(0.35 if scale_op == "Mul" else 2.8))])


def attention_feeds(masked=True):
    feeds = {"q": rand(2, 3, 5, 8), "kt": rand(2, 3, 8, 6), "v": rand(2, 3, 6, 4)}
    if masked:
        feeds["mask"] = np.where(RNG.random((2, 1, 1, 6)) < 0.3, -1e9, 0.0).astype(np.float32)
    return feeds


@pytest.mark.parametrize("masked, scale_op", [(True, "Mul"), (False, "Div")])
def test_fuse_attention(masked, scale_op):
    import ember

    m = attention(masked, scale_op)
    feeds = attention_feeds(masked)
    assert_pass(m, "fuse-attention", feeds, ["SDPAMasked" if masked else "SDPA"], rtol=1e-5, atol=1e-6)
    # Ember's own lowering of the fused op (relax nn.attention) against onnxruntime on the original graph
    out = ember.compile(m, pipeline="fuse-attention").run(feeds)["y"]
    np.testing.assert_allclose(out, ort_run(m, feeds)[0], rtol=1e-4, atol=1e-5)


def test_fuse_attention_refuses_wrong_softmax_axis():
    m = attention(False)
    m.graph.node[2].attribute[0].i = 2
    assert_no_fire(m, "fuse-attention")


def test_fused_gelu_silu_compile_and_match():
    import ember

    for m, spec in ((gelu_erf(0), "fuse-gelu"), (layernorm(), "fuse-layernorm")):
        feeds = {"x": rand(*[d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim])}
        out = ember.compile(m, pipeline=spec).run(feeds)["y"]
        np.testing.assert_allclose(out, ort_run(m, feeds)[0], rtol=1e-4, atol=1e-5)


def test_ember_ops_follow_the_model_opset():
    """The function definitions of ember's ops import the model's own opset
    (onnx refuses a model whose functions and graph disagree)."""
    import ember
    from ember.compiler.ir import onnx_io

    m = gelu_erf(0)
    m.opset_import[0].version = 21
    out = assert_pass(m, "fuse-gelu", {"x": rand(3, 7)}, ["GeluErf"])
    exported = onnx_io.export_model(out)
    assert [o.version for o in exported.functions[0].opset_import] == [21]
    feeds = {"x": rand(3, 7)}
    np.testing.assert_allclose(ember.compile(m).run(feeds)["y"], ort_run(m, feeds)[0], rtol=1e-4, atol=1e-5)


def pad_conv(pads, mode="constant", value=None, opset=17, bias=True, conv_pads=(0, 1, 0, 1), axes=None):
    inputs = ["x", "p"] + (["v"] if value is not None or axes is not None else []) + (["axes"] if axes is not None else [])
    if value is None and axes is not None:
        inputs[2] = ""
    inits = [init("w", rand(4, 3, 3, 3)), init("p", np.array(pads, np.int64))]
    if value is not None:
        inits.append(init("v", np.array(value, np.float32)))
    if axes is not None:
        inits.append(init("axes", np.array(axes, np.int64)))
    if bias:
        inits.append(init("b", rand(4)))
    nodes = [h.make_node("Pad", inputs, ["xp"], mode=mode),
             h.make_node("Conv", ["xp", "w"] + (["b"] if bias else []), ["y"], pads=list(conv_pads), strides=[2, 2])]
    return model(nodes, [tensor("x", [2, 3, 7, 8])], [tensor("y", None)], inits, opset=opset)


@pytest.mark.parametrize("pads, kw", [
    ([0, 0, 0, 1, 0, 0, 1, 1], {}),                       # TF "same" for stride 2: bottom/right
    ([0, 0, 2, 0, 0, 0, 1, 3], {"bias": False}),
    ([2, 1, 1, 0], {"axes": [2, 3], "opset": 18}),         # opset 18: pads over the axes named
    ([0, 0, 1, 1, 0, 0, 1, 1], {"value": 0.0}),
])
def test_fold_pad_into_conv(pads, kw):
    out = assert_pass(pad_conv(pads, **kw), "fold-pad", {"x": rand(2, 3, 7, 8)}, ["Conv"])
    assert len(out.graph.nodes[0].attrs["pads"]) == 4


@pytest.mark.parametrize("pads, kw", [
    ([0, 1, 0, 0, 0, 0, 0, 0], {}),                        # pads channels
    ([0, 0, 1, 1, 0, 0, 1, 1], {"value": 1.0}),            # not zeros
    ([0, 0, 1, 1, 0, 0, 1, 1], {"mode": "reflect"}),
    ([0, 0, -1, 0, 0, 0, 0, 0], {}),                       # crops
])
def test_fold_pad_must_not_fire(pads, kw):
    assert_no_fire(pad_conv(pads, **kw), "fold-pad")
