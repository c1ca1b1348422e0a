"""Mutation fuzzing, bounded for CI: corrupted serialized models must end as a
compiled model or a clear EmberError, never a crash, hang or stray exception.
Longer runs by hand: python scripts/fuzz_models.py --iterations 2000 --run"""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_models.py"


def test_mutated_models_never_crash():
    spec = importlib.util.spec_from_file_location("fuzz_models", SCRIPT)
    fuzz_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz_models)
    counts, problems = fuzz_models.fuzz(iterations=25, seed=7, timeout=300, run=True, quiet=True)
    assert sum(counts.values()) == 25
    assert not problems, problems
