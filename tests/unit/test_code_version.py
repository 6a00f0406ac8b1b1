"""Lineage's code version: the setting, else the checkout's commit, else ``unversioned``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modelrail.settings.process import UNVERSIONED, Settings, checkout_commit
from tests.conftest import settings_env


def _git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_the_commit_of_the_checkout_is_the_code_version(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "commit", "-q", "-m", "first")
    (tmp_path / "sub").mkdir()

    assert checkout_commit(tmp_path / "sub") == _git(tmp_path, "rev-parse", "HEAD")


def test_outside_a_checkout_the_code_version_is_unversioned(tmp_path: Path) -> None:
    assert checkout_commit(tmp_path) == UNVERSIONED


def test_the_setting_wins_over_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = settings_env(tmp_path / "home")

    assert Settings.from_env(env).code_version == "test"
    del env["MODELRAIL_CODE_VERSION"]
    assert Settings.from_env(env).code_version == UNVERSIONED
