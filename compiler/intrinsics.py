"""The int8 dot-product instructions Ember's integer kernels are tensorized with.

Each is a TVM TensorIntrin: C[L] (int32) += A[4] . B[L, 4], four 8-bit
products summed into every 32-bit lane in one instruction:

- x86 AVX-512 VNNI `vpdpbusd` zmm (L = 16) and AVX-VNNI ymm (L = 8): A
  unsigned, B signed;
- AArch64 dot product `sdot` (L = 4): A and B signed.

Ember registers its own (TVM's live in one package that imports all
targets' intrinsics, 1-14 s of TVMScript parsing). `for_target` names the
one a target supports, with the signedness its activations must have.
The accumulators (C) are the GEMM's register tile: a "local" buffer.
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
    lanes: int  # int32 accumulators per instruction
    a_dtype: str  # what the activations must be: "uint8" or "int8"
    label: str  # for people


VNNI_512 = DotIntrin("ember_vnni_16x4", 16, "uint8", "AVX-512 VNNI")
VNNI_256 = DotIntrin("ember_avxvnni_8x4", 8, "uint8", "AVX-VNNI")
SDOT = DotIntrin("ember_sdot_4x4", 4, "int8", "AArch64 sdot")
ALL = (VNNI_512, VNNI_256, SDOT)

_LLVM = {VNNI_512.name: "llvm.x86.avx512.vpdpbusd.512", VNNI_256.name: "llvm.x86.avx512.vpdpbusd.256",
         SDOT.name: "llvm.aarch64.neon.sdot.v4i32.v16i8"}


def for_target(target) -> DotIntrin | None:
    """The dot-product intrinsic for an ember Target's CPU, or None (plain int32 loops)."""
    if target.kind != "llvm":
        return None
    f = target.all_features
    if target.triple.startswith("x86_64"):
        if "avx512vnni" in f and "avx512bw" in f:
            return VNNI_512
        if "avxvnni" in f or ("avx512vnni" in f and "avx512vl" in f):
            return VNNI_256
        return None
    if target.triple.startswith("aarch64") and "dotprod" in f:
        return SDOT
    return None


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


def _make(intrin: DotIntrin):
    from tvm.script import tirx as T

    L, a_dt = intrin.lanes, intrin.a_dtype
    a_vec, b_vec, c_vec = f"{a_dt}x4", f"int8x{4 * L}", f"int32x{L}"
    llvm = _LLVM[intrin.name]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (L, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope="local")
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
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope="local")
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
        C = T.match_buffer(c, (L,), "int32", offset_factor=1, scope="local")
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


def _llvm_major() -> int:
    from tvm.target import codegen

    return int(codegen.llvm_version_major())


@cache
def register(intrin: DotIntrin) -> str:
    """Register `intrin` with TVM (once per process); returns its name."""
    from tvm.s_tir import TensorIntrin

    with fast_stack():
        desc, impl = _make(intrin)
    TensorIntrin.register(intrin.name, desc, impl, override=True)
    return intrin.name


def register_by_name(name: str) -> str:
    return register(next(i for i in ALL if i.name == name))


def register_all() -> None:
    for intrin in ALL:
        register(intrin)
