"""Target triples -> Target descriptions.

A `Target` is data: the triple, CPU and features, the TVM target dict,
capability flags passes can read, and how to link (`cross_compiler`). Known
triples live in one table (`TRIPLES`); `host` detects this machine.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ember.compiler.errors import TargetError


@dataclass(frozen=True)
class TripleInfo:
    arch: str
    tvm_kind: str
    linker: str | None  # cross compiler for export_library; None = the host's
    linker_package: str | None  # Debian package that provides it
    vector_bits: int


TRIPLES: dict[str, TripleInfo] = {
    "x86_64-linux-gnu": TripleInfo("x86_64", "llvm", None, None, 256),
    "aarch64-linux-gnu": TripleInfo("aarch64", "llvm", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", 128),
}
ALIASES = {"x86_64": "x86_64-linux-gnu", "x86_64-pc-linux-gnu": "x86_64-linux-gnu",
           "x86_64-unknown-linux-gnu": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
           "aarch64-unknown-linux-gnu": "aarch64-linux-gnu", "arm64-linux-gnu": "aarch64-linux-gnu"}

# CPU flags from /proc/cpuinfo -> LLVM feature names that matter for codegen
_X86_FLAGS = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw",
              "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512_vnni": "avx512vnni",
              "avx_vnni": "avxvnni", "avx512_bf16": "avx512bf16", "amx_tile": "amx-tile",
              "amx_int8": "amx-int8", "amx_bf16": "amx-bf16", "f16c": "f16c"}


@dataclass(frozen=True)
class Target:
    triple: str
    mcpu: str = ""
    features: tuple[str, ...] = ()
    num_cores: int = 0
    is_host: bool = False
    info: TripleInfo = field(default=TRIPLES["x86_64-linux-gnu"], repr=False)

    @property
    def tvm_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.info.tvm_kind, "mtriple": self.triple}
        if self.mcpu:
            d["mcpu"] = self.mcpu
        if self.features:
            d["mattr"] = [f if f[0] in "+-" else "+" + f for f in self.features]
        if self.num_cores:
            d["num-cores"] = self.num_cores
        return d

    def tvm_target(self):
        import tvm

        try:
            return tvm.target.Target(self.tvm_dict)
        except Exception as e:
            raise TargetError(f"TVM refused target {self.describe()}: {str(e).splitlines()[-1]}") from None

    @property
    def vector_bits(self) -> int:
        if any(f.lstrip("+").startswith("avx512") for f in self.features) or "avx512" in self.mcpu:
            return 512
        return self.info.vector_bits

    @property
    def int8_dot(self) -> bool:
        names = {f.lstrip("+") for f in self.features}
        return bool(names & {"avx512vnni", "avxvnni", "dotprod", "i8mm", "amx-int8"})

    def cross_compiler(self):
        """The `fcompile` for export_library, or None for the host's compiler."""
        if self.info.linker is None:
            return None
        if shutil.which(self.info.linker) is None:
            raise TargetError(f"cross compiler {self.info.linker} not found on PATH; "
                              f"install it with: apt-get install {self.info.linker_package}")
        import tvm.support.cc as cc

        return cc.cross_compiler(self.info.linker)

    def describe(self) -> str:
        parts = [self.triple]
        if self.mcpu:
            parts.append(f"mcpu={self.mcpu}")
        if self.features:
            parts.append("+".join([""] + [f.lstrip("+") for f in self.features]))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"triple": self.triple, "mcpu": self.mcpu, "features": list(self.features),
                "num_cores": self.num_cores, "tvm": self.tvm_dict}


@lru_cache(maxsize=1)
def host() -> Target:
    """This machine: its triple, the CPU LLVM detects, its ISA features, cores."""
    import platform

    arch = platform.machine()
    triple = ALIASES.get(arch, arch)
    if triple not in TRIPLES:
        raise TargetError(f"this machine's architecture {arch!r} is not supported")
    from tvm.target import codegen

    mcpu = codegen.llvm_get_system_cpu()
    features: list[str] = []
    if arch == "x86_64":
        flags = _cpu_flags()
        features = sorted(v for k, v in _X86_FLAGS.items() if k in flags)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Target(triple, mcpu=mcpu if mcpu and mcpu != "generic" else "", features=tuple(features),
                  num_cores=cores, is_host=True, info=TRIPLES[triple])


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def parse(triple: str = "host", mcpu: str | None = None, features: str | list[str] | tuple[str, ...] | None = None,
          num_cores: int | None = None) -> Target:
    """'host' or a known triple, with an optional CPU and feature list
    ('+neon,+dotprod' or ['avx512vnni'])."""
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    features = tuple(features or ())
    name = (triple or "host").strip()
    h = host()
    canon = h.triple if name == "host" else ALIASES.get(name, name)
    info = TRIPLES.get(canon)
    if info is None:
        close = difflib.get_close_matches(name, list(TRIPLES) + list(ALIASES) + ["host"], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TargetError(f"unknown target triple {name!r}{hint} (known: host, {', '.join(TRIPLES)})")
    if mcpu:
        _check_cpu(canon, mcpu)
    # the host's own CPU and features apply unless the user names others
    is_host = canon == h.triple and not mcpu and not features
    if is_host and num_cores is None:
        return h
    return Target(canon, mcpu=mcpu or (h.mcpu if is_host else ""), features=features or (h.features if is_host else ()),
                  num_cores=num_cores or (h.num_cores if canon == h.triple else 0), is_host=is_host, info=info)


def _check_cpu(triple: str, mcpu: str) -> None:
    from tvm.target import Target as TvmTarget, codegen

    known = [str(c) for c in codegen.llvm_get_cpu_archlist(TvmTarget({"kind": "llvm", "mtriple": triple}))]
    if known and mcpu not in known:
        close = difflib.get_close_matches(mcpu, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TargetError(f"unknown CPU {mcpu!r} for {triple}{hint}")
