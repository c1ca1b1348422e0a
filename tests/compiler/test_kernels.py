"""Ember's CPU kernels and default schedules: they fire where they should,
stay out where they should not, and give onnxruntime's results."""

import time

import numpy as np
import pytest
import tvm
from ember.compiler.backend.tvm import kernels, lower, pipeline, schedule
from ember.compiler.ir import onnx_io
from helpers import init, legalized, model, ort_run, tensor
from onnx import helper as h

import ember
from ember import targets


def _conv_model(c, o, hw, k, stride=1, pad=0, dilation=1, group=1, act=None, seed=0):
    rng = np.random.default_rng(seed)
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2, pads=[pad] * 4,
                         dilations=[dilation] * 2, group=group)]
    out = "c"
    if act == "relu":
        nodes.append(h.make_node("Relu", ["c"], ["y"]))
        out = "y"
    elif act == "clip":
        nodes.append(h.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        out = "y"
    inits = [init("w", rng.standard_normal((o, c // group, k, k)).astype(np.float32) * 0.2),
             init("b", rng.standard_normal(o).astype(np.float32))]
    if act == "clip":
        inits += [init("lo", np.array(0, np.float32)), init("hi", np.array(1.5, np.float32))]
    oh = (hw + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor(out, [1, o, oh, oh])], inits)


def _functions(m):
    """Names of the PrimFuncs the CPU pipeline produces for a model."""
    return [gv.name_hint for gv, f in legalized(m).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def _check(m, feeds, rtol=1e-4, atol=1e-4):
    got = ember.compile(m).run(feeds)
    for g, r in zip(got.values() if isinstance(got, dict) else got, ort_run(m, feeds)):
        np.testing.assert_allclose(np.asarray(g), r, rtol=rtol, atol=atol)


@pytest.mark.parametrize("c, o, hw, k, stride, pad, dilation", [
    (3, 16, 9, 3, 1, 1, 1),     # padded 3x3
    (8, 32, 8, 1, 1, 0, 1),     # 1x1: a plain GEMM
    (4, 20, 11, 3, 2, 1, 1),    # stride 2; 20 output channels: weights padded, result cropped
    (6, 16, 12, 3, 1, 2, 2),    # dilation
    (3, 10, 13, 5, 3, 0, 1),    # odd sizes, no padding, prime width
])
def test_conv2d_kernel_matches_onnxruntime(c, o, hw, k, stride, pad, dilation):
    m = _conv_model(c, o, hw, k, stride, pad, dilation, act="relu")
    assert any("ember_conv2d" in f for f in _functions(m))
    x = np.random.default_rng(1).standard_normal((1, c, hw, hw)).astype(np.float32)
    _check(m, {"x": x})


def test_depthwise_kernel():
    dw = _conv_model(16, 16, 10, 3, 2, 1, group=16, act="clip")
    assert any("ember_depthwise" in f for f in _functions(dw))
    x = np.random.default_rng(2).standard_normal((1, 16, 10, 10)).astype(np.float32) * 4
    _check(dw, {"x": x})


@pytest.mark.parametrize("c, o, groups, k, stride", [
    (8, 8, 2, 3, 1),      # 4 output channels a group: one GEMM over block-diagonal weights
    (64, 64, 8, 3, 2),    # 8 a group (RegNet's width): GEMM groups of two groups
    (64, 128, 4, 1, 1),   # 32 a group: one GEMM group each, two panels
    (24, 12, 3, 5, 1),    # 4 a group, 3 groups: no whole vector; dense, cropped
])
def test_grouped_conv_runs_on_the_gemm_kernel(c, o, groups, k, stride):
    m = _conv_model(c, o, 9, k, stride, k // 2, group=groups, act="relu")
    assert any("ember_conv2d" in f for f in _functions(m))
    x = np.random.default_rng(3).standard_normal((2, c, 9, 9)).astype(np.float32)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"  # a run-time batch
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "n"
    _check(m, {"x": x})


def test_group_span_fills_whole_vectors():
    assert kernels.group_span(groups=8, cog=8, lanes=16) == 2
    assert kernels.group_span(groups=4, cog=16, lanes=16) == 1
    assert kernels.group_span(groups=3, cog=4, lanes=16) == 3  # none do: one dense GEMM
    assert kernels.group_span(groups=6, cog=4, lanes=8) == 2


def test_matmul_kernels_constant_and_batched():
    rng = np.random.default_rng(4)
    m = model([h.make_node("MatMul", ["x", "w"], ["y"]), h.make_node("MatMul", ["y", "z"], ["out"])],
              [tensor("x", [2, 3, 5, 24]), tensor("z", [2, 3, 40, 16])], [tensor("out", [2, 3, 5, 16])],
              [init("w", rng.standard_normal((24, 40)).astype(np.float32))])
    names = _functions(m)
    assert any("ember_matmul" in f for f in names) and any("ember_batch_matmul" in f for f in names)
    _check(m, {"x": rng.standard_normal((2, 3, 5, 24)).astype(np.float32),
               "z": rng.standard_normal((2, 3, 40, 16)).astype(np.float32)})


def test_nan_propagates_through_relu_and_clip():
    m = model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Clip", ["x", "lo", "hi"], ["c"])],
              [tensor("x", [1, 6])], [tensor("r", [1, 6]), tensor("c", [1, 6])],
              [init("lo", np.array(-1, np.float32)), init("hi", np.array(1, np.float32))])
    x = np.array([[np.nan, -2, -0.5, 0.5, 2, np.inf]], np.float32)
    r, c = ember.compile(m).run({"x": x}).values()
    np.testing.assert_array_equal(r, [[np.nan, 0, 0, 0.5, 2, np.inf]])
    np.testing.assert_array_equal(c, [[np.nan, -1, -0.5, 0.5, 1, 1]])


def test_sum_of_many_inputs_is_adds():
    m = model([h.make_node("Sum", ["a", "b", "c"], ["y"])], [tensor(n, [2, 3]) for n in "abc"],
              [tensor("y", [2, 3])])
    feeds = {n: np.random.default_rng(i).standard_normal((2, 3)).astype(np.float32) for i, n in enumerate("abc")}
    _check(m, feeds)


@pytest.mark.parametrize("m, n, lanes, tile", [
    (56, 64, 16, (8, 32)),    # two vectors wide, 8 rows: 16 of 32 registers
    (13, 1000, 16, (13, 16)),  # 1000 columns: padded to 1008, one vector wide
    (7, 2048, 16, (7, 32)),
    (1, 10, 8, (1, 8)),
    (49, 24, 4, (7, 4)),       # NEON: 7 rows x 1 vector beats 1 row x 2 vectors
])
def test_gemm_tiles(m, n, lanes, tile):
    t = kernels.gemm_tiles(m, n, lanes)
    assert (t.mr, t.nr) == tile
    assert m % t.mr == 0 and t.nr % lanes == 0


def test_long_inner_loops_are_vectorized_in_chunks():
    """A 9216-wide elementwise loop must not become one 9216-lane vector (LLVM then takes minutes)."""
    from tvm import te

    x = te.placeholder((1, 9216), name="x")
    y = te.compute((1, 9216), lambda i, j: x[i, j] * 2.0, name="y")
    sch = schedule.default_schedule(te.create_prim_func([x, y]))
    text = sch.mod.script()
    assert "T.vectorized(16)" in text and "T.vectorized(9216)" not in text


def test_a_reduction_over_outer_axes_runs_vectors_along_the_kept_axis():
    """NHWC global pooling: the kept channel axis is the contiguous one, so the reduction
    loops go outside it and the channels run as vectors (the order the tensor expression
    gives strides through memory a row at a time). A last-axis sum keeps its order."""
    from tvm import te, topi

    x = te.placeholder((1, 20, 20, 64), name="x")
    text = schedule.default_schedule(te.create_prim_func([x, topi.sum(x, axis=(1, 2), keepdims=True)])).mod.script()
    assert "T.vectorized(16)" in text and "T.parallel(4)" in text
    rows = te.placeholder((64, 400), name="x")
    text = schedule.default_schedule(te.create_prim_func([rows, topi.sum(rows, axis=1)])).mod.script()
    assert "T.parallel(4)" not in text

    rng = np.random.default_rng(0)
    m = model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("GlobalAveragePool", ["c"], ["g"]),
               h.make_node("ReduceSum", ["c", "axes"], ["s"], keepdims=0)],
              [tensor("x", [2, 32, 24, 40])], [tensor("g", None), tensor("s", None)],
              [init("w", rng.standard_normal((48, 32, 1, 1)).astype(np.float32)),
               init("axes", np.array([2, 3], np.int64))], opset=17)
    x = rng.standard_normal((2, 32, 24, 40)).astype(np.float32)
    got, want = ember.compile(m).run({"x": x}), ort_run(m, {"x": x})
    for name, ref in zip(("g", "s"), want):
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("shape, perm", [((2, 24, 5, 16), (0, 2, 3, 1)), ((1, 7, 9, 40), (0, 3, 1, 2)),
                                         ((3, 16, 8), (2, 0, 1)), ((4, 6, 10), (0, 2, 1))])
def test_transposes_run_in_tiles(shape, perm):
    """NCHW <-> NHWC and other transposes whose input and output run along different axes
    are tiled 8 x 8 when both axes allow it (else the plain schedule); the values are exact."""
    from tvm import te, topi

    x = te.placeholder(shape, name="x")
    text = schedule.default_schedule(te.create_prim_func([x, topi.transpose(x, perm)])).mod.script()
    tiled = shape[perm[-1]] % 8 == 0 and shape[-1] % 8 == 0
    assert ("T.vectorized(8)" in text) == tiled
    m = model([h.make_node("Transpose", ["x"], ["y"], perm=list(perm))], [tensor("x", list(shape))], [tensor("y", None)])
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(ember.compile(m).run({"x": data})["y"], data.transpose(perm))


@pytest.mark.parametrize("group", [1, 16])
def test_an_epilogue_that_forks_and_joins_runs_inside_the_kernel(group):
    """HardSwish after a convolution reads its output twice (x * clip(x + 3, 0, 6) / 6): the
    fork is inlined into the block where it joins, and that into the kernel's write-back.
    Left as it was, every block of the epilogue ran as its own serial loop nest over the
    whole map (a PP-LCNet's first 1x1 convolution ran at 5 GFLOP/s)."""
    rng = np.random.default_rng(0)
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], group=group, pads=[1, 1, 1, 1]),
               h.make_node("HardSwish", ["c"], ["y"])],
              [tensor("x", [1, 16, 12, 12])], [tensor("y", None)],
              [init("w", rng.standard_normal((16, 16 // group, 3, 3)).astype(np.float32)),
               init("b", rng.standard_normal(16).astype(np.float32))], opset=17)
    mod = legalized(m)
    kernel = next(f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "ember" in gv.name_hint)
    sch = schedule.default_schedule(kernel)
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert not any(n.startswith(("T_add", "maximum", "minimum", "T_divide", "T_multiply")) for n in names), names
    _check(m, {"x": (rng.standard_normal((1, 16, 12, 12)) * 3).astype(np.float32)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [2, "n"])
def test_an_epilogue_broadcasting_the_kernel_over_a_map_runs_parallel_vectors(batch):
    """A squeeze-excitation gate: a 1x1 convolution of the pooled map, a sigmoid, times the
    feature map, plus a residual. FuseOps puts the broadcast multiply and the add into the
    convolution's function, where they cannot fold into the tile's writeback (a larger domain);
    they ran as serial scalar loops, one pass over the map each (an EfficientNet's gate kernels
    12x slower than the map's copy). Now every block of the kernel runs parallel."""
    rng = np.random.default_rng(0)
    m = model([h.make_node("Conv", ["x", "w0"], ["c"], pads=[1, 1, 1, 1]),
               h.make_node("GlobalAveragePool", ["c"], ["p"]), h.make_node("Conv", ["p", "w", "b"], ["g"]),
               h.make_node("Sigmoid", ["g"], ["s"]), h.make_node("Mul", ["c", "s"], ["e"]),
               h.make_node("Add", ["e", "c"], ["r"]), h.make_node("Conv", ["r", "w1"], ["y"])],
              [tensor("x", [batch, 8, 12, 12])], [tensor("y", None)],
              [init("w0", rng.standard_normal((32, 8, 3, 3)).astype(np.float32)),
               init("w", rng.standard_normal((32, 32, 1, 1)).astype(np.float32)),
               init("b", rng.standard_normal(32).astype(np.float32)),
               init("w1", rng.standard_normal((16, 32, 1, 1)).astype(np.float32))], opset=17)
    gate = next(f for gv, f in legalized(m).functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint and "multiply" in gv.name_hint)
    sch = schedule.default_schedule(gate)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    serial = [sch.get(b).name_hint for b in blocks
              if all(sch.get(lp).kind == tvm.tirx.ForKind.SERIAL for lp in sch.get_loops(b))]
    assert len(blocks) >= 2 and not serial, serial
    feeds = [{"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)} for _ in range(2)]
    got, ref = ember.compile(m).run(feeds[0])["y"], ort_run(m, feeds[0])[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.abs(ort_run(m, feeds[1])[0] - ref).max() > 0.1


def test_one_element_constants_of_rank_one_do_not_stop_layout_conversion():
    """paddle2onnx's HardSwish: Add [3.0], Clip [0.0] [6.0], Div [[[6.0]]], Mul. The constants
    become 0-d where the result's shape allows, so the chain runs NHWC with the convolutions
    around it (it ran NCHW between transposes); `one + two` keeps its [1, 1] shape."""
    rng = np.random.default_rng(0)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Add", ["c", "three"], ["a"]),
             h.make_node("Clip", ["a", "lo", "hi"], ["k"]), h.make_node("Div", ["k", "six"], ["d"]),
             h.make_node("Mul", ["c", "d"], ["hs"]), h.make_node("Conv", ["hs", "w2"], ["y"]),
             h.make_node("Add", ["z", "two"], ["s"])]
    m = model(nodes, [tensor("x", [1, 8, 6, 6]), tensor("z", [1])], [tensor("y", None), tensor("s", None)],
              [init("w", rng.standard_normal((16, 8, 1, 1)).astype(np.float32)),
               init("w2", rng.standard_normal((8, 16, 1, 1)).astype(np.float32)),
               init("three", np.array([3.0], np.float32)), init("lo", np.array([0.0], np.float32)),
               init("hi", np.array([6.0], np.float32)), init("six", np.array([[[6.0]]], np.float32)),
               init("two", np.array([[2.0]], np.float32))], opset=17)
    fused = _functions(m)
    assert not [f for f in fused if "transpose" in f and ("maximum" in f or "add" in f)], fused
    feeds = {"x": (rng.standard_normal((1, 8, 6, 6)) * 3).astype(np.float32), "z": np.array([0.5], np.float32)}
    got, want = ember.compile(m).run(feeds), ort_run(m, feeds)
    assert got["s"].shape == want[1].shape == (1, 1)
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-5 * np.abs(want[0]).max())


def test_light_model_with_big_dense_layers_compiles_fast():
    """AlexNet (9216x4096 and 4096x4096 dense layers, grouped convolutions)."""
    import time

    from ember.models import zoo

    t = time.perf_counter()
    m = zoo.light_model("bvlc_alexnet")
    feeds = zoo.random_inputs(m)
    cm = ember.compile(m)
    assert time.perf_counter() - t < 120
    got = list(cm.run(feeds).values())[0]
    np.testing.assert_allclose(got, ort_run(m, feeds)[0], rtol=1e-3, atol=1e-5)


def test_nchw_convolutions_when_layout_conversion_gives_up(monkeypatch):
    """ConvertLayout refuses some graphs; the kernels then run between transposes."""
    import tvm as _tvm

    monkeypatch.setattr(pipeline.cpu, "_to_nhwc", lambda: _tvm.transform.Sequential([]))
    for m, shape in [(_conv_model(4, 20, 9, 3, 2, 1, act="relu"), (1, 4, 9, 9)),
                     (_conv_model(8, 8, 7, 3, 1, 1, group=8), (1, 8, 7, 7))]:
        names = _functions(m)
        assert any("to_nhwc" in f for f in names) and any("ember_" in f for f in names)
        _check(m, {"x": np.random.default_rng(5).standard_normal(shape).astype(np.float32)})


def test_forked_child_after_parent_ran_parallel_kernels():
    """TVM's worker threads do not survive fork: a child of a process that ran
    kernels must not wait for them (it used to hang in every parallel loop)."""
    from helpers import conv_relu_gemm

    from ember.compiler.runtime.isolate import run_isolated

    m = conv_relu_gemm()
    feeds = {"x": np.random.default_rng(6).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    cm = ember.compile(m)
    want = cm.run(feeds)["y"]

    def step(progress=None):
        return cm.run(feeds)["y"]

    np.testing.assert_array_equal(run_isolated(step, what="run", timeout=60), want)


def _relu_chain(pairs: int):
    """x -> (Relu, Add 0.5) * pairs: one fused elementwise function."""
    nodes, prev = [], "x"
    for i in range(pairs):
        nodes += [h.make_node("Relu", [prev], [f"r{i}"]), h.make_node("Add", [f"r{i}", "c"], [f"a{i}"])]
        prev = f"a{i}"
    return model(nodes, [tensor("x", [2, 64])], [tensor(prev, [2, 64])], [init("c", np.array(-0.5, np.float32))])


def test_chained_selects_are_not_inlined_into_an_exponential_expression():
    """A NaN-keeping Relu reads its operand twice: inlining 12 of them into one
    expression held 2**12 copies of the first (the build took minutes from 8)."""
    m = _relu_chain(12)
    (func,) = [f for gv, f in legalized(m).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    sch = schedule.default_schedule(func)
    assert len(str(sch.mod)) < 8 * schedule.INLINE_BUDGET  # 2**12 copies print as megabytes
    assert len(schedule._blocks(sch)) > 1  # some Relus keep a buffer
    short = schedule.default_schedule(next(f for gv, f in legalized(_relu_chain(2)).functions_items()
                                           if isinstance(f, tvm.tirx.PrimFunc)))
    assert len(schedule._blocks(short)) == 1  # a short chain is still one loop nest
    x = np.random.default_rng(7).standard_normal((2, 64)).astype(np.float32) * 4
    x[0, :3] = [np.nan, -0.0, np.inf]
    got = ember.compile(m).run({"x": x})
    want = ort_run(m, {"x": x})[0]
    np.testing.assert_array_equal(np.asarray(next(iter(got.values()))), want)  # NaN stays NaN


def _collect_garbage(progress=None):
    import gc

    gc.collect()
    return "collected"


def test_a_forked_step_never_collects_the_parents_onnxruntime_garbage():
    """An onnxruntime session left in a reference cycle, destroyed by the
    garbage collector of a forked child, blocks forever on its thread pool's
    condition variable: its threads did not survive fork (ember tune hung so in
    the test suite)."""
    import gc

    import onnxruntime as ort
    from helpers import conv_relu_gemm

    from ember.compiler.runtime.isolate import run_isolated

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    gc.disable()
    try:
        session = ort.InferenceSession(conv_relu_gemm().SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
        time.sleep(1)  # its pool's threads stop spinning and wait on the condition
        cycle = [session]
        cycle.append(cycle)
        del session
        del cycle
        assert run_isolated(_collect_garbage, what="collection", timeout=30) == "collected"
    finally:
        gc.enable()


def _winograd_funcs(m):
    """The legalized and fused PrimFuncs holding a Winograd convolution."""
    return [f for gv, f in legalized(m).functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and "winograd" in gv.name_hint]


@pytest.mark.parametrize("c, o, hw, pad, act", [
    (64, 64, 14, 1, "relu"),   # even output
    (64, 40, 15, 1, None),     # odd output (a last tile half outside it); 40 outputs: weights padded
    (72, 16, 16, 0, "clip"),   # no padding: 14x14
])
def test_winograd_convolution_matches_onnxruntime(c, o, hw, pad, act):
    m = _conv_model(c, o, hw, 3, 1, pad, act=act)
    funcs = _winograd_funcs(m)
    assert funcs
    sch = schedule.default_schedule(funcs[0])  # Winograd's own schedule applies, not the generic fallback
    assert "ember_winograd" in str(sch.trace) and "unroll" in str(sch.trace)
    x = np.random.default_rng(1).standard_normal((1, c, hw, hw)).astype(np.float32)
    _check(m, {"x": x})


@pytest.mark.parametrize("c, hw, k, stride, dilation", [
    (32, 16, 3, 1, 1),   # too few channels for the transforms to pay
    (64, 12, 3, 1, 1),   # too small an output
    (64, 16, 3, 2, 1),   # stride 2
    (64, 16, 3, 1, 2),   # dilation
    (64, 16, 5, 1, 1),   # 5x5
])
def test_winograd_stays_out(c, hw, k, stride, dilation):
    m = _conv_model(c, 16, hw, k, stride, k // 2 * dilation, dilation)
    assert not _winograd_funcs(m)
    assert any("ember_conv2d" in f for f in _functions(m))


def test_winograd_with_batch_and_residual_epilogue():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Add", ["c", "x"], ["s"]),
             h.make_node("Relu", ["s"], ["y"])]
    m = model(nodes, [tensor("x", [2, 64, 14, 14])], [tensor("y", [2, 64, 14, 14])], [init("w", w)])
    assert _winograd_funcs(m)
    _check(m, {"x": rng.standard_normal((2, 64, 14, 14)).astype(np.float32)})


def test_softmax_kernel_with_special_values():
    """Ember's softmax (a vectorized exp, one pass per row): numpy's result,
    NaN where numpy has NaN (a NaN, +inf or an all -inf row), 0 for -inf."""
    x = (np.random.default_rng(0).standard_normal((4, 3, 37)) * 10).astype(np.float32)
    x[0, 0, :5] = -np.inf
    x[0, 1, :] = -np.inf
    x[0, 2, 3] = np.nan
    x[1, 0, 0] = np.inf
    x[1, 1, :] = 80.0
    m = model([h.make_node("Softmax", ["x"], ["y"], axis=-1)], [tensor("x", [4, 3, 37])], [tensor("y", [4, 3, 37])])
    assert any(f.startswith("ember_softmax") for f in _functions(m))
    got = ember.compile(m).run({"x": x})["y"]
    with np.errstate(all="ignore"):
        w = x.astype(np.float64)
        e = np.exp(w - w.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-5, atol=1e-7)
    other_axis = model([h.make_node("Softmax", ["x"], ["y"], axis=1)], [tensor("x", [4, 3, 37])],
                       [tensor("y", [4, 3, 37])])
    assert not any(f.startswith("ember_softmax") for f in _functions(other_axis))  # TVM's kernel


def test_softmax_over_run_time_rows_takes_its_schedule_and_matches():
    """Attention's scores over a sequence of any length: rows of a run-time count and length.
    The maximum and sum run over the row's whole vectors in vector lanes, then over the rest (either
    part may be empty: lengths below, at and above the vector), and the rows run in parallel over
    the one run-time extent that can be fused. Before, the exponentials ran scalar (3x the static
    kernel's time at 384 tokens)."""
    m = model([h.make_node("Softmax", ["x"], ["y"], axis=-1)], [tensor("x", ["b", 4, "n", "n"])],
              [tensor("y", ["b", 4, "n", "n"])])
    func = next(f for gv, f in legalized(m).functions_items() if gv.name_hint.startswith("ember_softmax"))
    sch = tvm.s_tir.Schedule(func)
    schedule.schedule_softmax(sch, sch.get_sblock(kernels.SOFTMAX))
    script = sch.mod["main"].script()
    assert "T.vectorized" in script and "T.parallel" in script
    cm, rng = ember.compile(m), np.random.default_rng(5)
    for b, n in ((1, 1), (2, 15), (1, 16), (1, 17), (2, 40)):
        x = (rng.standard_normal((b, 4, n, n)) * 4).astype(np.float32)
        got = cm.run({"x": x})["y"]
        e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
        np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def _lowered(func) -> str:
    """A scheduled PrimFunc through TVM's lowering up to and including VectorizeLoop (after LoopPartition)."""
    from tvm import s_tir, tirx

    target = tvm.target.Target({"kind": "llvm"})
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", target)})
    passes = [s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
              s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
              s_tir.transform.LowerMatchBuffer(), tirx.transform.StmtSimplify(), s_tir.transform.LowerOpaqueBlock(),
              tirx.transform.FlattenBuffer(), tirx.transform.NarrowDataType(32), s_tir.transform.LoopPartition(),
              tirx.transform.VectorizeLoop(True)]
    with target:
        return tvm.transform.Sequential(passes)(mod)["main"].script()


@pytest.mark.parametrize("shape", [["b", 4, "n", "n"], [2, 3, 37]])
def test_softmax_rows_of_no_whole_vectors_store_vectors(shape):
    """A row whose length is a run-time value, or a static one 16 does not divide: its elementwise
    passes run over its whole vectors as vectors, then over the rest. A split alone left a
    predicate on every lane, and TVM's vectorizer made the whole pass scalar stores (5x the time
    over 799 columns)."""
    m = model([h.make_node("Softmax", ["x"], ["y"], axis=-1)], [tensor("x", shape)], [tensor("y", shape)])
    func = next(f for gv, f in legalized(m).functions_items() if gv.name_hint.startswith("ember_softmax"))
    sch = tvm.s_tir.Schedule(func)
    schedule.schedule_softmax(sch, sch.get_sblock(kernels.SOFTMAX))
    script = _lowered(sch.mod["main"])
    stores = [line.strip().split(" = ")[0] for line in script.splitlines()
              if line.strip().startswith(kernels.SOFTMAX) and " = " in line]  # the output's stores
    assert any(":" in target for target in stores), stores  # a vector store: out[i:i + 16]
    assert any(":" not in target for target in stores), stores  # the rest, one by one


def test_layer_norm_kernel():
    rng = np.random.default_rng(1)
    m = model([h.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
              [tensor("x", [2, 5, 48])], [tensor("y", [2, 5, 48])],
              [init("g", rng.standard_normal(48).astype(np.float32)), init("b", rng.standard_normal(48).astype(np.float32))],
              opset=17)
    assert any(f.startswith("ember_layernorm") for f in _functions(m))
    x = (rng.standard_normal((2, 5, 48)) * 3 + 100).astype(np.float32)  # a large mean: two passes keep precision
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "GlobalAveragePool"])
@pytest.mark.parametrize("symbolic", [False, True])
def test_long_float_sums_are_accumulated_wide(op, symbolic):
    """A mean over a 160x160 map (an SE block's), against float64 numpy: TVM's one-by-one
    float32 adds were 1e-4 off (relative) at this count; accumulated in float64 they
    round once. A symbolic count is always accumulated wide: the artifact also serves 8x8."""
    attrs = {} if op == "GlobalAveragePool" else {"axes": [2, 3], "keepdims": 1}
    if op == "ReduceSum":
        nodes = [h.make_node(op, ["x", "axes"], ["y"], keepdims=1)]
        inits = [init("axes", np.array([2, 3], np.int64))]
    else:
        nodes, inits = [h.make_node(op, ["x"], ["y"], **attrs)], []
    dims = ["n", 4, "h", "w"] if symbolic else [1, 4, 160, 160]
    m = model(nodes, [tensor("x", dims)], [tensor("y", None)], inits, opset=17)
    cm = ember.compile(m)
    x = (np.random.default_rng(0).random((1, 4, 160, 160)) + 1.0).astype(np.float32)
    got = cm.run({"x": x})["y"].astype(np.float64)
    exact = x.astype(np.float64).sum(axis=(2, 3), keepdims=True)
    if op != "ReduceSum":
        exact /= 160 * 160
    assert np.abs(got / exact - 1).max() < 1e-6
    small = x[:, :, :8, :8]
    got = cm.run({"x": small})["y"] if symbolic else None
    if got is not None:
        want = small.sum(axis=(2, 3), keepdims=True, dtype=np.float64) / (1 if op == "ReduceSum" else 64)
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("opset", [11, 17])  # Unsqueeze's axes: an attribute, an input
@pytest.mark.parametrize("attrs", [dict(strides=[160]), dict(pads=[3, 1], dilations=[2]), dict(auto_pad="SAME_UPPER")])
def test_a_1d_convolution_runs_as_2d_over_a_height_of_one(attrs, opset):
    """Conv1d (an audio front-end's STFT is one: 512 taps, stride 160) lowers to Ember's 2-D
    kernels between an Unsqueeze and a Squeeze: TVM's own 1-D convolution ran 30x slower."""
    rng = np.random.default_rng(0)
    w = init("w", rng.standard_normal((16, 2, 9)).astype(np.float32) * 0.3)
    b = init("b", rng.standard_normal(16).astype(np.float32))
    m = model([h.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], [tensor("x", ["n", 2, "t"])],
              [tensor("y", None)], [w, b], opset=opset)
    ir_model = onnx_io.import_model(m)
    conv = ir_model.graph.nodes[0]
    lower._conv1d_as_2d(conv, opset)
    assert [n.op_type for n in ir_model.graph.nodes] == ["Unsqueeze", "Conv", "Squeeze"]
    cm = ember.compile(m)
    for t in (400, 37):
        x = rng.standard_normal((2, 2, t)).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_every_function_of_a_symbolic_model_is_noalias():
    """A model with symbolic dims gets a shape function (VMShapeLower) that TVM makes without
    `tir.noalias`; in ResNet-50 its presence left TVM's LLVM codegen with one alias class for
    every buffer of every kernel (see test_wheel_models for the code it made). The pipeline
    marks it like every kernel."""
    from ember.compiler.driver import lower_model

    m = _conv_model(8, 8, 8, 3, pad=1, act="relu")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    m.graph.node.append(h.make_node("Flatten", [m.graph.output[0].name], ["f"]))
    del m.graph.output[:]
    m.graph.output.append(tensor("f", ["n", 512]))
    tgt = targets.parse("host")
    _, mod, _ = lower_model(m, tgt, None)
    with tvm.transform.PassContext(opt_level=3), tgt.tvm_target():
        mod = pipeline.relax_pipeline(tgt)(mod)
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert "shape_func" in funcs
    assert all(f.attrs.get("tirx.noalias") for f in funcs.values()), [n for n, f in funcs.items()
                                                                       if not f.attrs.get("tirx.noalias")]



def _accumulators(func) -> list[str]:
    """Shapes of the register tiles of a scheduled GEMM after TVM's buffer compaction, as
    TVMScript prints them: static ones become registers; a symbolic one is memory."""
    import re

    from tvm import s_tir

    sch = schedule.default_schedule(func)
    mod = tvm.IRModule({"main": sch.mod["main"]})
    for p in (s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
              s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation()):
        mod = p(mod)
    found = re.findall(r'(\w+) = T.(?:sblock_)?alloc_buffer\(\(((?:[^()]|\([^()]*\))*)\)', mod.script())
    found = [shape for name, shape in found if name.startswith(kernels.GEMM)]
    return [re.sub(r"T\.int64\((\d+)\)", r"\1", shape) for shape in found]


@pytest.mark.parametrize("kind", ["matmul", "conv", "batch_matmul"])
def test_run_time_rows_keep_the_accumulators_in_registers(kind):
    """A GEMM over a run-time row count (a sequence, a symbolic width) computes rows padded to
    its tile: a tile predicated on the count left TVM unable to bound its accumulator region, so
    they lived in an (M x NR) buffer in memory, 4-8x slower than the static kernel."""
    from tvm import te, tirx

    m = tirx.Var("m", "int64")
    if kind == "matmul":
        a, wp = te.placeholder((m, 64), name="a"), te.placeholder((2, 64, 32), name="wp")
        out = kernels.matmul_packed(a, wp, 4, 50)
        args = [a, wp, out]
    elif kind == "conv":
        x, wp = te.placeholder((1, 8, m, 16), name="x"), te.placeholder((1, 144, 32), name="wp")
        out = kernels.conv2d_nhwc(x, wp, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4, 32)
        args = [x, wp, out]
    else:
        a, b = te.placeholder((3, m, 24), name="a"), te.placeholder((3, 24, 32), name="b")
        out = kernels.batch_matmul(a, b, 4, 32)
        args = [a, b, out]
    accumulators = _accumulators(te.create_prim_func(args))
    assert accumulators and all(s.endswith("4, 32") for s in accumulators), accumulators
    assert all(part.strip().isdigit() for s in accumulators for part in s.split(",")), accumulators


def test_a_row_count_tvm_cannot_sign_keeps_the_accumulators_in_registers():
    """Rows n * ((t - 5) // 8 + 1) (batch x a pooled sequence): TVM could not tell the count is not
    negative, indexed the accumulators with floor-division fix-ups, and LLVM loaded and stored them
    at every step of the reduction (2.1x the static kernel's time). The reduction loop of the GEMM
    must hold no vector load or store but the weights'."""
    import re

    rng = np.random.default_rng(8)
    nodes = [h.make_node("AveragePool", ["x"], ["p"], kernel_shape=[5], strides=[8]),
             h.make_node("Transpose", ["p"], ["r"], perm=[0, 2, 1]),
             h.make_node("MatMul", ["r", "w"], ["g"]), h.make_node("Add", ["g", "b"], ["y"])]
    m = model(nodes, [tensor("x", ["n", 16, "t"])], [tensor("y", None)],
              [init("w", rng.standard_normal((16, 96)).astype(np.float32)),
               init("b", rng.standard_normal(96).astype(np.float32))])
    tgt = targets.parse("host")
    from ember.compiler.driver import lower_model

    _, mod, _ = lower_model(m, tgt, None)
    ex = lower.build(mod, tgt)
    ir = next(s for s in (i.inspect_source("ll") for i in ex.mod.imports) if "matmul" in s)
    reduction = [b.split("\n  br ")[0] for b in re.split(r"\nfor_body_k\w*:", ir)[1:]]
    assert reduction
    for body in reduction:  # the weights: one vector load per step
        assert len(re.findall(r"(load|store) <\d+ x float>", body)) <= 2, body[:1500]
    x = rng.standard_normal((2, 16, 45)).astype(np.float32)
    np.testing.assert_allclose(ember.compile(m).run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_convolution_over_run_time_extents_indexes_its_tile_statically():
    """A convolution after a strided one reads dims ((h - 1) >> 1) + 1: the parallel loop fused
    over batch x rows x column tiles had quotients TVM could not sign, buffer compaction indexed
    the register tile by min(q, 0) + ..., and LLVM took seconds per kernel (HF RegNet's symbolic
    build: 75 s, 11 s with the fix). The GEMM runs over `kernels.counted` extents: the tile's
    indices after compaction are its own loops."""
    import re

    from tvm import s_tir, tirx

    rng = np.random.default_rng(9)
    nodes = [h.make_node("Conv", ["x", "k1"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["a", "k2", "b2"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["y"])]
    m = model(nodes, [tensor("x", ["n", 8, "h", "w"])], [tensor("y", None)],
              [init("k1", rng.standard_normal((16, 8, 3, 3)).astype(np.float32)),
               init("k2", rng.standard_normal((16, 16, 3, 3)).astype(np.float32)),
               init("b2", rng.standard_normal(16).astype(np.float32))])
    convs = [(gv.name_hint, f) for gv, f in legalized(m).functions_items() if "conv2d" in gv.name_hint]
    assert len(convs) == 2
    for name, func in convs:
        mod = tvm.IRModule({"main": schedule.default_schedule(func).mod["main"]})
        for p in (s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                  s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
                  tirx.transform.StmtSimplify()):
            mod = p(mod)
        indices = re.findall(r"_(?:global|local)\[([^\]]*)\]", mod.script())
        assert indices and not [i for i in indices if "//" in i or "min" in i], (name, indices)
    cm = ember.compile(m)
    for shape in ((1, 8, 23, 37), (2, 8, 16, 9)):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_register_tiles_live_on_the_stack_not_in_the_workspace_pool():
    """A register tile in TVM's "local" scope was requested from the runtime's workspace pool,
    a call to allocate and one to free per tile (a 1x1 convolution over 8 channels runs 64 FMAs
    per tile); in `schedule.TILE_SCOPE` it is an alloca LLVM keeps in registers. No kernel may ask
    the pool for a block under 1 KB: static and run-time shapes, a convolution and a GEMM."""
    import re

    from ember.compiler.driver import lower_model

    rng = np.random.default_rng(10)
    nodes = [h.make_node("Conv", ["x", "k"], ["c"]), h.make_node("Relu", ["c"], ["y"]),
             h.make_node("MatMul", ["s", "w"], ["z"])]
    tgt = targets.parse("host")
    for dims, rows in (([1, 8, 12, 20], 6), (["n", 8, "h", "w"], "t")):
        m = model(nodes, [tensor("x", dims), tensor("s", [rows, 24])], [tensor("y", None), tensor("z", None)],
                  [init("k", rng.standard_normal((48, 8, 1, 1)).astype(np.float32)),
                   init("w", rng.standard_normal((24, 40)).astype(np.float32))])
        ex = lower.build(lower_model(m, tgt, None)[1], tgt)
        ir = "\n".join(i.inspect_source("ll") for i in ex.mod.imports)
        assert "fmuladd" in ir
        sizes = [int(n) for n in re.findall(r"call ptr %\w+\(i32 1, i32 %\w+, i64 (\d+), i32 2, i32 32\)", ir)]
        assert all(size >= 1024 for size in sizes), (dims, sizes)


def test_run_time_rows_with_a_static_factor_take_a_tile_dividing_it():
    """Rows batch x 50 (whisper's tokens): TVM cannot show that the padded form of the count covers
    the rows, and the GEMM kept a predicated tile in memory (2.5x its specialized time). A tile
    dividing the static factor (5 rows) needs no padding: static register tile, no crop."""
    from tvm import s_tir

    rng = np.random.default_rng(11)
    nodes = [h.make_node("MatMul", ["x", "w"], ["xw"]), h.make_node("Add", ["xw", "b"], ["y"])]
    m = model(nodes, [tensor("x", ["n", 50, 64])], [tensor("y", None)],
              [init("w", rng.standard_normal((64, 64)).astype(np.float32)),
               init("b", rng.standard_normal(64).astype(np.float32))])
    funcs = [f for gv, f in legalized(m).functions_items() if "ember_matmul" in gv.name_hint]
    assert len(funcs) == 1
    sch = schedule.default_schedule(funcs[0])
    mod = tvm.IRModule({"main": sch.mod["main"]})
    for p in (s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
              s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation()):
        mod = p(mod)
    text = mod.script()
    assert kernels.CROP not in text and "T.where" not in text, text
    assert _accumulators(funcs[0]) == ["5, 32"], _accumulators(funcs[0])
    cm = ember.compile(m)
    for n in (1, 3):
        x = rng.standard_normal((n, 50, 64)).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], ort_run(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_run_time_rows_match_onnxruntime_at_every_remainder():
    """The padded rows re-read the last row and are cropped: every count modulo the tile,
    through a fused bias + relu epilogue, for a GEMM over batch x sequence rows, a convolution
    over a symbolic width and a batched matmul of two run-time operands."""
    rng = np.random.default_rng(7)
    nodes = [h.make_node("MatMul", ["x", "w"], ["xw"]), h.make_node("Add", ["xw", "b"], ["xb"]),
             h.make_node("Relu", ["xb"], ["y"]),
             h.make_node("Conv", ["img", "k", "kb"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["z"]),
             h.make_node("MatMul", ["p", "q"], ["pq"])]
    m = model(nodes, [tensor("x", ["n", "s", 37]), tensor("img", [1, 5, 6, "w"]),
                      tensor("p", [2, "s", 24]), tensor("q", [2, 24, 32])],
              [tensor("y", None), tensor("z", None), tensor("pq", None)],
              [init("w", rng.standard_normal((37, 48)).astype(np.float32)),
               init("b", rng.standard_normal(48).astype(np.float32)),
               init("k", rng.standard_normal((32, 5, 3, 3)).astype(np.float32)),
               init("kb", rng.standard_normal(32).astype(np.float32))])
    cm = ember.compile(m)
    for rows in (1, 2, 3, 4, 5, 9):
        feeds = {"x": rng.standard_normal((1, rows, 37)).astype(np.float32),
                 "img": rng.standard_normal((1, 5, 6, rows + 1)).astype(np.float32),
                 "p": rng.standard_normal((2, rows, 24)).astype(np.float32),
                 "q": rng.standard_normal((2, 24, 32)).astype(np.float32)}
        got = cm.run(feeds)
        for name, want in zip(("y", "z", "pq"), ort_run(m, feeds)):
            assert got[name].shape == want.shape
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)


def test_attention_scores_over_run_time_columns_take_the_gemm_kernel():
    """Q x K^T over a sequence of any length: both the rows and the columns are run-time counts.
    B is padded to whole column tiles and the result cropped, through a fused scale; it matched
    TVM's generic kernel before (2x onnxruntime's time at 799 tokens), and matches at every
    remainder of the tile now, with a transposed K as exporters write it."""
    rng = np.random.default_rng(8)
    nodes = [h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), h.make_node("MatMul", ["q", "kt"], ["qk"]),
             h.make_node("Mul", ["qk", "scale"], ["y"])]
    m = model(nodes, [tensor("q", ["b", 4, "s", 16]), tensor("k", ["b", 4, "s", 16])], [tensor("y", None)],
              [init("scale", np.array(0.25, np.float32))])
    names = _functions(m)
    assert any("ember_batch_matmul" in f for f in names) and not any(f.startswith("matmul") for f in names), names
    cm = ember.compile(m)
    outs = []
    for b, s in ((1, 1), (2, 15), (1, 16), (1, 17), (2, 40)):
        feeds = {"q": rng.standard_normal((b, 4, s, 16)).astype(np.float32),
                 "k": rng.standard_normal((b, 4, s, 16)).astype(np.float32)}
        got, want = cm.run(feeds)["y"], ort_run(m, feeds)[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        outs.append(got)
    assert not np.allclose(outs[2][0, :, :15, :15], outs[1][0])


def test_run_time_rows_are_padded_only_where_the_schedule_takes_them():
    """TVM cannot show that rows padded from (w // 4) * 2 (a UNet decoder's width) cover the
    crop's, and refuses the whole kernel's schedule (TVM's generic kernel: 20x slower); such a
    count keeps the predicated tile. (w - 1) // 2 + 1 (a strided convolution's) is padded."""
    from tvm import tirx

    w = tirx.Var("w", "int64")
    assert schedule.crop_schedules((w - 1) // 2 + 1, 4) and schedule.crop_schedules(w, 8)
    assert not schedule.crop_schedules(w // 4 * 2, 4)
    rows = w // 4 * 2
    assert kernels.run_time_rows(rows, 4, pad=False)[0] is rows
