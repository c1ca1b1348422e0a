"""Ember's built-in passes, one module per pass, grouped by family.
Importing this package registers them in the default registry."""

from . import cleanup  # noqa: F401
