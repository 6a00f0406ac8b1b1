"""The sweep on a schedule (terraform/envs/dev/sweep.tf): a Cloud Run job running
`modelrail sweep` from the training image, its own account holding only what the sweep
does, and a Cloud Scheduler job whose account may only run that job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelrail.settings.topology import Topology
from tests.conftest import settings_env
from tests.infra.conftest import TERRAFORM_DIR
from tests.infra.infra_checks import (
    REPO_ROOT,
    Terraform,
    artifact_write_objects,
    grants_of,
    squash,
    unquote,
)

pytestmark = pytest.mark.infra


def _swept_stages() -> set[str]:
    """The stages the sweep can end: each one that follows another in topology.yaml,
    and validate, whose job may die after its function handed the upload to it."""
    topology = Topology.load(REPO_ROOT / "topology.yaml")
    after = {n for s in topology.stages if (n := topology.next_stage(s.name)) is not None}
    return {"validate", *after}


TRAIN_DOCKERFILE = REPO_ROOT / "services" / "train-job" / "Dockerfile"


@pytest.fixture(scope="module")
def terraform() -> Terraform:
    return Terraform.load(TERRAFORM_DIR)


def sweep_command(terraform: Terraform) -> list[str]:
    """The job's command line, its timeout the variable's default (600 s)."""
    call = terraform.module("envs/dev").module_calls["sweep_job"]
    return [
        unquote(part).replace("${tostring(var.sweep.timeout_seconds)}", "600")
        for part in [*call["command"], *call["args"]]
    ]


def test_the_sweep_job_runs_the_sweep_from_the_training_image(terraform: Terraform) -> None:
    env = terraform.module("envs/dev")
    calls = env.module_calls
    sweep, training = calls["sweep_job"], calls["training_job"]

    assert unquote(sweep["source"]) == unquote(training["source"]) == "../../modules/run_job"
    assert squash(sweep["image"]) == squash(training["image"]) == "${local.train_image}"
    assert squash(sweep["environment_variables"]) == "${local.train_image_env}"
    # The training job adds only where its Dask cluster runs (dask.tf), empty while off.
    assert squash(training["environment_variables"]) == (
        "${merge(local.train_image_env,local.dask_env)}"
    )
    assert squash(sweep["service_account_email"]) == (
        '${data.google_service_account.stage["sweep"].email}'
    )
    assert sweep_command(terraform) == [
        "python", "-m", "modelrail", "sweep", "--timeout-seconds", "600",
    ]  # fmt: skip
    # The run_job module passes the command on to the container.
    job = next(r for r in terraform.module("modules/run_job").resources)
    container = job.body["template"][0]["template"][0]["containers"][0]
    assert (squash(container["command"]), squash(container["args"])) == (
        "${var.command}",
        "${var.args}",
    )


def test_the_training_image_can_run_the_sweep_command(terraform: Terraform) -> None:
    """The image runs `python` from its virtual environment with the package on
    PYTHONPATH, not installed: `python -m modelrail` finds the command line there."""
    dockerfile = TRAIN_DOCKERFILE.read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    assert sweep_command(terraform)[0] == entrypoint[0]
    assert "COPY src/modelrail/ /app/modelrail/" in dockerfile
    assert re.search(r"^\s+PYTHONPATH=/app\b", dockerfile, re.M)


def test_the_sweep_command_runs(terraform: Terraform, tmp_path: Path) -> None:
    """The job's command line, run here (embedded mode, no run): it sweeps and exits 0."""
    program, *arguments = sweep_command(terraform)
    assert program == "python"
    completed = subprocess.run(
        [sys.executable, *arguments],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_ROOT / "src"),
            **settings_env(tmp_path / "home"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "no run is stuck"


def test_the_sweep_account_holds_only_what_the_sweep_does(terraform: Terraform) -> None:
    grants = {(role, target) for _, role, target in grants_of(terraform, "sweep")}

    assert grants == {
        # the run history: list the runs, read their records
        ("roles/storage.objectViewer", '${local.buckets["artifacts"]}'),
        # the uploads' listing: a scheduled retrain is pinned to the newest
        ("roles/storage.legacyBucketReader", '${local.buckets["data"]}'),
        # record a stage as failed (only the objects below, by an IAM condition)
        ("roles/storage.objectUser", "${local.buckets.artifacts}"),
        ("roles/pubsub.publisher", '${module.pubsub.topic_ids["pipeline-failed"]}'),
        # the retrains a model's [retrain] schedule names (modelrail.service.schedules)
        ("roles/pubsub.publisher", '${module.pubsub.topic_ids["retrain-requested"]}'),
        # the training job's executions: did one die?
        ("roles/run.viewer", "${module.training_job.name}"),
        # the validate job's executions: did one die before recording validate?
        ("roles/run.viewer", "${module.validate_job.name}"),
        # the reconciliation pass: roll each model's staging service to its alias's
        # version, smoke-test it
        ("roles/run.developer", "${module.staging_service[each.value.model].name}"),
        ("roles/run.invoker", "${module.staging_service[each.value.model].name}"),
        # production's approved promotions (modelrail.service.promotion): roll each
        # model's production service to the approved version, smoke-test it
        ("roles/run.developer", "${module.production_service[each.value.model].name}"),
        ("roles/run.invoker", "${module.production_service[each.value.model].name}"),
        # the production canary: judge each step on the revisions' request metrics
        ("roles/monitoring.viewer", "${var.project_id}"),
    }


def test_the_sweep_writes_only_the_records_of_the_stages_it_can_end(
    terraform: Terraform,
) -> None:
    assert artifact_write_objects(terraform)["sweep"] == {
        *(f"runs/*/stages/{stage}.json" for stage in _swept_stages()),
        "models/<model>/leases/staging.json",
        "models/<model>/leases/register-*",
        "models/<model>/policies/schedule.json",
        # production's approved promotions: its alias, its lease, the outcome and steps
        "models/<model>/aliases/production.json",
        "models/<model>/leases/production.json",
        "models/<model>/promotions/*",
        "models/<model>/rollouts/*",
    }


def test_the_scheduler_calls_the_run_api_with_an_account_that_may_only_run_the_sweep(
    terraform: Terraform,
) -> None:
    env = terraform.module("envs/dev")
    [scheduler] = [
        r for r in env.resources if r.type == "google_cloud_scheduler_job" and r.name == "sweep"
    ]
    [target] = scheduler.body["http_target"]
    [token] = target["oauth_token"]

    assert squash(scheduler.body["schedule"]) == "${var.sweep.schedule}"
    assert unquote(target["http_method"]) == "POST"
    assert unquote(target["uri"]) == (
        "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}"
        "/jobs/${module.sweep_job.name}:run"
    )
    assert "oidc_token" not in target
    assert squash(token["service_account_email"]) == (
        '${data.google_service_account.stage["scheduler"].email}'
    )
    # Its one grant: run the sweep job (run.jobs.run), on that job alone.
    grants = [(resource.type, role, on) for resource, role, on in grants_of(terraform, "scheduler")]
    assert grants == [
        ("google_cloud_run_v2_job_iam_member", "roles/run.invoker", "${module.sweep_job.name}")
    ]


def test_the_scheduler_api_is_enabled(terraform: Terraform) -> None:
    services: list[Any] = terraform.module("envs/dev").module_calls["apis"]["services"]
    assert "cloudscheduler.googleapis.com" in {unquote(service) for service in services}
