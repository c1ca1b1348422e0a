"""The compiler, one folder per phase: `ir/` (the graph IR and ONNX I/O),
`input/` (validation and legalization of imported models), `backend/tvm/`
(lowering to Relax, kernels, schedules, build), `runtime/` (artifacts and
runners), and `driver.py`, which strings the phases together. The passes
between input and backend live in `ember.passes`."""
