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

com.microsoft's DynamicQuantizeLSTM (what onnxruntime's `quantize_dynamic`
makes of an LSTM: int8 weights W [dirs, input, 4H] and R [dirs, H, 4H] with
per-direction or per-column scales) runs the same kernel on integer
arithmetic, quantizing activations as onnxruntime does: X once, over the
whole tensor, to uint8 (min and max widened to include 0, scale
(max - min) / 255, zero point and values rounded half to even), its
projection an 8-bit GEMM; then at every step each row's h, quantized the
same way, times R in int32, scaled by h's scale times R's. onnxruntime
quantizes h over the batch rows one thread handles together; for one row
(or one row per thread) that is this kernel's per-row quantization.
"""

from __future__ import annotations

from functools import cache

from ember.compiler import ir

OPS = frozenset({"RNN", "GRU", "LSTM"})
CONTRIB = frozenset({("com.microsoft", "DynamicQuantizeLSTM")})
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
    if node.op_type == "DynamicQuantizeLSTM":
        return _quantized_unsupported(node)
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


def _quantized_unsupported(node: ir.Node) -> str | None:
    ins = list(node.inputs) + [None] * (12 - len(node.inputs))
    x = ins[0]
    if x is None or x.dtype != 1:  # TensorProto.FLOAT
        return "only float32 inputs have a kernel"
    if x.shape is None or len(x.shape) != 3:
        return "the input's rank is not known"
    w, r = (v.const.numpy() if v is not None and v.const is not None else None for v in ins[1:3])
    for v, what in ((w, "W"), (r, "R")):
        if v is None or v.dtype != "int8" or v.ndim != 3:
            return f"{what} must be a constant int8 tensor [directions, rows, 4 * hidden]"
    dirs, hidden = r.shape[0], r.shape[1]
    if w.shape[0] != dirs or w.shape[2] != 4 * hidden or r.shape[2] != 4 * hidden:
        return "W and R do not agree on directions and hidden size"
    for i, what in ((8, "W_scale"), (10, "R_scale")):
        v = ins[i].const.numpy() if ins[i] is not None and ins[i].const is not None else None
        if v is None or v.dtype != "float32" or v.shape not in ((dirs,), (dirs, 4 * hidden)):
            return f"{what} must be a constant float32 [directions] or [directions, 4 * hidden]"
    for i, what in ((9, "W_zero_point"), (11, "R_zero_point")):
        v = ins[i]
        if v is not None and (v.const is None or v.const.numpy().any()):
            return f"{what} must be constant zeros (symmetric int8 weights)"
        if v is not None and v.const.shape != ins[i - 1].const.shape:  # onnxruntime reads it as the scale
            return f"{what} must have its scale's shape"
    if ins[7] is not None or node.attrs.get("input_forget", 0):
        return "peepholes and input_forget have no kernel"
    if "clip" in node.attrs or node.attrs.get("activation_alpha") or node.attrs.get("activation_beta"):
        return "clip and activation_alpha/beta have no kernel"
    acts = [_text(a) for a in node.attrs.get("activations", [])]
    if acts and acts != list(_DEFAULT["LSTM"]) * dirs:
        return "activations other than LSTM's defaults have no kernel"
    return None


def byte_dot_for(dots, kind: str, hidden: int):
    """The x86 VNNI instruction (of the target's dot products `dots`) the quantized recurrent GEMV
    runs on, or None: the hidden size in groups of 4 (the instruction's depth) and the gates in
    whole vectors."""
    from ember.compiler.backend.tvm.intrinsics import VNNI_256, VNNI_512

    gh = GATES[kind] * hidden
    return next((d for d in dots if d in (VNNI_512, VNNI_256) and hidden % d.depth == 0 and gh % d.lanes == 0), None)


def pack_for_dot(r):
    """R^T [H, G*H] int8 as the VNNI GEMV reads it: [H/4, G*H, 4], four reduction steps of a
    column side by side."""
    import numpy as np

    h, gh = r.shape
    return np.ascontiguousarray(r.reshape(h // 4, 4, gh).transpose(0, 2, 1))


@cache
def _kernel(kind: str, hidden: int, reverse: bool, has_lens: bool, linear_before_reset: bool, act: str,
            quantized: bool = False, dot=None):
    """TIR: the steps of one direction. proj [seq, batch, G*H] holds X W^T + biases
    (GRU: without its recurrent ones, which are rb); rt is R^T [H, G*H], float32,
    or int8 with column scales rs when `quantized` (each step quantizes h); ws, R's column sums
    (int32; read with `dot` only). `dot` (quantized,
    `byte_dot_for`): rt packed by `pack_for_dot`, and each step's GEMV is h's uint8 values times
    it on the VNNI instruction, in registers over blocks of columns, minus h's zero point times
    R's column sums (the same integers as (h - zero point) x R, as onnxruntime's u8s8 GEMM);
    without, plain int32 loops (the whole kernel 2.4x the time over 64 steps of a 256-wide LSTM)."""
    from tvm.script import tirx as T

    from ember.compiler.backend.tvm.intrinsics import byte_dot

    H = hidden
    GH = GATES[kind] * H
    r_dtype = "int8" if quantized else "float32"
    rt_shape = (H // 4, GH, 4) if dot else (H, GH)
    L = dot.lanes if dot else 1
    V = next((v for v in (4, 2, 1) if GH % (v * L) == 0), 1)  # accumulator vectors a block keeps
    acc_vec, b_vec = f"int32x{L}", f"int8x{4 * L}"
    dots = dot is not None
    # GRU without linear_before_reset: the h gate's GEMV reads r * h, so the first one stops at 2H
    first = 2 * H if kind == "GRU" and not linear_before_reset else GH
    VL = 16 if H % 16 == 0 else 1  # lanes the per-step elementwise loops over h run in
    # float32: columns a register block of the GEMV keeps (0: plain loops)
    FB = next((w for w in (64, 32, 16) if first % w == 0), 0) if not quantized else 0
    HB = 16 if H % 16 == 0 else 0  # GRU without linear_before_reset: the columns a block of r * h's GEMV keeps
    blocked, rh_blocked = FB > 0, HB > 0

    from ember.compiler.backend.tvm.vector_math import sigmoid_f32 as sigmoid
    from ember.compiler.backend.tvm.vector_math import tanh_f32

    def activate(v):
        if act == "relu":
            return T.max(v, T.float32(0))
        if act == "sigmoid":
            return sigmoid(v)
        return tanh_f32(v)

    @T.prim_func(private=True)
    def recurrence(p_proj: T.handle, rt: T.Buffer(rt_shape, r_dtype), rb: T.Buffer((GH,), "float32"),
                   rs: T.Buffer((GH,), "float32"), ws: T.Buffer((GH,), "int32"), p_h0: T.handle, p_c0: T.handle, p_lens: T.handle, p_y: T.handle, p_yh: T.handle,
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
        hq = T.alloc_buffer((H,), "int32")  # quantized: h - its zero point
        acc = T.alloc_buffer((GH,), "int32")
        q = T.alloc_buffer((3,), "float32")  # quantized: min, max, scale of h
        hu = T.alloc_buffer((H,), "uint8")  # dot: h quantized
        block = T.alloc_buffer((V * L,), "int32", scope="local")  # dot: a block's accumulators
        fblock = T.alloc_buffer((max(FB, HB, 1),), "float32", scope="local")  # blocked: a float32 block's
        zt = T.alloc_buffer((H,), "float32")  # GRU: the update gate
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
                if quantized:
                    q[0] = T.float32(0)
                    q[1] = T.float32(0)
                    for k in range(H):
                        q[0] = T.min(q[0], yh[b, k])
                        q[1] = T.max(q[1], yh[b, k])
                    q[2] = T.if_then_else(q[1] == q[0], T.float32(1), (q[1] - q[0]) / T.float32(255))
                    q[0] = T.round(T.max(T.min(T.float32(0) - q[0] / q[2], T.float32(255)), T.float32(0)))
                    for k0 in range(H // VL):
                        for k1 in T.vectorized(VL):
                            hq[k0 * VL + k1] = T.Cast("int32", T.round(T.max(T.min(
                                yh[b, k0 * VL + k1] / q[2], T.float32(255) - q[0]), T.float32(0) - q[0])))
                    if dots:
                        for k in range(H):
                            hu[k] = T.Cast("uint8", hq[k] + T.Cast("int32", q[0]))
                        for go in range(GH // (V * L)):
                            for v in T.unroll(V):
                                block[T.ramp(v * L, 1, L)] = T.Broadcast(0, L)
                            for k4 in range(H // 4):
                                for v in T.unroll(V):
                                    block[T.ramp(v * L, 1, L)] = byte_dot(
                                        dot, block.vload([v * L], acc_vec),
                                        T.reinterpret(hu.vload([k4 * 4], "uint8x4"), dtype="int32"),
                                        rt.vload([k4, go * V * L + v * L, 0], b_vec))
                            for gi in range(V * L):
                                acc[go * V * L + gi] = block[gi] - T.Cast("int32", q[0]) * ws[go * V * L + gi]
                    else:
                        for g in range(GH):
                            acc[g] = 0
                        for k in range(H):
                            for g in range(first):
                                acc[g] = acc[g] + hq[k] * T.Cast("int32", rt[k, g])
                    for g in range(GH):
                        gates[g] = rb[g] + T.Cast("float32", acc[g]) * (q[2] * rs[g])
                elif blocked:  # FB columns of gates in registers over the whole reduction
                    for go in range(first // FB):
                        for gi in T.vectorized(FB):
                            fblock[gi] = rb[go * FB + gi]
                        for k in range(H):
                            for gi in T.vectorized(FB):
                                fblock[gi] = fblock[gi] + yh[b, k] * rt[k, go * FB + gi]
                        for gi in T.vectorized(FB):
                            gates[go * FB + gi] = fblock[gi]
                    for g in range(first, GH):
                        gates[g] = rb[g]
                else:
                    for g in range(GH):
                        gates[g] = rb[g]
                    for k in range(H):
                        for g in range(first):
                            gates[g] = gates[g] + yh[b, k] * T.Cast("float32", rt[k, g])
                if kind == "LSTM":  # ONNX's gate order: i, o, f, c
                    for j0 in range(H // VL):
                        for j1 in T.vectorized(VL):
                            j = T.meta_var(j0 * VL + j1)  # substituted: bindings here computed wrong values
                            yc[b, j] = sigmoid(proj[t, b, 2 * H + j] + gates[2 * H + j]) * yc[b, j] + sigmoid(
                                proj[t, b, j] + gates[j]) * tanh_f32(proj[t, b, 3 * H + j] + gates[3 * H + j])
                            yh[b, j] = sigmoid(proj[t, b, H + j] + gates[H + j]) * tanh_f32(yc[b, j])
                            y[t, b, j] = yh[b, j]
                if kind == "GRU":  # z, r, h
                    if not linear_before_reset:
                        for j0 in range(H // VL):
                            for j1 in T.vectorized(VL):
                                j = T.meta_var(j0 * VL + j1)
                                rh[j] = sigmoid(proj[t, b, H + j] + gates[H + j]) * yh[b, j]
                        if rh_blocked:
                            for go in range(H // HB):
                                for gi in T.vectorized(HB):
                                    fblock[gi] = gates[2 * H + go * HB + gi]
                                for k in range(H):
                                    for gi in T.vectorized(HB):
                                        fblock[gi] = fblock[gi] + rh[k] * rt[k, 2 * H + go * HB + gi]
                                for gi in T.vectorized(HB):
                                    gates[2 * H + go * HB + gi] = fblock[gi]
                        else:
                            for k in range(H):
                                for j in range(H):
                                    gates[2 * H + j] = gates[2 * H + j] + rh[k] * rt[k, 2 * H + j]
                        for j0 in range(H // VL):
                            for j1 in T.vectorized(VL):
                                j = T.meta_var(j0 * VL + j1)
                                zt[j] = sigmoid(proj[t, b, j] + gates[j])
                                yh[b, j] = (T.float32(1) - zt[j]) * tanh_f32(proj[t, b, 2 * H + j] + gates[2 * H + j]) \
                                    + zt[j] * yh[b, j]
                                y[t, b, j] = yh[b, j]
                    else:
                        for j0 in range(H // VL):
                            for j1 in T.vectorized(VL):
                                j = T.meta_var(j0 * VL + j1)
                                zt[j] = sigmoid(proj[t, b, j] + gates[j])
                                yh[b, j] = (T.float32(1) - zt[j]) * tanh_f32(
                                    proj[t, b, 2 * H + j] + sigmoid(proj[t, b, H + j] + gates[H + j]) * gates[2 * H + j]) \
                                    + zt[j] * yh[b, j]
                                y[t, b, j] = yh[b, j]
                if kind == "RNN":
                    for j in range(H):
                        yh[b, j] = activate(proj[t, b, j] + gates[j])
                        y[t, b, j] = yh[b, j]

    return recurrence


def converters(dots=()) -> dict[str, type]:
    """The recurrent ops' converters; `dots`: the target's dot-product instructions (the int8
    LSTM's recurrent GEMV runs on x86 VNNI where the target has it)."""
    import numpy as np

    from tvm import relax, tirx
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def converter(kind: str, quantized: bool = False) -> type:
        class Recurrent(OnnxOpConverter):
            @classmethod
            def _impl_v7(cls, bb, inputs, attr, params):
                x, w, r = inputs[0], inputs[1], inputs[2]
                more = list(inputs[3:]) + [None] * (9 - len(inputs[3:]))
                bias, lens, h0, c0 = more[0], more[1], more[2], more[3]
                layout = attr.get("layout", 0)
                direction = _text(attr.get("direction", b"forward"))
                dirs = 2 if direction == "bidirectional" else 1
                w_shape = [int(d) for d in w.ty.shape.values]
                r_shape = [int(d) for d in r.ty.shape.values]
                # W [dirs, G*H, input] and R [dirs, G*H, H]; quantized: W [dirs, input, 4H], R [dirs, H, 4H]
                hidden = int(attr.get("hidden_size", r_shape[1] if quantized else w_shape[1] // GATES[kind]))
                input_size = w_shape[1] if quantized else w_shape[2]
                gh = GATES[kind] * hidden
                if layout:
                    x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
                    h0 = bb.emit(relax.op.permute_dims(h0, [1, 0, 2])) if h0 is not None else None
                    c0 = bb.emit(relax.op.permute_dims(c0, [1, 0, 2])) if c0 is not None else None
                if x.ty.shape is None:
                    x = bb.match_cast(x, relax.TensorType([tirx.Var("seq", "int64"), tirx.Var("batch", "int64"),
                                                           input_size], "float32"))
                seq, batch = x.ty.shape.values[0], x.ty.shape.values[1]
                zeros = bb.emit(relax.op.zeros(relax.ShapeExpr([batch, hidden]), "float32"))
                lens = bb.emit(relax.op.astype(lens, "int32")) if lens is not None else \
                    bb.emit(relax.op.zeros(relax.ShapeExpr([batch]), "int32"))
                act = _activation_of(attr)
                xq = _quantize_dynamic(bb, x) if quantized else None
                outs = []
                for d in range(dirs):
                    def pick(v, lo=None, hi=None):
                        t = relax.op.squeeze(relax.op.strided_slice(v, [0], [d], [d + 1]), [0])
                        return t if lo is None else relax.op.strided_slice(t, [0], [lo], [hi])

                    if quantized:
                        w_scale, r_scale = more[5], more[7]
                        proj = _projection(bb, xq, w, d, pick(w_scale))
                        dot = byte_dot_for(dots, kind, hidden)
                        rd = r.value.numpy()[d]
                        rt = relax.const(pack_for_dot(rd)) if dot else bb.emit(pick(r))
                        ws = relax.const(rd.astype("int32").sum(0))
                        rs = bb.emit(relax.op.broadcast_to(pick(r_scale), relax.ShapeExpr([gh])))
                    else:
                        dot, ws = None, relax.const(np.zeros(gh, np.int32))
                        proj = relax.op.matmul(x, relax.op.permute_dims(pick(w)))
                        rt = bb.emit(relax.op.permute_dims(pick(r)))
                        rs = bb.emit(relax.op.ones(relax.ShapeExpr([gh]), "float32"))
                    rb = relax.const(0.0, "float32")
                    if bias is not None:
                        proj = relax.op.add(proj, pick(bias, 0, gh))
                        rb = pick(bias, gh, 2 * gh)
                        if kind != "GRU":
                            proj, rb = relax.op.add(proj, rb), relax.const(0.0, "float32")
                    rb = bb.emit(relax.op.broadcast_to(rb, relax.ShapeExpr([gh])))
                    kernel = _kernel(kind, hidden, direction == "reverse" or d == 1, more[1] is not None,
                                     bool(attr.get("linear_before_reset", 0)), act, quantized, dot)
                    gv = bb.add_func(kernel.with_attr("op_pattern", 8), f"ember_{kind.lower()}")  # opaque
                    args = [bb.emit(proj), rt, rb, rs, ws, bb.emit(pick(h0)) if h0 is not None else zeros,
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

        Recurrent.__name__ = "DynamicQuantizeLSTM" if quantized else kind
        return Recurrent

    return {**{kind: converter(kind) for kind in OPS}, "DynamicQuantizeLSTM": converter("LSTM", quantized=True)}


def _quantize_dynamic(bb, x):
    """(x quantized to uint8, its scale, its zero point as int32), the parameters from
    x's range widened to include 0, as onnxruntime's dynamic quantization computes them."""
    from tvm import relax

    f32 = "float32"
    lo = relax.op.minimum(relax.op.min(x), relax.const(0.0, f32))
    hi = relax.op.maximum(relax.op.max(x), relax.const(0.0, f32))
    lo, hi = bb.emit(lo), bb.emit(hi)
    scale = bb.emit(relax.op.where(relax.op.equal(hi, lo), relax.const(1.0, f32),
                                   relax.op.divide(relax.op.subtract(hi, lo), relax.const(255.0, f32))))
    zp = bb.emit(relax.op.round(relax.op.clip(relax.op.negative(relax.op.divide(lo, scale)), 0, 255)))
    q = relax.op.add(relax.op.round(relax.op.divide(x, scale)), zp)
    q = relax.op.astype(relax.op.clip(q, 0, 255), "uint8")
    return bb.emit(q), scale, bb.emit(relax.op.astype(zp, "int32"))


def _projection(bb, xq, w, d: int, w_scale):
    """X W for direction d from the quantized X: an 8-bit GEMM into int32 (minus X's
    zero point times W's column sums), scaled by X's scale times W's."""
    import numpy as np
    from tvm import relax

    q, scale, zp = xq
    wd = w.value.numpy()[d]  # [input, 4H] int8
    acc = relax.op.matmul(q, relax.const(wd), out_dtype="int32")
    acc = relax.op.subtract(acc, relax.op.multiply(zp, relax.const(wd.astype(np.int32).sum(0))))
    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.multiply(scale, w_scale))


def _activation_of(attr: dict) -> str:
    acts = attr.get("activations")
    return _text(acts[0]) if acts else "tanh"
