"""8-bit floats, 4-bit floats and 2/4-bit integers.

TVM cannot hold INT4/INT2 tensors and converts to and from its float8 types
wrongly (float8_e4m3fnuz is garbage, no saturation), so Ember never gives it
these types. Before lowering, every such value is stored in a byte (float
formats: the bit pattern as uint8; integers: the value as int8/uint8), and the
casts that touch them become two Ember ops with Relax converters:

- NarrowDecode(code) -> T: a table lookup of the format's 256 codes;
- NarrowEncode(x) -> code: round to nearest, ties to even, found by comparing
  |x| with the midpoints between the format's values (exact, no bit tricks),
  saturating or overflowing as ONNX's `saturate` says; integers truncate
  toward zero and wrap (ONNX leaves out-of-range float -> integer casts
  undefined; Ember defines them as the integer part modulo 2**bits, NaN and
  +-inf giving 0, the same rule ONNX gives for integer -> integer casts).

Only casts, Q/DQ and data movement may touch these values (ONNX defines no
arithmetic on them); a model that does more keeps its types and is refused.
Q/DQ become their arithmetic (scale, zero point, rounding, saturation);
blocked Q/DQ (block_size), which TVM lacks, are spelled out the same way for
every integer type.
At the run-time boundary, arrays convert between ml_dtypes and storage
(`to_storage`, `from_storage`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnx

from ember.compiler.ir import custom_ops
from ember.compiler import ir
from ember.compiler.runtime.storage import FLOATS, INTS, NARROW, storage, to_storage

T = onnx.TensorProto
# ops that only move elements: correct on the stored bytes
MOVERS = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split",
                    "Slice", "Gather", "Expand", "Shape", "Size", "Tile", "DepthToSpace", "SpaceToDepth"})
ENCODE, DECODE = "NarrowEncode", "NarrowDecode"


def _bits(dtype: int) -> int:
    return 4 if dtype == T.FLOAT4E2M1 else 8


@lru_cache(maxsize=None)
def decode_table(dtype: int) -> np.ndarray:
    """float32 value of each of the 256 codes (codes past a 4-bit format's 16 read 0)."""
    codes = np.arange(256, dtype=np.uint8)
    bits = _bits(dtype)
    values = np.zeros(256, np.float32)
    values[: 1 << bits] = codes[: 1 << bits].view(FLOATS[dtype]).astype(np.float32)
    return values


@lru_cache(maxsize=None)
def encode_tables(dtype: int, saturate: bool):
    """(midpoints, codes, odd, nan code, sign bit, has -0) for rounding |x| to a code:
    index = #(|x| > mid) + #(|x| == mid and the code below is odd)."""
    fmt = FLOATS[dtype]
    sign = 1 << (_bits(dtype) - 1)
    table = decode_table(dtype)[:sign]
    finite = [(float(v), c) for c, v in enumerate(table) if np.isfinite(v)]
    finite.sort()
    values = [v for v, _ in finite]
    codes = [c for _, c in finite]
    if not saturate and dtype != T.FLOAT4E2M1:  # past max + ulp/2: inf (e5m2) or NaN
        values.append(2 * values[-1] - values[-2])
        codes.append(int(np.array([np.inf], np.float32).astype(fmt).view(np.uint8)[0]))
    mids = (np.array(values[:-1], np.float64) + np.array(values[1:], np.float64)) / 2
    odd = np.array([c & 1 for c in codes[:-1]], bool)
    nan = np.array([np.nan], np.float32).astype(fmt).view(np.uint8)[0] if dtype != T.FLOAT4E2M1 else sign
    negative_zero = bool(np.signbit(np.array([-0.0], np.float32).astype(fmt).astype(np.float32)[0]))
    return mids.astype(np.float32), np.array(codes, np.int32), odd, int(nan), sign, negative_zero


# ---------------------------------------------------------------- the IR rewrite
def _touching(v: ir.Value) -> list[ir.Node]:
    nodes = [n for n, _ in v.uses]
    return nodes + ([v.producer] if v.producer is not None else [])


QDQ = ("QuantizeLinear", "DequantizeLinear")


def _qdq_ok(node: ir.Node) -> bool:
    """Q/DQ per tensor or per axis, with scale and zero point of known rank; blocked
    (block_size) with static shapes, the scale of the input's rank."""
    x = node.inputs[0]
    params = [v for v in node.inputs[1:3] if v is not None]
    if x.shape is None or any(v.shape is None for v in params):
        return False
    if node.attrs.get("block_size", 0):
        return all(isinstance(d, int) for d in x.shape) and all(
            len(v.shape) == len(x.shape) and all(isinstance(d, int) for d in v.shape) for v in params)
    return all(len(v.shape) <= 1 for v in params)


def _blocked(node: ir.Node) -> bool:
    """A blocked Q/DQ of a standard integer type (TVM has no blocked quantization)."""
    quantized = node.inputs[0] if node.op_type == "DequantizeLinear" else node.outputs[0]
    return (node.domain in ("", "ai.onnx") and node.op_type in QDQ and bool(node.attrs.get("block_size", 0))
            and quantized.dtype not in NARROW and _qdq_ok(node))


def _allowed(node: ir.Node) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in QDQ:
        return _qdq_ok(node)
    return node.op_type in MOVERS or node.op_type in ("Cast", "CastLike")


def rewrite(model: ir.Model) -> bool:
    """Store narrow values in bytes, turn their casts and Q/DQ into Narrow ops and
    standard arithmetic, and spell out blocked Q/DQ of any integer type; False (and
    nothing changed) where there is nothing to do. Narrow values touched by anything
    but casts, Q/DQ and data movement keep their types (and are refused later)."""
    g = model.graph
    narrow = [v for v in g.values() if v.dtype in NARROW]
    narrow_ok = bool(narrow) and not any(v.dtype in NARROW for sub in g.all_graphs() if sub is not g
                                         for v in sub.values()) and all(_allowed(n) for v in narrow
                                                                        for n in _touching(v))
    blocked = [n for n in g.nodes if _blocked(n)]
    if not narrow_ok and not blocked:
        return False
    for node in list(g.nodes):
        standard = node.domain in ("", "ai.onnx")
        if narrow_ok and standard and node.op_type == "CastLike" and node.inputs[1].dtype:
            _cast(g, node, node.inputs[0], node.inputs[1].dtype, node.attrs.get("saturate", 1))
        elif narrow_ok and standard and node.op_type == "Cast":
            _cast(g, node, node.inputs[0], node.attrs["to"], node.attrs.get("saturate", 1))
        elif node.op_type == "DequantizeLinear" and (node in blocked or narrow_ok and node.inputs[0].dtype in NARROW):
            _dequantize(g, node)
        elif node.op_type == "QuantizeLinear" and (node in blocked or narrow_ok and node.outputs[0].dtype in NARROW):
            _quantize(g, node)
    if not narrow_ok:
        return True
    for v in list(g.values()):  # the casts' new outputs too; later casts read their narrow type
        if v.dtype not in NARROW:
            continue
        if v.const is not None:
            v.const = ir.Tensor.from_numpy(to_storage(v.const.numpy(), v.dtype))
        v.dtype = storage(v.dtype)
    return True


def _cast(g: ir.Graph, node: ir.Node, x: ir.Value, to: int, saturate: int) -> None:
    if x.dtype not in NARROW and to not in NARROW:
        return
    if x.dtype in NARROW:
        x = _decode(g, node, x, T.FLOAT if to in NARROW else to)
    if to in NARROW:
        x = _encode(g, node, x, to, saturate)
    g.substitute(node.outputs[0], x)
    g.remove(node)


def _decode(g: ir.Graph, node: ir.Node, v: ir.Value, ftype: int) -> ir.Value:
    """`v` as values of type `ftype`: a table decode for narrow types, else a Cast."""
    if v.dtype in NARROW:
        return _emit(g, node, DECODE, [v], ftype, v.shape, domain=custom_ops.DOMAIN, format=v.dtype, to=ftype)
    return _emit(g, node, "Cast", [v], ftype, v.shape, to=ftype)


def _encode(g: ir.Graph, node: ir.Node, v: ir.Value, fmt: int, saturate: int) -> ir.Value:
    """`v` as values of type `fmt`: a rounding encode for narrow types, else a Cast."""
    if fmt in NARROW:
        return _emit(g, node, ENCODE, [v], fmt, v.shape, domain=custom_ops.DOMAIN, format=fmt,
                     saturate=int(saturate))
    return _emit(g, node, "Cast", [v], fmt, v.shape, to=fmt)


def _qdq_params(g: ir.Graph, node: ir.Node, ftype: int) -> tuple[ir.Value, ir.Value | None]:
    """Scale and zero point (decoded to `ftype`; None if absent), shaped to broadcast with
    the input: along `axis`, or repeated block_size times along it."""
    x = node.inputs[0]
    rank = len(x.shape)
    scale = node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    zp = None if zp is None else _decode(g, node, zp, ftype)
    axis = node.attrs.get("axis", 1) % rank if rank else 0
    block = node.attrs.get("block_size", 0)
    if block:  # [.., C/B, ..] -> [.., C/B, B, ..] -> [.., C, ..]
        blocks = scale.shape[axis]
        wide = list(x.shape[:axis]) + [blocks, block] + list(x.shape[axis + 1:])
        merged = list(x.shape[:axis]) + [blocks * block] + list(x.shape[axis + 1:])
        shapes = [g.make_const(np.array(s_, np.int64), "block_shape") for s_ in (wide, merged)]
        cut = [g.make_const(np.array([v], np.int64), "block_cut") for v in (0, x.shape[axis], axis)]

        def repeat(v: ir.Value) -> ir.Value:
            v = _unsqueeze(g, node, v, axis + 1)
            v = _emit(g, node, "Expand", [v, shapes[0]], v.dtype, tuple(wide))
            v = _emit(g, node, "Reshape", [v, shapes[1]], v.dtype, tuple(merged))
            return _emit(g, node, "Slice", [v, *cut], v.dtype, tuple(x.shape))

        return repeat(scale), None if zp is None else repeat(zp)
    if scale.shape and rank > 1:  # per axis: [C] -> [1, .., C, .., 1]
        shape = g.make_const(np.array([1] * axis + [-1] + [1] * (rank - axis - 1), np.int64), "axis_shape")
        scale, zp = (None if v is None else _emit(g, node, "Reshape", [v, shape], v.dtype, None)
                     for v in (scale, zp))
    return scale, zp


def _unsqueeze(g: ir.Graph, node: ir.Node, v: ir.Value, axis: int) -> ir.Value:
    shape = None if v.shape is None else tuple(v.shape[:axis]) + (1,) + tuple(v.shape[axis:])
    return _emit(g, node, "Unsqueeze", [v, g.make_const(np.array([axis], np.int64), "axis")], v.dtype, shape)


def _emit(g: ir.Graph, node: ir.Node, op: str, inputs, dtype: int, shape, domain: str = "", **attrs) -> ir.Value:
    made = g.make_node(op, inputs, attrs=attrs, domain=domain, before=node)
    made.outputs[0].dtype, made.outputs[0].shape = dtype, shape
    return made.outputs[0]


def _dequantize(g: ir.Graph, node: ir.Node) -> None:
    """(decode(x) - zero point) * scale, in the scale's type."""
    x, y = node.inputs[0], node.outputs[0]
    ftype = node.inputs[1].dtype
    scale, zero = _qdq_params(g, node, ftype)
    value = _decode(g, node, x, ftype)
    if zero is not None:
        value = _emit(g, node, "Sub", [value, zero], ftype, x.shape)
    g.substitute(y, _emit(g, node, "Mul", [value, scale], ftype, x.shape))
    g.remove(node)


def _quantize(g: ir.Graph, node: ir.Node) -> None:
    """Float formats: encode(x / scale + zero point); integers: saturate(round(x / scale) + zero point)."""
    x, y = node.inputs[0], node.outputs[0]
    fmt, np_type = y.dtype, onnx.helper.tensor_dtype_to_np_dtype(x.dtype)
    scale, zero = _qdq_params(g, node, x.dtype)
    integer = fmt in INTS or fmt not in NARROW
    q = _emit(g, node, "Div", [x, scale], x.dtype, x.shape)
    if integer:
        q = _emit(g, node, "Round", [q], x.dtype, x.shape)
    if zero is not None:
        q = _emit(g, node, "Add", [q, zero], x.dtype, x.shape)
    if integer:
        if fmt in INTS:
            _, bits, signed = INTS[fmt]
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        else:
            info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(fmt))
            lo, hi = int(info.min), int(info.max)
        bounds = [g.make_const(np.array(b, np_type), "bound") for b in (lo, hi)]
        q = _emit(g, node, "Clip", [q, *bounds], x.dtype, x.shape)
    g.substitute(y, _encode(g, node, q, fmt, node.attrs.get("saturate", 1)))
    g.remove(node)


# ---------------------------------------------------------------- lowering
def converters() -> dict[str, type]:
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def const(a) -> relax.Constant:
        a = np.asarray(a)
        return relax.const(a, str(a.dtype))

    class NarrowDecode(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            fmt, to = attr["format"], onnx.helper.tensor_dtype_to_np_dtype(attr["to"]).name
            x = inputs[0]
            if fmt in INTS:
                return relax.op.astype(x, to)
            values = relax.op.take(const(decode_table(fmt)), relax.op.astype(x, "int32"), axis=0)
            return relax.op.astype(values, to)

    class NarrowEncode(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            fmt, x = attr["format"], inputs[0]
            src = str(x.ty.dtype)
            if fmt in INTS:
                _, bits, signed = INTS[fmt]
                return relax.op.astype(cls._wrap(x, src, bits, signed), "int8" if signed else "uint8")
            return relax.op.astype(cls._float(bb, x, src, fmt, bool(attr.get("saturate", 1))), "uint8")

        @staticmethod
        def _wrap(x, src: str, bits: int, signed: bool):
            """Ember's definition of an out-of-range cast (ONNX leaves float -> integer undefined there):
            the integer part of x modulo 2**bits, read as two's complement; NaN and +-inf give 0. Beyond
            2**62 every float is a multiple of 2**bits, so those give 0 too (never an undefined
            float -> int64 conversion)."""
            if src.startswith(("float", "bfloat")):
                x = relax.op.astype(x, "float64")
                exact = relax.op.logical_and(relax.op.logical_not(relax.op.isnan(x)),
                                             relax.op.less(relax.op.abs(x), const(np.float64(2.0 ** 62))))
                x = relax.op.astype(relax.op.where(exact, relax.op.trunc(x), const(np.float64(0))), "int64")
            else:
                x = relax.op.astype(x, "int64")
            low = relax.op.floor_mod(x, const(np.int64(1 << bits)))
            if signed:
                low = relax.op.where(relax.op.greater_equal(low, const(np.int64(1 << (bits - 1)))),
                                     relax.op.subtract(low, const(np.int64(1 << bits))), low)
            return low

        @staticmethod
        def _float(bb, x, src: str, fmt: int, saturate: bool):
            mids, codes, odd, nan, sign, negative_zero = encode_tables(fmt, saturate)
            x = bb.normalize(relax.op.astype(x, "float64" if src == "float64" else "float32"))
            dtype = str(x.ty.dtype)
            a = relax.op.expand_dims(relax.op.abs(x), -1)
            m = const(mids.astype(dtype))
            above = relax.op.astype(relax.op.greater(a, m), "int32")
            tie = relax.op.astype(relax.op.logical_and(relax.op.equal(a, m), const(odd)), "int32")
            index = relax.op.sum(relax.op.add(above, tie), axis=[-1])
            mag = relax.op.take(const(codes), index, axis=0)
            zero = const(np.zeros((), dtype))
            negative = relax.op.logical_or(relax.op.less(x, zero), relax.op.logical_and(
                relax.op.equal(x, zero), relax.op.less(relax.op.divide(const(np.ones((), dtype)), x), zero)))
            if not negative_zero:  # no -0 in the format: a negative value rounding to 0 is +0
                negative = relax.op.logical_and(negative, relax.op.not_equal(mag, const(np.int32(0))))
            signed = relax.op.where(negative, relax.op.bitwise_or(mag, const(np.int32(sign))), mag)
            return relax.op.where(relax.op.isnan(x), const(np.int32(nan)), signed)

    return {DECODE: NarrowDecode, ENCODE: NarrowEncode}
