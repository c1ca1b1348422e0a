"""Models for examples, tests and benchmarks, built offline: the ONNX light
models with seeded random weights (`zoo.py`) and PyTorch exports
(`torch_export.py`)."""
