"""Calibration data (shared by pruning reconstruction and quantization) and
the activations a model computes on it.

Data is a list of feed dicts (input name -> array), one model run each. From
the command line (`--calib-data`):
- a .npz file: one array per model input, samples stacked along axis 0 (the
  batch axis), split into runs of the model's batch size (32 samples a run
  where the batch dimension is symbolic); an optional `labels` array holds
  one integer class per sample;
- a directory of .npz files, each one feed dict.
Random data is only used when asked for (`random_batches`), since accuracy
measured on it means nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx

from ember.errors import EmberError

LABELS = "labels"


class CalibrationError(EmberError):
    """Calibration data that does not fit the model."""


def _batch_size(spec: dict[str, Any]) -> int | None:
    shape = spec.get("shape")
    return shape[0] if shape and isinstance(shape[0], int) else None


def load(path: str | Path, specs: list[dict[str, Any]]) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Feed dicts and labels (or None) from a .npz file or a directory of them."""
    p = Path(path)
    names = [s["name"] for s in specs]
    if p.is_dir():
        files = sorted(p.glob("*.npz"))
        if not files:
            raise CalibrationError(f"calibration directory {str(p)!r} has no .npz files")
        feeds = [_read(f, names)[0] for f in files]
        return feeds, None
    if not p.is_file():
        raise CalibrationError(f"calibration data {str(p)!r} does not exist")
    arrays, labels = _read(p, names)
    samples = {len(a) for a in arrays.values()}
    if len(samples) != 1:
        raise CalibrationError(f"calibration arrays in {p.name} hold different sample counts: {sorted(samples)}")
    n = samples.pop()
    if labels is not None and len(labels) != n:
        raise CalibrationError(f"{p.name}: {len(labels)} labels for {n} samples")
    for s in specs:
        a = arrays[s["name"]]
        if s.get("shape") and a.ndim != len(s["shape"]):
            raise CalibrationError(f"{p.name}: input {s['name']!r} has rank {a.ndim}; the model takes rank "
                                   f"{len(s['shape'])} (stack samples along the batch axis)")
        if s.get("dtype") and a.dtype != np.dtype(s["dtype"]):
            arrays[s["name"]] = a.astype(s["dtype"])
    step = _batch_size(specs[0]) or 32
    feeds = [{k: a[i:i + step] for k, a in arrays.items()} for i in range(0, n - step + 1, step)]
    if not feeds:
        raise CalibrationError(f"{p.name}: {n} samples, fewer than one batch of {step}")
    return feeds, labels[:len(feeds) * step] if labels is not None else None


def _read(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise CalibrationError(f"cannot read calibration file {str(path)!r}: {str(e)[:200]}") from None
    missing = [n for n in names if n not in data]
    if missing:
        raise CalibrationError(f"{path.name} has no array for model input(s) {', '.join(missing)} "
                               f"(it holds {', '.join(sorted(data)) or 'nothing'})")
    labels = data.get(LABELS)
    return {n: data[n] for n in names}, labels


def random_batches(specs: list[dict[str, Any]], count: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random feeds of the model's input shapes (symbolic dims become 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        feed = {}
        for s in specs:
            shape = [d if isinstance(d, int) else 1 for d in (s.get("shape") or [])]
            dtype = np.dtype(s.get("dtype") or "float32")
            feed[s["name"]] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                               else np.zeros(shape, dtype=dtype))
        out.append(feed)
    return out


def activations(model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]], names: list[str],
                threads: int = 0) -> dict[str, np.ndarray]:
    """The named tensors the model computes on each feed, concatenated along
    axis 0 (onnxruntime, with the tensors added as graph outputs)."""
    from ember.compiler.ir.reference import session

    names = list(dict.fromkeys(names))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = session(m, threads=threads)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(names, feed)):
            parts[n].append(v)
    return {n: np.concatenate(v, axis=0) for n, v in parts.items()}


def outputs(model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The model's graph outputs on each feed, concatenated along axis 0."""
    names = [o.name for o in model.graph.output]
    acts = activations(model, feeds, names)
    return [acts[n] for n in names]
