"""What Ember's targets ask of TVM: its Target objects, what its LLVM knows of
CPUs (names, features, this machine's CPU), the cross compiler for
export_library, and the process setup a build needs (`prepare`)."""

from __future__ import annotations

import os
from typing import Any

import tvm
import tvm.support.cc as cc
from tvm.target import codegen

from ember.errors import TargetError


def tvm_target(d: dict[str, Any], what: str):
    d = dict(d)
    host_dict = d.pop("host", None)
    try:
        return tvm.target.Target(d, host=host_dict) if host_dict else tvm.target.Target(d)
    except Exception as e:
        raise TargetError(f"TVM refused target {what}: {str(e).splitlines()[-1]}") from None


def cpu_features(triple: str, mcpu: str) -> frozenset[str]:
    """The LLVM features CPU `mcpu` of `triple` has."""
    return frozenset(str(f) for f in codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": mcpu})))


def known_cpus(triple: str) -> tuple[str, ...]:
    return tuple(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple})))


def system_cpu() -> str:
    """The CPU LLVM detects on this machine ('generic' when it cannot tell)."""
    return str(codegen.llvm_get_system_cpu())


def cross_compiler(linker: str, triple: str):
    """The `fcompile` for export_library that links with `linker` for `triple`."""
    fcompile = cc.cross_compiler(linker)
    # TVM's asks the host's compiler: a model without kernels (its host code a C module) then
    # packed its imports into an x86 object the cross linker refused
    fcompile.get_target_triple = lambda: triple
    return fcompile


def prepare(target) -> None:
    """Process setup building for `target` needs, made before TVM compiles (and before
    MetaSchedule's workers start, which inherit it): TVM compiles CUDA through NVRTC by
    default, which needs the cuda-bindings package; Ember uses nvcc, which it requires
    anyway, unless the user chose otherwise."""
    if target.kind == "cuda":
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
