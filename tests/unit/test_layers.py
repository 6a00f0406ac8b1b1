"""The folders are the layers: docs/architecture.md's layer list and package tree match
the import-linter contracts and the packages, and the contracts catch a stage that
imports an adapter."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "src" / "modelrail"
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _block_after(marker: str) -> list[str]:
    """The lines of the fenced block that follows ``<!-- marker ... -->``."""
    found = re.search(rf"<!-- {marker}[^>]*-->\n```\n(.*?)```", ARCHITECTURE, re.S)
    assert found, f"docs/architecture.md has no '{marker}' block"
    return found.group(1).splitlines()


def test_the_documented_layers_are_the_contracts() -> None:
    [layers] = [c for c in _contracts() if c["type"] == "layers"]
    assert _block_after("layers") == [" → ".join(layers["layers"])]  # type: ignore[arg-type]


def test_the_documented_tree_lists_every_package_with_its_docstring() -> None:
    packages = sorted(init.parent for init in PACKAGE.rglob("__init__.py"))
    expected = []
    for package in packages:
        docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert docstring, f"{package} says nothing of what it holds"
        name = f"{package.relative_to(PACKAGE.parent)}/"
        expected.append((name, docstring.splitlines()[0]))
    documented = [tuple(line.split(maxsplit=1)) for line in _block_after("tree")]
    assert documented == expected


def test_only_the_entry_point_and_the_marker_sit_at_the_package_root() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py"]


def test_a_stage_importing_an_adapter_breaks_the_contracts(tmp_path: Path) -> None:
    """The mutation the contracts exist for: a copy of the package whose validate stage
    imports the GCS adapter fails ``lint-imports``, naming that import."""
    shutil.copytree(
        PACKAGE, tmp_path / "src" / "modelrail", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    clean = lint()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    stage = tmp_path / "src" / "modelrail" / "service" / "stages" / "validate.py"
    stage.write_text(stage.read_text() + "\nfrom modelrail.adapters.google import gcs  # noqa\n")

    mutated = lint()

    assert mutated.returncode != 0
    assert "modelrail.service.stages.validate -> modelrail.adapters.google.gcs" in mutated.stdout
