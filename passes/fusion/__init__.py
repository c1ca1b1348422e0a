"""Fusion family: fold constants into weights, recognise composite operators."""

from .activations import FuseGelu, FuseSilu
from .affine import FoldAffine
from .attention import FuseAttention
from .batchnorm import FoldBatchNorm
from .layernorm import FuseLayerNorm
from .transpose import MergeTransposes

__all__ = ["FoldAffine", "FoldBatchNorm", "FuseAttention", "FuseGelu", "FuseLayerNorm", "FuseSilu",
           "MergeTransposes"]
