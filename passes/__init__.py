"""Ember's built-in passes, one module per pass, grouped by family.
Importing this package registers them in the default registry.

Optimization levels are pipeline strings (print one with `ember passes`):"""

from . import cleanup, fusion, pruning, quantization  # noqa: F401

LEVELS: dict[int, str] = {
    0: "",
    1: "cleanup",
    2: "cleanup,fold-batchnorm,fold-affine,merge-transposes,fuse-layernorm,fuse-gelu,fuse-silu,fuse-attention,hoist-quantize,drop-saturated-clips,int8-compute,"
       "cleanup",
}
LEVELS[3] = LEVELS[2]  # later issues (layout, quantization) extend -O3
DEFAULT_LEVEL = 2
