"""onnxruntime as the reference Ember's results are checked against."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ember.errors import EmberError


def session(model: str | Path | onnx.ModelProto, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    if not isinstance(model, onnx.ModelProto) and not Path(model).is_file():
        raise EmberError(f"reference model {model}: no such file")
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise EmberError(f"onnxruntime cannot load the reference model: {str(e).splitlines()[0][:300]}") from None


def run_onnxruntime(model: str | Path | onnx.ModelProto, inputs: dict[str, Any], repeat: int = 0,
                    threads: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """Outputs by name, and `repeat` timed runs (after one warm-up)."""
    sess = session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    feed = {i.name: inputs[i.name] for i in sess.get_inputs() if i.name in inputs}
    try:
        outs = sess.run(names, feed)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            sess.run(names, feed)
            times.append(time.perf_counter() - t0)
    except Exception as e:
        raise EmberError(f"onnxruntime failed on the reference model: {str(e).splitlines()[0][:300]}") from None
    return dict(zip(names, outs)), times
