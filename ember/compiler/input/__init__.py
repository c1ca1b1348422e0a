"""The input phase: what turns an imported ONNX model into one the passes and
the backend can take. Validation against hostile files, binding inputs to
constants, expanding ONNX function bodies (recurrent and spectral ops among
them) and unrolling loops."""
