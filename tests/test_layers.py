"""The layout's rules, checked on the code as it is (docs/design.md, "Layers"):
each layer imports only from below (import-linter's contracts in
pyproject.toml), no import cycles, and `import ember` alone loads no TVM and
writes no environment variable."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(LINT + ["--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    """The contracts can fail: the IR importing the driver is reported."""
    shutil.copytree(ROOT / "ember", tmp_path / "ember", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    core = tmp_path / "ember" / "compiler" / "ir" / "core.py"
    core.write_text(core.read_text() + "\nfrom ember.compiler import driver  # noqa: E402,F401\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert "ember.compiler.ir.core -> ember.compiler.driver" in proc.stdout


def test_no_import_cycles():
    g = grimp.build_graph("ember", exclude_type_checking_imports=True)
    edges = nx.DiGraph((m, d) for m in g.modules for d in g.find_modules_directly_imported_by(m))
    cycles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert not cycles, cycles


def test_import_ember_loads_no_tvm_and_sets_no_environment():
    code = ("import os, sys; before = dict(os.environ); import ember; "
            "assert not any(m == 'tvm' or m.startswith('tvm.') for m in sys.modules), 'tvm imported'; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
            "assert callable(ember.compile) and ember.__version__")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
