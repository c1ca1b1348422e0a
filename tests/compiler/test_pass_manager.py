from dataclasses import dataclass
from typing import ClassVar

import pytest
from helpers import conv_relu_gemm

import ember.passes  # noqa: F401
from ember.compiler.ir import onnx_io
from ember.errors import PassError
from ember.compiler.ir import Graph
from ember.passes.manager import DumpIR, Pass, PassContext, PassManager, PassRegistry, PassTiming, format_pipeline, parse_pipeline


@dataclass(frozen=True)
class Knobs(Pass):
    """Does nothing; has options of each kind."""

    name: ClassVar[str] = "knobs"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    scheme: str = "int8"

    def run(self, graph: Graph) -> bool:
        return False


@dataclass(frozen=True)
class BreakGraph(Pass):
    name: ClassVar[str] = "break-graph"

    def run(self, graph: Graph) -> bool:
        graph.nodes.reverse()
        return True


@pytest.fixture
def reg():
    r = PassRegistry()
    r.register(Knobs)
    r.register(BreakGraph)
    from ember.passes.cleanup import Cleanup, DeadCodeElimination

    r.register(Cleanup)
    r.register(DeadCodeElimination)
    return r


@pytest.mark.parametrize("spec", ["knobs", "knobs{count=3,flag=true}", "cleanup,knobs{ratio=0.25,scheme=fp16},dce"])
def test_pipeline_spec_round_trips(reg, spec):
    passes = parse_pipeline(spec, reg)
    assert format_pipeline(passes) == spec
    assert parse_pipeline(format_pipeline(passes), reg) == passes


def test_pipeline_values_are_typed(reg):
    (p,) = parse_pipeline(" knobs{ count = 7 , ratio=1e-2, flag=off } ", reg)
    assert p == Knobs(count=7, ratio=0.01, flag=False)


@pytest.mark.parametrize("spec, message", [
    ("knob", "did you mean knobs"),
    ("knobs{colour=red}", "no option 'colour'"),
    ("knobs{count=many}", "cannot read 'many' as int"),
    ("knobs{count}", "key=value"),
    ("knobs,,dce", "bad pipeline spec"),
    ("knobs{count=1", "bad pipeline spec"),
])
def test_bad_specs_say_why(reg, spec, message):
    with pytest.raises(PassError, match=message):
        parse_pipeline(spec, reg)


def test_registry_rejects_bad_names_and_non_dataclasses():
    r = PassRegistry()

    class NotDataclass(Pass):
        name = "not-dc"

    with pytest.raises(PassError, match="dataclass"):
        r.register(NotDataclass)

    @dataclass(frozen=True)
    class BadName(Pass):
        name: ClassVar[str] = "Bad_Name"

    with pytest.raises(PassError, match="kebab-case"):
        r.register(BadName)


def test_verify_after_each_pass_names_the_culprit(reg):
    m = onnx_io.import_model(conv_relu_gemm())
    with pytest.raises(PassError, match=r"pass break-graph failed after \[knobs\]"):
        PassManager("knobs,break-graph", reg=reg).run(m)


def test_disabled_passes_and_instruments(reg, tmp_path):
    m = onnx_io.import_model(conv_relu_gemm())
    timing = PassTiming()
    dumps = []
    ctx = PassContext(disabled=frozenset({"break-graph"}),
                      instruments=[timing, DumpIR(frozenset({"dce"}), tmp_path, lambda label, text: dumps.append(label))])
    PassManager("knobs,break-graph,dce", ctx, reg=reg).run(m)
    assert [r[0] for r in timing.records] == ["knobs", "dce"]
    assert "knobs" in timing.table()
    assert dumps == ["001-dce"]
    assert "Conv(%x" in (tmp_path / "001-dce.txt").read_text()


def test_default_registry_has_cleanup():
    from ember.passes.manager import registry

    assert {"cleanup", "dce", "drop-identity"} <= set(registry.names())
