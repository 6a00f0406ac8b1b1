"""What Cloud Build will execute for each step of cloudbuild/*.yaml.

Cloud Build runs a step as a container of its image: the step's ``entrypoint`` if it
sets one, else the image's own ENTRYPOINT with ``args`` appended, else (an image with no
ENTRYPOINT) ``args[0]`` is the program. So the same ``args`` mean different things on
different images, and a check of the argument list alone says nothing about what runs.
``BUILDER_IMAGES`` records, for every image the pipelines use, its ENTRYPOINT and the
programs a step may call on it; an image missing from the table is a problem, so a new
image is added consciously, with why.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

from tests.infra.infra_checks import REPO_ROOT


@dataclasses.dataclass(frozen=True)
class BuilderImage:
    entrypoint: str | None  # the image's ENTRYPOINT; None: Cloud Build runs args[0]
    programs: frozenset[str]  # what a step may run on it (its entrypoint or in a script)


# Shell utilities every image here has (Debian's coreutils or Alpine's busybox); they
# may appear inside `sh -c` scripts on any image.
SHELL_BASICS = frozenset({"cd", "cp", "echo", "exit", "mkdir", "mv", "rm", "set", "test", "true"})

# (repository, tag variant) -> the image. The variant is the tag without its version:
# ``python:${_PYTHON_VERSION}-bookworm`` is ("python", "-bookworm").
BUILDER_IMAGES: dict[tuple[str, str], BuilderImage] = {
    # Its Dockerfile ends with ENTRYPOINT ["/bin/terraform"]; Alpine-based (busybox sh).
    ("hashicorp/terraform", ""): BuilderImage("terraform", frozenset({"terraform", "sh"})),
    # Docker's official image on buildpack-deps:bookworm: no ENTRYPOINT (CMD python3);
    # the full variant carries make, a C compiler, git, curl, gpg and apt.
    ("python", "-bookworm"): BuilderImage(
        None,
        frozenset(
            {"python", "python3", "pip", "make", "cc", "git", "curl", "gpg", "apt-get"}
            | {"sh", "bash"}
        ),
    ),
    # The cloud-builders image passes its args to docker: ENTRYPOINT ["/usr/bin/docker"].
    ("gcr.io/cloud-builders/docker", ""): BuilderImage("docker", frozenset({"docker", "bash"})),
    # cloud-sdk-docker's debian_slim/Dockerfile sets no ENTRYPOINT (the :stable variant
    # has an entrypoint script, so the variant matters): a step names `gcloud` itself.
    ("gcr.io/google.com/cloudsdktool/google-cloud-cli", "-slim"): BuilderImage(
        None, frozenset({"gcloud", "gsutil", "bq", "sh", "bash"})
    ),
}

_LEADING_VERSION = re.compile(r"^(\$\{_[A-Z0-9_]+\}|\$[A-Z_]+|\d+(\.\d+)*)")
SHELLS = ("sh", "bash")


def image_key(name: str) -> tuple[str, str]:
    """("python", "-bookworm") for ``python:${_PYTHON_VERSION}-bookworm``, with or
    without its ``@sha256:`` digest."""
    repository, _, tag = name.split("@", 1)[0].partition(":")
    return repository, _LEADING_VERSION.sub("", tag)


def step_program(step: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(the program Cloud Build runs, its arguments); the program is None when the
    step names none (no entrypoint, an image without one, no args)."""
    args = [str(arg) for arg in step.get("args", [])]
    if step.get("entrypoint"):
        return str(step["entrypoint"]), args
    image = BUILDER_IMAGES.get(image_key(step["name"]))
    if image is not None and image.entrypoint:
        return image.entrypoint, args
    return (args[0], args[1:]) if args else (None, [])


def step_commands(step: dict[str, Any]) -> list[list[str]]:
    """The command lines a step runs: its program and arguments, or each line of its
    ``sh -c`` / ``bash -c`` script."""
    program, args = step_program(step)
    if program is None:
        return []
    if program in SHELLS and len(args) >= 2 and args[0] == "-c":
        return [shlex.split(line) for line in re.split(r"&&|;|\n", args[1]) if line.strip()]
    return [[program, *args]]


def _exists_in_repository(word: str) -> bool:
    return "/" in word and not word.startswith("/") and (REPO_ROOT / word).is_file()


def program_problems(build: dict[str, Any], source: Path) -> list[str]:
    """Each step's program, as Cloud Build will run it, exists on its image."""
    problems = []
    for step in build["steps"]:
        where = f"{source.name}: step {step.get('id', step['name'])}"
        image = BUILDER_IMAGES.get(image_key(step["name"]))
        if image is None:
            problems.append(
                f"{where}: image {step['name']} is not in BUILDER_IMAGES "
                "(add its ENTRYPOINT and programs, with why)"
            )
            continue
        program, _ = step_program(step)
        if program is None:
            problems.append(f"{where}: runs nothing (no entrypoint, the image has none, no args)")
            continue
        if program not in image.programs:
            problems.append(f"{where}: runs {program!r}, which {step['name']} does not have")
            continue
        if program in SHELLS:
            for command in step_commands(step):
                word = command[0]
                known = word in image.programs or word in SHELL_BASICS
                if not known and not _exists_in_repository(word):
                    problems.append(f"{where}: its script runs {word!r}, not on {step['name']}")
    return problems


# The test suite in Cloud Build: `make test` under CI=true, after the script that
# installs Google's Pub/Sub emulator, the gcloud CLI and Java.
SUITE_TOOLS_SCRIPT = "scripts/ci_test_tools.sh"
SUITE_TOOLS = ("google-cloud-cli-pubsub-emulator", "google-cloud-cli", "openjdk-17-jdk")


# A step may run the suite in a container of its own (the deploy build, away from the
# deployer's credentials): it runs this script, whose `docker create` names the
# container's environment (--env=...) and its command (bash -c '...').
ISOLATED_SUITE_SCRIPT = "scripts/isolated_tests.sh"


def isolated_suite(script: str) -> tuple[list[list[str]], list[str]]:
    """(the command lines, the environment) of the container the script starts."""
    create = re.search(r"docker create((?:[^\n\\]|\\\n)*)", script)
    assert create, f"{ISOLATED_SUITE_SCRIPT} creates no container"
    words = shlex.split(create[1].replace("\\\n", " ").split(">", 1)[0])
    env = [word.removeprefix("--env=") for word in words if word.startswith("--env=")]
    command = words[-1]
    return [shlex.split(line) for line in re.split(r"&&|;|\n", command) if line.strip()], env


def suite_runs(
    step: dict[str, Any], isolated_script: str | None = None
) -> tuple[list[list[str]], list[str]]:
    """(the command lines that run the suite, their environment) of a step: its own, or
    those of the container ``scripts/isolated_tests.sh`` starts."""
    commands = step_commands(step)
    if any(ISOLATED_SUITE_SCRIPT in command for command in commands):
        script = isolated_script or (REPO_ROOT / ISOLATED_SUITE_SCRIPT).read_text()
        return isolated_suite(script)
    return commands, [str(variable) for variable in step.get("env", [])]


def suite_problems(
    build: dict[str, Any], source: Path, tools_script: str | None = None
) -> list[str]:
    """Every step running `make test` runs it under CI=true with the emulator installed
    (``tools_script``: the text of scripts/ci_test_tools.sh, read if not given)."""
    problems = []
    suite_steps = [s for s in build["steps"] if ["make", "test"] in suite_runs(s)[0]]
    if not suite_steps:
        problems.append(f"{source.name}: no step runs `make test`")
    for step in suite_steps:
        where = f"{source.name}: step {step.get('id', step['name'])}"
        commands, env = suite_runs(step)
        if "CI=true" not in env:
            problems.append(f"{where}: runs `make test` without CI=true (missing tools skip)")
        installs = [c for c in commands if SUITE_TOOLS_SCRIPT in c]
        if not installs or commands.index(installs[0]) > commands.index(["make", "test"]):
            problems.append(f"{where}: does not run {SUITE_TOOLS_SCRIPT} before `make test`")
    script = tools_script or (REPO_ROOT / SUITE_TOOLS_SCRIPT).read_text()
    install_lines = " ".join(re.findall(r"apt-get install(?:[^\n\\]|\\\n|\\)*", script))
    for package in SUITE_TOOLS:
        if not re.search(rf"(^|[\s\"]){re.escape(package)}([=\s\"]|$)", install_lines):
            problems.append(f"{SUITE_TOOLS_SCRIPT}: does not apt-get install {package}")
    return problems


def script_substitution_problems(build: dict[str, Any], source: Path) -> list[str]:
    """No step's ``sh -c`` / ``bash -c`` script holds a substitution in its text.

    Cloud Build pastes a substitution (``${_TF_ENV}``, ``$COMMIT_SHA``) into the script
    before the shell reads it, so its value would run as code; a step hands it over in
    ``env`` and the script reads the variable (``$$NAME``, which Cloud Build turns into
    ``$NAME``)."""
    problems = []
    for step in build["steps"]:
        program, args = step_program(step)
        if program not in SHELLS or len(args) < 2 or args[0] != "-c":
            continue
        pasted = re.findall(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", args[1].replace("$$", ""))
        if pasted:
            where = f"{source.name}: step {step.get('id', step['name'])}"
            problems.append(f"{where}: its script has {', '.join(pasted)} pasted in (use env)")
    return problems


# What lets a container reach the build account's credentials or the workspace itself:
# Cloud Build serves the credentials on its `cloudbuild` network; a mount or the host's
# network would hand over the workspace (what the later steps build) or the metadata.
_CREDENTIAL_ROUTES = (
    "--network=cloudbuild",
    "--network=host",
    "--volume",
    "-v ",
    "--mount",
    "--volumes-from",
    "/var/run/docker.sock",
)


def deployer_credential_problems(
    build: dict[str, Any], source: Path, isolated_script: str | None = None
) -> list[str]:
    """The deploy build runs the suite only in scripts/isolated_tests.sh's container,
    which is on Docker's default network with a copy of the workspace."""
    problems = []
    for step in build["steps"]:
        if ["make", "test"] not in suite_runs(step, isolated_script)[0]:
            continue
        where = f"{source.name}: step {step.get('id', step['name'])}"
        if not any(ISOLATED_SUITE_SCRIPT in command for command in step_commands(step)):
            problems.append(
                f"{where}: runs the suite where the deployer's credentials are reachable"
                f" (run it through {ISOLATED_SUITE_SCRIPT})"
            )
    script = isolated_script or (REPO_ROOT / ISOLATED_SUITE_SCRIPT).read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    for route in _CREDENTIAL_ROUTES:
        if route in code:
            problems.append(
                f"{ISOLATED_SUITE_SCRIPT}: {route.strip()} reaches the build's credentials"
                " or its workspace"
            )
    if "--network=bridge" not in code or "docker cp /workspace/." not in code:
        problems.append(
            f"{ISOLATED_SUITE_SCRIPT}: not on the default network with a copy of the workspace"
        )
    return problems
