"""`terraform validate` and `terraform plan` of terraform/envs/dev, offline, against a
stand-in provider serving the real provider schema (tests/infra/standin,
terraform/testing; docs/deploy.md, "Offline validate and plan").

Terraform runs in a temporary copy of the repository's terraform/ and topology.yaml,
finds the stand-in through a filesystem mirror named in its CLI configuration, and
starts it itself; the tests check that no stand-in outlives them.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

from modelrail.settings.process import Settings
from modelrail.settings.topology import Topology
from tests.infra.conftest import TERRAFORM_DIR, copy_terraform, tool
from tests.infra.infra_checks import REPO_ROOT, Terraform, load_topology, squash, unquote

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("terraform-plan")]

SCHEMA_DIR = TERRAFORM_DIR / "testing"
PLAN_VARS = SCHEMA_DIR / "plan.tfvars"
# The providers terraform/ requires, as the filesystem mirror lays them out: source ->
# (version the mirror offers, schema file). The version is the one the schema was
# rebuilt from (scripts/provider_schema.py).
PROVIDERS = {
    "hashicorp/google": ("6.50.0", SCHEMA_DIR / "hashicorp-google-6.50.0.schema.json.gz"),
    "hashicorp/archive": ("2.7.1", SCHEMA_DIR / "hashicorp-archive-2.7.1.schema.json.gz"),
    "hashicorp/google-beta": ("6.50.0", SCHEMA_DIR / "hashicorp-google-beta-6.50.0.schema.json.gz"),
    "hashicorp/time": ("0.13.1", SCHEMA_DIR / "hashicorp-time-0.13.1.schema.json.gz"),
}
REGENERATE = "run `make provider-schema` (scripts/provider_schema.py)"
COMMAND_TIMEOUT_S = 240


@dataclass
class Workspace:
    """A copy of terraform/ wired to the stand-in provider."""

    root: Path  # holds terraform/ and topology.yaml, as the repository does
    env: dict[str, str]
    plugin_cwd: Path  # every stand-in runs here: how the tests find leftovers
    environment: str = "dev"  # the root under terraform/envs the commands run in

    @property
    def env_dir(self) -> Path:
        return self.root / "terraform" / "envs" / self.environment

    def terraform(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("terraform"), f"-chdir={self.env_dir}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def init(self) -> None:
        completed = self.terraform("init", "-input=false", "-no-color")
        assert completed.returncode == 0, completed.stdout + completed.stderr

    def validate(self) -> dict[str, Any]:
        completed = self.terraform("validate", "-json", "-no-color")
        return dict(json.loads(completed.stdout))

    def leftover_standins(self) -> list[int]:
        """Stand-in processes of this workspace still running (they run in plugin_cwd)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "cwd").resolve() == self.plugin_cwd.resolve():
                    found.append(int(proc.name))
            except OSError:
                continue
        return found


def make_workspace(directory: Path) -> Workspace:
    root = directory / "repo"
    copy_terraform(root / "terraform")
    shutil.copy2(REPO_ROOT / "topology.yaml", root / "topology.yaml")
    # The environment's state lives in GCS; a plan without credentials keeps it locally.
    (root / "terraform" / "envs" / "dev" / "standin_override.tf").write_text(
        'terraform {\n  backend "local" {}\n}\n'
    )
    plugin_cwd = directory / "plugin-cwd"
    plugin_cwd.mkdir()
    mirror = directory / "mirror"
    for source, (version, schema) in PROVIDERS.items():
        name = source.split("/")[1]
        folder = mirror / "registry.terraform.io" / source / version / "linux_amd64"
        folder.mkdir(parents=True)
        launcher = folder / f"terraform-provider-{name}_v{version}"
        launcher.write_text(
            "#!/bin/sh\n"
            f'cd "{plugin_cwd}" || exit 1\n'
            f'PYTHONPATH="{REPO_ROOT}" exec "{sys.executable}" -m tests.infra.standin "{schema}"\n'
        )
        launcher.chmod(0o755)
    cli_config = directory / "terraform.tfrc"
    cli_config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "}\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TF_", "PLUGIN_")) and key != "CHECKPOINT_DISABLE"
    }
    env.update(TF_CLI_CONFIG_FILE=str(cli_config), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    return Workspace(root=root, env=env, plugin_cwd=plugin_cwd)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Workspace]]:
    """Every workspace made in this module; at the end, none may have a stand-in left."""
    made: list[Workspace] = []
    yield made
    leftovers = {pid for workspace in made for pid in workspace.leftover_standins()}
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"stand-in providers outlived terraform: {sorted(leftovers)}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, workspaces: list[Workspace]) -> Workspace:
    made = make_workspace(tmp_path_factory.mktemp("tf-real"))
    workspaces.append(made)
    made.init()
    return made


@pytest.fixture(scope="module")
def plan(workspace: Workspace) -> dict[str, Any]:
    """`terraform show -json` of a plan of the real configuration with plan.tfvars."""
    planned = workspace.terraform(
        "plan", "-input=false", "-no-color", f"-var-file={PLAN_VARS}", "-out=tfplan"
    )
    assert planned.returncode == 0, planned.stdout[-4000:] + planned.stderr
    shown = workspace.terraform("show", "-json", "tfplan")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


# ------------------------------------------------------------------ the schema


def schema_types(path: Path) -> tuple[set[str], set[str]]:
    with gzip.open(path) as handle:
        (schema,) = json.load(handle)["provider_schemas"].values()
    return set(schema["resource_schemas"]), set(schema["data_source_schemas"])


def test_every_type_terraform_uses_is_in_the_committed_schema() -> None:
    terraform = Terraform.load(TERRAFORM_DIR)
    resources: set[str] = set()
    data_sources: set[str] = set()
    for schema_file in (schema for _, schema in PROVIDERS.values()):
        assert schema_file.is_file(), f"{schema_file} is missing: {REGENERATE}"
        found_resources, found_data = schema_types(schema_file)
        resources |= found_resources
        data_sources |= found_data
    used_resources = {resource.type for resource in terraform.resources}
    used_data = {
        unquote(data_type)
        for module in terraform.modules.values()
        for block in module.blocks("data")
        for data_type in block
    }
    missing = sorted(used_resources - resources) + sorted(
        f"data.{d}" for d in used_data - data_sources
    )
    assert missing == [], f"not in terraform/testing/*.schema.json.gz: {missing}; {REGENERATE}"


def test_every_required_provider_is_served() -> None:
    terraform = Terraform.load(TERRAFORM_DIR)
    required = {
        unquote(spec["source"])
        for module in terraform.modules.values()
        for block in module.blocks("terraform")
        for providers in block.get("required_providers", [])
        for spec in providers.values()
        if isinstance(spec, dict)
    }
    assert "hashicorp/google" in required, "no required_providers found: the parse changed"
    assert required <= set(PROVIDERS), (
        f"no stand-in schema for {sorted(required - set(PROVIDERS))}: add it to "
        f"scripts/provider_schema.py BINDINGS and PROVIDERS here, then {REGENERATE}"
    )


# ------------------------------------------------------------------ validate and plan


def test_validate_succeeds(workspace: Workspace) -> None:
    result = workspace.validate()
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)


def config_address(address: str) -> str:
    """A resource instance's address without its instance keys."""
    return re.sub(r'\[(?:"[^"]*"|\d+)\]', "", address)


def expected_instances(terraform: Terraform, tfvars: dict[str, Any]) -> collections.Counter[str]:
    """How many instances of each resource block the plan must hold, counted from the
    configuration, topology.yaml and the plan's inputs (not from Terraform's output).

    Knows the for_each and count forms terraform/ uses; a new form fails here, naming it.
    """
    topology = load_topology(REPO_ROOT / "topology.yaml")
    env = terraform.module("envs/dev")
    consumers = {sub["consumer"] for sub in topology["subscriptions"] if sub.get("consumer")}

    def variable_value(name: str) -> Any:
        return tfvars.get(name, unquote_all(env.variables[name].get("default")))

    def multiplicity(expression: Any, call: dict[str, Any], where: str) -> int:
        if expression is None:
            return 1
        if isinstance(expression, dict):  # a literal map
            return len(expression)
        text = squash(expression)
        grants = re.fullmatch(r"\$\{\{forgrantinlocal\.(\w+):.*?(ifvar\.(\w+))?\}\}", text)
        variable = re.fullmatch(r"\$\{toset\(var\.(\w+)\)\}", text)
        switch = re.fullmatch(r"\$\{var\.(\w+)(?:\.(\w+))?\?1:0\}", text)
        # Once per model: each row of a grant table, or each key of a map.
        per_model = re.fullmatch(
            r"\$\{\{forpairinsetproduct\((?:var\.models,local\.(\w+)|keys\(local\.(\w+)\),var\.models)\):.*\}\}",
            text,
        )
        if grants:  # a grant table, or only its rows while a switch is on
            return len(env.locals[grants[1]]) if tfvars.get(grants[3], True) else 0
        if per_model:
            return len(env.locals[per_model[1] or per_model[2]]) * len(variable_value("models"))
        if variable and call is root_call and variable[1] in env.variables:
            return len(variable_value(variable[1]))
        if switch:  # a resource that exists while a switch (or a switch's field) is on
            value = tfvars.get(switch[1], {} if switch[2] else False)
            return 1 if (value.get(switch[2], False) if switch[2] else value) else 0
        if variable and isinstance(call.get(variable[1]), list):
            return len(call[variable[1]])
        if text == "${toset(var.invoker_members)}":
            # A staging or a production service's invokers.
            service = re.fullmatch(
                r"\$\{var\.(staging_service|production_service)\.invoker_members\}",
                squash(call["invoker_members"]),
            )
            assert service is not None, call["invoker_members"]
            return len(tfvars.get(service[1], {}).get("invoker_members", []))
        counts = {
            "${local.artifact_writes}": len(env.locals["artifact_writes"]),
            "${local.prediction_log_writers}": len(env.locals["prediction_log_writers"]),
            "${local.topics}": len(topology["topics"]),
            "${local.push_subscriptions}": sum(
                1 for s in topology["subscriptions"] if s.get("consumer")
            ),
            "${local.hold_subscriptions}": sum(
                1 for s in topology["subscriptions"] if not s.get("consumer")
            ),
            "${local.consumers}": len(consumers),
            '${var.github_owner==""?0:1}': 0 if tfvars.get("github_owner", "") == "" else 1,
        }
        if text not in counts:
            raise AssertionError(f"{where}: teach expected_instances about {text}")
        return counts[text]

    expected: collections.Counter[str] = collections.Counter()
    root_call: dict[str, Any] = {}
    calls: dict[Path, list[tuple[str, int, dict[str, Any]]]] = {env.directory: [("", 1, root_call)]}
    for name, call in env.module_calls.items():
        source = (env.directory / unquote(call["source"])).resolve()
        instances = multiplicity(
            call.get("for_each", call.get("count")), root_call, f"module.{name}"
        )
        calls.setdefault(source, []).append((f"module.{name}.", instances, call))
    for resource in terraform.resources:
        for prefix, module_instances, call in calls.get(resource.directory.resolve(), []):
            address = f"{prefix}{resource.type}.{resource.name}"
            each = multiplicity(
                resource.body.get("for_each", resource.body.get("count")), call, address
            )
            if module_instances * each:
                expected[address] += module_instances * each
    return expected


def test_plan_creates_what_the_configuration_declares(plan: dict[str, Any]) -> None:
    tfvars = {k: unquote(v) for k, v in hcl2.loads(PLAN_VARS.read_text()).items()}
    tfvars["staging_service"] = {
        "invoker_members": [unquote(m) for m in tfvars["staging_service"]["invoker_members"]]
    }
    expected = expected_instances(Terraform.load(TERRAFORM_DIR), tfvars)
    managed = [c for c in plan["resource_changes"] if c["mode"] == "managed"]
    planned = collections.Counter(config_address(change["address"]) for change in managed)
    assert planned == expected
    assert {tuple(change["change"]["actions"]) for change in managed} == {("create",)}
    assert sum(expected.values()) == len(managed)


def test_plan_builds_the_event_graph_of_topology_yaml(plan: dict[str, Any]) -> None:
    topology = load_topology(REPO_ROOT / "topology.yaml")

    def planned_names(resource_type: str) -> set[str]:
        return {
            change["change"]["after"]["name"]
            for change in plan["resource_changes"]
            if change["type"] == resource_type and change["mode"] == "managed"
        }

    assert planned_names("google_pubsub_topic") == {t["name"] for t in topology["topics"]}
    assert planned_names("google_pubsub_subscription") == {
        s["name"] for s in topology["subscriptions"]
    }
    consumers = {s["consumer"] for s in topology["subscriptions"] if s.get("consumer")}
    assert planned_names("google_cloudfunctions2_function") == {
        f"modelrail-{consumer.replace('_', '-')}" for consumer in consumers
    }
    assert planned_names("google_cloud_run_v2_job") == {
        "modelrail-train",
        "modelrail-sweep",
        "modelrail-validate",
        "modelrail-monitor",
        "modelrail-batch",
    }
    models = unquote_all(hcl2.loads(PLAN_VARS.read_text())["models"])
    assert len(models) >= 2, "plan.tfvars: plan more than one model"
    assert planned_names("google_cloud_run_v2_service") == {
        f"modelrail-{service}-{model}" for model in models for service in ("staging", "production")
    }


def test_each_subscription_retries_with_the_backoff_topology_yaml_gives_it(
    plan: dict[str, Any],
) -> None:
    """The notifier's subscriptions have a backoff of their own; the rest the defaults'.
    The same Subscription the local runtimes read says which."""
    topology = Topology.load(REPO_ROOT / "topology.yaml")
    retried = {
        after["name"]: after["retry_policy"][0]
        for after in managed_after(plan, "google_pubsub_subscription")
        if after.get("retry_policy")
    }
    expected = {
        s.name: {
            "minimum_backoff": f"{s.minimum_backoff_s}s",
            "maximum_backoff": f"{s.maximum_backoff_s}s",
        }
        for s in topology.subscriptions
        if s.consumer is not None
    }
    assert retried == expected
    assert retried["model-deployed--notify"] == {"minimum_backoff": "1s", "maximum_backoff": "8s"}
    assert retried["model-registered--deploy"] == {
        "minimum_backoff": "10s", "maximum_backoff": "600s",
    }  # fmt: skip


def unquote_all(value: Any) -> Any:
    """A value python-hcl2 parsed, every string literal in it unquoted."""
    if isinstance(value, list):
        return [unquote_all(item) for item in value]
    if isinstance(value, dict):
        return {key: unquote_all(item) for key, item in value.items()}
    return unquote(value)


def planned(plan: dict[str, Any], resource_type: str, name: str) -> dict[str, Any]:
    """The planned values of the one managed resource of that type and name."""
    [after] = [
        change["change"]["after"]
        for change in plan["resource_changes"]
        if change["mode"] == "managed"
        and change["type"] == resource_type
        and change["change"]["after"].get("name") == name
    ]
    return dict(after)


def managed_after(plan: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """The planned values of every managed resource of that type."""
    return [
        change["change"]["after"]
        for change in plan["resource_changes"]
        if change["mode"] == "managed" and change["type"] == resource_type
    ]


def test_each_model_has_its_own_staging_service_with_its_own_grants(
    plan: dict[str, Any],
) -> None:
    """plan.tfvars names two models: each gets a service named after it, pinned to it,
    which the deploy stage and the sweep may update and call, and the invokers call.
    (The stand-in gives every looked-up account one email: the stage grants are told
    apart by their keys.)"""
    tfvars = unquote_all(hcl2.loads(PLAN_VARS.read_text()))
    models, invokers = tfvars["models"], tfvars["staging_service"]["invoker_members"]
    grants: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for change in plan["resource_changes"]:
        after, address = change["change"]["after"], change["address"]
        stage = re.fullmatch(
            r'google_cloud_run_v2_service_iam_member\.stage\["[\w-]+/(\w+)/.*"\]', address
        )
        if stage:
            grants[after["name"]].add((after["role"], stage[1]))
        elif re.fullmatch(r'module\.staging_service\["[\w-]+"\]\..*\.invokers\[.*\]', address):
            grants[after["name"]].add((after["role"], after["member"]))

    assert set(grants) == {f"modelrail-staging-{model}" for model in models}
    for model in models:
        name = f"modelrail-staging-{model}"
        service = planned(plan, "google_cloud_run_v2_service", name)
        [container] = service["template"][0]["containers"]
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        assert env["MODELRAIL_MODEL_NAME"] == model
        assert env["MODELRAIL_MODEL_ALIAS"] == "staging"
        assert grants[name] == {
            ("roles/run.developer", "deploy"),
            ("roles/run.invoker", "deploy"),
            ("roles/run.developer", "sweep"),
            ("roles/run.invoker", "sweep"),
            *(("roles/run.invoker", member) for member in invokers),
        }
    # The deploy stage finds model M's service as <MODELRAIL_STAGING_SERVICE>-M.
    for function in managed_after(plan, "google_cloudfunctions2_function"):
        [config] = function["service_config"]
        assert config["environment_variables"]["MODELRAIL_STAGING_SERVICE"] == "modelrail-staging"
    outputs = plan["planned_values"]["outputs"]
    assert outputs["staging_services"]["value"] == {m: f"modelrail-staging-{m}" for m in models}
    assert set(plan["output_changes"]["staging_urls"]["after_unknown"]) == set(models)


def test_deploy_and_the_sweep_write_each_model_s_alias_and_leases_under_its_own_grant(
    plan: dict[str, Any],
) -> None:
    tfvars = unquote_all(hcl2.loads(PLAN_VARS.read_text()))
    models, project = tfvars["models"], tfvars["project_id"]
    objects = f"projects/_/buckets/{project}-modelrail-artifacts/objects/"
    conditions = {
        change["address"]: change["change"]["after"]["condition"][0]
        for change in plan["resource_changes"]
        if change["address"].startswith("google_storage_bucket_iam_member.model_writes[")
    }

    assert set(conditions) == {
        f'google_storage_bucket_iam_member.model_writes["{stage}/{model}"]'
        for stage in ("deploy", "sweep", "monitor")
        for model in models
    }
    for address, condition in conditions.items():
        stage, model = re.findall(r'"(\w+)/([\w-]+)"', address)[0]
        assert condition["title"] == f"{stage}-writes-{model}-registry-objects"
    for model in models:
        deploy = conditions[f'google_storage_bucket_iam_member.model_writes["deploy/{model}"]']
        sweep = conditions[f'google_storage_bucket_iam_member.model_writes["sweep/{model}"]']
        deploy, sweep = deploy["expression"], sweep["expression"]
        assert deploy == (
            f'resource.name.startsWith("{objects}models/{model}/aliases/staging.json") || '
            f'resource.name.startsWith("{objects}models/{model}/leases/staging.json")'
        )
        assert sweep == (
            f'resource.name.startsWith("{objects}models/{model}/leases/staging.json") || '
            f'resource.name.startsWith("{objects}models/{model}/leases/register-") || '
            f'resource.name.startsWith("{objects}models/{model}/policies/schedule.json") || '
            f'resource.name.startsWith("{objects}models/{model}/aliases/production.json") || '
            f'resource.name.startsWith("{objects}models/{model}/leases/production.json") || '
            f'resource.name.startsWith("{objects}models/{model}/promotions/") || '
            f'resource.name.startsWith("{objects}models/{model}/rollouts/")'
        )
        monitor = conditions[f'google_storage_bucket_iam_member.model_writes["monitor/{model}"]']
        assert monitor["expression"] == (
            f'resource.name.startsWith("{objects}models/{model}/policies/retrain-on-drift.json")'
        )
    # Register writes the registry, but no model's definition.
    [register] = [
        grant["condition"][0]["expression"]
        for grant in managed_after(plan, "google_storage_bucket_iam_member")
        if grant["condition"]
        and grant["condition"][0]["title"] == "register-writes-its-own-objects"
    ]
    assert register.endswith(
        f'(resource.name.startsWith("{objects}models/") && '
        '!(resource.name.endsWith("/definition.json")))'
    )


def test_only_uploads_are_announced_and_no_process_is_given_a_config_file(
    plan: dict[str, Any],
) -> None:
    [notification] = managed_after(plan, "google_storage_notification")
    assert notification["object_name_prefix"] == "uploads/"
    assert notification["event_types"] == ["OBJECT_FINALIZE"]

    environments = [
        function["service_config"][0]["environment_variables"]
        for function in managed_after(plan, "google_cloudfunctions2_function")
    ] + [
        {v["name"] for v in job["template"][0]["template"][0]["containers"][0]["env"]}
        for job in managed_after(plan, "google_cloud_run_v2_job")
    ]
    assert len(environments) >= 8
    assert [env for env in environments if "MODELRAIL_CONFIG" in env] == []


def test_the_sweep_runs_on_a_schedule_as_the_training_image_with_its_settings(
    plan: dict[str, Any],
) -> None:
    tfvars = {k: unquote(v) for k, v in hcl2.loads(PLAN_VARS.read_text()).items()}
    project, region = tfvars["project_id"], tfvars["region"]
    train = planned(plan, "google_cloud_run_v2_job", "modelrail-train")
    sweep = planned(plan, "google_cloud_run_v2_job", "modelrail-sweep")
    [train_container] = train["template"][0]["template"][0]["containers"]
    [container] = sweep["template"][0]["template"][0]["containers"]

    # The training image, its ENTRYPOINT replaced by the command line's sweep.
    assert container["image"] == train_container["image"]
    assert [*container["command"], *container["args"]] == [
        "python", "-m", "modelrail", "sweep", "--timeout-seconds", "600",
    ]  # fmt: skip
    assert train_container.get("command") is None
    # What the sweep reads from its environment is the training job's. The signing key
    # is looked up (the bootstrap's), so its version's name is known at plan time.
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env == {v["name"]: v.get("value") for v in train_container["env"]}
    assert [name for name, value in env.items() if value is None] == []
    assert env["MODELRAIL_SIGNING_KEY"].endswith("/cryptoKeyVersions/1")
    settings = Settings.from_env(env)
    assert (settings.mode, settings.project, settings.region) == ("cloud", project, region)
    artifacts = planned(plan, "google_storage_bucket", f"{project}-modelrail-artifacts")
    assert settings.artifact_bucket == artifacts["name"]
    assert settings.training_job == train["name"]
    assert str(settings.topology_path) == "/app/topology.yaml"
    # Each model's definition comes from the artifact bucket, not from a file.
    assert "MODELRAIL_CONFIG" not in env

    scheduler = planned(plan, "google_cloud_scheduler_job", "modelrail-sweep")
    [target] = scheduler["http_target"]
    assert scheduler["region"] == region
    assert scheduler["schedule"] == "*/10 * * * *"
    assert target["http_method"] == "POST"
    assert target["uri"] == (
        f"https://run.googleapis.com/v2/projects/{project}/locations/{region}/jobs/"
        f"{sweep['name']}:run"
    )
    # An access token for a Google API, not an identity token for a Cloud Run URL.
    assert target["oauth_token"]
    assert target["oidc_token"] == []


def test_the_monitor_runs_hourly_over_the_last_hour_as_the_training_image(
    plan: dict[str, Any],
) -> None:
    tfvars = {k: unquote(v) for k, v in hcl2.loads(PLAN_VARS.read_text()).items()}
    project, region = tfvars["project_id"], tfvars["region"]
    sweep = planned(plan, "google_cloud_run_v2_job", "modelrail-sweep")
    monitor = planned(plan, "google_cloud_run_v2_job", "modelrail-monitor")
    [sweep_container] = sweep["template"][0]["template"][0]["containers"]
    [container] = monitor["template"][0]["template"][0]["containers"]

    # The sweep's image and environment (the training job's), another command line.
    assert container["image"] == sweep_container["image"]
    assert container["env"] == sweep_container["env"]
    assert [*container["command"], *container["args"]] == [
        *("python", "-m", "modelrail", "monitor", "--every-model", "--hours", "1")
    ]
    assert monitor["template"][0]["template"][0]["max_retries"] == 0

    scheduler = planned(plan, "google_cloud_scheduler_job", "modelrail-monitor")
    [target] = scheduler["http_target"]
    assert (scheduler["region"], scheduler["schedule"]) == (region, "0 * * * *")
    assert target["uri"] == (
        f"https://run.googleapis.com/v2/projects/{project}/locations/{region}/jobs/"
        f"{monitor['name']}:run"
    )
    assert target["oauth_token"]
    assert target["oidc_token"] == []


@pytest.mark.parametrize(
    "variable",
    [
        "environment=dev; echo INJECTED",
        "tf_state_bucket=b$(id)",
        "region=europe-west1 x",
        "models=[]",
        'models=["penguins", "penguins"]',
        'models=["Penguins"]',
        'models=["penguins-"]',
        'models=["../penguins"]',
        f'models=["{"m" * 31}"]',
        'model_name="penguins"',
    ],
)
def test_plan_refuses_a_substitution_outside_its_allow_list(
    workspace: Workspace, variable: str
) -> None:
    """The build triggers hand these to Cloud Build as substitutions."""
    completed = workspace.terraform(
        "plan", "-input=false", "-no-color", f"-var-file={PLAN_VARS}", f"-var={variable}"
    )

    assert completed.returncode != 0
    assert "Invalid value for variable" in completed.stderr, completed.stderr[-2000:]


def test_the_owner_bootstrap_validates_and_plans(
    tmp_path_factory: pytest.TempPathFactory, workspaces: list[Workspace]
) -> None:
    """terraform/envs/bootstrap, which the owner applies (docs/deploy.md, step 3)."""
    bootstrap = make_workspace(tmp_path_factory.mktemp("tf-bootstrap"))
    bootstrap.environment = "bootstrap"
    (bootstrap.env_dir / "standin_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
    workspaces.append(bootstrap)
    bootstrap.init()
    result = bootstrap.validate()
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    tfvars = {k: unquote(v) for k, v in hcl2.loads(PLAN_VARS.read_text()).items()}
    planned = bootstrap.terraform(
        "plan",
        "-input=false",
        "-no-color",
        f"-var=project_id={tfvars['project_id']}",
        f"-var=deployer_service_account_email={tfvars['deployer_service_account_email']}",
        # Two webhook URLs' secrets, one by id and one by name.
        '-var=notification_secrets=["team-webhook", "projects/p/secrets/pager-webhook"]',
        "-out=tfplan",
    )
    assert planned.returncode == 0, planned.stdout[-4000:] + planned.stderr
    shown = bootstrap.terraform("show", "-json", "tfplan")
    changes = [c for c in json.loads(shown.stdout)["resource_changes"] if c["mode"] == "managed"]
    secret_grants = {
        (c["change"]["after"]["secret_id"], c["change"]["after"]["role"])
        for c in changes
        if c["type"] == "google_secret_manager_secret_iam_member"
    }
    assert secret_grants == {
        ("team-webhook", "roles/secretmanager.secretAccessor"),
        ("projects/p/secrets/pager-webhook", "roles/secretmanager.secretAccessor"),
    }
    bootstrap_root = Terraform.load(TERRAFORM_DIR).module("envs/bootstrap")
    accounts = len(bootstrap_root.locals["service_accounts"])
    counted = collections.Counter(config_address(c["address"]) for c in changes)
    assert counted["google_service_account.stage"] == accounts
    assert counted["google_service_account_iam_member.deployer_acts_as"] == accounts
    assert counted["google_kms_crypto_key_iam_member.manifest_signing"] == len(
        bootstrap_root.locals["signing_key_grants"]
    )
    assert counted["time_sleep.iam_propagation"] == 1


def test_plan_refuses_a_staging_service_name_cloud_run_would_refuse(workspace: Workspace) -> None:
    """A long name_prefix and a long model name make a service name over 49 characters."""
    completed = workspace.terraform(
        "plan",
        "-input=false",
        "-no-color",
        f"-var-file={PLAN_VARS}",
        "-var=name_prefix=modelrail-long",
        f'-var=models=["{"m" * 30}"]',
    )

    assert completed.returncode != 0
    assert "Invalid value for variable" in completed.stderr, completed.stderr[-2000:]
    assert "at most 49" in completed.stderr


# ------------------------------------------------------------------ mutations

# Each mutation: (file under terraform/, text replaced, replacement, the diagnostic's
# summary and a phrase of its detail). Applied together to one copy: one validate run
# must report every one of them.
MUTATIONS: dict[str, tuple[str, str, str, str, str]] = {
    "misspelled_argument": (
        "modules/bucket/main.tf",
        "uniform_bucket_level_access = true",
        "uniform_bucket_level_acess  = true",
        "Unsupported argument",
        'An argument named "uniform_bucket_level_acess" is not expected here.',
    ),
    "missing_required_argument": (
        "modules/pubsub/main.tf",
        "  project = var.project_id\n  name    = each.key\n  labels  = var.labels\n}",
        "  project = var.project_id\n  labels  = var.labels\n}",
        "Missing required argument",
        'The argument "name" is required, but no definition was found.',
    ),
    "block_as_argument": (
        "modules/bucket/main.tf",
        "versioning {\n    enabled = true\n  }",
        "versioning = {\n    enabled = true\n  }",
        "Unsupported argument",
        'Did you mean to define a block of type "versioning"?',
    ),
    # In a module nothing broken above precedes: validate skips what depends on an error.
    "computed_attribute_set": (
        "modules/artifact_registry/main.tf",
        "cleanup_policy_dry_run = false\n",
        'cleanup_policy_dry_run = false\n  create_time            = "2024-01-01T00:00:00Z"\n',
        "Value for unconfigurable attribute",
        '"create_time"',
    ),
}


@pytest.fixture(scope="module")
def broken_validation(
    tmp_path_factory: pytest.TempPathFactory, workspaces: list[Workspace]
) -> dict[str, Any]:
    broken = make_workspace(tmp_path_factory.mktemp("tf-broken"))
    workspaces.append(broken)
    for relative, old, new, *_ in MUTATIONS.values():
        path = broken.root / "terraform" / relative
        text = path.read_text()
        assert text.count(old) == 1, f"{relative} changed: update MUTATIONS"
        path.write_text(text.replace(old, new))
    broken.init()
    return broken.validate()


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_validate_fails_on_a_broken_copy(broken_validation: dict[str, Any], mutation: str) -> None:
    relative, _, _, summary, detail = MUTATIONS[mutation]
    assert not broken_validation["valid"]
    reported = [
        d
        for d in broken_validation["diagnostics"]
        if d["severity"] == "error" and d["summary"] == summary and detail in d["detail"]
    ]
    assert reported, f"{mutation}: not reported:\n{json.dumps(broken_validation, indent=2)}"
    assert any(
        d.get("range", {}).get("filename", "").endswith(Path(relative).name) or "range" not in d
        for d in reported
    )


def test_the_deploy_function_takes_a_burst_of_pushes_with_a_thread_each(
    plan: dict[str, Any],
) -> None:
    """Rollouts take turns on the staging lease, waiting inside the function: one push at
    a time would answer the others 429, which Pub/Sub counts as failed attempts."""
    deploy = planned(plan, "google_cloudfunctions2_function", "modelrail-deploy")
    [service] = deploy["service_config"]

    assert service["max_instance_request_concurrency"] >= 5
    threads = service["environment_variables"]["THREADS"]
    assert threads == str(service["max_instance_request_concurrency"])
    validate = planned(plan, "google_cloudfunctions2_function", "modelrail-validate")
    assert "THREADS" not in validate["service_config"][0]["environment_variables"]


def test_the_batch_job_runs_parallel_tasks_as_its_own_account_writing_batch_only(
    plan: dict[str, Any],
) -> None:
    """Batch prediction (batch.tf): the job's tasks run at once as the batch account,
    which reads the artifact bucket and writes under batch/ alone."""
    changes = {c["address"]: c["change"]["after"] for c in plan["resource_changes"]}
    [job] = [
        after for address, after in changes.items()
        if address.startswith("module.batch_job.") and after.get("name") == "modelrail-batch"
    ]  # fmt: skip
    [template] = job["template"]
    assert template["task_count"] == template["parallelism"] > 1
    [container] = template["template"][0]["containers"]
    assert container["command"] == ["python", "-m", "modelrail.entry.batch_job"]
    writes = changes["google_storage_bucket_iam_member.batch_writes"]
    assert writes["role"] == "roles/storage.objectUser"
    assert writes["condition"][0]["expression"].endswith('/objects/batch/")')
