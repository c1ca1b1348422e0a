"""Models available offline, for the quickstart, tests and benchmarks.

The light models in the onnx wheel (`onnx/backend/test/data/light/`) are real
architectures whose weights are `ConstantOfShape` fills: every output is the
same. `light_model()` replaces those fills with seeded random weights, scaled
by fan-in so activations stay in a sensible range, which makes numerical
comparisons meaningful.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


def onnx_test_data_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def light_model_path(name: str) -> Path:
    return onnx_test_data_dir() / "light" / f"light_{name}.onnx"


def light_model(name: str, seed: int = 0, logits: bool = False) -> onnx.ModelProto:
    """A light model from the onnx wheel with seeded random weights; `logits`: without its final
    Softmax (with random weights it saturates: every input gives the same one-hot output, so a
    comparison of probabilities proves nothing)."""
    if name not in LIGHT_MODELS:
        raise ValueError(f"unknown light model {name!r}; known: {', '.join(LIGHT_MODELS)}")
    m = randomize_constant_fills(onnx.load(str(light_model_path(name))), seed)
    return without_final_softmax(m) if logits else m


def without_final_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model returning what its final Softmax normalizes (the graph output keeps its name)."""
    g = model.graph
    out = g.output[0].name
    last = next((n for n in g.node if out in n.output), None)
    if last is None or last.op_type != "Softmax":
        return model
    src = last.input[0]
    g.node.remove(last)
    for n in g.node:
        for i, name in enumerate(n.output):
            if name == src:
                n.output[i] = out
        for i, name in enumerate(n.input):
            if name == src:
                n.input[i] = out
    return model


def _roles(g: onnx.GraphProto) -> dict[str, str]:
    """What each constant fill is: a BatchNorm scale/shift/mean/var, or a per-channel factor or
    offset (BatchNorm spelled out as Mul and Add of an Unsqueezed vector, as DenseNet's is)."""
    role: dict[str, str] = {}
    for n in g.node:
        if n.op_type == "BatchNormalization":
            for i, name in enumerate(n.input):
                role[name] = {1: "scale", 2: "shift", 3: "mean", 4: "var"}.get(i, "")
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            users.setdefault(name, []).append(n)

    def arithmetic(name: str, depth: int = 0) -> str:
        for u in users.get(name, []):
            if u.op_type in ("Unsqueeze", "Reshape", "Identity", "Cast") and depth < 4:
                found = arithmetic(u.output[0], depth + 1)
                if found:
                    return found
            elif u.op_type in ("Mul", "Div"):
                return "scale"
            elif u.op_type in ("Add", "Sub"):
                return "shift"
        return ""

    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.output[0] not in role:
            role[n.output[0]] = arithmetic(n.output[0])
    return role


def randomize_constant_fills(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace float ConstantOfShape nodes whose shape is an initializer by
    random initializers. BatchNorm scales and variances get positive values."""
    rng = np.random.default_rng(seed)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    role = _roles(g)
    keep, new_inits = [], []
    for n in g.node:
        shape_t = inits.get(n.input[0]) if n.op_type == "ConstantOfShape" and n.input else None
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        if shape_t is None or (value is not None and value.data_type != onnx.TensorProto.FLOAT):
            keep.append(n)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(shape_t))
        out = n.output[0]
        r = role.get(out, "")
        if r in ("scale", "var"):
            arr = rng.uniform(0.5, 1.5, shape)
        elif r in ("shift", "mean") or len(shape) <= 1:
            arr = rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        new_inits.append(numpy_helper.from_array(arr.astype(np.float32), out))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    alive = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(alive)
    names = {t.name for t in alive}
    # runtime inputs stay; inputs that named a constant fill stay only while that initializer does
    graph_inputs = [i for i in g.input if i.name not in inits or i.name in names]
    del g.input[:]
    g.input.extend(graph_inputs)
    return model


def runtime_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def random_inputs(model: onnx.ModelProto, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random values for the model's runtime inputs; symbolic dims
    take their size from `dims` (default 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for vi in runtime_inputs(model):
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (dims or {}).get(d.dim_param, 1) for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            out[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            out[vi.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[vi.name] = rng.integers(0, 8, shape).astype(dtype)
    return out
