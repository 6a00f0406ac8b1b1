"""Dockerfiles (hadolint), the Cloud Build pipelines (yamllint) and what their steps call."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.cloudbuild_steps import (
    ISOLATED_SUITE_SCRIPT,
    deployer_credential_problems,
    program_problems,
    step_commands,
    suite_problems,
)
from tests.infra.conftest import tool
from tests.infra.infra_checks import REPO_ROOT

pytestmark = pytest.mark.infra

CLOUDBUILD_DIR = REPO_ROOT / "cloudbuild"
PIPELINES = sorted(p for p in CLOUDBUILD_DIR.glob("*.yaml") if not p.name.startswith("."))
REQUIRED_DOCKERFILES = ("services/staging/Dockerfile", "services/train-job/Dockerfile")


def dockerfiles() -> list[Path]:
    return sorted(
        path
        for path in (REPO_ROOT / "services").rglob("Dockerfile*")
        if not path.name.endswith(".dockerignore")
    )


@pytest.mark.parametrize("relative", REQUIRED_DOCKERFILES)
def test_the_images_have_dockerfiles(relative: str) -> None:
    assert (REPO_ROOT / relative).is_file(), f"{relative} is missing (Cloud Build builds it)"


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint(dockerfile: Path) -> None:
    completed = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_runtime_image_is_pinned_and_unprivileged(dockerfile: Path) -> None:
    text = "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), (
            f"{image}: pin a digest or exact tag"
        )
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), "the last USER must not be root"
    assert "scikit-learn" not in text
    assert "build-essential" not in text


def test_yamllint_cloudbuild() -> None:
    completed = subprocess.run(
        [
            tool("yamllint"),
            "--strict",
            "-c",
            str(CLOUDBUILD_DIR / ".yamllint.yaml"),
            str(CLOUDBUILD_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def make_targets() -> set[str]:
    completed = subprocess.run(
        ["make", "-qp", "-f", "Makefile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(re.findall(r"^([A-Za-z0-9_./-]+):(?!=)", completed.stdout, flags=re.MULTILINE))


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_cloudbuild_steps_call_what_exists(pipeline: Path) -> None:
    build = yaml.safe_load(pipeline.read_text())
    targets = make_targets()
    assert {"test", "stage", "tf-init", "tf-apply"} <= targets
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    ids = {step.get("id") for step in build["steps"]}
    problems = []
    for step in build["steps"]:
        for wait in step.get("waitFor", []):
            if wait != "-" and wait not in ids:
                problems.append(f"{step['id']}: waits for unknown step {wait}")
        for command in step_commands(step):
            if command and command[0] == "make":
                for target in command[1:]:
                    if "=" not in target and not target.startswith("-") and target not in targets:
                        problems.append(f"{step['id']}: no make target {target}")
            for word in command:
                for path in re.findall(
                    r"(?:^|=)((?:scripts|services|cloudbuild|\.ci)/[\w./-]+)", word
                ):
                    if not (REPO_ROOT / path).exists():
                        problems.append(f"{step['id']}: {path} does not exist")
    substitutions = set(build.get("substitutions", {}))
    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", pipeline.read_text()))
    problems += [f"substitution {name} has no default" for name in sorted(used - substitutions)]
    assert problems == []


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_every_step_runs_a_program_its_image_has(pipeline: Path) -> None:
    assert program_problems(yaml.safe_load(pipeline.read_text()), pipeline) == []


def test_a_gcloud_step_without_its_entrypoint_is_caught() -> None:
    pipeline = CLOUDBUILD_DIR / "deploy.yaml"
    build = yaml.safe_load(pipeline.read_text())
    broken = copy.deepcopy(build)
    fetch = next(step for step in broken["steps"] if step["id"] == "fetch-tfvars")
    del fetch["entrypoint"]

    problems = program_problems(broken, pipeline)

    assert problems == [
        "deploy.yaml: step fetch-tfvars: runs 'storage', which "
        "gcr.io/google.com/cloudsdktool/google-cloud-cli:${_GCLOUD_VERSION}-slim does not have"
    ]


def test_an_image_missing_from_the_table_is_caught() -> None:
    pipeline = CLOUDBUILD_DIR / "pr-checks.yaml"
    build = yaml.safe_load(pipeline.read_text())
    build["steps"].append({"id": "lint", "name": "node:22-bookworm", "args": ["npm", "test"]})

    [problem] = program_problems(build, pipeline)

    assert "node:22-bookworm is not in BUILDER_IMAGES" in problem


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_the_suite_runs_under_ci_with_the_emulator(pipeline: Path) -> None:
    assert suite_problems(yaml.safe_load(pipeline.read_text()), pipeline) == []


def test_the_deploy_build_runs_the_suite_away_from_the_deployer_credentials() -> None:
    pipeline = CLOUDBUILD_DIR / "deploy.yaml"
    assert deployer_credential_problems(yaml.safe_load(pipeline.read_text()), pipeline) == []


def test_the_suite_beside_the_deployer_credentials_is_caught() -> None:
    """The deploy build's test step as the pull-request checks write it: `make test` in
    a step of its own, on the network that serves the deployer's credentials."""
    pipeline = CLOUDBUILD_DIR / "deploy.yaml"
    build = yaml.safe_load(pipeline.read_text())
    pr_checks = yaml.safe_load((CLOUDBUILD_DIR / "pr-checks.yaml").read_text())
    index = next(i for i, step in enumerate(build["steps"]) if step["id"] == "test")
    build["steps"][index] = next(s for s in pr_checks["steps"] if s["id"] == "test")
    mounted = (
        (REPO_ROOT / ISOLATED_SUITE_SCRIPT)
        .read_text()
        .replace("--network=bridge", "--network=cloudbuild --volume=/workspace:/workspace")
    )

    assert deployer_credential_problems(build, pipeline) == [
        "deploy.yaml: step test: runs the suite where the deployer's credentials are"
        f" reachable (run it through {ISOLATED_SUITE_SCRIPT})"
    ]
    reaches = "reaches the build's credentials or its workspace"
    assert deployer_credential_problems(
        yaml.safe_load(pipeline.read_text()), pipeline, mounted
    ) == [
        f"{ISOLATED_SUITE_SCRIPT}: --network=cloudbuild {reaches}",
        f"{ISOLATED_SUITE_SCRIPT}: --volume {reaches}",
        f"{ISOLATED_SUITE_SCRIPT}: not on the default network with a copy of the workspace",
    ]


def test_the_suite_without_ci_true_is_caught() -> None:
    pipeline = CLOUDBUILD_DIR / "pr-checks.yaml"
    build = yaml.safe_load(pipeline.read_text())
    test_step = next(step for step in build["steps"] if step["id"] == "test")
    test_step["env"].remove("CI=true")
    test_step["args"][1] = "make test"

    problems = suite_problems(build, pipeline)

    assert problems == [
        "pr-checks.yaml: step test: runs `make test` without CI=true (missing tools skip)",
        "pr-checks.yaml: step test: does not run scripts/ci_test_tools.sh before `make test`",
    ]


def test_a_tools_script_without_the_emulator_is_caught() -> None:
    pipeline = CLOUDBUILD_DIR / "pr-checks.yaml"
    script = (REPO_ROOT / "scripts" / "ci_test_tools.sh").read_text()
    without_emulator = re.sub(r'\s*"google-cloud-cli-pubsub-emulator=[^"]*"', "", script)

    problems = suite_problems(yaml.safe_load(pipeline.read_text()), pipeline, without_emulator)

    assert problems == [
        "scripts/ci_test_tools.sh: does not apt-get install google-cloud-cli-pubsub-emulator"
    ]
