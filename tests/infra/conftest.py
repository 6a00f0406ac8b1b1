"""Fixtures of the offline infrastructure checks (terraform/, cloudbuild/, Dockerfiles).

The tools are installed by the Makefile (`make test` depends on them): python-hcl2,
yamllint and hadolint in .venv (extra `infra`), checkov in its own environment at
build/tools/checkov-venv (its bc-python-hcl2 clashes with python-hcl2), terraform on
PATH. A missing tool fails the test that needs it, it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.infra_checks import REPO_ROOT

TERRAFORM_DIR = REPO_ROOT / "terraform"
POLICIES_DIR = TERRAFORM_DIR / "policies"
CHECKOV = REPO_ROOT / "build" / "tools" / "checkov-venv" / "bin" / "checkov"
VENV_BIN = Path(sys.executable).parent

# A public invoker on the staging service: the checks must catch it.
PUBLIC_INVOKER = """
resource "google_cloud_run_v2_service_iam_member" "public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
"""

# A subscription without a dead-letter policy: the checks must catch it.
SUBSCRIPTION_WITHOUT_DEAD_LETTER = """
resource "google_pubsub_subscription" "audit" {
  project = var.project_id
  name    = "model-deployed--audit"
  topic   = google_pubsub_topic.this["model-deployed"].id
}
"""

# A stage account allowed to write anywhere in the artifact bucket: the checks must catch it.
UNCONDITIONAL_WRITE = """
resource "google_storage_bucket_iam_member" "validate_writes_anywhere" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage["validate"].email}"
}
"""

# Another stage account able to sign manifests: the checks must catch it.
ANOTHER_SIGNER = """
resource "google_kms_crypto_key_iam_member" "deploy_signs" {
  crypto_key_id = google_kms_crypto_key.manifest_signing.id
  role          = "roles/cloudkms.signer"
  member        = "serviceAccount:${google_service_account.stage["deploy"].email}"
}
"""

# A pull-request trigger running as the deployer: the checks must catch it.
PULL_REQUESTS_AS_DEPLOYER = """
resource "google_cloudbuild_trigger" "pr_as_deployer" {
  project         = var.project_id
  location        = var.location
  name            = "${var.name_prefix}-pr-as-deployer"
  filename        = "cloudbuild/pr-checks.yaml"
  service_account = var.deploy_service_account_id

  github {
    owner = var.github_owner
    name  = var.github_repository

    pull_request {
      branch = "^${var.branch}$"
    }
  }
}
"""


def tool(name: str) -> str:
    """A command-line tool from the project's environment or PATH; missing fails."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed: run `make install` (terraform: put it on PATH)")


def copy_terraform(target: Path) -> Path:
    """A copy of terraform/ (Terraform files only) under ``target``."""
    shutil.copytree(
        TERRAFORM_DIR,
        target,
        ignore=shutil.ignore_patterns(".terraform", "policies", "*.tfstate*", "__pycache__"),
    )
    return target


def mutate(terraform_copy: Path, relative_file: str, extra_hcl: str) -> Path:
    path = terraform_copy / relative_file
    path.write_text(path.read_text() + extra_hcl)
    return terraform_copy


# Each mutation: the module it breaks, and what it adds there.
MUTATIONS: dict[str, tuple[str, str]] = {
    "public_invoker": ("modules/run_service", PUBLIC_INVOKER),
    "no_dead_letter": ("modules/pubsub", SUBSCRIPTION_WITHOUT_DEAD_LETTER),
    "unconditional_write": ("envs/dev", UNCONDITIONAL_WRITE),
    "pull_requests_as_deployer": ("modules/cloudbuild_triggers", PULL_REQUESTS_AS_DEPLOYER),
    "another_signer": ("envs/bootstrap", ANOTHER_SIGNER),
}
# The resource each mutation adds, as checkov names it.
MUTATED_RESOURCES = {
    # checkov expands the per-model module with the default of var.models.
    "public_invoker": (
        'module.staging_service["penguins"].google_cloud_run_v2_service_iam_member.public'
    ),
    "no_dead_letter": "module.pubsub.google_pubsub_subscription.audit",
    "unconditional_write": "google_storage_bucket_iam_member.validate_writes_anywhere",
    "pull_requests_as_deployer": (
        "module.cloudbuild_triggers.google_cloudbuild_trigger.pr_as_deployer"
    ),
}


def break_copy(terraform_copy: Path, *mutations: str) -> Path:
    for name in mutations:
        module, extra_hcl = MUTATIONS[name]
        mutate(terraform_copy, f"{module}/main.tf", extra_hcl)
    return terraform_copy


@pytest.fixture(scope="session")
def checkov_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One checkov run over two copies of terraform/: the real one ("real") and one
    with every mutation ("broken"; each breaks a different module, so each failure is
    told apart by its resource).

    Returns {copy name: checkov's "results"} (passed/failed/skipped checks).
    """
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing at {CHECKOV}: run `make tools` (make test installs it)")
    scan_root = tmp_path_factory.mktemp("checkov")
    copy_terraform(scan_root / "real")
    break_copy(copy_terraform(scan_root / "broken"), *MUTATIONS)
    completed = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(scan_root),
            "--framework",
            "terraform",
            "--external-checks-dir",
            str(POLICIES_DIR),
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"},
        check=False,
    )
    if completed.returncode not in (0, 1):  # 1: some check failed (the mutations do)
        pytest.fail(f"checkov crashed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    report = json.loads(completed.stdout)
    results = report["results"]
    by_copy: dict[str, dict[str, Any]] = {
        name: {"passed_checks": [], "failed_checks": [], "skipped_checks": []}
        for name in ("real", "broken")
    }
    for kind, checks in results.items():
        if kind not in ("passed_checks", "failed_checks", "skipped_checks"):
            continue
        for check in checks:
            copy_name = check["file_path"].lstrip("/").split("/", 1)[0]
            by_copy[copy_name][kind].append(check)
    return by_copy
