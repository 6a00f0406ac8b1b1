"""Data of any size, in the cloud: the validate job and the Dask cluster switch
(terraform/envs/dev/validate_job.tf, terraform/envs/*/dask.tf; docs/deploy.md).

- offline plans of both roots with the switch off and on: off, nothing of the cluster
  exists and the training job is what it was; on, exactly its resources are added and
  the training job gets its environment and Direct VPC egress;
- least privilege, on the parsed configuration, each check also run on a broken copy:
  the validate account runs only the validate job, the VMs' account writes nothing, the
  custom role holds only Compute permissions and none that sets IAM or gives a VM a
  public address, the training account acts as the VMs' account alone, and the firewall
  admits only the cluster's VMs and the training job's egress range.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from terraform.policies._common import OBJECT_WRITE_ROLES
from tests.infra.conftest import TERRAFORM_DIR, copy_terraform
from tests.infra.infra_checks import Module, Terraform, squash, stage_grants, unquote
from tests.infra.test_infra_plan import (
    PLAN_VARS,
    SCHEMA_DIR,
    Workspace,
    config_address,
    expected_instances,
    make_workspace,
)

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("terraform-dask")]

DASK_VARS = SCHEMA_DIR / "plan-dask.tfvars"
# What the training job's code reads to start its cluster (docs/deploy.md).
DASK_ENV = {
    "MODELRAIL_DASK_CLOUD",
    "MODELRAIL_DASK_GCP_PROJECT",
    "MODELRAIL_DASK_GCP_ZONE",
    "MODELRAIL_DASK_GCP_NETWORK",
    "MODELRAIL_DASK_GCP_MACHINE_TYPE",
    "MODELRAIL_DASK_GCP_WORKERS",
    "MODELRAIL_DASK_GCP_SERVICE_ACCOUNT",
    "MODELRAIL_DASK_GCP_IMAGE",
}
# The Dask ports the firewall may open: scheduler, dashboard, and the workers' range.
DASK_PORTS = {"8786", "8787", "${var.dask_training.worker_ports}"}


def tfvars(*files: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in files:
        merged.update({k: unquote(v) for k, v in hcl2.loads(path.read_text()).items()})
    return merged


# ------------------------------------------------------------------ plans


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Workspace]]:
    made: list[Workspace] = []
    yield made
    leftovers = {pid for workspace in made for pid in workspace.leftover_standins()}
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"stand-in providers outlived terraform: {sorted(leftovers)}"


def show_plan(workspace: Workspace, *args: str) -> dict[str, Any]:
    planned = workspace.terraform("plan", "-input=false", "-no-color", *args, "-out=tfplan")
    assert planned.returncode == 0, planned.stdout[-4000:] + planned.stderr
    shown = workspace.terraform("show", "-json", "tfplan")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


@pytest.fixture(scope="module")
def dev_plans(
    tmp_path_factory: pytest.TempPathFactory, workspaces: list[Workspace]
) -> dict[str, dict[str, Any]]:
    """terraform/envs/dev planned with plan.tfvars, the switch off and on."""
    workspace = make_workspace(tmp_path_factory.mktemp("tf-dask"))
    workspaces.append(workspace)
    workspace.init()
    validated = workspace.validate()
    assert validated["valid"], json.dumps(validated["diagnostics"], indent=2)
    return {
        "off": show_plan(workspace, f"-var-file={PLAN_VARS}"),
        "on": show_plan(workspace, f"-var-file={PLAN_VARS}", f"-var-file={DASK_VARS}"),
    }


@pytest.fixture(scope="module")
def bootstrap_plans(
    tmp_path_factory: pytest.TempPathFactory, workspaces: list[Workspace]
) -> dict[str, dict[str, Any]]:
    """terraform/envs/bootstrap planned with the switch off and on."""
    workspace = make_workspace(tmp_path_factory.mktemp("tf-dask-bootstrap"))
    workspace.environment = "bootstrap"
    (workspace.env_dir / "standin_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
    workspaces.append(workspace)
    workspace.init()
    validated = workspace.validate()
    assert validated["valid"], json.dumps(validated["diagnostics"], indent=2)
    values = tfvars(PLAN_VARS)
    common = (
        f"-var=project_id={values['project_id']}",
        f"-var=deployer_service_account_email={values['deployer_service_account_email']}",
    )
    return {
        "off": show_plan(workspace, *common),
        "on": show_plan(workspace, *common, f"-var-file={DASK_VARS}"),
    }


def managed(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """address -> planned values of every managed resource."""
    return {
        change["address"]: change["change"]["after"]
        for change in plan["resource_changes"]
        if change["mode"] == "managed"
    }


def job(plan: dict[str, Any], name: str) -> dict[str, Any]:
    [after] = [
        after
        for address, after in managed(plan).items()
        if address.endswith("google_cloud_run_v2_job.this") and after["name"] == name
    ]
    return after


def container_env(after: dict[str, Any]) -> dict[str, str]:
    [container] = after["template"][0]["template"][0]["containers"]
    return {variable["name"]: variable["value"] for variable in container["env"]}


def dask_addresses(tf: Terraform, root: str) -> set[str]:
    """The configuration addresses of the resources a root's dask.tf declares."""
    module = tf.module(root)
    return {
        f"{r.type}.{r.name}"
        for r in Module(module.directory, {"dask.tf": module.files["dask.tf"]}).resources
    }


def test_the_switch_adds_exactly_the_cluster_s_resources(
    dev_plans: dict[str, dict[str, Any]],
) -> None:
    tf = Terraform.load(TERRAFORM_DIR)
    off, on = managed(dev_plans["off"]), managed(dev_plans["on"])
    added = {config_address(address) for address in set(on) - set(off)}

    assert set(off) <= set(on)
    assert added == dask_addresses(tf, "envs/dev")
    # Both plans hold what the configuration declares for their inputs.
    for name, files in (("off", [PLAN_VARS]), ("on", [PLAN_VARS, DASK_VARS])):
        values = tfvars(*files)
        values["staging_service"] = {
            "invoker_members": [unquote(m) for m in values["staging_service"]["invoker_members"]]
        }
        planned = collections.Counter(config_address(a) for a in managed(dev_plans[name]))
        assert planned == expected_instances(tf, values), name


def test_off_nothing_of_the_cluster_exists_and_the_training_job_is_unchanged(
    dev_plans: dict[str, dict[str, Any]],
) -> None:
    off, on = managed(dev_plans["off"]), managed(dev_plans["on"])
    train, sweep = (
        job(dev_plans["off"], "modelrail-train"),
        job(dev_plans["off"], "modelrail-sweep"),
    )

    assert not {name for name in container_env(train) if name.startswith("MODELRAIL_DASK_")}
    assert container_env(train) == container_env(sweep)
    assert train["template"][0]["template"][0]["vpc_access"] == []
    assert [a for a in off if "dask" in a or ".google_compute_" in f".{a}"] == []
    # Whatever both plans hold is planned alike, but the training job and the wait
    # (its trigger lists the grants in force, the cluster's among them when on).
    differing = {config_address(address) for address in off if off[address] != on[address]}
    assert differing == {
        "module.training_job.google_cloud_run_v2_job.this",
        "time_sleep.iam_propagation",
    }


def test_on_the_training_job_finds_its_cluster(dev_plans: dict[str, dict[str, Any]]) -> None:
    values = tfvars(PLAN_VARS)
    project, region = values["project_id"], values["region"]
    train = job(dev_plans["on"], "modelrail-train")
    env = container_env(train)
    dask = {name: value for name, value in env.items() if name.startswith("MODELRAIL_DASK_")}

    assert set(dask) == DASK_ENV
    assert dask["MODELRAIL_DASK_CLOUD"] == "gcp"
    assert dask["MODELRAIL_DASK_GCP_PROJECT"] == project
    assert dask["MODELRAIL_DASK_GCP_ZONE"] == f"{region}-b"
    # GCPCluster's network= is a subnetwork's name in the zone's region.
    assert dask["MODELRAIL_DASK_GCP_NETWORK"] == "modelrail-dask-vms"
    assert dask["MODELRAIL_DASK_GCP_MACHINE_TYPE"] == "e2-standard-4"
    assert dask["MODELRAIL_DASK_GCP_WORKERS"] == "2"
    assert dask["MODELRAIL_DASK_GCP_SERVICE_ACCOUNT"] != ""  # looked up: the stand-in's value
    [container] = train["template"][0]["template"][0]["containers"]
    assert dask["MODELRAIL_DASK_GCP_IMAGE"] == container["image"]
    assert container["image"].startswith(f"{region}-docker.pkg.dev/")
    [access] = train["template"][0]["template"][0]["vpc_access"]
    assert access["egress"] == "PRIVATE_RANGES_ONLY"
    assert access["network_interfaces"] == [
        {"network": "modelrail-dask", "subnetwork": "modelrail-dask-jobs", "tags": []}
    ]
    # Only the training job is the cluster's client.
    for other in ("modelrail-sweep", "modelrail-validate"):
        assert not any(
            n.startswith("MODELRAIL_DASK_") for n in container_env(job(dev_plans["on"], other))
        )


def test_the_owner_s_half_exists_only_with_the_switch(
    bootstrap_plans: dict[str, dict[str, Any]],
) -> None:
    tf = Terraform.load(TERRAFORM_DIR)
    off, on = managed(bootstrap_plans["off"]), managed(bootstrap_plans["on"])
    added = {config_address(address) for address in set(on) - set(off)}

    assert set(off) <= set(on)
    assert added == dask_addresses(tf, "envs/bootstrap")
    names = {after.get("name") or after.get("account_id") for after in on.values()}
    assert {"modelrail-dask", "modelrail-dask-vms", "modelrail-dask-jobs"} <= names
    [role] = [
        a
        for address, a in on.items()
        if address.startswith("google_project_iam_custom_role.dask_cluster")
    ]
    assert role["role_id"] == "modelrail_dask_cluster"
    # Only the wait's trigger tells the two apart among what both hold.
    assert {config_address(a) for a in off if off[a] != on[a]} == {"time_sleep.iam_propagation"}


def test_the_validate_function_is_told_which_job_and_above_what_size(
    dev_plans: dict[str, dict[str, Any]],
) -> None:
    functions = {
        after["name"]: after["service_config"][0]["environment_variables"]
        for after in managed(dev_plans["off"]).values()
        if "build_config" in after and "service_config" in after
    }
    validate_job = job(dev_plans["off"], "modelrail-validate")
    train = job(dev_plans["off"], "modelrail-train")
    [container] = validate_job["template"][0]["template"][0]["containers"]

    assert functions["modelrail-validate"]["MODELRAIL_VALIDATE_JOB"] == validate_job["name"]
    assert functions["modelrail-validate"]["MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB"] == "512"
    assert [name for name, env in functions.items() if "MODELRAIL_VALIDATE_JOB" in env] == [
        "modelrail-validate"
    ]
    # The training image and environment, the validate code, the validate account.
    [train_container] = train["template"][0]["template"][0]["containers"]
    assert container["image"] == train_container["image"]
    assert container["command"] == ["python", "-m", "modelrail.entry.validate_job"]
    assert container_env(validate_job) == container_env(train)
    template = validate_job["template"][0]["template"][0]
    assert template["timeout"] == "3600s"
    assert template["max_retries"] == 1
    assert container["resources"][0]["limits"] == {"cpu": "2", "memory": "4Gi"}


# ------------------------------------------------------------------ least privilege

SETS_IAM = re.compile(r"\.setIamPolicy$")


def validate_job_problems(tf: Terraform) -> list[str]:
    """The validate account runs the validate job and no other job, on that job only."""
    env = tf.module("envs/dev")
    problems = []
    run_roles = {
        "roles/run.jobsExecutorWithOverrides",
        "roles/run.jobsExecutor",
        "roles/run.invoker",
        "roles/run.developer",
        "roles/run.admin",
    }
    for resource in env.resources:
        if resource.type != "google_cloud_run_v2_job_iam_member":
            continue
        table = re.search(r"inlocal\.(\w+)", squash(resource.body.get("for_each", "")))
        rows = env.locals.get(table[1], []) if table else []
        runs = [
            row
            for row in rows
            if unquote(row["sa"]) == "validate" and unquote(row["role"]) in run_roles
        ]
        if runs and squash(resource.body["name"]) != "${module.validate_job.name}":
            problems.append(f"{resource.address}: validate may run {squash(resource.body['name'])}")
    scoped, project = stage_grants(tf)
    problems += [f"validate holds {role} on the project" for account, role in sorted(project)
                 if account == "validate" and role.startswith("roles/run.")]  # fmt: skip
    if ("validate", "roles/run.jobsExecutorWithOverrides") not in scoped:
        problems.append("validate cannot run the validate job with an override")
    return problems


def listed(value: Any) -> list[str]:
    """A list argument's items, unquoted and without whitespace."""
    return [squash(unquote(item)) for item in (value or [])]


def dask_problems(tf: Terraform) -> list[str]:
    """The Dask cluster's grants and firewall are least-privilege."""
    problems = []
    bootstrap, env = tf.module("envs/bootstrap"), tf.module("envs/dev")
    # Everything of both dask.tf files exists only with the switch.
    for root in (bootstrap, env):
        for resource in Module(root.directory, {"dask.tf": root.files["dask.tf"]}).resources:
            if "dask" not in squash(resource.body.get("count", "")):
                problems.append(f"{resource.address}: not behind the dask_training switch")
    # The custom role: Compute only, nothing that sets IAM or attaches a public address.
    for permission in (unquote(p) for p in bootstrap.locals["dask_cluster_permissions"]):
        if not permission.startswith("compute."):
            problems.append(f"the custom role holds {permission}")
        if SETS_IAM.search(permission):
            problems.append(f"the custom role sets IAM: {permission}")
        if permission.endswith("useExternalIp") or "firewalls" in permission:
            problems.append(f"the custom role holds {permission}")
    scoped, project = stage_grants(tf)
    # The VMs' account: reads only, and the bucket only under its snapshot condition.
    for account, role in sorted(scoped | project):
        if account == "dask" and (role in OBJECT_WRITE_ROLES or not role.endswith(
                ("objectViewer", "artifactregistry.reader", "logging.logWriter"))):  # fmt: skip
            problems.append(f"dask holds {role}")
    for resource in env.resources:
        if resource.type == "google_storage_bucket_iam_member" and "dask" in str(
            resource.body.get("member")
        ):
            condition = (resource.body.get("condition") or [{}])[0]
            expression = squash(env.locals.get(
                squash(condition.get("expression", "")).removeprefix("${local.").removesuffix("}"),
                condition.get("expression", ""),
            ))  # fmt: skip
            if "/snapshot/" not in expression:
                problems.append(f"{resource.address}: not limited to the runs' snapshots")
    # The training account acts as the VMs' account and no other.
    for resource in bootstrap.resources:
        acts_as = resource.type == "google_service_account_iam_member"
        target = squash(resource.body.get("service_account_id"))
        if (
            acts_as
            and 'stage["train"]' in str(resource.body.get("member"))
            and (target != "${google_service_account.dask[0].name}")
        ):
            problems.append(f"{resource.address}: train acts as {target}")
    # The firewall: into the VMs' account only, from it or the training job's range.
    vms = ["${google_service_account.dask[0].email}"]
    for resource in bootstrap.resources:
        body = resource.body
        if resource.type != "google_compute_firewall" or "deny" in body:
            continue
        if unquote(body.get("direction")) != "INGRESS":
            problems.append(f"{resource.address}: not an ingress rule")
        if listed(body.get("target_service_accounts")) != vms:
            problems.append(f"{resource.address}: reaches more than the Dask VMs")
        sources = listed(body.get("source_ranges")) + listed(body.get("source_service_accounts"))
        if sources not in (vms, ["${var.dask_training.job_cidr}"]) or body.get("source_tags"):
            problems.append(f"{resource.address}: admits {sources or 'anything'}")
        for allow in body.get("allow", []):
            ports = set(listed(allow.get("ports"))) or {"all"}
            if unquote(allow.get("protocol")) != "tcp" or not ports <= DASK_PORTS:
                problems.append(f"{resource.address}: opens {sorted(ports)}")
    return problems


def test_the_validate_account_runs_only_the_validate_job() -> None:
    assert validate_job_problems(Terraform.load(TERRAFORM_DIR)) == []


def test_the_dask_cluster_is_least_privileged() -> None:
    assert dask_problems(Terraform.load(TERRAFORM_DIR)) == []


# Each: (file under terraform/, text replaced, replacement, the problem it must cause).
BREAKAGES = {
    "role_sets_iam": (
        "envs/bootstrap/dask.tf",
        '    "compute.subnetworks.use",\n',
        '    "compute.subnetworks.use",\n    "compute.instances.setIamPolicy",\n',
        "the custom role sets IAM: compute.instances.setIamPolicy",
    ),
    "public_addresses": (
        "envs/bootstrap/dask.tf",
        '    "compute.subnetworks.use",\n',
        '    "compute.subnetworks.use",\n    "compute.subnetworks.useExternalIp",\n',
        "the custom role holds compute.subnetworks.useExternalIp",
    ),
    "dask_writes_the_bucket": (
        "envs/dev/dask.tf",
        'role   = "roles/storage.objectViewer"',
        'role   = "roles/storage.objectUser"',
        "dask holds roles/storage.objectUser",
    ),
    "dask_reads_every_run_object": (
        "envs/dev/dask.tf",
        "/snapshot/",
        "/",
        "dev/google_storage_bucket_iam_member.dask_reads_snapshots: not limited to the runs' "
        "snapshots",
    ),
    "firewall_from_anywhere": (
        "envs/bootstrap/dask.tf",
        "source_ranges           = [var.dask_training.job_cidr]",
        'source_ranges           = ["0.0.0.0/0"]',
        "bootstrap/google_compute_firewall.dask_from_training: admits ['0.0.0.0/0']",
    ),
    "firewall_ssh": (
        "envs/bootstrap/dask.tf",
        'ports    = ["8786", "8787"]',
        'ports    = ["22", "8786", "8787"]',
        "bootstrap/google_compute_firewall.dask_from_training: opens",
    ),
    "cluster_without_switch": (
        "envs/bootstrap/dask.tf",
        'resource "google_compute_network" "dask" {\n  count = local.dask ? 1 : 0\n',
        'resource "google_compute_network" "dask" {\n  count = 1\n',
        "bootstrap/google_compute_network.dask: not behind the dask_training switch",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_dask_grant_is_caught(tmp_path: Path, breakage: str) -> None:
    relative, old, new, problem = BREAKAGES[breakage]
    copy = copy_terraform(tmp_path / "terraform")
    path = copy / relative
    text = path.read_text()
    assert old in text, f"{relative} changed: update BREAKAGES"
    path.write_text(text.replace(old, new))

    problems = dask_problems(Terraform.load(copy))

    assert any(p.startswith(problem) for p in problems), problems


def test_a_validate_account_that_may_run_the_training_job_is_caught(tmp_path: Path) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    iam_tf = copy / "envs" / "dev" / "iam.tf"
    row = '    { sa = "launch_training", role = "roles/run.jobsExecutorWithOverrides" },\n'
    text = iam_tf.read_text()
    assert text.count(row) == 1, "iam.tf changed: update this test"
    iam_tf.write_text(text.replace(row, row + row.replace("launch_training", "validate")))

    assert validate_job_problems(Terraform.load(copy)) == [
        "dev/google_cloud_run_v2_job_iam_member.stage: validate may run ${module.training_job.name}"
    ]
