"""`ember debug`: where a compiled, quantized or pruned model stops agreeing with
onnxruntime, by stage (each pass, quantization, TVM's lowering, Ember's build, the
device), then by layer inside the first stage that moves an output past its
threshold, with an int8 analysis where the chain holds a quantized model."""

from ember.compiler.debug.report import Report, Stage
from ember.compiler.debug.stages import debug

__all__ = ["Report", "Stage", "debug"]
