"""RNN, GRU and LSTM, unrolled into their equations: equal to onnxruntime
for directions, partial sequence lengths, initial states, peepholes, layouts,
linear_before_reset, activations and clip."""

import numpy as np
import pytest
from helpers import model, ort_run, tensor
from onnx import TensorProto as T
from onnx import helper as h

import ember

SEQ, BATCH, INPUT, HIDDEN = 4, 3, 5, 6


def recurrent(kind, direction="forward", layout=0, lens=False, extra=(), **attrs):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    dirs = 2 if direction == "bidirectional" else 1
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


def feeds_for(m):
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in m.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = (np.array([4, 2, 1], np.int32) if vi.name == "lens"
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
