"""The monitor on a schedule (terraform/envs/dev/monitor.tf): a Cloud Run job running
`modelrail monitor --every-model` over the last window from the training image, its own
account holding only what the monitor does, and a Cloud Scheduler job whose own account
may only run that job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import install, settings_env
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


@pytest.fixture(scope="module")
def terraform() -> Terraform:
    return Terraform.load(TERRAFORM_DIR)


def monitor_command(terraform: Terraform) -> list[str]:
    call = terraform.module("envs/dev").module_calls["monitor_job"]
    return [unquote(part) for part in [*call["command"], *call["args"]]]


def test_the_monitor_job_runs_the_monitor_of_every_model_from_the_training_image(
    terraform: Terraform,
) -> None:
    calls = terraform.module("envs/dev").module_calls
    monitor, sweep = calls["monitor_job"], calls["sweep_job"]

    assert unquote(monitor["source"]) == unquote(sweep["source"]) == "../../modules/run_job"
    assert squash(monitor["image"]) == squash(sweep["image"]) == "${local.train_image}"
    assert squash(monitor["environment_variables"]) == "${local.train_image_env}"
    assert squash(monitor["service_account_email"]) == (
        '${data.google_service_account.stage["monitor"].email}'
    )
    assert monitor_command(terraform) == [
        *("python", "-m", "modelrail", "monitor", "--every-model", "--hours"),
        "${tostring(var.monitor.window_hours)}",
    ]
    variable = terraform.module("envs/dev").variables["monitor"]
    assert "window_hours=optional(number,1)" in squash(variable["type"])
    assert 'schedule=optional(string,"0****")' in squash(variable["type"])


def test_the_monitor_command_runs_with_models_that_serve_nothing_yet(
    terraform: Terraform, tmp_path: Path
) -> None:
    """The job's command line, run here (embedded mode, the window filled in): with no
    model, and with one nothing serves yet, it says so and exits 0."""
    program, *arguments = monitor_command(terraform)
    assert program == "python"
    arguments[-1] = "1"  # var.monitor.window_hours's default
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT / "src"),
        **settings_env(tmp_path / "home"),
    }

    def run() -> str:
        completed = subprocess.run(
            [sys.executable, *arguments],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed.stdout.strip()

    assert run() == "no model is installed: nothing to monitor"
    install(env)
    assert run() == (
        "penguins: not monitored: model 'penguins' has no version in staging: nothing serves it yet"
    )


def test_the_monitor_account_holds_only_what_the_monitor_does(terraform: Terraform) -> None:
    grants = {(role, target) for _, role, target in grants_of(terraform, "monitor")}

    assert grants == {
        # the log, the registry, the run history; the uploads' listing (a retrain's data)
        ("roles/storage.objectViewer", '${local.buckets["artifacts"]}'),
        ("roles/storage.legacyBucketReader", '${local.buckets["data"]}'),
        # its reports, and each model's retrain-on-drift policy (IAM conditions)
        ("roles/storage.objectUser", "${local.buckets.artifacts}"),
        ("roles/pubsub.publisher", '${module.pubsub.topic_ids["drift-detected"]}'),
        ("roles/pubsub.publisher", '${module.pubsub.topic_ids["retrain-requested"]}'),
    }
    bootstrap = terraform.module("envs/bootstrap").locals
    assert [
        unquote(g["role"]) for g in bootstrap["signing_key_grants"] if g["sa"] == '"monitor"'
    ] == ["roles/cloudkms.publicKeyViewer"]


def test_the_monitor_writes_only_its_reports_and_the_drift_policy(terraform: Terraform) -> None:
    assert artifact_write_objects(terraform)["monitor"] == {
        "monitoring/*",
        "models/<model>/policies/retrain-on-drift.json",
    }


def test_the_monitor_s_scheduler_may_only_run_the_monitor_job(terraform: Terraform) -> None:
    env = terraform.module("envs/dev")
    [scheduler] = [
        r for r in env.resources if r.type == "google_cloud_scheduler_job" and r.name == "monitor"
    ]
    [target] = scheduler.body["http_target"]
    [token] = target["oauth_token"]

    assert squash(scheduler.body["schedule"]) == "${var.monitor.schedule}"
    assert unquote(target["http_method"]) == "POST"
    assert unquote(target["uri"]) == (
        "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}"
        "/jobs/${module.monitor_job.name}:run"
    )
    assert squash(token["service_account_email"]) == (
        '${data.google_service_account.stage["monitor_cron"].email}'
    )
    grants = [
        (resource.type, role, on) for resource, role, on in grants_of(terraform, "monitor_cron")
    ]
    assert grants == [
        ("google_cloud_run_v2_job_iam_member", "roles/run.invoker", "${module.monitor_job.name}")
    ]
