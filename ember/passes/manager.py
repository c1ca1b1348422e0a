"""Pass infrastructure: the Pass base class, the explicit registry, pipeline
specs (`cleanup,fold-batchnorm,quantize{scheme=int8}`) and the PassManager.

A pass is a frozen dataclass whose fields are its options:

    @register_pass
    @dataclass(frozen=True)
    class DropDropout(Pass):
        name: ClassVar[str] = "drop-dropout"
        def run(self, graph: Graph) -> bool: ...

There are no environment variables and no hidden global configuration: what
a PassManager does is decided by its arguments.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from ember.errors import EmberError, PassError
from ember.compiler.ir import Graph, Model


class Pass:
    """Base class. Subclasses are frozen dataclasses with a kebab-case `name`
    and implement `run(graph) -> bool` (True when the graph changed).
    The model's default opset is `graph.root().opset`; a pass that needs other
    model-level facts overrides `run_model`."""

    name: ClassVar[str] = ""

    def run(self, graph: Graph) -> bool:
        raise NotImplementedError

    def run_model(self, model: Model) -> bool:
        return self.run(model.graph)

    def options(self) -> dict[str, Any]:
        """Options that differ from their defaults."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            value = getattr(self, f.name)
            if value != default:
                out[f.name] = value
        return out

    def __str__(self) -> str:
        opts = self.options()
        if not opts:
            return self.name
        return self.name + "{" + ",".join(f"{k}={_format_value(v)}" for k, v in opts.items()) + "}"


class PassRegistry:
    """Name -> pass class. `ember.passes` fills the default registry; users
    register their own passes explicitly with `register_pass`."""

    def __init__(self) -> None:
        self._passes: dict[str, type[Pass]] = {}

    def register(self, cls: type[Pass]) -> type[Pass]:
        name = getattr(cls, "name", "")
        if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name or ""):
            raise PassError(f"pass class {cls.__name__} needs a kebab-case `name`, got {name!r}")
        if not dataclasses.is_dataclass(cls):
            raise PassError(f"pass {name!r} must be a dataclass (its fields are its options)")
        existing = self._passes.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise PassError(f"pass name {name!r} is already registered by {existing.__qualname__}")
        self._passes[name] = cls
        return cls

    def get(self, name: str) -> type[Pass]:
        try:
            return self._passes[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, self._passes, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PassError(f"unknown pass {name!r}{hint}; known: {', '.join(sorted(self._passes))}") from None

    def names(self) -> list[str]:
        return sorted(self._passes)

    def __contains__(self, name: str) -> bool:
        return name in self._passes


registry = PassRegistry()


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: add a pass to the default registry."""
    return registry.register(cls)


# ---------------------------------------------------------------- pipeline specs
def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ";".join(_format_value(x) for x in v) + "]"
    return str(v)


_ITEM = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(\{([^{}]*)\})?\s*(,|$)")


def _convert(raw: str, typ: Any, where: str) -> Any:
    t = typ if isinstance(typ, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(typ).split("|")[0].strip(), None)
    raw = raw.strip()
    try:
        if t is bool:
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if t is int:
            return int(raw)
        if t is float:
            return float(raw)
        if str(typ).startswith(("tuple", "list")):
            inner = raw.strip("[]")
            return tuple(x.strip() for x in inner.split(";") if x.strip())
    except ValueError:
        raise PassError(f"{where}: cannot read {raw!r} as {getattr(t, '__name__', typ)}") from None
    return raw


def parse_pipeline(spec: str, reg: PassRegistry | None = None) -> list[Pass]:
    """'a,b{k=v,k2=v2}' -> [A(), B(k=v, k2=v2)]. str() of each pass gives the spec back."""
    reg = reg or registry
    spec = spec.strip()
    passes: list[Pass] = []
    if not spec:
        return passes
    pos = 0
    while pos < len(spec):
        m = _ITEM.match(spec, pos)
        if not m or m.end() == pos:
            raise PassError(f"bad pipeline spec at column {pos + 1}: {spec[pos:pos + 30]!r} "
                            "(expected name or name{key=value,...})")
        name, body = m.group(1), m.group(3)
        cls = reg.get(name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for item in filter(None, (x.strip() for x in (body or "").split(","))):
            if "=" not in item:
                raise PassError(f"pass {name!r}: option {item!r} needs the form key=value")
            key, raw = (x.strip() for x in item.split("=", 1))
            if key not in fields:
                raise PassError(f"pass {name!r} has no option {key!r}; options: {', '.join(fields) or 'none'}")
            kwargs[key] = _convert(raw, fields[key].type, f"pass {name!r} option {key!r}")
        try:
            passes.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise PassError(f"pass {name!r}: {e}") from None
        pos = m.end()
        if m.group(4) == "" and pos < len(spec):
            raise PassError(f"bad pipeline spec near {spec[pos:]!r}")
    return passes


def format_pipeline(passes: Sequence[Pass]) -> str:
    return ",".join(str(p) for p in passes)


# ---------------------------------------------------------------- instruments
class Instrument:
    """Hooks around each pass. Override what you need."""

    def before(self, p: Pass, model: Model) -> None: ...

    def after(self, p: Pass, model: Model, changed: bool, seconds: float) -> None: ...


@dataclass
class PassTiming(Instrument):
    """Collects (pass, seconds, changed) for every pass run."""

    records: list[tuple[str, float, bool]] = field(default_factory=list)

    def after(self, p, model, changed, seconds):
        self.records.append((str(p), seconds, changed))

    def table(self) -> str:
        total = sum(s for _, s, _ in self.records) or 1e-12
        lines = [f"{'pass':40s} {'ms':>9s} {'share':>6s}  changed"]
        for name, s, ch in self.records:
            lines.append(f"{name:40s} {s * 1e3:9.2f} {s / total:6.1%}  {'yes' if ch else 'no'}")
        return "\n".join(lines)


@dataclass
class DumpIR(Instrument):
    """Writes the IR after the named passes (or all, with '*') to `directory`,
    or hands the text to `sink` when no directory is given."""

    after_passes: frozenset[str] = frozenset({"*"})
    directory: Path | None = None
    sink: Callable[[str, str], None] | None = None
    _count: int = 0

    def after(self, p, model, changed, seconds):
        if "*" not in self.after_passes and p.name not in self.after_passes:
            return
        self._count += 1
        text = str(model.graph)
        label = f"{self._count:03d}-{p.name}"
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{label}.txt").write_text(text + "\n")
        if self.sink is not None:
            self.sink(label, text)


# ---------------------------------------------------------------- manager
@dataclass
class PassContext:
    """Everything that steers a PassManager run, passed explicitly."""

    disabled: frozenset[str] = frozenset()
    instruments: Sequence[Instrument] = ()
    verify_each: bool = True
    max_iterations: int = 1  # >1: repeat the pipeline until nothing changes
    name_failing_pass: bool = True  # False: a pass's EmberError reaches the caller as it is


class PassManager:
    def __init__(self, passes: Iterable[Pass] | str, ctx: PassContext | None = None,
                 reg: PassRegistry | None = None):
        self.passes = parse_pipeline(passes, reg) if isinstance(passes, str) else list(passes)
        self.ctx = ctx or PassContext()

    def __str__(self) -> str:
        return format_pipeline(self.passes)

    def run(self, model: Model) -> bool:
        changed_any = False
        ran: list[str] = []
        for _ in range(max(1, self.ctx.max_iterations)):
            changed_round = False
            for p in self.passes:
                if p.name in self.ctx.disabled:
                    continue
                for ins in self.ctx.instruments:
                    ins.before(p, model)
                t0 = time.perf_counter()
                try:
                    changed = bool(p.run_model(model))
                    if self.ctx.verify_each:
                        model.verify()
                except EmberError as e:
                    if not self.ctx.name_failing_pass:
                        raise
                    raise PassError(f"pass {p} failed after [{', '.join(ran)}]: {e}") from e
                except Exception as e:  # a bug in a pass: say which one
                    raise PassError(f"pass {p} crashed after [{', '.join(ran)}]: "
                                    f"{type(e).__name__}: {e}") from e
                seconds = time.perf_counter() - t0
                ran.append(str(p))
                for ins in self.ctx.instruments:
                    ins.after(p, model, changed, seconds)
                changed_round |= changed
            changed_any |= changed_round
            if not changed_round:
                break
        return changed_any
