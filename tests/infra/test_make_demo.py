"""`make demo` installs what running needs, and no development tool."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from tests.infra.infra_checks import REPO_ROOT

DEV_TOOLS = {"mypy", "ruff", "pytest", "pytest-xdist", "checkov", "schemathesis", "selenium"}


def _planned_commands(target: str, venv: Path) -> str:
    """What ``make TARGET`` would run on a fresh clone (no environment yet)."""
    return subprocess.run(
        ["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _requirements(extras: set[str]) -> set[str]:
    """The distribution names ``modelrail[extras]`` asks for, self-references expanded."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    names = {re.split(r"[=<>\[ ]", r)[0].lower() for r in project["dependencies"]}
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            nested = re.fullmatch(r"modelrail\[(.+)\]", requirement)
            if nested:
                pending.extend(nested.group(1).split(","))
            else:
                names.add(re.split(r"[=<>\[ ]", requirement)[0].lower())
    return names


def _installed_extras(commands: str) -> set[str]:
    installs = re.findall(r"pip install .*-e '\.\[([a-z,]+)\]'", commands)
    assert installs, commands
    return {extra for install in installs for extra in install.split(",")}


def test_make_demo_on_a_fresh_clone_installs_no_development_tool(tmp_path: Path) -> None:
    commands = _planned_commands("demo", tmp_path / "venv")

    extras = _installed_extras(commands)
    installed = _requirements(extras)

    assert "dev" not in extras
    assert not installed & DEV_TOOLS, installed & DEV_TOOLS
    assert "checkov" not in commands  # checkov's own environment is make test's
    assert {"lightgbm", "pandas", "flask"} <= installed  # what the demo runs on
    assert commands.rstrip().endswith("modelrail demo")


def test_make_test_adds_the_development_tools(tmp_path: Path) -> None:
    commands = _planned_commands("test", tmp_path / "venv")

    assert {"mypy", "ruff", "pytest", "selenium"} <= _requirements(_installed_extras(commands))
