"""Target triples -> Target descriptions.

A `Target` is data: the triple, CPU (or CUDA `sm_XX`) and features, the TVM
target dict, capability flags passes can read (vector width, int8 dot
product, tensor cores), how to link (`cross_compiler`) and how to run there
(`runner`: local, emulated, gpu; any target can also run over RPC). Known
triples live in one table (`TRIPLES`); `host()` detects this machine.
"""

from __future__ import annotations

import difflib
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ember.errors import TargetError


@dataclass(frozen=True)
class TripleInfo:
    arch: str
    tvm_kind: str  # llvm or cuda
    linker: str | None  # cross compiler for export_library; None = the host's
    linker_package: str | None  # Debian package that provides it
    vector_bits: int  # baseline SIMD width
    default_features: tuple[str, ...] = ()


TRIPLES: dict[str, TripleInfo] = {
    "x86_64-linux-gnu": TripleInfo("x86_64", "llvm", None, None, 128),
    "aarch64-linux-gnu": TripleInfo("aarch64", "llvm", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", 128,
                                    ("neon",)),
    "cuda": TripleInfo("nvptx64", "cuda", None, None, 0),
}
ALIASES = {"x86_64": "x86_64-linux-gnu", "x86_64-pc-linux-gnu": "x86_64-linux-gnu",
           "x86_64-unknown-linux-gnu": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
           "aarch64-unknown-linux-gnu": "aarch64-linux-gnu", "arm64-linux-gnu": "aarch64-linux-gnu",
           "nvptx64-nvidia-cuda": "cuda"}
CUDA_ARCHS = ("sm_50", "sm_52", "sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72", "sm_75", "sm_80",
              "sm_86", "sm_87", "sm_89", "sm_90", "sm_90a", "sm_100", "sm_120")

# CPU flags from /proc/cpuinfo -> LLVM feature names that matter for codegen
_X86_FLAGS = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw",
              "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512_vnni": "avx512vnni",
              "avx_vnni": "avxvnni", "avx512_bf16": "avx512bf16", "amx_tile": "amx-tile",
              "amx_int8": "amx-int8", "amx_bf16": "amx-bf16", "f16c": "f16c"}
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "sve": "sve", "i8mm": "i8mm", "sve2": "sve2",
              "fphp": "fullfp16"}
_INT8_DOT = {"avx512vnni", "avxvnni", "amx-int8", "dotprod", "i8mm"}


@dataclass(frozen=True)
class Target:
    triple: str
    mcpu: str = ""
    features: tuple[str, ...] = ()  # LLVM feature names without '+'
    num_cores: int = 0
    is_host: bool = False
    info: TripleInfo = field(default=TRIPLES["x86_64-linux-gnu"], repr=False)

    @property
    def kind(self) -> str:
        return self.info.tvm_kind

    @property
    def tvm_dict(self) -> dict[str, Any]:
        if self.kind == "cuda":
            # the limits every NVIDIA GPU since sm_50 shares (TVM's own GPU tags use the same);
            # MetaSchedule's GPU rules refuse a target without them
            return {"kind": "cuda", "arch": self.mcpu, "max_threads_per_block": 1024, "thread_warp_size": 32,
                    "max_shared_memory_per_block": 49152, "registers_per_block": 65536, "host": host().tvm_dict}
        d: dict[str, Any] = {"kind": "llvm", "mtriple": self.triple}
        if self.mcpu:
            d["mcpu"] = self.mcpu
        if self.features:
            d["mattr"] = ["+" + f for f in self.features]
        if self.num_cores:
            d["num-cores"] = self.num_cores
        return d

    def tvm_target(self):
        from ember.compiler.backend.tvm import target as tvm_target

        return tvm_target.tvm_target(self.tvm_dict, self.describe())

    # ---- capabilities passes can read ----------------------------------
    @property
    def all_features(self) -> frozenset[str]:
        """Explicit features plus those the named CPU implies."""
        implied = _cpu_features(self.triple, self.mcpu) if self.mcpu and self.kind == "llvm" else frozenset()
        return frozenset(self.features) | implied | frozenset(self.info.default_features)

    @property
    def vector_bits(self) -> int:
        f = self.all_features
        if any(x.startswith("avx512") for x in f):
            return 512
        if "avx2" in f or "avx" in f:
            return 256
        return self.info.vector_bits

    @property
    def int8_dot(self) -> bool:
        if self.kind == "cuda":
            return _sm(self.mcpu) >= 61  # dp4a
        return bool(self.all_features & _INT8_DOT)

    @property
    def tensor_cores(self) -> bool:
        return self.kind == "cuda" and _sm(self.mcpu) >= 70

    @property
    def runner(self) -> str:
        """How an artifact for this target runs from this machine."""
        if self.kind == "cuda":
            return "gpu"
        if self.info.arch == host().info.arch:
            return "local"
        return "emulated" if self.info.arch == "aarch64" else "rpc"

    @property
    def runtime_only(self) -> bool:
        """Whether artifacts for this target run on another device (emulated, a board, RPC),
        where only the TVM runtime is, not its compiler library."""
        return self.runner not in ("local", "gpu")

    def cross_compiler(self):
        """The `fcompile` for export_library, or None for the host's compiler."""
        if self.info.linker is None:
            return None
        if shutil.which(self.info.linker) is None:
            raise TargetError(f"cross compiler {self.info.linker} not found on PATH; "
                              f"install it with: apt-get install {self.info.linker_package}")
        from ember.compiler.backend.tvm import target as tvm_target

        return tvm_target.cross_compiler(self.info.linker, self.triple)

    def check_toolchain(self) -> None:
        """Fail early, before a long build, when a needed tool is missing."""
        if self.kind == "cuda":
            if shutil.which("nvcc") is None:
                raise TargetError("the cuda target needs nvcc (the CUDA toolkit) on PATH; "
                                  "install the CUDA toolkit or compile for a CPU target")
            base = self.mcpu.rstrip("a")
            built = nvcc_architectures()
            if built and base not in built:
                raise TargetError(f"this CUDA toolkit's nvcc cannot build for {self.mcpu} (it builds "
                                  f"{', '.join(built)}); use an older toolkit for that GPU, or another --mcpu")
        self.cross_compiler()

    def describe(self) -> str:
        parts = [self.triple]
        if self.mcpu:
            parts.append(("arch=" if self.kind == "cuda" else "mcpu=") + self.mcpu)
        if self.features:
            parts.append("".join("+" + f for f in self.features))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"triple": self.triple, "mcpu": self.mcpu, "features": list(self.features),
                "num_cores": self.num_cores, "runner": self.runner, "tvm": self.tvm_dict}


@lru_cache(maxsize=1)
def nvcc_architectures() -> tuple[str, ...]:
    """The sm_XX the nvcc on PATH generates code for (`nvcc --list-gpu-code`),
    or () when it cannot say."""
    import subprocess

    try:
        out = subprocess.run(["nvcc", "--list-gpu-code"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(sorted({a for a in out.split() if re.fullmatch(r"sm_\d+", a)}, key=_sm))


def _sm(arch: str) -> int:
    m = re.fullmatch(r"sm_(\d+)a?", arch or "")
    return int(m.group(1)) if m else 0


@lru_cache(maxsize=None)
def _cpu_features(triple: str, mcpu: str) -> frozenset[str]:
    from ember.compiler.backend.tvm import target as tvm_target

    return tvm_target.cpu_features(triple, mcpu)


@lru_cache(maxsize=None)
def known_cpus(triple: str) -> tuple[str, ...]:
    from ember.compiler.backend.tvm import target as tvm_target

    return tvm_target.known_cpus(triple)


@lru_cache(maxsize=None)
def known_features(triple: str) -> frozenset[str]:
    """Every feature some CPU of this architecture has, per LLVM."""
    out: set[str] = set(TRIPLES[triple].default_features)
    for cpu in known_cpus(triple):
        out |= _cpu_features(triple, cpu)
    return frozenset(out)


@lru_cache(maxsize=1)
def host() -> Target:
    """This machine: its triple, the CPU LLVM detects, its ISA features, cores."""
    arch = platform.machine()
    triple = ALIASES.get(arch, arch)
    if triple not in TRIPLES:
        raise TargetError(f"this machine's architecture {arch!r} is not supported")
    from ember.compiler.backend.tvm import target as tvm_target

    mcpu = tvm_target.system_cpu()
    table = _X86_FLAGS if arch == "x86_64" else _ARM_FLAGS
    flags = _cpu_flags()
    features = sorted(v for k, v in table.items() if k in flags)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Target(triple, mcpu=mcpu if mcpu and mcpu != "generic" else "", features=tuple(features),
                  num_cores=cores, is_host=True, info=TRIPLES[triple])


def _cpuinfo(*keys: str) -> str:
    """The first /proc/cpuinfo line's value whose key starts with one of `keys` ("" if none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_flags() -> set[str]:
    return set(_cpuinfo("flags", "Features").split())


def cpu_model() -> str:
    """This machine's CPU as people name it ("AMD EPYC 9R14"), for reports; "" if unknown."""
    return _cpuinfo("model name")


def _close(word: str, choices, what: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def parse(triple: str = "host", mcpu: str | None = None, features: str | list[str] | tuple[str, ...] | None = None,
          num_cores: int | None = None) -> Target:
    """'host' or a known triple, with an optional CPU (or sm_XX for cuda)
    and features ('+neon,+dotprod' or ['avx512vnni'])."""
    if isinstance(features, str):
        features = [f for f in features.split(",")]
    feats = tuple(dict.fromkeys(f.strip().lstrip("+") for f in (features or ()) if f.strip()))
    name = (triple or "host").strip()
    h = host()
    canon = h.triple if name == "host" else ALIASES.get(name, name)
    info = TRIPLES.get(canon)
    if info is None:
        raise TargetError(f"unknown target triple {name!r}{_close(name, [*TRIPLES, *ALIASES, 'host'], 'triple')} "
                          f"(known: host, {', '.join(TRIPLES)})")
    if info.tvm_kind == "cuda":
        return _parse_cuda(canon, mcpu, feats, info)
    if mcpu:
        cpus = known_cpus(canon)
        if mcpu not in cpus:
            raise TargetError(f"unknown CPU {mcpu!r} for {canon}{_close(mcpu, cpus, 'cpu')}")
    if feats:
        known = known_features(canon)
        for f in feats:
            if f not in known:
                raise TargetError(f"unknown feature +{f} for {canon}{_close(f, known, 'feature')}")
        if mcpu:
            has = _cpu_features(canon, mcpu) | frozenset(info.default_features)
            missing = [f for f in feats if f not in has]
            if missing:
                raise TargetError(f"CPU {mcpu} does not support {', '.join('+' + f for f in missing)} "
                                  "(drop the feature, or name a CPU that has it)")
    # the host's own CPU and features apply unless the user names others
    is_host = canon == h.triple and not mcpu and not feats
    if is_host and num_cores is None:
        return h
    return Target(canon, mcpu=mcpu or (h.mcpu if is_host else ""), features=feats or (h.features if is_host else ()),
                  num_cores=num_cores or (h.num_cores if canon == h.triple else 0), is_host=is_host, info=info)


def _parse_cuda(canon: str, mcpu: str | None, feats: tuple[str, ...], info: TripleInfo) -> Target:
    if not mcpu:
        raise TargetError("the cuda target needs the GPU architecture: --mcpu sm_XX (e.g. sm_80, sm_90)")
    if mcpu not in CUDA_ARCHS:
        raise TargetError(f"unknown CUDA architecture {mcpu!r}{_close(mcpu, CUDA_ARCHS, 'sm')} "
                          f"(known: {', '.join(CUDA_ARCHS)})")
    if feats:
        raise TargetError(f"the cuda target takes no features (got {', '.join('+' + f for f in feats)})")
    return Target(canon, mcpu=mcpu, info=info)


def describe_all() -> list[str]:
    """Lines for `ember targets`."""
    h = host()
    lines = [f"host                 {h.describe()} ({h.num_cores} cores, {h.vector_bits}-bit vectors, "
             f"int8 dot product: {'yes' if h.int8_dot else 'no'})"]
    for triple, info in TRIPLES.items():
        if info.tvm_kind == "cuda":
            lines.append(f"{triple:20s} NVIDIA GPUs, --mcpu {'|'.join(a for a in CUDA_ARCHS if _sm(a) >= 70)} ...; "
                         "dp4a int8 from sm_61, tensor cores from sm_70; runs on a GPU")
            continue
        t = Target(triple, info=info)
        link = info.linker or "the host compiler"
        defaults = f", implies {'+'.join([''] + list(info.default_features))}" if info.default_features else ""
        lines.append(f"{triple:20s} {info.arch}, linked with {link}{defaults}; runs {t.runner}; "
                     f"e.g. --mcpu {'cortex-a72|cortex-a76|neoverse-n1' if info.arch == 'aarch64' else 'skylake-avx512|sapphirerapids|znver4'}")
    lines.append("aliases: " + ", ".join(f"{a} -> {c}" for a, c in ALIASES.items()))
    return lines
