"""Ember's errors. Every error a user can cause is an `EmberError`; the CLI
prints it as one line and exits non-zero."""


class EmberError(Exception):
    """Base class: a problem with the user's input or request."""


class ModelLoadError(EmberError):
    """The file is missing, is not ONNX, or is malformed."""


class IRError(EmberError):
    """An IR invariant is broken (by a model or by a pass)."""


class PassError(EmberError):
    """A pass failed, or a pipeline spec is invalid."""


class UnsupportedError(EmberError):
    """The model uses an operator, domain or type Ember cannot compile."""


class CompileError(EmberError):
    """TVM failed to lower or build the model."""


class TargetError(EmberError):
    """An unknown or impossible target."""


class RuntimeInputError(EmberError):
    """Inputs given to a compiled model do not match its signature."""


class ArtifactError(EmberError):
    """A compiled artifact is missing, corrupt or from another version."""
