"""Pruning family: structured channel removal (a smaller dense model),
unstructured magnitude and N:M sparsity (zeros: a smaller compressed file),
and the least-squares reconstruction `ember prune --reconstruct` runs after them."""

from ember.passes.pruning.channels import PruneChannels
from ember.passes.pruning.magnitude import PruneMagnitude, PruneNM

__all__ = ["PruneChannels", "PruneMagnitude", "PruneNM"]
