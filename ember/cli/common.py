"""What every `ember` command shares: the one-line error parser, progress lines,
plugin loading and the parsers of option values."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ember.errors import EmberError

EXIT_ERROR = 1
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        sys.stderr.write(f"ember: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


class Progress:
    """Progress lines on stderr with elapsed time, so long steps are visible."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}\n")
            sys.stderr.flush()


def load_plugins(paths: Sequence[str]) -> None:
    """Import user modules (files or module names) that register passes."""
    for p in paths or ():
        if p.endswith(".py") or "/" in p:
            path = Path(p)
            if not path.is_file():
                raise EmberError(f"plugin {p}: no such file")
            spec = importlib.util.spec_from_file_location(f"ember_plugin_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(mod)  # type: ignore[union-attr]
            except EmberError:
                raise
            except Exception as e:
                raise EmberError(f"plugin {p} failed to load: {type(e).__name__}: {e}") from None
        else:
            try:
                importlib.import_module(p)
            except ImportError as e:
                raise EmberError(f"plugin {p}: {e}") from None


def parse_bind(items: list[str] | None) -> dict[str, Any]:
    """--bind NAME=V[,V...] or NAME=FILE.npy -> {name: array}."""
    values: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise EmberError(f"--bind {item!r}: expected NAME=V[,V...] or NAME=FILE.npy")
        if text.endswith(".npy"):
            values[name] = read_array(text, f"--bind {name}")
            continue
        try:
            numbers = [float(t) if any(c in t for c in ".eEn") else int(t) for t in text.split(",")]
        except ValueError:
            raise EmberError(f"--bind {name}: {text!r} is not a comma-separated list of numbers") from None
        values[name] = np.array(numbers)
    return values


def precision_option(parser) -> None:
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: convolutions and matmuls by constant weights on bfloat16 operands (weights "
                             "stored in bf16, sums in fp32; AVX-512 BF16 where the CPU has it), the rest fp32; "
                             "`ember debug --precision bf16` shows the error against fp32 (default: fp32)")


def parse_input_shapes(items: list[str] | None) -> dict[str, list[int]]:
    """--input-shape NAME=1,3,640,640 -> {name: sizes} (NAME= alone: a scalar)."""
    shapes: dict[str, list[int]] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(t) for t in text.replace("x", ",").split(",")] if text else []
        except ValueError:
            raise EmberError(f"--input-shape {item!r}: expected NAME=D0,D1,... (sizes, e.g. x=1,3,640,640)") from None
    return shapes


def read_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise EmberError(f"{what}: no such file {path}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:
        raise EmberError(f"{what}: cannot read {path} as .npy ({type(e).__name__}: {e})") from None


def step_options(sp: argparse.ArgumentParser) -> None:
    """Options of the commands whose TVM steps run in a child process."""
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sp.add_argument("--no-isolate", dest="isolate", action="store_false",
                    help="run TVM steps in this process (a TVM crash then kills ember)")
    sp.add_argument("--timeout", type=float, default=3600,
                    help="seconds before an isolated step (a TVM build or run that may hang) is stopped "
                         "(default 3600)")


def device_options(sp: argparse.ArgumentParser, what: str) -> None:
    """Where an artifact for another device runs: under qemu here, or on the device over TVM RPC."""
    sp.add_argument("--emulate", action="store_true", help=f"run {what} under qemu on this machine (aarch64)")
    sp.add_argument("--qemu-cpu", default=None, help="core qemu emulates (default: the target's --mcpu)")
    sp.add_argument("--rpc", metavar="HOST:PORT", help=f"run {what} on a remote device through a TVM RPC server")
    sp.add_argument("--tracker", metavar="HOST:PORT", help=f"run {what} through a TVM RPC tracker (with --key)")
    sp.add_argument("--key", help="device key registered with the tracker")


def pipeline_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-O", dest="opt_level", type=int, choices=[0, 1, 2, 3], default=None,
                    help="optimization level: 0 none, 1 cleanup, 2 cleanup+fusion (default), 3 = 2 for now; "
                         "`ember passes` prints each level's pipeline")
    sp.add_argument("--pipeline", default=None, help="explicit pass pipeline spec (overrides -O), "
                                                     "e.g. 'cleanup,fold-batchnorm'")
    sp.add_argument("--disable", action="append", help="skip this pass (repeatable)")
    sp.add_argument("--plugin", action="append", help="Python file or module that registers passes (repeatable)")
    sp.add_argument("--print-pass-times", action="store_true", help="print time spent in each pass")
    sp.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                    help="largest tensor a model may declare or make (e.g. 2G, 512M; default 8G)")


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 2G") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be positive")
    return int(value)


def one_line(text: str) -> str:
    """A message on one line: messages built from other tools' exception text (a plugin's
    SyntaxError, TVM's errors) can span several."""
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())
