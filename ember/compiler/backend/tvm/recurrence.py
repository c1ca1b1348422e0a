"""RNN, GRU and LSTM as a loop over time steps inside one kernel, so the
sequence length (and batch) can be run-time values: one artifact serves any
length, as onnxruntime's and oneDNN's recurrent kernels do.

Per direction, the input projection of all steps is one MatMul over the
sequence (X W^T + biases); the kernel then walks the steps of each batch row
(backwards for a reverse direction, over that row's `sequence_lens`), adds the
recurrent GEMV h R^T and applies the gates as ONNX's equations say. Steps past
a row's length output zeros and keep its state.

The kernel covers the default activations (RNN: Tanh, Relu or Sigmoid),
GRU's linear_before_reset either way, both layouts and every direction;
`unsupported(node)` names what it does not (clip, peepholes, input_forget,
other activations, non-float32 types). Those are unrolled where the length is
known at compile time (input/recurrent.py) and refused otherwise.
"""

from __future__ import annotations

from functools import cache

from ember.compiler import ir

OPS = frozenset({"RNN", "GRU", "LSTM"})
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT = {"GRU": ("sigmoid", "tanh"), "LSTM": ("sigmoid", "tanh", "tanh")}
_RNN_ACTS = ("tanh", "relu", "sigmoid")


def _text(v) -> str:
    return (v.decode() if isinstance(v, bytes) else str(v)).lower()


def _activation(node: ir.Node) -> str | None:
    """The RNN's activation, or None where directions differ or one is not the kernel's."""
    acts = [_text(a) for a in node.attrs.get("activations", [])] or ["tanh"]
    return acts[0] if len(set(acts)) == 1 and acts[0] in _RNN_ACTS else None


def unsupported(node: ir.Node) -> str | None:
    """Why the recurrence kernel cannot run `node`, or None."""
    kind = node.op_type
    x = node.inputs[0] if node.inputs else None
    if x is None or x.dtype != 1:  # TensorProto.FLOAT
        return "only float32 recurrences have a kernel"
    if x.shape is None or len(x.shape) != 3:
        return "the input's rank is not known"
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or w.shape is None or not all(isinstance(d, int) for d in w.shape):
        return "the weights' shape is not known"
    if "clip" in node.attrs:
        return "the clip attribute has no kernel"
    if node.attrs.get("activation_alpha") or node.attrs.get("activation_beta"):
        return "activation_alpha/beta have no kernel"
    if kind == "RNN":
        if _activation(node) is None:
            return "this activation has no kernel (Tanh, Relu, Sigmoid do)"
    else:
        acts = [_text(a) for a in node.attrs.get("activations", [])]
        dirs = 2 if _text(node.attrs.get("direction", "forward")) == "bidirectional" else 1
        if acts and acts != list(_DEFAULT[kind]) * dirs:
            return f"activations other than {kind}'s defaults have no kernel"
    if kind == "LSTM" and (node.attrs.get("input_forget", 0) or (len(node.inputs) > 7 and node.inputs[7] is not None)):
        return "peepholes and input_forget have no kernel"
    return None


@cache
def _kernel(kind: str, hidden: int, reverse: bool, has_lens: bool, linear_before_reset: bool, act: str):
    """TIR: the steps of one direction. proj [seq, batch, G*H] holds X W^T + biases
    (GRU: without its recurrent ones, which are rb); rt is R^T [H, G*H]."""
    from tvm.script import tirx as T

    H = hidden
    GH = GATES[kind] * H
    # GRU without linear_before_reset: the h gate's GEMV reads r * h, so the first one stops at 2H
    first = 2 * H if kind == "GRU" and not linear_before_reset else GH

    def sigmoid(v):
        return T.float32(1) / (T.float32(1) + T.exp(-v))

    def activate(v):
        if act == "relu":
            return T.max(v, T.float32(0))
        if act == "sigmoid":
            return sigmoid(v)
        return T.tanh(v)

    @T.prim_func(private=True)
    def recurrence(p_proj: T.handle, rt: T.Buffer((H, GH), "float32"), rb: T.Buffer((GH,), "float32"),
                   p_h0: T.handle, p_c0: T.handle, p_lens: T.handle, p_y: T.handle, p_yh: T.handle,
                   p_yc: T.handle):
        T.func_attr({"tir.noalias": True, "tir.is_scheduled": True})
        seq = T.int64()
        batch = T.int64()
        proj = T.match_buffer(p_proj, (seq, batch, GH), "float32")
        h0 = T.match_buffer(p_h0, (batch, H), "float32")
        c0 = T.match_buffer(p_c0, (batch, H), "float32")
        lens = T.match_buffer(p_lens, (batch,), "int32")
        y = T.match_buffer(p_y, (seq, batch, H), "float32")
        yh = T.match_buffer(p_yh, (batch, H), "float32")
        yc = T.match_buffer(p_yc, (batch, H), "float32")
        gates = T.alloc_buffer((GH,), "float32")
        rh = T.alloc_buffer((H,), "float32")
        for b in range(batch):
            n = T.int64(0)
            if has_lens:
                n = T.max(T.min(T.Cast("int64", lens[b]), seq), T.int64(0))
            else:
                n = seq
            for j in range(H):
                yh[b, j] = h0[b, j]
                yc[b, j] = c0[b, j]
            for t in range(seq):
                if t >= n:
                    for j in range(H):
                        y[t, b, j] = T.float32(0)
            for s in range(n):
                t = T.int64(0)
                if reverse:
                    t = n - 1 - s
                else:
                    t = s
                for g in range(GH):
                    gates[g] = rb[g]
                for k in range(H):
                    for g in range(first):
                        gates[g] = gates[g] + yh[b, k] * rt[k, g]
                if kind == "LSTM":  # ONNX's gate order: i, o, f, c
                    for j in range(H):
                        c = sigmoid(proj[t, b, 2 * H + j] + gates[2 * H + j]) * yc[b, j] + sigmoid(
                            proj[t, b, j] + gates[j]) * T.tanh(proj[t, b, 3 * H + j] + gates[3 * H + j])
                        yc[b, j] = c
                        yh[b, j] = sigmoid(proj[t, b, H + j] + gates[H + j]) * T.tanh(c)
                        y[t, b, j] = yh[b, j]
                if kind == "GRU":  # z, r, h
                    if not linear_before_reset:
                        for j in range(H):
                            rh[j] = sigmoid(proj[t, b, H + j] + gates[H + j]) * yh[b, j]
                        for k in range(H):
                            for j in range(H):
                                gates[2 * H + j] = gates[2 * H + j] + rh[k] * rt[k, 2 * H + j]
                        for j in range(H):
                            z = sigmoid(proj[t, b, j] + gates[j])
                            yh[b, j] = (T.float32(1) - z) * T.tanh(proj[t, b, 2 * H + j] + gates[2 * H + j]) \
                                + z * yh[b, j]
                            y[t, b, j] = yh[b, j]
                    else:
                        for j in range(H):
                            z = sigmoid(proj[t, b, j] + gates[j])
                            r = sigmoid(proj[t, b, H + j] + gates[H + j])
                            yh[b, j] = (T.float32(1) - z) * T.tanh(proj[t, b, 2 * H + j] + r * gates[2 * H + j]) \
                                + z * yh[b, j]
                            y[t, b, j] = yh[b, j]
                if kind == "RNN":
                    for j in range(H):
                        yh[b, j] = activate(proj[t, b, j] + gates[j])
                        y[t, b, j] = yh[b, j]

    return recurrence


def converters() -> dict[str, type]:
    from tvm import relax, tirx
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def converter(kind: str) -> type:
        class Recurrent(OnnxOpConverter):
            @classmethod
            def _impl_v7(cls, bb, inputs, attr, params):
                x, w, r = inputs[0], inputs[1], inputs[2]
                more = list(inputs[3:]) + [None] * (5 - len(inputs[3:]))
                bias, lens, h0, c0 = more[0], more[1], more[2], more[3]
                layout = attr.get("layout", 0)
                direction = _text(attr.get("direction", b"forward"))
                dirs = 2 if direction == "bidirectional" else 1
                w_shape = [int(d) for d in w.ty.shape.values]
                hidden = int(attr.get("hidden_size", w_shape[1] // GATES[kind]))
                gh = GATES[kind] * hidden
                if layout:
                    x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
                    h0 = bb.emit(relax.op.permute_dims(h0, [1, 0, 2])) if h0 is not None else None
                    c0 = bb.emit(relax.op.permute_dims(c0, [1, 0, 2])) if c0 is not None else None
                if x.ty.shape is None:
                    x = bb.match_cast(x, relax.TensorType([tirx.Var("seq", "int64"), tirx.Var("batch", "int64"),
                                                           w_shape[2]], "float32"))
                seq, batch = x.ty.shape.values[0], x.ty.shape.values[1]
                zeros = bb.emit(relax.op.zeros(relax.ShapeExpr([batch, hidden]), "float32"))
                lens = bb.emit(relax.op.astype(lens, "int32")) if lens is not None else \
                    bb.emit(relax.op.zeros(relax.ShapeExpr([batch]), "int32"))
                act = _activation_of(attr)
                outs = []
                for d in range(dirs):
                    def pick(v, lo=None, hi=None):
                        t = relax.op.squeeze(relax.op.strided_slice(v, [0], [d], [d + 1]), [0])
                        return t if lo is None else relax.op.strided_slice(t, [0], [lo], [hi])

                    proj = relax.op.matmul(x, relax.op.permute_dims(pick(w)))
                    rb = relax.const(0.0, "float32")
                    if bias is not None:
                        proj = relax.op.add(proj, pick(bias, 0, gh))
                        rb = pick(bias, gh, 2 * gh)
                        if kind != "GRU":
                            proj, rb = relax.op.add(proj, rb), relax.const(0.0, "float32")
                    rb = bb.emit(relax.op.broadcast_to(rb, relax.ShapeExpr([gh])))
                    rt = bb.emit(relax.op.permute_dims(pick(r)))
                    kernel = _kernel(kind, hidden, direction == "reverse" or d == 1, more[1] is not None,
                                     bool(attr.get("linear_before_reset", 0)), act)
                    gv = bb.add_func(kernel.with_attr("op_pattern", 8), f"ember_{kind.lower()}")  # opaque
                    args = [bb.emit(proj), rt, rb, bb.emit(pick(h0)) if h0 is not None else zeros,
                            bb.emit(pick(c0)) if c0 is not None else zeros, lens]
                    state = relax.TensorType([batch, hidden], "float32")
                    out = bb.emit(relax.call_tir(gv, args, [relax.TensorType([seq, batch, hidden], "float32"),
                                                            state, state]))
                    outs.append([bb.emit(relax.TupleGetItem(out, i)) for i in range(3)])
                y = relax.op.concat([relax.op.expand_dims(o[0], 1) for o in outs], axis=1)  # [seq, dirs, batch, H]
                yh = relax.op.concat([relax.op.expand_dims(o[1], 0) for o in outs], axis=0)  # [dirs, batch, H]
                yc = relax.op.concat([relax.op.expand_dims(o[2], 0) for o in outs], axis=0)
                if layout:
                    y = relax.op.permute_dims(y, [2, 0, 1, 3])
                    yh, yc = relax.op.permute_dims(yh, [1, 0, 2]), relax.op.permute_dims(yc, [1, 0, 2])
                results = [bb.emit(y), bb.emit(yh)] + ([bb.emit(yc)] if kind == "LSTM" else [])
                return relax.Tuple(results)

        Recurrent.__name__ = kind
        return Recurrent

    return {kind: converter(kind) for kind in OPS}


def _activation_of(attr: dict) -> str:
    acts = attr.get("activations")
    return _text(acts[0]) if acts else "tanh"
