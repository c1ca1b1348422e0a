"""Small models of the families people deploy (ember/models/families.py: ResNet,
EfficientNet, ConvNeXt, ViT, UNet, a YOLO-style detector, a CRNN with a
bidirectional LSTM, a streaming LSTM voice-activity model, a GRU keyword
spotter, a BERT-class encoder), exported from PyTorch with random weights and
the dynamic axes their exporters write. Each compiles once with its symbolic
dims and matches onnxruntime at three input sizes; two inputs give different
outputs (assert_matches_reference). The wider sweep is benchmarks/zoo.py.

torch is in the test extra: a missing torch fails the export, never skips. The export runs in a
child process: torch's OpenMP runtime in this process would deadlock the forked workers of
later tests (`ember tune`'s XGBoost). The file is named to run last: with these compiles in the
test process, a later `ember tune` child hung once in this session (cause not yet found; see the
closing note)."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from helpers import assert_matches_reference

import ember
from ember.errors import RuntimeInputError
from ember.models import families as F


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")

    def export(fam):
        path = folder / f"{fam.name}.onnx"
        code = f"from ember.models import families as F; F.export(F.FAMILIES[{fam.name!r}], {str(path)!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return path

    return export


@pytest.mark.slow
@pytest.mark.parametrize("name", list(F.FAMILIES))
def test_one_symbolic_artifact_matches_onnxruntime_at_every_size(name, exported):
    fam = F.FAMILIES[name]
    path = exported(fam)
    cm = ember.compile(path)
    assert any(isinstance(d, str) for spec in cm.metadata["inputs"] for d in spec["shape"]), "dims were not symbolic"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in fam.sizes:
        feeds = F.feeds(fam, size)
        got, want = cm.run(feeds), sess.run(None, feeds)
        moved = sess.run(None, F.feeds(fam, size, seed=1))
        for out, ref, other in zip(fam.outputs, want, moved):
            assert_matches_reference(got[out], ref, other, name=f"{name} {size} {out}")


@pytest.mark.slow
def test_a_specialized_artifact_refuses_other_sizes(exported):
    fam = F.FAMILIES["crnn"]
    path = exported(fam)
    cm = ember.compile(path, input_shapes={"line": [1, 1, 32, 64]})
    feeds = F.feeds(fam, {"batch": 1, "width": 64})
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(cm.run(feeds)["log_probs"], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(RuntimeInputError,
                       match=r"input 'line' must have shape \[1, 1, 32, 64\], got \[1, 1, 32, 128\]"):
        cm.run(F.feeds(fam, {"batch": 1, "width": 128}))
