"""RNN, GRU and LSTM as ONNX function bodies, unrolled over their (known)
sequence length, so functions.py expands them like any operator ONNX defines
by a body. TVM has no recurrent operators.

The input projection of every step is one MatMul over the whole sequence;
each step then adds its recurrent MatMul and applies the gates as ONNX's
equations say (clip, activations with their alpha/beta, peepholes,
input_forget, linear_before_reset). With sequence_lens, steps past a
sequence's length keep its state and output zeros; reverse directions run
forward over ReverseSequence'd inputs. Layout 1 (batch first) is transposed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper as h

from ember.compiler import ir
from ember.compiler.ir.body_builder import Body

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
FORMALS = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
MAX_STEPS = 512


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    """The unrolled body of an RNN/GRU/LSTM node, or None where it cannot be built
    (unknown sequence length or types, an unknown activation, too long a sequence)."""
    kind = node.op_type
    ins = list(node.inputs) + [None] * (len(FORMALS) - len(node.inputs))
    x, w = ins[0], ins[1]
    layout = node.attrs.get("layout", 0)
    if x is None or w is None or not x.dtype or x.shape is None or len(x.shape) != 3:
        return None
    seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    if not isinstance(seq, int) or seq > MAX_STEPS:
        return None
    hidden = node.attrs.get("hidden_size")
    if hidden is None and w.shape is not None and isinstance(w.shape[1], int):
        hidden = w.shape[1] // GATES[kind]
    if hidden is None:
        return None
    direction = _text(node.attrs.get("direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    acts = [_text(a) for a in node.attrs.get("activations", [])] or DEFAULTS[kind] * dirs
    alphas, betas = list(node.attrs.get("activation_alpha", [])), list(node.attrs.get("activation_beta", []))
    b = Body(opset, onnx.helper.tensor_dtype_to_np_dtype(x.dtype))
    try:
        outs = _build(b, kind, ins, seq, batch, hidden, direction, dirs, acts, alphas, betas, node.attrs, layout)
    except ValueError:  # an activation ONNX does not define
        return None
    fn = h.make_function("", kind, FORMALS[: len(node.inputs)], ["Y", "Y_h", "Y_c"][: len(node.outputs)], b.nodes,
                         [h.make_opsetid("", opset)])
    for formal, actual in zip(["Y", "Y_h", "Y_c"], outs):
        fn.node.append(h.make_node("Identity", [actual], [formal]))
    return fn


def _build(b: Body, kind, ins, seq, batch, hidden, direction, dirs, acts, alphas, betas, attrs, layout) -> list[str]:
    present = {name: name for name, v in zip(FORMALS, ins) if v is not None}
    n_act = len(DEFAULTS[kind])
    clip = attrs.get("clip")
    X = present["X"] if not layout else b.op("Transpose", "X", perm=[1, 0, 2])  # [seq, batch, input]
    lens = present.get("sequence_lens")

    def act(k: int, d: int, value: str) -> str:
        i = d * n_act + k
        if clip is not None:
            value = b.op("Max", b.op("Min", value, b.const(clip)), b.const(-clip))
        return b.activation(acts[i], value, alphas[i] if i < len(alphas) else None,
                            betas[i] if i < len(betas) else None)

    def keep(mask, new, old):
        return new if mask is None else b.op("Where", mask, new, old)

    ys, finals_h, finals_c = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        W = b.index("W", d)
        RT = b.op("Transpose", b.index("R", d))  # [H, G*H]
        g = GATES[kind]
        xs = X
        if reverse and lens:
            xs = b.op("ReverseSequence", X, b.op("Cast", lens, to=onnx.TensorProto.INT64), batch_axis=1, time_axis=0)
        proj = b.op("MatMul", xs, b.op("Transpose", W))  # [seq, batch, G*H]
        bias_w = bias_r = None
        if "B" in present:
            bias = b.index("B", d)
            bias_w, bias_r = b.cols(bias, 0, g * hidden), b.cols(bias, g * hidden, 2 * g * hidden)
            proj = b.op("Add", proj, bias_w)
            if kind != "GRU":  # GRU's recurrent bias of the h gate sits inside the reset gate
                proj = b.op("Add", proj, bias_r)
        zeros = (b.const(np.zeros((batch, hidden))) if isinstance(batch, int)
                 else b.op("Mul", b.cols(b.index(proj, 0), 0, hidden), b.const(0.0)))  # [batch, H]
        H = b.index("initial_h", d) if "initial_h" in present else zeros
        C = (b.index("initial_c", d) if "initial_c" in present else zeros) if kind == "LSTM" else None
        peep = [b.cols(b.index("P", d), k * hidden, (k + 1) * hidden) for k in range(3)] if "P" in present else None
        steps = []
        order = range(seq) if (lens or not reverse) else range(seq - 1, -1, -1)
        for t in order:
            xt = b.index(proj, t)
            mask = b.unsqueeze(b.op("Less", b.const(t, np.int64), b.op("Cast", lens, to=onnx.TensorProto.INT64)),
                               1) if lens else None
            rec = b.op("MatMul", H, RT)
            if kind == "RNN":
                new_h = act(0, d, b.op("Add", xt, rec))
            elif kind == "GRU":
                new_h = _gru_step(b, act, d, xt, rec, H, RT, bias_r, hidden, attrs.get("linear_before_reset", 0))
            else:
                new_h, new_c = _lstm_step(b, act, d, b.op("Add", xt, rec), C, peep, hidden,
                                          attrs.get("input_forget", 0))
                C = keep(mask, new_c, C)
            steps.append((t, keep(mask, new_h, zeros)))
            H = keep(mask, new_h, H)
        steps.sort()
        y = b.op("Concat", *[b.unsqueeze(s, 0) for _, s in steps], axis=0)  # [seq, batch, H]
        if reverse and lens:
            y = b.op("ReverseSequence", y, b.op("Cast", lens, to=onnx.TensorProto.INT64), batch_axis=1, time_axis=0)
        ys.append(b.unsqueeze(y, 1))
        finals_h.append(b.unsqueeze(H, 0))
        if C is not None:
            finals_c.append(b.unsqueeze(C, 0))
    Y = b.op("Concat", *ys, axis=1)  # [seq, dirs, batch, H]
    Yh = b.op("Concat", *finals_h, axis=0)  # [dirs, batch, H]
    Yc = b.op("Concat", *finals_c, axis=0) if finals_c else None
    if layout:
        Y = b.op("Transpose", Y, perm=[2, 0, 1, 3])
        Yh = b.op("Transpose", Yh, perm=[1, 0, 2])
        Yc = b.op("Transpose", Yc, perm=[1, 0, 2]) if Yc else None
    return [Y, Yh] + ([Yc] if Yc else [])


def _gru_step(b: Body, act, d, xt, rec, H, RT, bias_r, hidden, linear_before_reset) -> str:
    def gate(v, k):
        return b.cols(v, k * hidden, (k + 1) * hidden)

    rz, rr, rh = (gate(rec, k) for k in range(3))
    if bias_r is not None:
        rz, rr = b.op("Add", rz, gate(bias_r, 0)), b.op("Add", rr, gate(bias_r, 1))
    z = act(0, d, b.op("Add", gate(xt, 0), rz))
    r = act(0, d, b.op("Add", gate(xt, 1), rr))
    if linear_before_reset:
        rh = rh if bias_r is None else b.op("Add", rh, gate(bias_r, 2))
        cand = b.op("Add", gate(xt, 2), b.op("Mul", r, rh))
    else:
        rh = b.op("MatMul", b.op("Mul", r, H), b.cols(RT, 2 * hidden, 3 * hidden))
        cand = b.op("Add", gate(xt, 2), rh if bias_r is None else b.op("Add", rh, gate(bias_r, 2)))
    hh = act(1, d, cand)
    one_minus_z = b.op("Sub", b.const(1.0), z)
    return b.op("Add", b.op("Mul", one_minus_z, hh), b.op("Mul", z, H))


def _lstm_step(b: Body, act, d, pre, C, peep, hidden, input_forget) -> tuple[str, str]:
    def gate(k):
        return b.cols(pre, k * hidden, (k + 1) * hidden)

    pi, po, pf, pc = (gate(k) for k in range(4))
    if peep:
        pi, pf = b.op("Add", pi, b.op("Mul", peep[0], C)), b.op("Add", pf, b.op("Mul", peep[2], C))
    i = act(0, d, pi)
    f = b.op("Sub", b.const(1.0), i) if input_forget else act(0, d, pf)
    c = act(1, d, pc)
    new_c = b.op("Add", b.op("Mul", f, C), b.op("Mul", i, c))
    if peep:
        po = b.op("Add", po, b.op("Mul", peep[1], new_c))
    o = act(0, d, po)
    return b.op("Mul", o, act(2, d, new_c)), new_c
