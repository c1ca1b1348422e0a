"""The TVM backend: lowering to Relax (`lower.py`, with converters for what
TVM's ONNX frontend lacks or gets wrong), the Relax pipeline per target kind
(`pipeline.py`), Ember's CPU kernels and their default schedules (`kernels.py`,
`schedule.py`, `winograd.py`, int8 dot-product intrinsics in `intrinsics.py`,
CUDA's dp4a kernels in `dp4a.py`) and what Ember's targets ask of TVM
(`target.py`)."""
