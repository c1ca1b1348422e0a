"""What TVM's C++ side writes to file descriptor 2: silenced (replayed if the
block fails) or filtered line by line."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what TVM's C++ side logs to fd 2 (e.g. one 'Scope Saving'
    warning per function on export); replay it if the block fails."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(fd, 2)
            os.close(fd)
            if not ok:
                buf.seek(0)
                os.write(2, buf.read()[-4000:])


@contextlib.contextmanager
def filtered_native_stderr(noise: tuple[str, ...]):
    """Pass fd 2 through, minus the lines containing any of `noise` (TVM's
    C++ side logs some harmless warnings once per candidate it tries)."""
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)

    out = os.dup(saved)  # the reader's own: processes started meanwhile (TVM's worker pools)
    # keep the pipe as their stderr and may outlive this block; the reader forwards until they exit

    def pump() -> None:
        with os.fdopen(read_end, "rb") as src, os.fdopen(out, "wb", buffering=0) as dst:
            for line in src:
                if not any(n.encode() in line for n in noise):
                    dst.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # our write end of the pipe closes with this
        os.close(saved)
        reader.join(timeout=2)  # drained, unless a worker process still holds the pipe
