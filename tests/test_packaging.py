"""The wheel ships every package: setuptools finds packages by their
`__init__.py`, so a folder of modules without one would be left out of a plain
(non-editable) install while an editable install still finds it."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_folder_of_modules_is_a_package_setuptools_finds():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["packages"]["find"]["include"] == ["ember*"]
    folders = {p.parent for p in (ROOT / "ember").rglob("*.py") if "__pycache__" not in p.parts}
    missing = [str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()]
    assert not missing, f"folders without __init__.py (left out of the wheel): {missing}"
