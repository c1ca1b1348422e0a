"""RNN, GRU and LSTM: equal to onnxruntime for directions, partial sequence
lengths, initial states, peepholes, layouts, linear_before_reset, activations
and clip; the recurrence kernel (backend/tvm/recurrence.py) runs any
sequence length and batch with one artifact; what it lacks is unrolled where
the length is static and refused where it is not."""

import numpy as np
import pytest
from ember.errors import UnsupportedError
from helpers import legalized, model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember

SEQ, BATCH, INPUT, HIDDEN = 4, 3, 5, 6


def recurrent(kind, direction="forward", layout=0, lens=False, extra=(), seq=SEQ, batch=BATCH, hidden=HIDDEN,
              **attrs):
    HIDDEN = hidden  # noqa: N806
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    dirs = 2 if direction == "bidirectional" else 1
    SEQ, BATCH = seq, batch  # noqa: N806  (symbolic names where the test asks)
    x_shape = [BATCH, SEQ, INPUT] if layout else [SEQ, BATCH, INPUT]
    ins = [tensor("X", x_shape), tensor("W", [dirs, gates * HIDDEN, INPUT]),
           tensor("R", [dirs, gates * HIDDEN, HIDDEN]), tensor("B", [dirs, 2 * gates * HIDDEN])]
    names = ["X", "W", "R", "B", "lens" if lens else ""]
    if lens:
        ins.append(tensor("lens", [BATCH], T.INT32))
    state = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    for name in extra:
        names.append(name)
        ins.append(tensor(name, [dirs, 3 * HIDDEN] if name == "P" else state))
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    y_shape = [BATCH, SEQ, dirs, HIDDEN] if layout else [SEQ, dirs, BATCH, HIDDEN]
    node = h.make_node(kind, names, outs, hidden_size=HIDDEN, direction=direction, layout=layout, **attrs)
    return model([node], ins, [tensor("Y", y_shape)] + [tensor(o, state) for o in outs[1:]], opset=22)


def feeds_for(m, seq=SEQ, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in m.graph.input:
        shape = [{"seq": seq, "batch": batch}.get(d.dim_param, d.dim_value) for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = (np.array([seq, max(seq // 2, 1), 1][:batch], np.int32) if vi.name == "lens"
                          else (rng.standard_normal(shape) * 0.5).astype(np.float32))
    return feeds


CASES = {
    "lstm-bidir-lens-peepholes": dict(kind="LSTM", direction="bidirectional", lens=True,
                                      extra=("initial_h", "initial_c", "P")),
    "lstm-reverse-batchfirst-coupled": dict(kind="LSTM", direction="reverse", layout=1, input_forget=1),
    "gru-reverse-lens-lbr": dict(kind="GRU", direction="reverse", lens=True, linear_before_reset=1),
    "gru-bidir": dict(kind="GRU", direction="bidirectional", extra=("initial_h",)),
    "rnn-relu-clip-batchfirst": dict(kind="RNN", layout=1, activations=["Relu"], clip=0.8),
    "rnn-bidir-lens-leakyrelu": dict(kind="RNN", direction="bidirectional", lens=True,
                                     activations=["LeakyRelu", "Tanh"], activation_alpha=[0.2]),
}


@pytest.mark.parametrize("case", CASES)
def test_recurrent_matches_onnxruntime(case):
    """Batch-first models (layout 1, which onnxruntime refuses) against the
    sequence-first model in onnxruntime, inputs and outputs transposed."""
    args = dict(CASES[case])
    m = recurrent(**args)
    feeds = feeds_for(m)
    got = ember.compile(m).run(feeds)
    if args.pop("layout", 0):
        ref = recurrent(**args)
        ref_feeds = {k: np.swapaxes(v, 0, 1) if k in ("X", "initial_h", "initial_c") else v for k, v in feeds.items()}
        want = ort_run(ref, ref_feeds)
        want = [np.transpose(want[0], (2, 0, 1, 3))] + [np.swapaxes(w, 0, 1) for w in want[1:]]
    else:
        want = ort_run(m, feeds)
    for name, expected in zip([o.name for o in m.graph.output], want):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)


KERNEL_CASES = {
    "lstm": dict(kind="LSTM", extra=("initial_h", "initial_c")),
    "lstm-bidir-lens": dict(kind="LSTM", direction="bidirectional", lens=True),
    "gru-reverse-lens": dict(kind="GRU", direction="reverse", lens=True),
    "gru-lbr-bidir": dict(kind="GRU", direction="bidirectional", linear_before_reset=1, extra=("initial_h",)),
    "rnn-relu": dict(kind="RNN", activations=["Relu"]),
    # a hidden size of whole vectors: the GEMV over register blocks, the cell in vectors
    "lstm-bidir-lens-h16": dict(kind="LSTM", direction="bidirectional", lens=True, hidden=16),
    "gru-lens-h16": dict(kind="GRU", lens=True, hidden=16, extra=("initial_h",)),
    "gru-lbr-bidir-h16": dict(kind="GRU", direction="bidirectional", linear_before_reset=1, hidden=16),
    "rnn-sigmoid-h32": dict(kind="RNN", hidden=32, activations=["Sigmoid"], extra=("initial_h",)),  # tanh: chaotic
}


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_one_artifact_runs_any_sequence_length(case):
    """Compiled once with a symbolic sequence length and batch, the recurrence kernel matches
    onnxruntime at 1, 7 and 300 steps (within 1e-5 of the output's scale: float32 sums in
    another order, over up to 300 steps); two inputs give different outputs."""
    m = recurrent(**KERNEL_CASES[case], seq="seq", batch="batch")
    cm = ember.compile(m)
    assert cm.metadata["inputs"][0]["shape"] == ["seq", "batch", INPUT]
    if KERNEL_CASES[case].get("hidden", HIDDEN) % 16 == 0:
        kernel = next(f.script() for gv, f in legalized(m).functions_items()
                      if gv.name_hint.startswith(("ember_lstm", "ember_rnn", "ember_gru")))
        assert "T.vectorized" in kernel
    for seq, batch in [(1, 1), (7, 3), (300, 2)]:
        feeds = feeds_for(m, seq, batch)
        got, want = cm.run(feeds), ort_run(m, feeds)
        other = ort_run(m, feeds_for(m, seq, batch, seed=1))
        for name, expected, moved in zip([o.name for o in m.graph.output], want, other):
            assert got[name].shape == expected.shape, (name, seq, batch)
            scale = np.abs(expected).max()
            assert np.abs(got[name] - expected).max() <= 1e-5 * scale, (name, seq, batch)
            assert np.abs(moved - expected).max() > 1e-3 * scale


def test_the_kernel_runs_the_recurrence_without_unrolling():
    from ember.compiler.driver import lower_model
    from ember.targets import parse

    m, _, _ = lower_model(recurrent("LSTM", seq="seq"), parse("host"))
    assert [n.op_type for n in m.graph.nodes] == ["LSTM"]


def test_what_the_kernel_lacks_is_refused_for_a_run_time_length():
    """Clip (like peepholes, input_forget, other activations) has no kernel: unrolled for a
    static length (CASES above), refused with the reason for a symbolic one."""
    with pytest.raises(UnsupportedError, match=r"unsupported use of RNN .*the clip attribute has no kernel"):
        ember.compile(recurrent("RNN", activations=["Relu"], clip=0.8, seq="seq"))


def _has_vnni(hidden: int) -> bool:
    from ember import targets
    from ember.compiler.backend.tvm import recurrence
    from ember.compiler.backend.tvm.intrinsics import available

    return recurrence.byte_dot_for(available(targets.parse("host")), "LSTM", hidden) is not None


def quantized_lstm(per_column=False, w_zero_point=0, direction="bidirectional", seed=0, hidden=HIDDEN):
    """com.microsoft DynamicQuantizeLSTM as onnxruntime's quantize_dynamic writes it: int8 W
    [dirs, input, 4H] and R [dirs, H, 4H], per-direction (or per-column) scales, zero points."""
    HIDDEN = hidden  # noqa: N806
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = 4 * HIDDEN
    scale_shape = [dirs, g] if per_column else [dirs]
    inits = [h.make_tensor("W", T.INT8, [dirs, INPUT, g], rng.integers(-127, 128, dirs * INPUT * g).tolist()),
             h.make_tensor("R", T.INT8, [dirs, HIDDEN, g], rng.integers(-127, 128, dirs * HIDDEN * g).tolist()),
             h.make_tensor("B", T.FLOAT, [dirs, 2 * g], (rng.standard_normal(dirs * 2 * g) * 0.1).tolist())]
    for name, s in (("W", 0.004), ("R", 0.006)):
        inits.append(h.make_tensor(f"{name}_scale", T.FLOAT, scale_shape,
                                   (s * (1 + rng.random(int(np.prod(scale_shape))))).tolist()))
        inits.append(h.make_tensor(f"{name}_zp", T.INT8, scale_shape,
                                   [w_zero_point if name == "W" else 0] * int(np.prod(scale_shape))))
    node = h.make_node("DynamicQuantizeLSTM", ["X", "W", "R", "B", "", "", "", "", "W_scale", "W_zp", "R_scale",
                                              "R_zp"], ["Y", "Y_h", "Y_c"], domain="com.microsoft",
                       hidden_size=HIDDEN, direction=direction)
    graph = h.make_graph([node], "g", [tensor("X", ["seq", "batch", INPUT])],
                         [tensor("Y", ["seq", dirs, "batch", HIDDEN]), tensor("Y_h", [dirs, "batch", HIDDEN]),
                          tensor("Y_c", [dirs, "batch", HIDDEN])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("per_column,hidden", [(False, HIDDEN), (True, HIDDEN), (False, 16), (True, 32)],
                         ids=["per-direction", "per-column", "per-direction-h16", "per-column-h32"])
def test_the_int8_contrib_lstm_matches_onnxruntime_at_any_length(per_column, hidden):
    """Compiled once, DynamicQuantizeLSTM computes what onnxruntime computes at 1, 7 and 60
    steps: the same uint8 activations and int32 sums, scaled alike, so only the last bit of
    tanh/sigmoid differs (1e-5 of the scale allows a rare rounding of h landing one step
    over). onnxruntime quantizes h over the rows one thread runs: one row per thread here.
    A hidden size in groups of 4 runs its recurrent GEMV on VNNI where the CPU has it: the
    same integers."""
    import onnxruntime as ort

    m = quantized_lstm(per_column, hidden=hidden)
    if _has_vnni(hidden):
        kernels = [f.script() for gv, f in legalized(m).functions_items() if gv.name_hint.startswith("ember_lstm")]
        assert kernels and all("vpdpbusd" in k for k in kernels)
    cm = ember.compile(m)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 4
    sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for seq, batch in [(1, 1), (7, 1), (60, 1), (9, 3)]:
        x = {"X": (np.random.default_rng(seq).standard_normal((seq, batch, INPUT)) * 2).astype(np.float32)}
        got, want = cm.run(x), sess.run(None, x)
        other = sess.run(None, {"X": x["X"] * 0.5})
        for name, expected, moved in zip(["Y", "Y_h", "Y_c"], want, other):
            assert got[name].shape == expected.shape, (name, seq, batch)
            scale = np.abs(expected).max()
            assert np.abs(got[name] - expected).max() <= 1e-5 * scale, (name, seq, batch)
            assert np.abs(moved - expected).max() > 1e-3 * scale


def test_an_int8_contrib_lstm_with_weight_zero_points_is_refused_in_one_line():
    with pytest.raises(UnsupportedError, match=r"com.microsoft::DynamicQuantizeLSTM .*W_zero_point must be "
                                               r"constant zeros") as e:
        ember.compile(quantized_lstm(w_zero_point=3))
    assert "\n" not in str(e.value)
