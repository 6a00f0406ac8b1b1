"""The deploy build's model steps (cloudbuild/deploy.yaml): after terraform apply,
add-models installs every model definition the commit holds with `modelrail add` and
refuses one whose model has no staging service; publish-retrain then asks every model
installed to retrain on the commit, one event per model, naming it.

Both scripts run here as Cloud Build runs them (bash, in a workspace), against
stand-ins that record their command lines: make, terraform and gcloud on PATH, and
modelrail in the workspace's .venv. The recorded gcloud command lines then go through
gcloud's own parser (tests/infra/test_infra_gcloud_commands.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelrail.kernel.resources import schema_dir
from tests.infra.cloudbuild_steps import image_key, step_program
from tests.infra.conftest import TERRAFORM_DIR
from tests.infra.infra_checks import REPO_ROOT, Terraform, squash
from tests.infra.test_infra_gcloud_commands import Recorded, gcloud, parse_failures

pytestmark = pytest.mark.infra

DEPLOY = REPO_ROOT / "cloudbuild" / "deploy.yaml"
ADD_MODELS = "cloudbuild/add_models.sh"
PUBLISH_RETRAIN = "cloudbuild/publish_retrain.sh"
BUCKET = "my-project-modelrail-artifacts"
SHA = "0123456789abcdef0123456789abcdef01234567"
# The application's rule for a model name.
MODEL_NAME = r"^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$"


def build() -> dict[str, Any]:
    return dict(yaml.safe_load(DEPLOY.read_text()))


def step(step_id: str) -> dict[str, Any]:
    return next(s for s in build()["steps"] if s["id"] == step_id)


def step_env(step_id: str) -> dict[str, str]:
    return dict(str(variable).split("=", 1) for variable in step(step_id).get("env", []))


def recorder(path: Path, calls: Path, prints: str = "") -> None:
    """A stand-in program that appends its name and arguments (a JSON list) to
    ``calls`` and prints ``prints``."""
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + '\\n')\n"
        f"print({prints!r}, end='')\n"
    )
    path.chmod(0o755)


def recorded(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


# ------------------------------------------------------------------ the steps


def test_the_model_steps_follow_the_apply_with_what_modelrail_reads() -> None:
    order = [s["id"] for s in build()["steps"]]
    assert order.index("test") < order.index("terraform-apply") < order.index("add-models")
    assert order.index("add-models") < order.index("publish-retrain")
    add, publish = step("add-models"), step("publish-retrain")
    assert add["waitFor"] == ["terraform-apply"]
    assert publish["waitFor"] == ["add-models"]
    assert step_program(add) == ("bash", [ADD_MODELS])
    assert step_program(publish) == ("bash", [PUBLISH_RETRAIN])
    # add-models runs modelrail from the environment the apply step's `make stage` made,
    # on the same image, and terraform from the same place.
    assert add["name"] == step("terraform-apply")["name"]
    assert image_key(add["name"]) == ("python", "-bookworm")
    env = step_env("add-models")
    assert env["PATH"] == step_env("terraform-apply")["PATH"]
    assert {name: env[name] for name in ("MODELRAIL_MODE", "GOOGLE_CLOUD_PROJECT")} == {
        "MODELRAIL_MODE": "cloud",
        "GOOGLE_CLOUD_PROJECT": "$PROJECT_ID",
    }
    assert env["MODELRAIL_ARTIFACT_BUCKET"] == "${_ARTIFACT_BUCKET}"
    assert (env["TF_ENV"], env["MODEL_DEFINITIONS"]) == ("${_TF_ENV}", "${_MODEL_DEFINITIONS}")
    assert step_env("publish-retrain") == {
        "ARTIFACT_BUCKET": "${_ARTIFACT_BUCKET}",
        "RETRAIN_TOPIC": "${_RETRAIN_TOPIC}",
        "COMMIT_SHA": "$COMMIT_SHA",
    }
    substitutions = build()["substitutions"]
    assert substitutions["_RETRAIN_TOPIC"] == "retrain-requested"
    assert substitutions["_MODEL_DEFINITIONS"].split() == [
        "pipeline.toml",
        "models/*/pipeline.toml",
    ]
    # The trigger hands the build the artifact bucket Terraform made.
    call = Terraform.load(TERRAFORM_DIR).module("envs/dev").module_calls["cloudbuild_triggers"]
    assert squash(call["deploy_substitutions"]["_ARTIFACT_BUCKET"]) == (
        "${local.buckets.artifacts}"
    )
    for script in (ADD_MODELS, PUBLISH_RETRAIN):
        assert os.access(REPO_ROOT / script, os.X_OK), f"{script} is not executable"


def test_every_definition_the_repository_holds_names_a_model_it_may_add() -> None:
    """What add-models finds with the build's _MODEL_DEFINITIONS: the bundled
    pipeline.toml among them, each naming a model by the application's rule."""
    patterns = build()["substitutions"]["_MODEL_DEFINITIONS"].split()
    found = sorted({path for pattern in patterns for path in REPO_ROOT.glob(pattern)})
    names = [tomllib.loads(path.read_text())["model"]["name"] for path in found]

    assert REPO_ROOT / "pipeline.toml" in found
    assert [name for name in names if not re.fullmatch(MODEL_NAME, name)] == []
    assert len(set(names)) == len(names), "two definitions name one model"


# ------------------------------------------------------------------ add-models


DIAMONDS = '[model]\nname = "diamonds"\ncontract = "diamonds.json"\n'


def add_models(
    tmp_path: Path, served: list[str], **env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run add_models.sh in a workspace holding the repository's pipeline.toml and
    models/diamonds/pipeline.toml, the environment having staging services for
    ``served``; returns what it printed and the stand-ins it called."""
    workspace, tools, calls = tmp_path / "workspace", tmp_path / "bin", tmp_path / "calls"
    (workspace / "cloudbuild").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / ADD_MODELS, workspace / ADD_MODELS)
    shutil.copy2(REPO_ROOT / "pipeline.toml", workspace / "pipeline.toml")
    (workspace / "models" / "diamonds").mkdir(parents=True)
    (workspace / "models" / "diamonds" / "pipeline.toml").write_text(DIAMONDS)
    venv = workspace / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    recorder(venv / "modelrail", calls)
    tools.mkdir()
    recorder(tools / "make", calls)
    outputs = {model: f"modelrail-staging-{model}" for model in served}
    recorder(tools / "terraform", calls, json.dumps(outputs))
    completed = subprocess.run(
        ["bash", ADD_MODELS],
        cwd=workspace,
        env={
            "PATH": f"{tools}:/usr/bin:/bin",
            "MODELRAIL_MODE": "cloud",
            "GOOGLE_CLOUD_PROJECT": "my-project",
            "MODELRAIL_ARTIFACT_BUCKET": BUCKET,
            "TF_ENV": "dev",
            "MODEL_DEFINITIONS": build()["substitutions"]["_MODEL_DEFINITIONS"],
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed, recorded(calls)


def test_add_models_adds_every_definition_the_commit_holds(tmp_path: Path) -> None:
    completed, calls = add_models(tmp_path, ["penguins", "diamonds"])

    assert completed.returncode == 0, completed.stderr
    assert calls == [
        ["make", "--no-print-directory", "install-run"],
        ["terraform", "-chdir=terraform/envs/dev", "output", "-json", "staging_services"],
        ["modelrail", "add", "pipeline.toml"],
        ["modelrail", "add", "models/diamonds/pipeline.toml"],
    ]


def test_add_models_refuses_a_model_without_a_staging_service(tmp_path: Path) -> None:
    completed, calls = add_models(tmp_path, ["penguins"])

    assert completed.returncode != 0
    assert "models/diamonds/pipeline.toml defines model 'diamonds'" in completed.stderr
    assert "terraform/envs/dev/terraform.tfvars" in completed.stderr
    assert [call for call in calls if call[0] == "modelrail"] == [], "it added a model"


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("MODELRAIL_MODE", "embedded", "MODELRAIL_MODE must be cloud"),
        ("MODELRAIL_ARTIFACT_BUCKET", "", "MODELRAIL_ARTIFACT_BUCKET is not set"),
        ("GOOGLE_CLOUD_PROJECT", "", "GOOGLE_CLOUD_PROJECT is not set"),
        ("TF_ENV", "dev; echo INJECTED", "is not an environment"),
        ("MODEL_DEFINITIONS", "models/none/pipeline.toml", "no model definition matches"),
    ],
)
def test_add_models_refuses_what_it_cannot_run_with(
    tmp_path: Path, variable: str, value: str, complaint: str
) -> None:
    completed, calls = add_models(tmp_path, ["penguins", "diamonds"], **{variable: value})

    assert completed.returncode != 0
    assert complaint in completed.stderr
    assert "INJECTED" not in completed.stdout
    assert [call for call in calls if call[0] == "modelrail"] == []


# ------------------------------------------------------------------ publish-retrain


def publish_retrain(
    tmp_path: Path, installed: list[str], **env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run publish_retrain.sh with a stand-in gcloud that lists ``installed`` (object
    URLs) for `storage ls` (failing, as gcloud does, when none matches)."""
    tools, calls = tmp_path / "bin", tmp_path / "calls"
    tools.mkdir()
    gcloud_stand_in = tools / "gcloud"
    gcloud_stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(json.dumps(['gcloud', *sys.argv[1:]]) + '\\n')\n"
        "if sys.argv[1:3] == ['storage', 'ls']:\n"
        f"    listed = {installed!r}\n"
        "    if not listed:\n"
        "        sys.exit('ERROR: (gcloud.storage.ls) One or more URLs matched no objects.')\n"
        "    print('\\n'.join(listed))\n"
    )
    gcloud_stand_in.chmod(0o755)
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / PUBLISH_RETRAIN)],
        cwd=tmp_path,
        env={
            "PATH": f"{tools}:/usr/bin:/bin",
            "ARTIFACT_BUCKET": BUCKET,
            "RETRAIN_TOPIC": "retrain-requested",
            "COMMIT_SHA": SHA,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed, recorded(calls)


def retrain_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (schema_dir("events") / "retrain-requested.json").read_text()
    )
    assert schema["properties"]["model"]["pattern"] == MODEL_NAME  # the same name rule
    return schema


def test_publish_retrain_asks_every_installed_model_to_retrain_on_the_commit(
    tmp_path: Path,
) -> None:
    installed = [
        f"gs://{BUCKET}/models/diamonds/definition.json",
        f"gs://{BUCKET}/models/penguins/definition.json",
    ]
    completed, calls = publish_retrain(tmp_path, installed)

    assert completed.returncode == 0, completed.stderr
    assert calls[0] == ["gcloud", "storage", "ls", f"gs://{BUCKET}/models/*/definition.json"]
    publishes = calls[1:]
    assert [call[:6] for call in publishes] == [
        [
            "gcloud",
            "pubsub",
            "topics",
            "publish",
            "retrain-requested",
            "--attribute=event_type=retrain-requested",
        ]
    ] * 2
    events = [json.loads(call[6].removeprefix("--message=")) for call in publishes]
    for event in events:
        jsonschema.validate(event, retrain_schema())
    assert [(event["model"], event["commit_sha"]) for event in events] == [
        ("diamonds", SHA),
        ("penguins", SHA),
    ]
    assert "2 model(s)" in completed.stdout
    # What the build's gcloud will be asked, it parses.
    parsed = [Recorded(0, call[1:]) for call in calls]
    assert parse_failures(gcloud(), parsed, tmp_path) == []


def test_publish_retrain_skips_what_is_not_a_model_s_definition(tmp_path: Path) -> None:
    installed = [
        f"gs://{BUCKET}/models/Not_A_Model/definition.json",
        f"gs://{BUCKET}/models/penguins/definition.json",
    ]
    completed, calls = publish_retrain(tmp_path, installed)

    assert completed.returncode == 0, completed.stderr
    messages = [call[6] for call in calls if call[1] == "pubsub"]
    assert [re.findall(r'"model":"([^"]+)"', message) for message in messages] == [["penguins"]]
    assert "skipping" in completed.stderr


def test_publish_retrain_fails_when_no_model_is_installed(tmp_path: Path) -> None:
    completed, calls = publish_retrain(tmp_path, [])

    assert completed.returncode != 0
    assert "no model is installed" in completed.stderr
    assert [call for call in calls if call[1] == "pubsub"] == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("COMMIT_SHA", 'abc"}; echo INJECTED'), ("COMMIT_SHA", ""), ("ARTIFACT_BUCKET", "")],
)
def test_publish_retrain_refuses_what_it_cannot_publish(
    tmp_path: Path, variable: str, value: str
) -> None:
    completed, calls = publish_retrain(
        tmp_path, [f"gs://{BUCKET}/models/penguins/definition.json"], **{variable: value}
    )

    assert completed.returncode != 0
    assert calls == []
    assert "INJECTED" not in completed.stdout
