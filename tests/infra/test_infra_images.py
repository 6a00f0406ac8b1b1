"""The images: one Python patch release everywhere, every image pinned by digest, every
package installed against its hash, and a re-run of a commit's deploy build that finds
its images already pushed (immutable tags) succeeds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.infra.cloudbuild_steps import image_key, program_problems, step_program
from tests.infra.infra_checks import REPO_ROOT

pytestmark = pytest.mark.infra

COMMIT_IMAGE = REPO_ROOT / "scripts" / "commit_image.sh"
DEPLOY = REPO_ROOT / "cloudbuild" / "deploy.yaml"
IMAGE = "europe-west1-docker.pkg.dev/p/modelrail/staging:0123abc"

# A stand-in for the docker CLI: records each call; `manifest inspect` answers from
# $FAKE_REGISTRY (a file listing the images "in the repository"); `push` adds to it,
# or fails if $FAKE_PUSH_FAILS is set (another build of the commit pushed first).
FAKE_DOCKER = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS"
case "$1 $2" in
  "manifest inspect") grep -qxF "$3" "$FAKE_REGISTRY" ;;
  push*) [ -z "${FAKE_PUSH_FAILS:-}" ] && echo "$2" >> "$FAKE_REGISTRY" ;;
  *) true ;;
esac
"""


def python_versions() -> dict[str, set[str]]:
    """{file: the Python versions it names} across the Dockerfiles and Cloud Build."""
    found: dict[str, set[str]] = {}
    for dockerfile in sorted((REPO_ROOT / "services").rglob("Dockerfile")):
        text = dockerfile.read_text()
        tags = set(re.findall(r"^FROM\s+python:(\d+\.\d+\.\d+)-", text, flags=re.MULTILINE))
        found[str(dockerfile.relative_to(REPO_ROOT))] = tags
    for pipeline in sorted((REPO_ROOT / "cloudbuild").glob("[!.]*.yaml")):
        build = yaml.safe_load(pipeline.read_text())
        version = build.get("substitutions", {}).get("_PYTHON_VERSION")
        found[str(pipeline.relative_to(REPO_ROOT))] = {str(version)}
    return found


def test_one_python_patch_release_everywhere() -> None:
    versions = python_versions()
    assert all(versions.values()), versions
    assert len(set().union(*versions.values())) == 1, versions


def test_make_python_version_moves_every_image_and_build(tmp_path: Path) -> None:
    for relative in ("Makefile", "mk", "services", "cloudbuild"):
        source = REPO_ROOT / relative
        if source.is_dir():
            shutil.copytree(source, tmp_path / relative)
        else:
            shutil.copy(source, tmp_path / relative)

    subprocess.run(
        ["make", "--no-print-directory", "python-version", "PYTHON_PATCH=3.11.99"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )

    for file, versions in python_versions().items():
        assert (tmp_path / file).read_text().count("3.11.99") >= 1, file
        assert versions  # the real files are untouched
    copied = (tmp_path / "services" / "staging" / "Dockerfile").read_text()
    assert not re.search(r"python:3\.11\.(?!99)\d+", copied)


def apt_pins(dockerfile_text: str) -> list[str]:
    """The ``package=version`` words of every ``apt-get install`` in a Dockerfile."""
    pins = []
    for command in re.findall(r"apt-get install(?:[^\n\\&]|\\\n)*", dockerfile_text):
        pins += [w.strip('"') for w in command.split() if "=" in w and not w.startswith("-")]
    return pins


def test_apt_pins_survive_debian_point_releases() -> None:
    # An exact Debian revision (libc6-dev=2.36-9+deb12u14) stops installing when the next
    # point release replaces it; the upstream version with any revision does not.
    for dockerfile in sorted((REPO_ROOT / "services").rglob("Dockerfile")):
        pins = apt_pins(dockerfile.read_text())
        assert pins, f"{dockerfile}: no pinned apt packages found"
        assert [pin for pin in pins if not pin.endswith("*")] == [], dockerfile


def test_an_exact_apt_revision_is_caught() -> None:
    text = "RUN apt-get update \\\n    && apt-get install -y libc6-dev=2.36-9+deb12u14 \\\n"

    assert apt_pins(text) == ["libc6-dev=2.36-9+deb12u14"]


def _run(action: str, tmp_path: Path, *, published: bool, push_fails: bool = False) -> tuple:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    registry, calls = tmp_path / "registry", tmp_path / "calls"
    registry.write_text(f"{IMAGE}\n" if published else "")
    calls.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_REGISTRY": str(registry),
        "FAKE_CALLS": str(calls),
    }
    if push_fails:
        env["FAKE_PUSH_FAILS"] = "1"
    extra = ["services/staging/Dockerfile"] if action == "build" else []
    completed = subprocess.run(
        ["bash", str(COMMIT_IMAGE), action, IMAGE, *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, calls.read_text().splitlines()


def test_a_new_commit_is_built_and_pushed(tmp_path: Path) -> None:
    assert _run("build", tmp_path, published=False) == (
        0,
        [
            f"manifest inspect {IMAGE}",
            f"build --file=services/staging/Dockerfile --tag={IMAGE} .",
        ],
    )
    assert _run("push", tmp_path, published=False) == (
        0,
        [f"manifest inspect {IMAGE}", f"push {IMAGE}"],
    )


def test_a_rerun_of_a_pushed_commit_neither_rebuilds_nor_pushes(tmp_path: Path) -> None:
    assert _run("build", tmp_path, published=True) == (0, [f"manifest inspect {IMAGE}"])
    assert _run("push", tmp_path, published=True) == (0, [f"manifest inspect {IMAGE}"])


def test_a_push_that_fails_for_good_fails_the_build(tmp_path: Path) -> None:
    status, _ = _run("push", tmp_path, published=False, push_fails=True)

    assert status != 0


def test_the_deploy_build_builds_and_pushes_only_through_commit_image() -> None:
    build = yaml.safe_load(DEPLOY.read_text())
    docker_steps = [
        s for s in build["steps"] if image_key(s["name"]) == ("gcr.io/cloud-builders/docker", "")
    ]
    assert docker_steps
    actions = set()
    for step in docker_steps:
        program, args = step_program(step)
        if [program, *args[:1]] == ["bash", "scripts/isolated_tests.sh"]:
            continue  # the test step: docker runs the suite, it builds and pushes nothing
        assert [program, *args[:1]] == ["bash", "scripts/commit_image.sh"], step["id"]
        assert args[2].endswith(":$COMMIT_SHA"), step["id"]
        actions.add((args[1], args[2].rsplit("/", 1)[1]))
    assert actions == {
        ("build", "staging:$COMMIT_SHA"),
        ("build", "train:$COMMIT_SHA"),
        ("push", "staging:$COMMIT_SHA"),
        ("push", "train:$COMMIT_SHA"),
    }


# ------------------------------------------------------------------ digests and hashes

# Images not yet pinned by digest: resolving a digest needs the registries, which the
# machines this was written on cannot reach. `make image-digests` pins them all; then
# this set is empty, and any image added without a digest fails the test below.
UNRESOLVED_IMAGES = {
    "services/staging/Dockerfile: python:3.11.17-slim-bookworm",
    "services/train-job/Dockerfile: python:3.11.17-slim-bookworm",
    "cloudbuild/deploy.yaml: hashicorp/terraform:${_TERRAFORM_VERSION}",
    "cloudbuild/deploy.yaml: python:${_PYTHON_VERSION}-bookworm",
    "cloudbuild/deploy.yaml: gcr.io/cloud-builders/docker",
    "cloudbuild/deploy.yaml: "
    "gcr.io/google.com/cloudsdktool/google-cloud-cli:${_GCLOUD_VERSION}-slim",
    "cloudbuild/pr-checks.yaml: hashicorp/terraform:${_TERRAFORM_VERSION}",
    "cloudbuild/pr-checks.yaml: python:${_PYTHON_VERSION}-bookworm",
}
FAKE_DIGEST = "sha256:" + "ab" * 32


def load_image_digests() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "image_digests", REPO_ROOT / "scripts" / "image_digests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_image_is_pinned_by_digest_or_known_unresolved() -> None:
    unpinned = set(load_image_digests().unpinned())

    assert unpinned - UNRESOLVED_IMAGES == set(), "pin it: `make image-digests`"
    assert UNRESOLVED_IMAGES - unpinned == set(), "pinned now: remove it from UNRESOLVED_IMAGES"


def test_image_digests_pins_every_image_keeping_its_tag(tmp_path: Path) -> None:
    digests = load_image_digests()
    for relative in ("services", "cloudbuild"):
        shutil.copytree(REPO_ROOT / relative, tmp_path / relative)
    asked: list[str] = []

    def resolve(reference: str) -> str:
        asked.append(reference)
        return FAKE_DIGEST

    for path in digests.image_files(tmp_path):
        digests.pin(path, resolve)
    for path in digests.image_files(tmp_path):  # again: an old digest is replaced
        digests.pin(path, resolve)

    assert digests.unpinned(tmp_path) == []
    assert "python:3.11.17-bookworm" in asked  # the substitution's default
    assert not any("${" in reference for reference in asked)
    staging = (tmp_path / "services" / "staging" / "Dockerfile").read_text()
    assert f"FROM python:3.11.17-slim-bookworm@{FAKE_DIGEST} AS build\n" in staging
    assert staging.count("@sha256:") == 2
    deploy = yaml.safe_load((tmp_path / "cloudbuild" / "deploy.yaml").read_text())
    names = {step["name"] for step in deploy["steps"]}
    assert f"python:${{_PYTHON_VERSION}}-bookworm@{FAKE_DIGEST}" in names
    assert f"gcr.io/cloud-builders/docker@{FAKE_DIGEST}" in names
    assert program_problems(deploy, tmp_path / "cloudbuild" / "deploy.yaml") == []


def test_an_image_without_a_digest_is_caught(tmp_path: Path) -> None:
    digests = load_image_digests()
    dockerfile = tmp_path / "services" / "web" / "Dockerfile"
    dockerfile.parent.mkdir(parents=True)
    dockerfile.write_text(f"FROM python:3.11.17-slim@{FAKE_DIGEST} AS build\nFROM nginx:1.27\n")
    (tmp_path / "cloudbuild").mkdir()

    assert digests.unpinned(tmp_path) == ["services/web/Dockerfile: nginx:1.27"]


LOCK_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)", re.MULTILINE)


def pins(text: str) -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version for name, version in LOCK_PIN.findall(text)
    }


def hashed_installs(dockerfile_text: str) -> list[str]:
    """The requirement files every ``pip install -r`` of a Dockerfile reads, each one
    only if the command also says ``--require-hashes``."""
    files = []
    for command in re.findall(r"pip install(?:[^\n\\&]|\\\n)*", dockerfile_text):
        for requirements in re.findall(r"-r\s+(\S+)", command):
            files.append(
                requirements if "--require-hashes" in command else f"UNHASHED {requirements}"
            )
    return files


@pytest.mark.parametrize(
    ("dockerfile", "locks"),
    [
        ("services/staging/Dockerfile", ["requirements.lock", "build-requirements.lock"]),
        ("services/train-job/Dockerfile", ["/tmp/requirements.lock"]),
    ],
)
def test_images_install_only_hash_pinned_requirements(dockerfile: str, locks: list[str]) -> None:
    assert hashed_installs((REPO_ROOT / dockerfile).read_text()) == locks


def test_an_install_without_require_hashes_is_caught() -> None:
    text = "RUN pip install --only-binary=:all: -r requirements.txt \\\n    && true\n"

    assert hashed_installs(text) == ["UNHASHED requirements.txt"]


@pytest.mark.parametrize(
    "lock",
    [
        "services/staging/requirements.lock",
        "services/staging/build-requirements.lock",
        "services/train-job/requirements.lock",
        "functions/requirements.lock",
    ],
)
def test_every_locked_package_carries_its_hashes(lock: str) -> None:
    text = (REPO_ROOT / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert entries
    assert [e.split(" ", 1)[0] for e in entries if "--hash=sha256:" not in e] == []


def test_image_locks_name_the_versions_of_their_sources() -> None:
    """`make image-requirements` after changing a requirements.txt or constraints.txt."""
    services = REPO_ROOT / "services"
    constraints = pins((REPO_ROOT / "constraints.txt").read_text())
    job = pins((services / "train-job" / "requirements.lock").read_text())
    assert job == pins((services / "train-job" / "requirements.txt").read_text())
    staging = pins((services / "staging" / "requirements.lock").read_text())
    assert {name: constraints.get(name) for name in staging} == staging
    wanted = pins((services / "staging" / "requirements.txt").read_text())
    assert {name: staging.get(name) for name in wanted} == wanted
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    core = pins("\n".join(pyproject["project"]["dependencies"]))
    assert {name: staging.get(name) for name in core} == core, "the image lacks a dependency"
    build = pins((services / "staging" / "build-requirements.lock").read_text())
    assert build == pins("\n".join(pyproject["build-system"]["requires"]))


def test_only_the_training_image_has_a_compiler() -> None:
    # The training job builds the compiled predictor; the staging service only loads it.
    def packages(service: str) -> set[str]:
        text = (REPO_ROOT / "services" / service / "Dockerfile").read_text()
        return {pin.partition("=")[0] for pin in apt_pins(text)}

    assert {"gcc", "libc6-dev"} <= packages("train-job")
    assert not {"gcc", "libc6-dev", "clang", "build-essential"} & packages("staging")
