"""IR, ONNX import/export, pass infrastructure, lowering, driver and CLI."""
