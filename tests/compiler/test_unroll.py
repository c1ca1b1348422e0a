"""Scan over a sequence of known length runs unrolled: equal to onnxruntime
(ONNX's reference knows only forward scans on axis 0) for directions, axes and several states; a Scan of unknown length
is refused clearly."""

import numpy as np
import onnx
import pytest
from ember.compiler.ir import onnx_io
from ember.compiler.input import unroll
from ember.errors import EmberError
from helpers import model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember


def scan_model(x_shape, in_axis=0, in_dir=0, out_axis=0, out_dir=0, opset=16):
    body = h.make_graph(
        [h.make_node("Add", ["s", "x_t"], ["s_next"]), h.make_node("Mul", ["s", "p_t"], ["prod_next"]),
         h.make_node("Mul", ["s_next", "x_t"], ["y_t"])],
        "body", [tensor("s", [2]), tensor("p", [2]), tensor("x_t", [2]), tensor("p_t", [2])],
        [tensor("s_next", [2]), tensor("prod_next", [2]), tensor("y_t", [2])])
    return model([h.make_node("Scan", ["s0", "p0", "x", "xp"], ["s", "p", "y"], body=body, num_scan_inputs=2,
                              scan_input_axes=[in_axis, in_axis], scan_input_directions=[in_dir, 0],
                              scan_output_axes=[out_axis], scan_output_directions=[out_dir])],
                 [tensor("s0", [2]), tensor("p0", [2]), tensor("x", x_shape), tensor("xp", x_shape)],
                 [tensor("s", [2]), tensor("p", [2]), tensor("y", None)], opset=opset)


@pytest.mark.parametrize("in_axis, in_dir, out_axis, out_dir", [(0, 0, 0, 0), (0, 1, 0, 1), (1, 0, 1, 0),
                                                                (1, 1, -1, 0)])
def test_scan_unrolled_matches_reference(in_axis, in_dir, out_axis, out_dir):
    shape = [4, 2] if in_axis == 0 else [2, 4]
    m = scan_model(shape, in_axis, in_dir, out_axis, out_dir)
    assert "Scan" not in {n.op_type for n in unroll.unroll(onnx_io.import_model(m)).graph.all_nodes()}
    rng = np.random.default_rng(0)
    feeds = {"s0": np.ones(2, np.float32), "p0": np.full(2, 2, np.float32),
             "x": rng.standard_normal(shape).astype(np.float32), "xp": rng.standard_normal(shape).astype(np.float32)}
    got = ember.compile(m).run(feeds)
    for name, want in zip(("s", "p", "y"), ort_run(m, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-6)


def test_scan_of_unknown_length_is_refused():
    m = scan_model(["n", 2])
    assert unroll.unroll(onnx_io.import_model(m)).graph.nodes[0].op_type == "Scan"
    with pytest.raises(EmberError, match="unsupported operator Scan"):
        ember.compile(m)


def loop_model(trip_count_input: bool, cond_from_body: bool = False):
    body_nodes = [h.make_node("Cast", ["i"], ["i_float"], to=1), h.make_node("Add", ["y_in", "i_float"], ["y_out"]),
                  h.make_node("Identity", ["y_out"], ["scan_out"])]
    if cond_from_body:  # stops early when y grows past 3: not unrollable
        body_nodes.append(h.make_node("Less", ["y_out", "three"], ["cond_out"]))
    else:
        body_nodes.append(h.make_node("Identity", ["cond_in"], ["cond_out"]))
    body = h.make_graph(body_nodes, "body", [tensor("i", [], T.INT64), tensor("cond_in", [], T.BOOL), tensor("y_in", [1])],
                        [tensor("cond_out", [], T.BOOL), tensor("y_out", [1]), tensor("scan_out", [1])],
                        [onnx.numpy_helper.from_array(np.array([3], np.float32), "three")])
    inits = [] if trip_count_input else [onnx.numpy_helper.from_array(np.array(4, np.int64), "m")]
    ins = [tensor("y", [1])] + ([tensor("m", [], T.INT64)] if trip_count_input else [])
    return model([h.make_node("Loop", ["m", "", "y"], ["y_final", "ys"], body=body)], ins,
                 [tensor("y_final", [1]), tensor("ys", None)], inits, opset=16)


def test_loop_with_a_constant_trip_count_unrolled():
    m = loop_model(False)
    assert "Loop" not in {n.op_type for n in unroll.unroll(onnx_io.import_model(m)).graph.all_nodes()}
    y = np.array([0.5], np.float32)
    got, want = ember.compile(m).run({"y": y}), ort_run(m, {"y": y})
    np.testing.assert_allclose(got["y_final"], want[0])
    np.testing.assert_allclose(got["ys"], want[1])


def test_loop_trip_count_input_specialised_and_early_exit_refused():
    import ember.backend as eb

    m = loop_model(True)
    y = np.array([1.0], np.float32)
    for trips in (2, 5):
        out = eb.prepare(m).run({"y": y, "m": np.array(trips)})
        np.testing.assert_allclose(out[1], ort_run(m, {"y": y, "m": np.array(trips)})[1])
    with pytest.raises(EmberError, match="unsupported operator Loop"):
        ember.compile(loop_model(False, cond_from_body=True))
