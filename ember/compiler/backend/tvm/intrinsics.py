"""The int8 dot-product instructions Ember's integer kernels are tensorized with.

Most are a TVM TensorIntrin C[L] (int32) += A[4] . B[L, 4]: four 8-bit
products summed into every 32-bit lane in one instruction:

- x86 AVX-512 VNNI `vpdpbusd` zmm (L = 16) and AVX-VNNI ymm (L = 8): A
  unsigned, B signed;
- AArch64 dot product `sdot` (L = 4): A and B signed.

AArch64's `i8mm` matrix multiply `usmmla` is a 2 x 2 tile instead:
C[2, 2] += A[2, 8] . B[2, 8]^T, 32 products per instruction (twice sdot's),
A unsigned, B signed. Its two A rows are two output pixels (conv) or rows
(matmul), `step` elements apart in the input (a convolution's stride), each
read as 8 bytes; its accumulator tile is kept as contiguous 2 x 2 blocks.
Layers whose rows do not pair up take the target's next instruction.

The bf16 GEMMs have theirs, C[L] (float32) += A[2] . B[L, 2] in bfloat16:
AVX-512 BF16 `vdpbf16ps` zmm (L = 16; products exact, each addition rounded
to float32, denormals flushed) and AArch64 `bfdot` (L = 4, with `+bf16`:
Neoverse N2/V1, Graviton 3...; its own rounding of the pair's sum). The kernels keep
bfloat16 operands as their bits (uint16: TVM's TIR lowering would turn
bfloat16 values and internal buffers into float32), and LLVM declares the
instruction on bfloat vectors, which TVM cannot pass: the kernel calls a
small LLVM function that takes the bits as i16 vectors and bitcasts them
(`DotIntrin.llvm_ir`, linked into the kernel with TVM's `pragma_import_llvm`
and inlined).

Ember registers its own (TVM's live in one package that imports all
targets' intrinsics, 1-14 s of TVMScript parsing). `available` lists the
ones a target supports, best first, each with the signedness its
activations must have. The accumulators (C) are the GEMM's register tile,
in `TILE_SCOPE`.
"""

from __future__ import annotations

import inspect
import linecache
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class DotIntrin:
    name: str
    lanes: int  # accumulator columns per instruction
    a_dtype: str  # what the activations must be: "uint8", "int8" or "bfloat16"
    label: str  # for people
    rows: int = 1  # output rows per instruction
    depth: int = 4  # reduction steps per instruction
    b_dtype: str = "int8"  # the weights'
    acc: str = "int32"  # the accumulators'
    llvm_ir: str = ""  # an LLVM function the instruction is called through (linked into the kernel)

    def fits(self, rows: int, step: int = 1) -> bool:
        """Whether a layer whose row runs are `rows` long, its input rows `step`
        apart, can use this instruction (a two-row one needs them in pairs)."""
        return self.rows == 1 or (rows % self.rows == 0 and step <= MAX_STEP)

    def registered_name(self, step: int = 1) -> str:
        return self.name if self.rows == 1 else f"{self.name}_s{step}"


# The storage scope of a register tile (`schedule.py`'s and these instructions' accumulators).
# TVM's LowerTVMBuiltin keeps a "global" allocation of a static size under 1 KB on the stack (an
# alloca LLVM promotes to registers) but requests every "local" one from the runtime's workspace
# pool, with a call to allocate and one to free per tile: HF MobileNetV2's 1x1 convolutions over
# 8 channels run tiles of 64 FMAs each, and the model took 1.15-1.25x the time.
TILE_SCOPE = "global"

VNNI_512 = DotIntrin("ember_vnni_16x4", 16, "uint8", "AVX-512 VNNI")
VNNI_256 = DotIntrin("ember_avxvnni_8x4", 8, "uint8", "AVX-VNNI")
SDOT = DotIntrin("ember_sdot_4x4", 4, "int8", "AArch64 sdot")
USMMLA = DotIntrin("ember_usmmla_2x2x8", 2, "uint8", "AArch64 i8mm usmmla", rows=2, depth=8)
_DPBF16_IR = """
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
define linkonce_odr <16 x float> @ember_dpbf16ps_512(<16 x float> %c, <32 x i16> %a, <32 x i16> %b) alwaysinline {
  %ab = bitcast <32 x i16> %a to <32 x bfloat>
  %bb = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %c, <32 x bfloat> %ab, <32 x bfloat> %bb)
  ret <16 x float> %r
}
"""
_BFDOT_IR = """
declare <4 x float> @llvm.aarch64.neon.bfdot.v4f32.v8bf16(<4 x float>, <8 x bfloat>, <8 x bfloat>)
define linkonce_odr <4 x float> @ember_bfdot_4(<4 x float> %c, <8 x i16> %a, <8 x i16> %b) alwaysinline {
  %ab = bitcast <8 x i16> %a to <8 x bfloat>
  %bb = bitcast <8 x i16> %b to <8 x bfloat>
  %r = call <4 x float> @llvm.aarch64.neon.bfdot.v4f32.v8bf16(<4 x float> %c, <8 x bfloat> %ab, <8 x bfloat> %bb)
  ret <4 x float> %r
}
"""
# operands stored as bfloat16 bits (kernels.BF16_BITS)
DPBF16 = DotIntrin("ember_dpbf16ps_16x2", 16, "bfloat16", "AVX-512 BF16 vdpbf16ps", depth=2, b_dtype="bfloat16",
                   acc="float32", llvm_ir=_DPBF16_IR)
BFDOT = DotIntrin("ember_bfdot_4x2", 4, "bfloat16", "AArch64 bfdot", depth=2, b_dtype="bfloat16", acc="float32",
                  llvm_ir=_BFDOT_IR)
ALL = (VNNI_512, VNNI_256, SDOT, USMMLA, DPBF16, BFDOT)
MAX_STEP = 4  # the input row distances (conv strides) usmmla is registered for

_LLVM = {VNNI_512.name: "llvm.x86.avx512.vpdpbusd.512", VNNI_256.name: "llvm.x86.avx512.vpdpbusd.256",
         SDOT.name: "llvm.aarch64.neon.sdot.v4i32.v16i8", USMMLA.name: "llvm.aarch64.neon.usmmla.v4i32.v16i8"}


def available(target) -> tuple[DotIntrin, ...]:
    """The dot-product intrinsics an ember Target's CPU has, best first
    (empty: plain int32 loops)."""
    if target.kind != "llvm":
        return ()
    f = target.all_features
    if target.triple.startswith("x86_64"):
        if "avx512vnni" in f and "avx512bw" in f:
            return (VNNI_512,)
        if "avxvnni" in f or ("avx512vnni" in f and "avx512vl" in f):
            return (VNNI_256,)
        return ()
    if target.triple.startswith("aarch64"):
        return tuple(i for i, feature in ((USMMLA, "i8mm"), (SDOT, "dotprod")) if feature in f)
    return ()


def byte_dot(intrin: DotIntrin, acc, word, b):
    """TIR: vpdpbusd (`intrin`: VNNI_512 or VNNI_256, L lanes) of the int32xL accumulators
    `acc`, four uint8 activations packed in the int32 `word` (broadcast to every lane) and the
    int8x(4L) weights `b`: acc[i] + sum_k a[k] * b[i, k]."""
    from tvm import tirx

    L = intrin.lanes
    a = tirx.Broadcast(word, L)
    if _llvm_major() < 21:  # LLVM before 21 declares it on int32 lanes
        args = (acc, a, tirx.reinterpret(f"int32x{L}", b))
    else:
        args = (acc, tirx.reinterpret(f"int8x{4 * L}", a), b)
    return tirx.call_llvm_pure_intrin(f"int32x{L}", _LLVM[intrin.name], *args)


def bf16_available(target) -> tuple[DotIntrin, ...]:
    """The bf16 dot-product instructions an ember Target's CPU has (empty: the
    bf16 kernels convert to float32 and multiply-add in plain vector loops)."""
    if target.kind != "llvm":
        return ()
    if target.triple.startswith("x86_64") and "avx512bf16" in target.all_features:
        return (DPBF16,)
    if target.triple.startswith("aarch64") and "bf16" in target.all_features:
        return (BFDOT,)
    return ()


def for_target(target) -> DotIntrin | None:
    """The best dot-product intrinsic for an ember Target's CPU, or None."""
    best = available(target)
    return best[0] if best else None


def pick(choices: tuple[DotIntrin, ...], rows: int, step: int = 1) -> DotIntrin | None:
    """The first of `choices` a layer with row runs of `rows` (input rows
    `step` apart) can use, or None."""
    return next((i for i in choices if i.fits(rows, step)), None)


def describe(choices: tuple[DotIntrin, ...]) -> str:
    """For people: "AArch64 i8mm usmmla (AArch64 sdot where rows do not pair up)"."""
    first, *rest = choices
    return first.label + "".join(f" ({r.label} where rows do not pair up)" for r in rest)


@contextmanager
def fast_stack():
    """TVMScript's parser calls inspect.stack(), which finds the module of
    every frame by scanning sys.modules: seconds per function once torch is
    loaded. It only reads each frame and its current line, which a plain
    frame walk gives."""

    def stack(context: int = 1) -> list:
        frames, f = [], sys._getframe(1)
        while f is not None:
            name, line = f.f_code.co_filename, f.f_lineno
            text = linecache.getline(name, line) if context else ""
            frames.append(inspect.FrameInfo(f, name, line, f.f_code.co_name, [text] if text else None,
                                            0 if text else None))
            f = f.f_back
        return frames

    real, inspect.stack = inspect.stack, stack
    try:
        yield
    finally:
        inspect.stack = real


def import_tvm_intrinsics() -> None:
    """Import TVM's own tensor intrinsics (MetaSchedule's tune contexts and
    tuning records need them) without the seconds of stack scanning."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with fast_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401


def _make(intrin: DotIntrin, step: int):
    from tvm.script import tirx as T

    if intrin.rows == 2:
        return _make_mmla(intrin, step)
    if intrin.acc == "float32":
        return _make_bf16(intrin)

    L, a_dt = intrin.lanes, intrin.a_dtype
    a_vec, b_vec, c_vec = f"{a_dt}x4", f"int8x{4 * L}", f"int32x{L}"
    llvm = _LLVM[intrin.name]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (L, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:L], A[0:4], B[0:L, 0:4])
            T.writes(C[0:L])
            for i in T.serial(0, L):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl_bytes(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (L, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:L], A[0:4], B[0:L, 0:4])
            T.writes(C[0:L])
            a_all = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a_vec), dtype="int32"), L), dtype=b_vec)
            C[T.ramp(T.int32(0), 1, L)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm), C.vload([0], dtype=c_vec), a_all, B.vload([0, 0], dtype=b_vec),
                dtype=c_vec)

    @T.prim_func(s_tir=True)
    def impl_vnni_i32(a: T.handle, b: T.handle, c: T.handle) -> None:
        # LLVM before 21 declares vpdpbusd on int32 lanes
        A = T.match_buffer(a, (4,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (L, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:L], A[0:4], B[0:L, 0:4])
            T.writes(C[0:L])
            C[T.ramp(T.int32(0), 1, L)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm), C.vload([0], dtype=c_vec),
                T.broadcast(T.reinterpret(A.vload([0], a_vec), dtype="int32"), L),
                T.reinterpret(B.vload([0, 0], dtype=b_vec), dtype=c_vec), dtype=c_vec)

    if intrin is not SDOT and _llvm_major() < 21:
        return desc, impl_vnni_i32
    return desc, impl_bytes  # sdot, and vpdpbusd since LLVM 21: byte vectors


def _make_bf16(intrin: DotIntrin):
    """vdpbf16ps / bfdot: C[L] (float32) += A[2] . B[L, 2], the operands bfloat16
    bits (uint16, widened exactly: bits << 16), A's pair broadcast to every lane."""
    from tvm.script import tirx as T

    L = intrin.lanes
    func = intrin.llvm_ir.split("@")[2].split("(")[0]  # the helper's name, after the intrinsic's declaration

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "uint16", offset_factor=1)
        B = T.match_buffer(b, (L, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (L,), "float32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:L], A[0:2], B[0:L, 0:2])
            T.writes(C[0:L])
            for i in T.serial(0, L):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + (T.reinterpret(T.Cast("uint32", A[vk]) << T.uint32(16), dtype="float32")
                                         * T.reinterpret(T.Cast("uint32", B[vi, vk]) << T.uint32(16),
                                                         dtype="float32"))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "uint16", offset_factor=1)
        B = T.match_buffer(b, (L, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (L,), "float32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:L], A[0:2], B[0:L, 0:2])
            T.writes(C[0:L])
            a_all = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint16x2"), dtype="int32"), L),
                                  dtype=f"int16x{2 * L}")
            C[T.ramp(T.int32(0), 1, L)] = T.call_pure_extern(
                func, C.vload([0], dtype=f"float32x{L}"), a_all,
                T.reinterpret(B.vload([0, 0], dtype=f"uint16x{2 * L}"), dtype=f"int16x{2 * L}"),
                dtype=f"float32x{L}")

    return desc, impl


def _make_mmla(intrin: DotIntrin, step: int):
    """usmmla: C[2, 2] += A[2, 8] . B[2, 8]^T, A's rows `step` apart (read as
    rows 0 and `step` of an (step + 1) x 8 window), C a contiguous 2 x 2 block."""
    from tvm.script import tirx as T

    llvm, a_dt = _LLVM[intrin.name], intrin.a_dtype
    half = f"{a_dt}x8"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (step + 1, 8), a_dt, offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:step + 1, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            for i, j, k in T.grid(2, 2, 8):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi * step, vk], "int32") * T.cast(B[vj, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (step + 1, 8), a_dt, offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1, scope=TILE_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:step + 1, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            rows = T.Shuffle([A.vload([0, 0], half), A.vload([step, 0], half)], list(range(16)))
            C.vstore([0, 0], T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm), C.vload([0, 0], dtype="int32x4"), rows,
                B.vload([0, 0], dtype="int8x16"), dtype="int32x4"))

    return desc, impl


def _llvm_major() -> int:
    from tvm.target import codegen

    return int(codegen.llvm_version_major())


@cache
def register(intrin: DotIntrin, step: int = 1) -> str:
    """Register `intrin` (for input rows `step` apart) with TVM, once per
    process; returns the name it is registered under."""
    from tvm.s_tir import TensorIntrin

    with fast_stack():
        desc, impl = _make(intrin, step)
    name = intrin.registered_name(step)
    TensorIntrin.register(name, desc, impl, override=True)
    return name


def register_all() -> None:
    for intrin in ALL:
        for step in range(1, MAX_STEP + 1) if intrin.rows > 1 else (1,):
            register(intrin, step)
