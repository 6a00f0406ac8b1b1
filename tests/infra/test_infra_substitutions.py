"""Values from outside (make variables, Cloud Build substitutions) never run as code:
make refuses a value outside its allow-list before any recipe runs, and Cloud Build
hands substitutions to scripts through the environment, not pasted into their text."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.cloudbuild_steps import script_substitution_problems
from tests.infra.infra_checks import REPO_ROOT

pytestmark = pytest.mark.infra

CLOUDBUILD_DIR = REPO_ROOT / "cloudbuild"
PIPELINES = sorted(p for p in CLOUDBUILD_DIR.glob("*.yaml") if not p.name.startswith("."))

INJECTIONS = [
    "dev; echo INJECTED; exit 0 #",
    "dev' && echo INJECTED && '",
    "$(shell echo INJECTED >&2)",
    "dev$$(echo INJECTED)",
    "dev`echo INJECTED`",
    "../../../tmp",
    "Dev",
]


def make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the repository, with a recording stand-in for terraform."""
    calls = tmp_path / "terraform-calls"
    fake_terraform = tmp_path / "terraform"
    fake_terraform.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake_terraform.chmod(0o755)
    return subprocess.run(
        ["make", "--no-print-directory", f"TERRAFORM={fake_terraform}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TF_")},
        check=False,
    )


@pytest.mark.parametrize("value", INJECTIONS)
def test_make_refuses_an_injected_environment(tmp_path: Path, value: str) -> None:
    completed = make(tmp_path, "tf-init", f"TF_ENV={value}", "TF_STATE_BUCKET=state-bucket")

    assert completed.returncode != 0
    assert "INJECTED" not in completed.stdout
    assert "INJECTED" not in completed.stderr.replace(value, "")
    assert "TF_ENV=" in completed.stderr
    assert not (tmp_path / "terraform-calls").exists(), "terraform ran"


@pytest.mark.parametrize("value", INJECTIONS[:5])
def test_make_refuses_an_injected_state_bucket(tmp_path: Path, value: str) -> None:
    completed = make(tmp_path, "tf-init", f"TF_STATE_BUCKET={value}")

    assert completed.returncode != 0
    assert "INJECTED" not in completed.stderr.replace(value, "")
    assert not (tmp_path / "terraform-calls").exists(), "terraform ran"


def test_make_refuses_an_injected_python_version(tmp_path: Path) -> None:
    completed = make(tmp_path, "-n", "python-version", "PYTHON_PATCH=3.11.1'; echo INJECTED '")

    assert completed.returncode != 0
    assert "PYTHON_PATCH=" in completed.stderr
    assert "sed" not in completed.stdout


def test_tf_apply_refuses_before_staging_the_functions(tmp_path: Path) -> None:
    completed = make(tmp_path, "-n", "tf-apply", "TF_ENV=dev;id")

    assert completed.returncode != 0
    assert "stage_functions.py" not in completed.stdout


def test_make_passes_an_allowed_value_quoted(tmp_path: Path) -> None:
    completed = make(tmp_path, "tf-init", "TF_ENV=prod-eu_1", "TF_STATE_BUCKET=my.state-bucket")

    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "terraform-calls").read_text().split() == [
        "-chdir=terraform/envs/prod-eu_1",
        "init",
        "-input=false",
        "-backend-config=bucket=my.state-bucket",
        "-backend-config=prefix=modelrail/prod-eu_1",
    ]
    assert "-chdir='terraform/envs/prod-eu_1'" in completed.stdout


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_no_substitution_is_pasted_into_a_script(pipeline: Path) -> None:
    assert script_substitution_problems(yaml.safe_load(pipeline.read_text()), pipeline) == []


def test_a_substitution_pasted_into_a_script_is_caught() -> None:
    pipeline = CLOUDBUILD_DIR / "pr-checks.yaml"
    build = yaml.safe_load(pipeline.read_text())
    test_step = next(step for step in build["steps"] if step["id"] == "test")
    test_step["args"][1] = "bash scripts/ci_test_tools.sh ${_GCLOUD_VERSION} && make test"

    assert script_substitution_problems(build, pipeline) == [
        "pr-checks.yaml: step test: its script has ${_GCLOUD_VERSION} pasted in (use env)"
    ]


def test_the_tools_script_refuses_a_version_that_is_not_one() -> None:
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "ci_test_tools.sh"), "528.0.0; echo INJECTED"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode == 2
    assert "must be a version number" in completed.stderr
