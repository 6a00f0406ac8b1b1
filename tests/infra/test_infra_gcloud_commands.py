"""Every gcloud command docs/deploy.md tells a reader to run parses (argument by
argument, with gcloud's own parser), and the files its commands read are well formed.

The doc's bash blocks run in bash, in a scratch folder, with the reader's variables set
to sample values and a stand-in `gcloud` first on PATH that records each command line
(so loops, heredocs, quoting and command substitution work as a shell does them; every
other program is missing, so nothing else runs). Each recorded command line then runs
through the real gcloud CLI with an empty configuration and no credentials: a flag that
does not parse exits 2 before any request is made; a command that parses stops later,
for want of credentials. scripts/verify_project.sh passes `bash -n`, and every script of
scripts/ and cloudbuild/ shellcheck.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.infra.conftest import tool
from tests.infra.infra_checks import REPO_ROOT

pytestmark = pytest.mark.infra

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
VERIFY_PROJECT = REPO_ROOT / "scripts" / "verify_project.sh"
# The reader's variables (docs/deploy.md, prerequisites), as a reader would set them.
SAMPLE_ENV = {
    "PROJECT_ID": "my-project",
    "REGION": "europe-west1",
    "STATE_BUCKET": "my-project-tfstate",
    "DEPLOYER": "modelrail-deployer@my-project.iam.gserviceaccount.com",
    "DATA_BUCKET": "my-project-modelrail-data",
    "STAGING_URL": "https://modelrail-staging-abc-ew.a.run.app",
    "TOKEN": "token",
    "SHA": "0123456789abcdef0123456789abcdef01234567",
}
# What gcloud says when its parser refuses a command line (exit status 2).
PARSE_ERRORS = re.compile(
    r"unrecognized arguments|argument [-\w]+|Bad syntax for dict arg|Invalid choice|"
    r"must be specified|expected one argument|Unable to read file"
)
GCLOUD_TIMEOUT_S = 60
# The command line docs/deploy.md step 3 printed before: its --condition held a CEL
# expression with commas, which gcloud splits into keys.
UNPARSABLE = [
    "projects",
    "add-iam-policy-binding",
    "my-project",
    "--member=serviceAccount:d@my-project.iam.gserviceaccount.com",
    "--role=roles/resourcemanager.projectIamAdmin",
    "--condition=title=only-log-writer,expression=api.getAttribute("
    "'iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(['roles/logging.logWriter', "
    "'roles/aiplatform.user'])",
]


def gcloud() -> str:
    found = shutil.which("gcloud")
    if found is None:
        message = "the gcloud CLI is not installed (scripts/ci_test_tools.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


@dataclass(frozen=True)
class Recorded:
    block: int
    argv: list[str]

    def __str__(self) -> str:
        return f"block {self.block}: gcloud {' '.join(self.argv)}"


def record_gcloud_commands(blocks: Iterable[str], workdir: Path) -> list[Recorded]:
    """Run each bash block with a recording `gcloud` and nothing else on PATH."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    log = workdir / "gcloud-calls.jsonl"
    stand_in = bin_dir / "gcloud"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['GCLOUD_CALLS'], 'a') as log:\n"
        "    log.write(json.dumps([int(os.environ['DOC_BLOCK']), sys.argv[1:]]) + '\\n')\n"
        # What a command substitution takes from gcloud's answer.
        "print('sample-output')\n"
    )
    stand_in.chmod(0o755)
    # Heredocs write their files with cat; nothing else the blocks name may run.
    (bin_dir / "cat").symlink_to(shutil.which("cat") or "/bin/cat")
    scratch = workdir / "cwd"
    scratch.mkdir()
    bash = shutil.which("bash") or "/bin/bash"
    for number, block in enumerate(blocks):
        subprocess.run(
            [bash, "-c", block],
            cwd=scratch,
            env={
                **SAMPLE_ENV,
                "PATH": str(bin_dir),
                "HOME": str(workdir),
                "GCLOUD_CALLS": str(log),
                "DOC_BLOCK": str(number),
            },
            capture_output=True,
            timeout=60,
            check=False,
        )
    if not log.exists():
        return []
    return [Recorded(*json.loads(line)) for line in log.read_text().splitlines()]


def parse_failure(gcloud_path: str, argv: list[str], workdir: Path) -> str | None:
    """gcloud's complaint if it cannot parse ``argv``, else None. Runs in ``workdir`` (the
    files the doc's heredocs wrote), with an empty configuration and no credentials."""
    config = workdir / f"gcloud-config-{os.getpid()}-{abs(hash(tuple(argv)))}"
    completed = subprocess.run(
        [gcloud_path, *argv],
        cwd=workdir,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_PROJECT": SAMPLE_ENV["PROJECT_ID"],
        },
        capture_output=True,
        text=True,
        timeout=GCLOUD_TIMEOUT_S,
        check=False,
    )
    if completed.returncode == 2 or PARSE_ERRORS.search(completed.stderr.split("\n")[0]):
        return completed.stderr.strip().splitlines()[0] if completed.stderr.strip() else "exit 2"
    return None


def parse_failures(gcloud_path: str, recorded: list[Recorded], workdir: Path) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = pool.map(lambda call: parse_failure(gcloud_path, call.argv, workdir), recorded)
        return [
            f"{call}\n  {answer}" for call, answer in zip(recorded, answers, strict=True) if answer
        ]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Recorded], Path]:
    workdir = tmp_path_factory.mktemp("deploy-md")
    calls = record_gcloud_commands(bash_blocks(DEPLOY_MD.read_text()), workdir)
    return calls, workdir / "cwd"


def test_the_docs_name_the_commands_a_deploy_needs(recorded: tuple[list[Recorded], Path]) -> None:
    calls, _ = recorded
    commands = {" ".join(call.argv[:3]) for call in calls}
    # One per step the reader cannot skip: a recording that lost them checks nothing.
    for expected in (
        "services enable cloudresourcemanager.googleapis.com",
        "iam service-accounts create",
        "projects add-iam-policy-binding my-project",
        "storage buckets create",
        "builds triggers run",
        "storage cp data/penguins.csv",
    ):
        assert any(command.startswith(expected) for command in commands), expected
    # The for loop over the deployer's roles ran: one binding per role.
    bindings = [c for c in calls if c.argv[:2] == ["projects", "add-iam-policy-binding"]]
    assert len(bindings) >= 10


def test_every_gcloud_command_in_deploy_md_parses(recorded: tuple[list[Recorded], Path]) -> None:
    calls, workdir = recorded
    assert parse_failures(gcloud(), calls, workdir) == []


def test_a_command_gcloud_cannot_parse_is_caught(tmp_path: Path) -> None:
    """The check fails the command docs/deploy.md step 3 used to print."""
    problems = parse_failures(gcloud(), [Recorded(0, UNPARSABLE)], tmp_path)

    assert len(problems) == 1
    assert "argument --condition" in problems[0]


def test_condition_files_are_yaml_with_a_title_and_an_expression(
    recorded: tuple[list[Recorded], Path],
) -> None:
    calls, workdir = recorded
    files = [
        arg.split("=", 1)[1]
        for call in calls
        for arg in call.argv
        if arg.startswith("--condition-from-file=")
    ]
    assert files, "docs/deploy.md reads no condition from a file"
    for name in files:
        condition = yaml.safe_load((workdir / name).read_text())
        assert set(condition) <= {"title", "description", "expression"}, name
        assert condition["title"], name
        assert condition["expression"], name
        expression = condition["expression"]
        assert expression.count("(") == expression.count(")"), name
        assert expression.count("[") == expression.count("]"), name


def test_verify_project_script_is_valid_bash() -> None:
    completed = subprocess.run(
        ["bash", "-n", str(VERIFY_PROJECT)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert os.access(VERIFY_PROJECT, os.X_OK), "scripts/verify_project.sh is not executable"


@pytest.mark.parametrize(
    "script",
    sorted([*(REPO_ROOT / "scripts").glob("*.sh"), *(REPO_ROOT / "cloudbuild").glob("*.sh")]),
    ids=lambda path: str(path.relative_to(REPO_ROOT)),
)
def test_every_script_is_shellcheck_clean(script: Path) -> None:
    completed = subprocess.run(
        [tool("shellcheck"), str(script)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout


def verify_project_gcloud_commands(script: str) -> list[list[str]]:
    """The gcloud command lines of verify_project.sh, its variables as samples."""
    values = {
        "project": "my-project",
        "region": "europe-west1",
        "prefix": "modelrail",
        "model": "penguins",
        "csv": "data/penguins.csv",
        "stage": "validate",
        "service": "modelrail-staging",
        "artifacts": "gs://my-project-modelrail-artifacts",
        "data": "gs://my-project-modelrail-data",
        "object": "uploads/penguins/verify-penguins.csv",
    }
    joined = script.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        # A command: at the start of a line or of a command substitution (not in a message).
        start = re.search(r"(?:^\s*|\$\()gcloud ", line)
        if start is None:
            continue
        text = re.sub(r"\d?>\s*/dev/null", "", line[start.end() :])
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m[1], m[0]), text)
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv = []
        for token in lexer:
            if set(token) <= set("();<>|&"):
                break  # the end of the command: a pipe, a list or a substitution
            argv.append(token)
        commands.append(argv)
    return commands


def test_verify_project_gcloud_commands_parse(tmp_path: Path) -> None:
    commands = verify_project_gcloud_commands(VERIFY_PROJECT.read_text())
    assert len(commands) >= 5
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "penguins.csv").write_text("a,b\n1,2\n")
    recorded = [Recorded(0, argv) for argv in commands]
    assert parse_failures(gcloud(), recorded, tmp_path) == []
