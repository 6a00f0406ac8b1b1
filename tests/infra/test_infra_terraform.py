"""Terraform: formatting and the structure the pipeline relies on (python-hcl2)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.infra.conftest import (
    TERRAFORM_DIR,
    break_copy,
    copy_terraform,
    tool,
)
from tests.infra.infra_checks import (
    PRODUCTION_ONLY_GRANTS,
    REPO_ROOT,
    STAGE_REF,
    Module,
    Terraform,
    artifact_write_objects,
    bucket_write_problems,
    conditioned_grants_of,
    custom_role_name,
    dead_letter_problems,
    documented_artifact_writes,
    documented_grants,
    iam_problems,
    load_topology,
    may_write,
    module_style_problems,
    pr_build_problems,
    production_account_problems,
    public_member_problems,
    signing_key_problems,
    squash,
    stage_grants,
    topology_problems,
    unquote,
)

pytestmark = pytest.mark.infra

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def terraform() -> Terraform:
    return Terraform.load(TERRAFORM_DIR)


def test_terraform_is_formatted() -> None:
    completed = subprocess.run(
        [tool("terraform"), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"run `make tf-fmt`:\n{completed.stdout}{completed.stderr}"


def test_modules_follow_the_terraform_google_modules_layout(terraform: Terraform) -> None:
    assert module_style_problems(terraform) == []


def test_the_event_graph_is_topology_yaml(terraform: Terraform) -> None:
    assert topology_problems(terraform, load_topology(), REPO_ROOT / "functions") == []


def test_every_consumer_is_a_function_with_a_handle_entry_point() -> None:
    topology = load_topology()
    consumers = {sub["consumer"] for sub in topology["subscriptions"] if sub.get("consumer")}
    assert consumers, "topology.yaml names no consumer"
    missing = sorted(
        c for c in consumers if not (REPO_ROOT / "functions" / c / "main.py").is_file()
    )
    assert missing == [], f"functions/<consumer>/main.py missing for {missing}"


def test_every_subscription_but_the_hold_is_dead_lettered(terraform: Terraform) -> None:
    assert dead_letter_problems(terraform) == []
    held = [s["name"] for s in load_topology()["subscriptions"] if s.get("consumer") is None]
    assert held == ["dead-letter--hold"], (
        "only the dead-letter hold may go without a dead-letter policy"
    )


def test_no_iam_member_is_public(terraform: Terraform) -> None:
    assert public_member_problems(terraform) == []


def test_service_accounts_hold_exactly_the_documented_roles(terraform: Terraform) -> None:
    documented = documented_grants(DEPLOY_MD)
    assert documented, "docs/deploy.md has no IAM table"
    assert iam_problems(terraform, documented) == []


def test_model_versions_go_to_a_generic_repository_with_grants_on_it_alone(
    terraform: Terraform,
) -> None:
    env = terraform.module("envs/dev")
    resources = {(r.type, r.name): r for r in env.resources}
    repository = resources["google_artifact_registry_repository", "models"]
    members = resources["google_artifact_registry_repository_iam_member", "models"]
    grants = {(unquote(g["sa"]), unquote(g["role"])) for g in env.locals["model_repository_grants"]}

    assert unquote(repository.body["format"]) == "GENERIC"
    assert squash(members.body["repository"]) == (
        "${google_artifact_registry_repository.models.repository_id}"
    )
    assert grants == {
        ("register", "roles/artifactregistry.writer"),
        ("deploy", "roles/artifactregistry.reader"),
        ("staging", "roles/artifactregistry.reader"),
        ("production", "roles/artifactregistry.reader"),
    }
    # The stages read the repository's name from the same resource.
    assert squash(env.locals["common_env"]["MODELRAIL_ARTIFACT_REPOSITORY"]) == (
        "${google_artifact_registry_repository.models.repository_id}"
    )


def test_vertex_ai_exists_only_behind_its_switch(terraform: Terraform) -> None:
    env = terraform.module("envs/dev")
    vertex = Module(env.directory, {"vertex.tf": env.files["vertex.tf"]})
    switch = "var.vertex_model_registry"

    assert unquote(env.variables["vertex_model_registry"]["default"]) is False
    # Every resource and module of vertex.tf is counted, or filtered, by the switch.
    for resource in vertex.resources:
        assert switch in squash(resource.body.get("count", resource.body.get("for_each"))), (
            resource.address
        )
    [api] = vertex.module_calls.values()
    assert squash(api["count"]) == f"${{{switch}?1:0}}"
    assert [unquote(s) for s in api["services"]] == ["aiplatform.googleapis.com"]
    grants = {(unquote(g["sa"]), unquote(g["role"])) for g in env.locals["vertex_grants"]}
    assert grants == {("register", "roles/aiplatform.user"), ("deploy", "roles/aiplatform.user")}
    # The functions learn the image Vertex AI's versions serve with, the staging one.
    functions = env.module_calls["functions"]
    assert "local.vertex_env" in squash(functions["environment_variables"])
    staging_image = squash(env.module_calls["staging_service"]["image"])
    assert squash(env.locals["vertex_env"]) == (
        f"${{{switch}?{{MODELRAIL_STAGING_IMAGE={staging_image}}}:{{}}}}"
    )


def test_manifests_are_signed_by_a_kms_key_only_register_may_use_to_sign(
    terraform: Terraform,
) -> None:
    env = terraform.module("envs/dev")
    bootstrap = terraform.module("envs/bootstrap")
    resources = {(r.type, r.name): r for r in bootstrap.resources}
    key = resources["google_kms_crypto_key", "manifest_signing"]
    members = resources["google_kms_crypto_key_iam_member", "manifest_signing"]
    grants = {
        (unquote(g["sa"]), unquote(g["role"])) for g in bootstrap.locals["signing_key_grants"]
    }

    assert unquote(key.body["purpose"]) == "ASYMMETRIC_SIGN"
    template = key.body["version_template"][0]
    assert unquote(template["algorithm"]) == "EC_SIGN_P256_SHA256"
    assert squash(template["protection_level"]) == "${var.manifest_signing.protection_level}"
    assert "rotation_period" not in key.body  # asymmetric keys do not take one
    assert key.body["lifecycle"][0]["prevent_destroy"] is True
    assert squash(members.body["crypto_key_id"]) == "${google_kms_crypto_key.manifest_signing.id}"
    assert grants == {
        ("register", "roles/cloudkms.signer"),
        *((reader, "roles/cloudkms.publicKeyViewer") for reader in
          ("validate", "evaluate", "register", "deploy", "sweep", "staging", "production",
           "monitor", "batch")),
    }  # fmt: skip
    assert signing_key_problems(terraform) == []
    # The stages (register signs, deploy pins it on staging) and the staging service's
    # first revision name the same key version.
    staging_env = env.module_calls["staging_service"]["environment_variables"]
    for env_vars in (env.locals["common_env"], staging_env):
        assert squash(env_vars["MODELRAIL_SIGNING_KEY"]) == "${local.manifest_signing_key}"
    assert '"cloudkms.googleapis.com"' in env.module_calls["apis"]["services"]
    # The environment names the key the bootstrap made (its ring and name), and only
    # reads it.
    [looked_up] = [
        body
        for data in env.blocks("data")
        for data_type, named in data.items()
        if unquote(data_type) == "google_kms_crypto_key"
        for body in named.values()
    ]
    assert squash(looked_up["name"]) == squash(key.body["name"])
    assert unquote(squash(env.locals["manifest_signing_key"])) == (
        "${data.google_kms_crypto_key.manifest_signing.id}/cryptoKeyVersions/"
        "${var.manifest_signing.key_version}"
    )


def test_functions_take_internal_traffic_and_run_as_their_own_accounts(
    terraform: Terraform,
) -> None:
    function = next(
        r
        for r in terraform.module("modules/function").resources
        if r.type == "google_cloudfunctions2_function"
    )
    service_config = function.body["service_config"][0]
    assert unquote(service_config["ingress_settings"]) == "ALLOW_INTERNAL_ONLY"
    assert squash(service_config["service_account_email"]) == "${var.service_account_email}"
    assert (
        squash(function.body["build_config"][0]["service_account"])
        == "${var.build_service_account_id}"
    )
    call = terraform.module("envs/dev").module_calls["functions"]
    assert (
        squash(call["service_account_email"])
        == "${data.google_service_account.stage[each.key].email}"
    )
    assert (
        squash(call["invoker_service_account_email"])
        == '${data.google_service_account.stage["push"].email}'
    )


def test_push_subscriptions_present_the_trigger_identity(terraform: Terraform) -> None:
    push = next(
        r
        for r in terraform.module("modules/pubsub").resources
        if r.type == "google_pubsub_subscription" and r.name == "push"
    )
    config = push.body["push_config"][0]
    assert "/projects/${var.project_id}/topics/${each.value.topic}" in config["push_endpoint"]
    token = config["oidc_token"][0]
    assert "service_account_email" in squash(token["service_account_email"])


def test_staging_service_never_disables_its_invoker_check(terraform: Terraform) -> None:
    service = next(
        r
        for r in terraform.module("modules/run_service").resources
        if r.type == "google_cloud_run_v2_service"
    )
    assert service.body["invoker_iam_disabled"] is False


# The application's rule for a model name (a folder of both buckets, the suffix of its
# staging service).
MODEL_NAME = r"^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$"


def test_the_default_models_serve_the_bundled_model(terraform: Terraform) -> None:
    """The root pipeline.toml's model has a staging service by default, and the
    variable refuses the names the application refuses."""
    variable = terraform.module("envs/dev").variables["models"]
    default = [unquote(model) for model in variable["default"]]
    bundled = tomllib.loads((REPO_ROOT / "pipeline.toml").read_text())["model"]["name"]

    assert bundled in default
    assert all(re.fullmatch(MODEL_NAME, name) for name in default)
    assert f'regex("{MODEL_NAME}", model)' in str(variable["validation"])


def test_every_model_has_a_staging_service_of_its_own(terraform: Terraform) -> None:
    """<MODELRAIL_STAGING_SERVICE>-<model>, its first revision pinned to its model."""
    env = terraform.module("envs/dev")
    call = env.module_calls["staging_service"]

    assert squash(call["for_each"]) == "${toset(var.models)}"
    assert unquote(call["name"]) == "${local.staging_service_name}-${each.key}"
    assert squash(call["environment_variables"]["MODELRAIL_MODEL_NAME"]) == "${each.key}"
    assert squash(env.locals["common_env"]["MODELRAIL_STAGING_SERVICE"]) == (
        "${local.staging_service_name}"
    )
    assert unquote(env.locals["staging_service_name"]) == "${var.name_prefix}-staging"
    # Every grant on a staging service is made on each model's.
    [grants] = [
        r
        for r in env.resources
        if r.type == "google_cloud_run_v2_service_iam_member" and r.name == "stage"
    ]
    assert "setproduct(var.models,local.staging_service_grants)" in squash(grants.body["for_each"])
    assert squash(grants.body["name"]) == "${module.staging_service[each.value.model].name}"


def test_every_model_has_a_production_service_of_its_own(terraform: Terraform) -> None:
    """<prefix>-production-<model>, following the production alias, which only the
    sweep's account rolls out (docs/deploy.md, "Production")."""
    env = terraform.module("envs/dev")
    call = env.module_calls["production_service"]

    assert squash(call["for_each"]) == "${toset(var.models)}"
    assert unquote(call["name"]) == "${local.production_service_name}-${each.key}"
    assert unquote(call["environment_variables"]["MODELRAIL_MODEL_ALIAS"]) == "production"
    [grants] = [
        r
        for r in env.resources
        if r.type == "google_cloud_run_v2_service_iam_member" and r.name == "production"
    ]
    assert "setproduct(var.models,local.production_service_grants)" in squash(
        grants.body["for_each"]
    )
    assert {unquote(row["sa"]) for row in env.locals["production_service_grants"]} == {"sweep"}


def test_production_runs_as_its_own_account_which_alone_holds_the_shadow_grants(
    terraform: Terraform,
) -> None:
    """The production services run as the production account: what the staging account
    serves with (the artifact bucket, predictions/, the model repository, the signing
    key's public key) and the shadow's invoker and shadow/ writes, which the staging
    account does not hold; only the sweep acts as it (docs/deploy.md, "Production")."""
    assert production_account_problems(terraform) == []
    env = terraform.module("envs/dev")
    assert squash(env.module_calls["production_service"]["service_account_email"]) == (
        '${data.google_service_account.stage["production"].email}'
    )
    assert conditioned_grants_of(terraform, "staging") == {
        ("roles/storage.objectViewer", '${local.buckets["artifacts"]}', ""),
        ("roles/storage.objectCreator", "${local.buckets.artifacts}", "predictions/"),
        (
            "roles/artifactregistry.reader",
            "${google_artifact_registry_repository.models.repository_id}",
            "",
        ),
    }
    assert conditioned_grants_of(terraform, "production") == (
        conditioned_grants_of(terraform, "staging") | PRODUCTION_ONLY_GRANTS
    )


# A copy of terraform/ back to production serving as the staging account, and one where
# the deploy stage may act as the production account: what the check must report.
BROKEN_PRODUCTION = {
    "as_staging": (
        "envs/dev/production.tf",
        ('stage["production"]', 'stage["staging"]'),
        [
            'module.production_service runs as ${data.google_service_account.stage["staging"]'
            ".email}, not the production account",
            "staging holds production's ('roles/run.invoker', "
            "'${module.staging_service[each.key].name}', '')",
            "staging holds production's ('roles/storage.objectCreator', "
            "'${local.buckets.artifacts}', 'shadow/')",
            "production lacks ('roles/run.invoker', "
            "'${module.staging_service[each.key].name}', '')",
            "production lacks ('roles/storage.objectCreator', '${local.buckets.artifacts}', "
            "'shadow/')",
        ],
    ),
    "deploy_acts_as_production": (
        "envs/bootstrap/main.tf",
        (
            'target = "production", role = "roles/iam.serviceAccountUser" },',
            'target = "production", role = "roles/iam.serviceAccountUser" },\n'
            '    { sa = "deploy", target = "production", role = "roles/iam.serviceAccountUser" },',
        ),
        ["['deploy', 'sweep'] act as production, not ['sweep']"],
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_PRODUCTION))
def test_production_serving_as_staging_or_deploy_acting_as_production_is_caught(
    tmp_path: Path, broken: str
) -> None:
    relative, (old, new), expected = BROKEN_PRODUCTION[broken]
    copy = copy_terraform(tmp_path / "terraform")
    path = copy / relative
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))

    assert production_account_problems(Terraform.load(copy)) == expected


def test_only_the_approvers_hold_the_approver_role_and_only_on_approvals(
    terraform: Terraform,
) -> None:
    """The custom approver role creates objects; it is granted to var.promotion_approvers
    alone (people: the variable refuses anything but user: and group:), under a
    condition on models/<model>/approvals/, and no stage account holds it."""
    [role] = [
        r
        for r in terraform.module("envs/bootstrap").resources
        if r.type == "google_project_iam_custom_role" and r.name == "promotion_approver"
    ]
    assert [unquote(p) for p in role.body["permissions"]] == ["storage.objects.create"]
    approver_role = custom_role_name(terraform.module("envs/bootstrap"), "promotion_approver")
    scoped, project = stage_grants(terraform)
    assert not [grant for grant in scoped | project if grant[1] == approver_role]
    env = terraform.module("envs/dev")
    granted = [
        r
        for r in terraform.resources
        if "_iam_" in r.type and "promotion_approver" in squash(r.body.get("role", ""))
    ]
    assert [r.address for r in granted] == [
        "dev/google_storage_bucket_iam_member.promotion_approvers"
    ]
    [binding] = granted
    assert squash(binding.body["for_each"]) == "${toset(var.promotion_approvers)}"
    assert squash(binding.body["member"]) == "${each.value}"
    [condition] = binding.body["condition"]
    assert "/approvals/" in unquote(condition["expression"])
    assert unquote(env.locals["promotion_approver_role"]).endswith("_promotion_approver")


def test_only_uploads_start_runs(terraform: Terraform) -> None:
    """Uploads for model M are written to uploads/M/...: nothing else in the data
    bucket is announced on data-uploaded."""
    [notification] = [
        r for r in terraform.module("envs/dev").resources if r.type == "google_storage_notification"
    ]
    assert unquote(notification.body["object_name_prefix"]) == "uploads/"
    assert [unquote(e) for e in notification.body["event_types"]] == ["OBJECT_FINALIZE"]


def test_no_process_reads_its_configuration_from_a_file(terraform: Terraform) -> None:
    """Each model's definition is read from the artifact bucket: neither the functions
    nor the jobs are pointed at a pipeline.toml."""
    env = terraform.module("envs/dev")
    environments = [
        env.module_calls["functions"]["environment_variables"],
        env.locals["train_image_env"],
        env.locals["common_env"],
        *(call.get("environment_variables", "") for call in env.module_calls.values()),
    ]
    assert [e for e in environments if "MODELRAIL_CONFIG" in str(e)] == []


def test_every_account_running_modelrail_reads_the_models_definitions(
    terraform: Terraform,
) -> None:
    """models/<model>/definition.json: every function's, job's and service's account
    reads the whole artifact bucket (objectViewer, unconditional); none writes it."""
    env = terraform.module("envs/dev")
    consumers = {s["consumer"] for s in load_topology()["subscriptions"] if s.get("consumer")}
    running: set[str] = set()
    for name, call in env.module_calls.items():
        account = squash(call.get("service_account_email", ""))
        if account == "${data.google_service_account.stage[each.key].email}":
            assert name == "functions"
            running |= consumers
        else:
            running |= set(STAGE_REF.findall(account))
    readers = {
        unquote(g["sa"])
        for g in env.locals["bucket_grants"]
        if unquote(g["bucket"]) == "artifacts"
        and unquote(g["role"]) == "roles/storage.objectViewer"
    }
    [reads] = [
        r
        for r in env.resources
        if r.type == "google_storage_bucket_iam_member" and r.name == "stage"
    ]

    assert {
        "validate", "train", "sweep", "monitor", "deploy", "register", "staging", "production",
    } <= running  # fmt: skip
    assert running - readers == set()
    assert "condition" not in reads.body
    writers = {
        account
        for account, patterns in artifact_write_objects(terraform).items()
        if may_write(patterns, "models/penguins/definition.json", "penguins")
    }
    assert writers == set()


def test_environment_matches_what_settings_reads(terraform: Terraform) -> None:
    """Every MODELRAIL_* variable Terraform sets is one Settings.from_env reads."""
    config_py = (REPO_ROOT / "src" / "modelrail" / "settings" / "process.py").read_text()
    env = terraform.module("envs/dev")
    # The dask_training switch's variables are a conditional map: its names, as written.
    dask_env = (REPO_ROOT / "terraform" / "envs" / "dev" / "dask.tf").read_text()
    names = set(env.locals["common_env"]) | {"MODELRAIL_TOPOLOGY"}
    names |= set(re.findall(r"\b(MODELRAIL_DASK_\w+)\s*=", dask_env))
    assert len({n for n in names if n.startswith("MODELRAIL_DASK_")}) == 8
    unread = sorted(n for n in names if n.startswith("MODELRAIL_") and f'"{n}"' not in config_py)
    assert unread == []
    serving = (REPO_ROOT / "src" / "modelrail" / "settings" / "service.py").read_text()
    staging_env = env.module_calls["staging_service"]["environment_variables"]
    unread = sorted(
        n for n in staging_env if n.startswith("MODELRAIL_") and f'"{n}"' not in config_py + serving
    )
    assert unread == []


@pytest.mark.parametrize(
    ("mutation", "check"),
    [
        ("public_invoker", public_member_problems),
        ("no_dead_letter", dead_letter_problems),
        ("unconditional_write", bucket_write_problems),
        ("pull_requests_as_deployer", pr_build_problems),
        ("another_signer", signing_key_problems),
    ],
)
def test_structural_checks_catch_a_broken_copy(
    tmp_path: Path, mutation: str, check: object
) -> None:
    broken = break_copy(copy_terraform(tmp_path / "terraform"), mutation)
    problems = check(Terraform.load(broken))  # type: ignore[operator]
    assert problems, f"the {mutation} mutation went unnoticed"


def test_stage_accounts_write_only_their_own_objects(terraform: Terraform) -> None:
    assert bucket_write_problems(terraform) == []
    assert artifact_write_objects(terraform) == documented_artifact_writes(DEPLOY_MD)


@pytest.mark.parametrize(
    ("account", "prefix", "problem"),
    [
        ("validate", "models/", "validate writes the registry: models/"),
        ("deploy", "models/penguins/", "deploy writes the registry: models/penguins/"),
        ("train", "runs/", "train writes every object under runs/"),
    ],
)
def test_a_stage_writing_beyond_its_objects_is_caught(
    tmp_path: Path, account: str, prefix: str, problem: str
) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    iam_tf = copy / "envs" / "dev" / "iam.tf"
    entry = re.compile(rf"(\n    {account} = \{{\n[^}}]*?prefixes\s+= )\[[^\]]*\]")
    text, replaced = entry.subn(rf'\g<1>["{prefix}"]', iam_tf.read_text())
    assert replaced == 1, f"iam.tf changed: no artifact_writes entry for {account}"
    iam_tf.write_text(text)

    assert problem in bucket_write_problems(Terraform.load(copy))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            'deploy = ["aliases/staging.json", "leases/staging.json"]',
            'deploy = ["aliases/staging.json", "versions/"]',
            "deploy writes the registry: models/<model>/versions/",
        ),
        (
            '      except_suffixes = ["/definition.json"]\n',
            "",
            "register writes the models' definitions: models/<model>/definition.json",
        ),
    ],
)
def test_a_registry_write_beyond_the_aliases_and_leases_is_caught(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    iam_tf = copy / "envs" / "dev" / "iam.tf"
    text = iam_tf.read_text()
    assert text.count(old) == 1, "iam.tf changed: update this test"
    iam_tf.write_text(text.replace(old, new))

    assert problem in bucket_write_problems(Terraform.load(copy))


def test_pull_requests_build_as_an_account_that_cannot_deploy(terraform: Terraform) -> None:
    assert pr_build_problems(terraform) == []


def test_removing_a_dead_letter_policy_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR / "modules" / "pubsub", broken / "modules" / "pubsub")
    main_tf = broken / "modules" / "pubsub" / "main.tf"
    text = main_tf.read_text()
    start = text.index("  dead_letter_policy {")
    end = text.index("  }\n", start) + 4
    main_tf.write_text(text[:start] + text[end:])
    assert dead_letter_problems(Terraform.load(broken))


# The google provider version whose schema the offline checks are run against; every
# versions.tf pins exactly this one (docs/deploy.md: upgrading the provider).
TESTED_GOOGLE_PROVIDER = "6.50.0"


def google_provider_pins(tf: Terraform) -> dict[str, str]:
    """{module directory: its hashicorp/google version constraint}."""
    pins = {}
    for directory, module in tf.modules.items():
        for block in module.blocks("terraform"):
            for providers in block.get("required_providers", []):
                google = providers.get("google")
                if google is not None:
                    pins[str(directory.relative_to(tf.root))] = unquote(google["version"])
    return pins


def provider_pin_problems(tf: Terraform) -> list[str]:
    pins = google_provider_pins(tf)
    problems = [
        f"{module}: google provider {constraint!r}, not exactly {TESTED_GOOGLE_PROVIDER}"
        for module, constraint in sorted(pins.items())
        if constraint != TESTED_GOOGLE_PROVIDER
    ]
    unpinned = {str(d.relative_to(tf.root)) for d in tf.modules} - set(pins)
    problems += [f"{module}: no required_providers google" for module in sorted(unpinned)]
    return problems


def test_the_google_provider_is_pinned_to_the_tested_schema(terraform: Terraform) -> None:
    assert provider_pin_problems(terraform) == []


def test_a_provider_range_is_caught(tmp_path: Path) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    versions = copy / "modules" / "pubsub" / "versions.tf"
    versions.write_text(versions.read_text().replace('"6.50.0"', '">= 6.14, < 8.0"'))

    assert provider_pin_problems(Terraform.load(copy)) == [
        "modules/pubsub: google provider '>= 6.14, < 8.0', not exactly 6.50.0"
    ]
