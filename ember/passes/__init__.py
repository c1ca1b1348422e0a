"""Ember's built-in passes, one module per pass, grouped by family.
Importing this package registers them in the default registry.

Optimization levels are pipeline strings (`levels.py`; print one with `ember passes`)."""

from ember.passes import cleanup, fusion, pruning, quantization  # noqa: F401
from ember.passes.levels import DEFAULT_LEVEL, LEVELS, optimize, resolve_pipeline  # noqa: F401
