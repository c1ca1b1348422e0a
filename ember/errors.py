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


def first_line(e: BaseException) -> str:
    """The informative line of a (often multi-line, traceback-laden) TVM error.
    A failed nvcc run comes as the whole CUDA source, then "Compilation
    error:" and nvcc's output: its first error line is the one."""
    text = str(e)
    if "\nCompilation error:\n" in text:
        text = text.split("\nCompilation error:\n", 1)[1]
        errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
        text = "\n".join(errors) or text
    for ln in text.splitlines():
        s = ln.strip()
        if s and not s.startswith(("Traceback", "File ", "0:", "1:", "2:")):
            return f"{type(e).__name__}: {s[:400]}"
    return type(e).__name__
