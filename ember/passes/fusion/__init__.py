"""Fusion family: fold constants into weights, recognise composite operators."""

from ember.passes.fusion.activations import FuseGelu, FuseSilu
from ember.passes.fusion.affine import FoldAffine
from ember.passes.fusion.attention import FuseAttention
from ember.passes.fusion.batchnorm import FoldBatchNorm
from ember.passes.fusion.layernorm import FuseLayerNorm
from ember.passes.fusion.pad import FoldPad
from ember.passes.fusion.transpose import MergeTransposes

__all__ = ["FoldAffine", "FoldBatchNorm", "FoldPad", "FuseAttention", "FuseGelu", "FuseLayerNorm", "FuseSilu",
           "MergeTransposes"]
