"""Small models of the families people deploy, exported from PyTorch with
random (seeded) weights and the dynamic axes their exporters write: the
real-model tier of the tests and of `benchmarks/zoo.py`.

Each `Family` builds a torch module, names its inputs and their symbolic
axes, and gives feeds at several sizes (`sizes`), so one artifact compiled
with symbolic dims is checked at each. `export(name, path)` writes the ONNX
file with torch.onnx's TorchScript exporter (what most shipped files were made
with); `width` scales the models: tests use the default small ones, the
benchmark wider ones.

Importing this module needs no torch; building a model does (the `bench` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # image classification, detection, ocr, speech, text, ...
    build: Callable[[int], Any]  # width -> torch.nn.Module
    inputs: dict[str, tuple]  # input name -> shape, a str where the axis is symbolic
    outputs: tuple[str, ...]
    sizes: tuple[dict[str, int], ...]  # values of the symbolic axes to run at
    int_inputs: dict[str, int] = field(default_factory=dict)  # integer inputs: name -> exclusive upper bound


def feeds(fam: Family, size: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in fam.inputs.items():
        dims = [size[d] if isinstance(d, str) else d for d in shape]
        if name == "attention_mask":  # the last rows padded: 3/4 of the tokens kept
            out[name] = np.ones(dims, np.int64)
            out[name][1:, 3 * dims[1] // 4:] = 0
        elif name in fam.int_inputs:
            out[name] = rng.integers(0, fam.int_inputs[name], dims).astype(np.int64)
        else:
            out[name] = rng.standard_normal(dims).astype(np.float32)
    return out


def export(fam: Family, path: Path, width: int = 1, opset: int = 17) -> Path:
    """Write `fam`'s model (seeded random weights) to `path` with its dynamic axes."""
    import torch

    torch.manual_seed(0)
    net = fam.build(width).eval()
    example = {k: torch.from_numpy(v) for k, v in feeds(fam, fam.sizes[0]).items()}
    axes = {n: {i: d for i, d in enumerate(s) if isinstance(d, str)} for n, s in fam.inputs.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, tuple(example.values()), str(path), input_names=list(fam.inputs),
                          output_names=list(fam.outputs), dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


# ---------------------------------------------------------------- the models
def _torch():
    import torch
    from torch import nn

    return torch, nn


def _resnet(width: int):
    torch, nn = _torch()
    c = 16 * width

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
                if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.down(x))

    return nn.Sequential(nn.Conv2d(3, c, 7, 2, 3), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         Block(c, c, 1), Block(c, 2 * c, 2), Block(2 * c, 4 * c, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, 10))


def _efficientnet(width: int):
    torch, nn = _torch()

    class MBConv(nn.Module):  # expand, depthwise, squeeze-excite (SiLU, Sigmoid), project
        def __init__(self, cin, cout, k, stride, expand=4):
            super().__init__()
            mid = cin * expand
            self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
            self.dw = nn.Sequential(nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
                                    nn.BatchNorm2d(mid), nn.SiLU())
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, max(cin // 4, 4), 1), nn.SiLU(),
                                    nn.Conv2d(max(cin // 4, 4), mid, 1), nn.Sigmoid())
            self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.dw(self.expand(x))
            y = self.project(y * self.se(y))
            return x + y if self.residual else y

    c = 16 * width
    return nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.SiLU(),
                         MBConv(c, c, 3, 1), MBConv(c, 2 * c, 5, 2), MBConv(2 * c, 2 * c, 5, 1),
                         nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 10))


def _convnext(width: int):
    torch, nn = _torch()

    class Block(nn.Module):  # depthwise 7x7, LayerNorm over channels (channels last), GELU MLP, layer scale
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
            self.norm = nn.LayerNorm(c, eps=1e-6)
            self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
            self.gamma = nn.Parameter(torch.full((c,), 0.5))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(y)))) * self.gamma
            return x + y.permute(0, 3, 1, 2)

    c = 24 * width
    return nn.Sequential(nn.Conv2d(3, c, 4, 4), Block(c), Block(c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.LayerNorm(c), nn.Linear(c, 10))


def _encoder_layers(d: int, heads: int, layers: int, pre_norm: bool):
    """Transformer encoder layers written out as Hugging Face models write them (torch's own
    nn.TransformerEncoderLayer exports its fused fast path, which ONNX has no operator for)."""
    torch, nn = _torch()

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def attend(self, x, bias):
            n, t, _ = x.shape
            q, k, v = self.qkv(x).view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / (d // heads) ** 0.5
            if bias is not None:
                scores = scores + bias
            return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d))

        def forward(self, x, bias):
            mlp = lambda y: self.fc2(torch.nn.functional.gelu(self.fc1(y)))  # noqa: E731
            if pre_norm:
                x = x + self.attend(self.n1(x), bias)
                return x + mlp(self.n2(x))
            x = self.n1(x + self.attend(x, bias))
            return self.n2(x + mlp(x))

    return nn.ModuleList([Layer() for _ in range(layers)])


def _vit(width: int):
    torch, nn = _torch()
    d, patch = 48 * width, 8

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, d, patch, patch)
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.5)
            self.pos = nn.Parameter(torch.randn(1, 17, d) * 0.5)  # a 32x32 image's 16 patches + cls
            self.layers = _encoder_layers(d, 4, 2, pre_norm=True)
            self.head = nn.Linear(d, 10)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
            for layer in self.layers:
                t = layer(t, None)
            return self.head(t[:, 0])

    return ViT()


def _unet(width: int):
    torch, nn = _torch()
    c = 8 * width

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):  # segmentation: strided downsampling, Resize (bilinear) upsampling, skip concats
        def __init__(self):
            super().__init__()
            self.d1, self.d2, self.d3 = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
            self.u2, self.u1 = block(6 * c, 2 * c), block(3 * c, c)
            self.out = nn.Conv2d(c, 5, 1)

        def forward(self, x):
            a = self.d1(x)
            b = self.d2(nn.functional.max_pool2d(a, 2))
            m = self.d3(nn.functional.max_pool2d(b, 2))
            up = nn.functional.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False)
            b = self.u2(torch.cat([up, b], 1))
            up = nn.functional.interpolate(b, size=a.shape[2:], mode="nearest")
            return self.out(self.u1(torch.cat([up, a], 1)))

    return UNet()


def _yolo(width: int):
    torch, nn = _torch()
    c = 16 * width

    def conv(cin, cout, k=3, s=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Detector(nn.Module):  # YOLO-style: backbone, two heads, grid decode with dynamic grid sizes
        def __init__(self):
            super().__init__()
            self.stem, self.s1, self.s2 = conv(3, c, 3, 2), conv(c, 2 * c, 3, 2), conv(2 * c, 4 * c, 3, 2)
            self.s3 = conv(4 * c, 4 * c, 3, 2)
            self.lateral = conv(4 * c, 2 * c, 1)
            self.head_p3, self.head_p4 = nn.Conv2d(6 * c, 3 * 9, 1), nn.Conv2d(4 * c, 3 * 9, 1)
            self.register_buffer("stride", torch.tensor([8.0, 16.0]))

        def decode(self, p, stride):
            n, _, h, w = p.shape
            p = p.view(n, 3, 9, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            grid = torch.stack([xs, ys], -1).view(1, 1, h, w, 2)
            xy = (p[..., :2] * 2 - 0.5 + grid) * stride
            wh = (p[..., 2:4] * 2) ** 2 * stride * 4
            return torch.cat([xy, wh, p[..., 4:]], -1).view(n, -1, 9)

        def forward(self, x):
            p3 = self.s2(self.s1(self.stem(x)))
            p4 = self.s3(p3)
            up = nn.functional.interpolate(self.lateral(p4), scale_factor=2.0, mode="nearest")
            out3 = self.head_p3(torch.cat([p3, up], 1))
            return torch.cat([self.decode(out3, self.stride[0]), self.decode(self.head_p4(p4), self.stride[1])], 1)

    return Detector()


def _crnn(width: int):
    torch, nn = _torch()
    c, hidden = 16 * width, 32 * width

    class CRNN(nn.Module):  # OCR recognizer: CNN over a text line, bidirectional LSTM over its width, CTC logits
        def __init__(self):
            super().__init__()
            self.cnn = nn.Sequential(nn.Conv2d(1, c, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(c, 2 * c, 3, 1, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                     nn.MaxPool2d((2, 1)), nn.Conv2d(2 * c, 2 * c, (8, 1)))
            self.rnn = nn.LSTM(2 * c, hidden, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, 37)

        def forward(self, x):
            f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [T, N, C]
            y, _ = self.rnn(f)
            return self.fc(y).log_softmax(-1)

    return CRNN()


def _speech_lstm(width: int):
    torch, nn = _torch()
    hidden = 64  # the state inputs' size

    class VAD(nn.Module):  # streaming voice activity: frames in, state in and out, a probability per frame
        def __init__(self):
            super().__init__()
            self.frontend = nn.Sequential(nn.Conv1d(1, 32, 64, 32), nn.ReLU(), nn.Conv1d(32, 32, 3, 1, 1), nn.ReLU())
            self.rnn = nn.LSTM(32, hidden, num_layers=2, batch_first=True)
            self.out = nn.Linear(hidden, 1)

        def forward(self, audio, h0, c0):
            f = self.frontend(audio.unsqueeze(1)).transpose(1, 2)
            y, (h, c) = self.rnn(f, (h0, c0))
            return torch.sigmoid(self.out(y)).squeeze(-1), h, c

    return VAD()


def _speech_gru(width: int):
    torch, nn = _torch()
    hidden = 48 * width

    class KWS(nn.Module):  # keyword spotting on filterbank features: GRU, mean over time
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(40, hidden, batch_first=True, bidirectional=True)
            self.out = nn.Linear(2 * hidden, 12)

        def forward(self, feats):
            y, _ = self.rnn(feats)
            return self.out(y.mean(1))

    return KWS()


def _text_encoder(width: int):
    torch, nn = _torch()
    d = 64 * width

    class Encoder(nn.Module):  # BERT-class: embeddings, masked attention, GELU MLP, pooled output
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(1000, d), nn.Embedding(512, d)
            self.layers = _encoder_layers(d, 4, 2, pre_norm=False)
            self.norm = nn.LayerNorm(d)

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            h = self.norm(self.tok(input_ids) + self.pos(pos))
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0  # as BERT masks
            for layer in self.layers:
                h = layer(h, bias)
            return h

    return Encoder()


def _gpt_kv(width: int):
    torch, nn = _torch()
    d, heads, layers = 32, 4, 2  # any width: the cache inputs say 4 heads of 8

    class Decoder(nn.Module):  # GPT-2 style: a decode step with a KV cache of any past length
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(1000, d), nn.Embedding(1024, d)
            self.qkv = nn.ModuleList([nn.Linear(d, 3 * d) for _ in range(layers)])
            self.proj = nn.ModuleList([nn.Linear(d, d) for _ in range(layers)])
            self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"),
                                                    nn.Linear(4 * d, d)) for _ in range(layers)])
            self.n1 = nn.ModuleList([nn.LayerNorm(d) for _ in range(layers)])
            self.n2 = nn.ModuleList([nn.LayerNorm(d) for _ in range(layers)])
            self.head = nn.Linear(d, 1000, bias=False)

        def forward(self, input_ids, past_k, past_v):
            n, t = input_ids.shape
            past = past_k.shape[3]
            pos = torch.arange(past, past + t).unsqueeze(0)
            h = self.tok(input_ids) + self.pos(pos)
            keys = torch.arange(past + t).unsqueeze(0)
            causal = (keys <= pos.transpose(0, 1)).to(h.dtype)  # [t, past + t]
            bias = (1.0 - causal) * -10000.0
            new_k, new_v = [], []
            for i in range(layers):
                q, k, v = self.qkv[i](self.n1[i](h)).view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                k, v = torch.cat([past_k[i], k], 2), torch.cat([past_v[i], v], 2)
                new_k.append(k)
                new_v.append(v)
                att = (q @ k.transpose(-1, -2) / (d // heads) ** 0.5 + bias).softmax(-1)
                h = h + self.proj[i]((att @ v).transpose(1, 2).reshape(n, t, d))
                h = h + self.mlp[i](self.n2[i](h))
            return self.head(h), torch.stack(new_k), torch.stack(new_v)

    return Decoder()


_F = Family
FAMILIES: dict[str, Family] = {f.name: f for f in [
    _F("resnet", "image classification", _resnet, {"image": ("batch", 3, "height", "width")}, ("logits",),
       ({"batch": 1, "height": 64, "width": 64}, {"batch": 2, "height": 96, "width": 128},
        {"batch": 1, "height": 160, "width": 160})),
    _F("efficientnet", "image classification", _efficientnet, {"image": ("batch", 3, "height", "width")},
       ("logits",), ({"batch": 1, "height": 64, "width": 64}, {"batch": 2, "height": 96, "width": 96},
                     {"batch": 1, "height": 128, "width": 160})),
    _F("convnext", "image classification", _convnext, {"image": ("batch", 3, "height", "width")}, ("logits",),
       ({"batch": 1, "height": 64, "width": 64}, {"batch": 2, "height": 96, "width": 96},
        {"batch": 1, "height": 128, "width": 128})),
    _F("vit", "image classification", _vit, {"image": ("batch", 3, 32, 32)}, ("logits",),
       ({"batch": 1}, {"batch": 4}, {"batch": 9})),
    _F("unet", "segmentation", _unet, {"image": ("batch", 3, "height", "width")}, ("mask",),
       ({"batch": 1, "height": 64, "width": 64}, {"batch": 1, "height": 96, "width": 128},
        {"batch": 2, "height": 128, "width": 128})),
    _F("yolo", "detection", _yolo, {"image": ("batch", 3, "height", "width")}, ("boxes",),
       ({"batch": 1, "height": 64, "width": 64}, {"batch": 1, "height": 128, "width": 96},
        {"batch": 2, "height": 160, "width": 160})),
    _F("crnn", "ocr", _crnn, {"line": ("batch", 1, 32, "width")}, ("log_probs",),
       ({"batch": 1, "width": 64}, {"batch": 2, "width": 128}, {"batch": 1, "width": 320})),
    _F("vad-lstm", "speech", _speech_lstm, {"audio": ("batch", "samples"), "h0": (2, "batch", 64),
                                            "c0": (2, "batch", 64)}, ("prob", "h", "c"),
       ({"batch": 1, "samples": 512}, {"batch": 2, "samples": 1024}, {"batch": 1, "samples": 4096})),
    _F("kws-gru", "speech", _speech_gru, {"feats": ("batch", "frames", 40)}, ("logits",),
       ({"batch": 1, "frames": 1}, {"batch": 2, "frames": 7}, {"batch": 1, "frames": 100})),
    _F("text-encoder", "text", _text_encoder, {"input_ids": ("batch", "seq"), "attention_mask": ("batch", "seq")},
       ("hidden",), ({"batch": 1, "seq": 16}, {"batch": 2, "seq": 128}, {"batch": 1, "seq": 384}),
       int_inputs={"input_ids": 1000, "attention_mask": 2}),
]}

# the benchmark's further models (benchmarks/zoo.py): a decoder with a KV cache of any past length,
# and Hugging Face architectures with small random configs (transformers: the bench extra)
MORE: dict[str, Family] = {f.name: f for f in [
    _F("gpt-kv", "text generation", _gpt_kv, {"input_ids": ("batch", "seq"), "past_k": (2, "batch", 4, "past", 8),
                                              "past_v": (2, "batch", 4, "past", 8)}, ("logits", "k", "v"),
       ({"batch": 1, "seq": 1, "past": 0}, {"batch": 1, "seq": 1, "past": 37}, {"batch": 2, "seq": 16, "past": 100}),
       int_inputs={"input_ids": 1000}),
]}


def _hf(model: str, config: str, output: int = 0, **kw):
    """A Hugging Face model class with a small config; the module returns output `output`."""
    def build(width: int):
        import importlib

        import transformers
        torch, nn = _torch()
        module, _, cls = model.rpartition(".")
        owner = importlib.import_module(f"transformers.{module}") if module else transformers
        net = getattr(owner, cls)(getattr(transformers, config)(**kw))

        class Out(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, *args):
                return self.net(**dict(zip(build.inputs, args)))[output]

        return Out()

    return build


def _hf_family(name, kind, model, config, inputs, sizes, output=0, **kw):
    build = _hf(model, config, output, **kw)
    build.inputs = tuple(inputs)
    ints = {n: 1000 for n in inputs if n == "input_ids"} | {n: 2 for n in inputs if n == "attention_mask"}
    return Family(f"hf-{name}", kind, build, inputs, ("out",), sizes, int_inputs=ints)


_TEXT = {"input_ids": ("batch", "seq"), "attention_mask": ("batch", "seq")}
_TEXT_SIZES = ({"batch": 1, "seq": 16}, {"batch": 2, "seq": 64}, {"batch": 1, "seq": 256})
_IMAGE = {"pixel_values": ("batch", 3, "height", "width")}
_IMAGE_SIZES = ({"batch": 1, "height": 64, "width": 64}, {"batch": 2, "height": 96, "width": 96},
                {"batch": 1, "height": 128, "width": 160})
_IMAGE64 = {"pixel_values": ("batch", 3, 64, 64)}
_BATCH = ({"batch": 1}, {"batch": 2}, {"batch": 4})
_small_bert = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
_stages = dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])
MORE.update({f.name: f for f in [
    _hf_family("bert", "text", "BertModel", "BertConfig", _TEXT, _TEXT_SIZES, **_small_bert),
    _hf_family("roberta", "text", "RobertaModel", "RobertaConfig", _TEXT, _TEXT_SIZES, **_small_bert),
    _hf_family("electra", "text", "ElectraModel", "ElectraConfig", _TEXT, _TEXT_SIZES, embedding_size=64,
               **_small_bert),
    _hf_family("distilbert", "text", "DistilBertModel", "DistilBertConfig", _TEXT, _TEXT_SIZES, dim=64, n_layers=2,
               n_heads=4, hidden_dim=128, vocab_size=1000),
    _hf_family("gpt2", "text generation", "GPT2Model", "GPT2Config", {"input_ids": ("batch", "seq")}, _TEXT_SIZES,
               n_embd=64, n_layer=2, n_head=4, vocab_size=1000, bos_token_id=0, eos_token_id=0),
    _hf_family("t5-encoder", "text", "T5EncoderModel", "T5Config", {"input_ids": ("batch", "seq")}, _TEXT_SIZES,
               d_model=64, num_layers=2, num_heads=4, d_ff=128, d_kv=16, vocab_size=1000),
    _hf_family("vit", "image classification", "ViTModel", "ViTConfig", _IMAGE64, _BATCH, hidden_size=64,
               num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=64, patch_size=16),
    _hf_family("deit", "image classification", "DeiTModel", "DeiTConfig", _IMAGE64, _BATCH, hidden_size=64,
               num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=64, patch_size=16),
    _hf_family("swin", "image classification", "SwinModel", "SwinConfig", _IMAGE64, _BATCH, image_size=64,
               patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4),
    _hf_family("convnext", "image classification", "ConvNextModel", "ConvNextConfig", _IMAGE, _IMAGE_SIZES, **_stages),
    _hf_family("resnet", "image classification", "ResNetModel", "ResNetConfig", _IMAGE, _IMAGE_SIZES,
               embedding_size=16, **_stages),
    _hf_family("regnet", "image classification", "RegNetModel", "RegNetConfig", _IMAGE, _IMAGE_SIZES,
               embedding_size=16, groups_width=8, **_stages),
    _hf_family("mobilenet-v2", "image classification", "MobileNetV2Model", "MobileNetV2Config", _IMAGE, _IMAGE_SIZES,
               depth_multiplier=0.35),
    _hf_family("mobilevit", "image classification", "MobileViTModel", "MobileViTConfig", _IMAGE64, _BATCH, output=1,
               image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 80]),
    _hf_family("segformer", "segmentation", "SegformerModel", "SegformerConfig", _IMAGE, _IMAGE_SIZES,
               num_encoder_blocks=4, num_attention_heads=[1, 2, 4, 4], decoder_hidden_size=64, **_stages),
    _hf_family("detr", "detection", "DetrModel", "DetrConfig", _IMAGE, _IMAGE_SIZES, use_timm_backbone=False,
               use_pretrained_backbone=False, d_model=64, encoder_layers=1, decoder_layers=1,
               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
               num_queries=10, backbone_config={"model_type": "resnet", "embedding_size": 16, "out_features": ["stage4"],
                                                **_stages}),
    _hf_family("wav2vec2", "speech", "Wav2Vec2Model", "Wav2Vec2Config", {"input_values": ("batch", "samples")},
               ({"batch": 1, "samples": 4000}, {"batch": 2, "samples": 8000}, {"batch": 1, "samples": 16000}),
               hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32, 32),
               conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=4),
    _hf_family("whisper-encoder", "speech", "models.whisper.modeling_whisper.WhisperEncoder", "WhisperConfig", {"input_features": ("batch", 16, 100)},
               _BATCH, d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
               max_source_positions=50),
]})
