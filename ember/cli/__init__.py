"""The `ember` command line.

    ember compile MODEL.onnx [--target TRIPLE] -o OUT [-O0..3 | --pipeline SPEC] [--print-pass-times]
                  [--dump-ir-after PASS] [--input-shape NAME=D0,D1,...] [--quantize int8 ...] [--db DB]
    ember tune MODEL.onnx [--db DB] [--trials N | --time 20m] [--seed N] [--warm-start DB] [--tracker HOST:PORT --key KEY]
    ember db stats|merge|prune DB...
    ember quantize | prune MODEL.onnx -o OUT.onnx [--calib-data FILE|DIR ...]
    ember optimize MODEL.onnx -o OUT.onnx [-O0..3 | --pipeline SPEC]
    ember run OUT [--input NAME=FILE.npy ... | --inputs FILE.npz | --random-inputs]
                  [--save outputs.npz] [--check MODEL.onnx] [--time N] [--emulate | --rpc HOST:PORT]
    ember profile OUT [inputs as for run] [--repeat N] [--top N] [--json FILE]
    ember debug MODEL.onnx [inputs as for run] [--reference FLOAT.onnx] [compile options] [--quantize int8 ...]
                [--emulate | --rpc HOST:PORT] [--tol T] [--int8-tol T] [--report DIR]
    ember inspect MODEL.onnx
    ember passes | ember targets

One module per command family (build, tuning, compress, run, debug) adds its subcommands;
`common` holds what they share. Every error is one line on stderr and a non-zero
exit code. Steps that can crash inside TVM run in a child process (disable with
--no-isolate).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from ember.cli import build, compress, debug, run, tuning
from ember.cli.common import EXIT_ERROR, EXIT_USAGE, Parser, one_line
from ember.errors import EmberError

FAMILIES = (build, tuning, compress, run, debug)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ember", description="Compile ONNX models for a target triple (Ember IR + Apache TVM).")
    p.add_argument("--version", action="store_true", help="print versions and exit")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks of internal errors")
    sub = p.add_subparsers(dest="cmd", parser_class=Parser)
    for family in FAMILIES:
        family.add_commands(sub)
    return p


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a model's -1 dims, a Specializing compile) as one `ember: warning:` line."""
    sys.stderr.write(f"ember: warning: {one_line(str(message))}\n")


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _warning_line
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ember.version import __version__

        print(f"ember {__version__}")
        return 0
    if not getattr(args, "cmd", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.fn(args)
    except EmberError as e:
        sys.stderr.write(f"ember: error: {one_line(str(e))}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("ember: interrupted\n")
        return 130
    except Exception as e:  # a bug in ember: still one line unless asked
        if args.traceback:
            raise
        sys.stderr.write(f"ember: internal error: {type(e).__name__}: {one_line(str(e))} (rerun with --traceback)\n")
        return EXIT_USAGE + 1
