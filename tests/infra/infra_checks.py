"""Structural checks over the parsed Terraform (python-hcl2), shared by the tests.

Each check returns a list of problems (empty: fine), so a test can assert both that the
real configuration passes and that a deliberately broken copy fails.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import yaml

from terraform.policies._common import OBJECT_NAME_CONDITION, OBJECT_WRITE_ROLES

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
# The runtime identities of the pipeline: none may hold any project-level role.
STAGE_ACCOUNTS = frozenset(
    {
        "validate",
        "launch_training",
        "train",
        "evaluate",
        "register",
        "deploy",
        "staging",
        "production",
        "push",
        "sweep",
        "scheduler",
        "dask",
        "notify",
        "monitor",
        "monitor_cron",
        "batch",
        "launch_batch",
    }
)
FORBIDDEN_PROJECT_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
    }
)
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals: ``'"x"'`` -> ``'x'``."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def is_literal(value: Any) -> bool:
    return isinstance(value, str) and value.startswith('"') and "${" not in value


def squash(expression: Any) -> str:
    """An expression with all whitespace removed, for comparisons."""
    return re.sub(r"\s+", "", str(expression))


@dataclasses.dataclass(frozen=True)
class Resource:
    type: str
    name: str
    body: dict[str, Any]
    directory: Path  # the Terraform module directory holding it

    @property
    def address(self) -> str:
        return f"{self.directory.name}/{self.type}.{self.name}"


@dataclasses.dataclass
class Module:
    """One Terraform module directory, parsed."""

    directory: Path
    files: dict[str, dict[str, Any]]

    def blocks(self, kind: str) -> Iterator[dict[str, Any]]:
        for parsed in self.files.values():
            yield from parsed.get(kind, [])

    @property
    def resources(self) -> list[Resource]:
        found = []
        for block in self.blocks("resource"):
            for rtype, named in block.items():
                for name, body in named.items():
                    found.append(Resource(unquote(rtype), unquote(name), body, self.directory))
        return found

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self.blocks("locals"):
            merged.update({k: v for k, v in block.items() if not k.startswith("__")})
        return merged

    @property
    def module_calls(self) -> dict[str, dict[str, Any]]:
        calls: dict[str, dict[str, Any]] = {}
        for block in self.blocks("module"):
            for name, body in block.items():
                calls[unquote(name)] = body
        return calls

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for block in self.blocks("variable"):
            for name, body in block.items():
                found[unquote(name)] = body
        return found

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for block in self.blocks("output"):
            for name, body in block.items():
                found[unquote(name)] = body
        return found


@dataclasses.dataclass
class Terraform:
    root: Path
    modules: dict[Path, Module]

    @classmethod
    def load(cls, root: Path) -> Terraform:
        modules: dict[Path, Module] = {}
        for tf_file in sorted(root.rglob("*.tf")):
            if ".terraform" in tf_file.parts:
                continue
            directory = tf_file.parent
            module = modules.setdefault(directory, Module(directory, {}))
            with tf_file.open() as handle:
                module.files[tf_file.name] = hcl2.load(handle)
        return cls(root, modules)

    def module(self, relative: str) -> Module:
        return self.modules[self.root / relative]

    @property
    def env_roots(self) -> list[Module]:
        return [m for d, m in self.modules.items() if d.parent == self.root / "envs"]

    @property
    def resources(self) -> list[Resource]:
        return [r for module in self.modules.values() for r in module.resources]


def load_topology(path: Path = REPO_ROOT / "topology.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def defines_handle(main_py: Path) -> bool:
    tree = ast.parse(main_py.read_text(), filename=str(main_py))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "handle":
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "handle" for t in node.targets
        ):
            return True
    return False


# ------------------------------------------------------------------ module style


def module_style_problems(tf: Terraform) -> list[str]:
    problems = []
    for directory, module in tf.modules.items():
        if directory.parent.name == "modules":
            missing = [name for name in MODULE_FILES if name not in module.files]
            if missing:
                problems.append(f"{directory.name}: missing {', '.join(missing)}")
        for name, body in module.variables.items():
            for attribute in ("type", "description"):
                if attribute not in body:
                    problems.append(f"{directory.name}: variable {name} has no {attribute}")
        for name, body in module.outputs.items():
            if "description" not in body:
                problems.append(f"{directory.name}: output {name} has no description")
    for env in tf.env_roots:
        backends = [b for block in env.blocks("terraform") for b in block.get("backend", [])]
        if not any('"gcs"' in backend or "gcs" in backend for backend in backends):
            problems.append(f'{env.directory.name}: no backend "gcs" {{}}')
    return problems


# ------------------------------------------------------------------ topology


def topology_problems(tf: Terraform, topology: dict[str, Any], functions_dir: Path) -> list[str]:
    """The event graph in Terraform is topology.yaml: read with yamldecode and iterated,
    every subscription with a consumer dead-lettered, every consumer a function."""
    problems: list[str] = []
    env = tf.module("envs/dev")
    local_values = env.locals
    repo_root = (
        env.directory / unquote(local_values.get("repo_root", '""')).replace("${path.root}", ".")
    ).resolve()
    if repo_root != REPO_ROOT.resolve() and repo_root != tf.root.parent.resolve():
        problems.append(f"envs/dev: local.repo_root resolves to {repo_root}, not the repository")
    if squash(local_values.get("topology")) != squash(
        '${yamldecode(file("${local.repo_root}/topology.yaml"))}'
    ):
        problems.append("envs/dev: local.topology is not yamldecode(file(<repo>/topology.yaml))")
    if "local.topology.subscriptions" not in str(local_values.get("push_subscriptions")) or (
        "sub.consumer!=null" not in squash(local_values.get("push_subscriptions"))
    ):
        problems.append(
            "envs/dev: local.push_subscriptions does not filter topology subscriptions by consumer"
        )
    if "local.push_subscriptions" not in str(local_values.get("consumers")):
        problems.append(
            "envs/dev: local.consumers is not derived from the topology's subscriptions"
        )

    calls = env.module_calls
    functions_call = calls.get("functions", {})
    if squash(functions_call.get("for_each")) != "${local.consumers}":
        problems.append("envs/dev: module.functions does not iterate local.consumers")
    if "build/functions/${each.key}" not in str(functions_call.get("source_dir")):
        problems.append("envs/dev: module.functions does not deploy build/functions/<consumer>")
    if unquote(functions_call.get("entry_point")) != "handle":
        problems.append("envs/dev: module.functions entry_point is not handle")
    if squash(calls.get("pubsub", {}).get("topology")) != "${local.topology}":
        problems.append("envs/dev: module.pubsub is not given local.topology")

    pubsub = tf.module("modules/pubsub")
    pubsub_locals = pubsub.locals
    partitions = {name: squash(value) for name, value in pubsub_locals.items()}
    if "forsubinvar.topology.subscriptions" not in partitions.get("push_subscriptions", "") or (
        "ifsub.consumer!=null" not in partitions.get("push_subscriptions", "")
    ):
        problems.append("pubsub: push_subscriptions is not topology subscriptions with a consumer")
    if "forsubinvar.topology.subscriptions" not in partitions.get("hold_subscriptions", "") or (
        "ifsub.consumer==null" not in partitions.get("hold_subscriptions", "")
    ):
        problems.append(
            "pubsub: hold_subscriptions is not topology subscriptions without a consumer"
        )
    if "fortopicinvar.topology.topics" not in partitions.get("topics", ""):
        problems.append("pubsub: topics are not the topology's topics")

    topic_resources = [r for r in pubsub.resources if r.type == "google_pubsub_topic"]
    if [squash(r.body.get("for_each")) for r in topic_resources] != ["${local.topics}"]:
        problems.append("pubsub: topics are not one google_pubsub_topic iterating local.topics")

    problems += dead_letter_problems(tf)

    # The topology itself: consistent, and every consumer a deployable function.
    topic_names = {topic["name"] for topic in topology["topics"]}
    if topology["dead_letter_topic"] not in topic_names:
        problems.append(
            f"topology: dead-letter topic {topology['dead_letter_topic']} is not a topic"
        )
    for sub in topology["subscriptions"]:
        if sub["topic"] not in topic_names:
            problems.append(
                f"topology: subscription {sub['name']} reads unknown topic {sub['topic']}"
            )
        consumer = sub.get("consumer")
        if consumer is None:
            continue
        main_py = functions_dir / consumer / "main.py"
        if not main_py.is_file():
            problems.append(f"topology: consumer {consumer} has no {main_py}")
        elif not defines_handle(main_py):
            problems.append(f"topology: {main_py} defines no top-level `handle`")
    return problems


def dead_letter_problems(tf: Terraform) -> list[str]:
    """Every google_pubsub_subscription has a dead-letter policy and a retry policy,
    except the one iterating the topology's consumer-less subscriptions."""
    problems = []
    for resource in tf.resources:
        if resource.type != "google_pubsub_subscription":
            continue
        module = tf.modules[resource.directory]
        for_each = squash(resource.body.get("for_each", ""))
        source = squash(module.locals.get(for_each.removeprefix("${local.").removesuffix("}"), ""))
        if for_each.startswith("${local.") and "ifsub.consumer==null" in source:
            continue  # the end of the line: nothing to dead-letter to
        policy = (resource.body.get("dead_letter_policy") or [{}])[0]
        if not policy.get("dead_letter_topic"):
            problems.append(f"{resource.address}: no dead_letter_policy with a dead_letter_topic")
        if not resource.body.get("retry_policy"):
            problems.append(f"{resource.address}: no retry_policy")
    return problems


# ------------------------------------------------------------------ IAM


def _walk(value: Any, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in skip:
                yield from _walk(item, skip)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, skip)
    elif isinstance(value, str):
        yield value


def public_member_problems(tf: Terraform) -> list[str]:
    """No IAM member anywhere is allUsers/allAuthenticatedUsers (validations that refuse
    them are the only place these names may appear)."""
    problems = []
    for directory, module in tf.modules.items():
        for name, parsed in module.files.items():
            for text in _walk(
                parsed, skip=frozenset({"validation", "description", "__comments__"})
            ):
                if any(public in text for public in PUBLIC_MEMBERS):
                    problems.append(f"{directory.name}/{name}: public member in {text!r}")
    return problems


# A grant table a for_each iterates: its rows (``for grant in local.X``), or each row once
# per model (``for pair in setproduct(var.models, local.X)``).
GRANT_TABLE = re.compile(r"(?:inlocal\.|setproduct\(var\.models,local\.)(\w+)")


# The accounts are created in envs/bootstrap (google_service_account.stage) and looked up
# in envs/dev (data.google_service_account.stage): either reference names the account.
# The Dask VMs' account exists only with dask_training (google_service_account.dask).
STAGE_REF = re.compile(r'google_service_account\.(?:stage\["|(?=dask\b))([\w-]+)')
# A grant of a custom role names the google_project_iam_custom_role that defines it.
CUSTOM_ROLE_REF = re.compile(r"google_project_iam_custom_role\.(\w+)")


def custom_role_name(module: Module, resource_name: str) -> str:
    """How the IAM tables spell a custom role: projects/<project>/roles/<its role_id>,
    with ``<name_prefix>`` for the environment's prefix."""
    [body] = [
        r.body
        for r in module.resources
        if r.type == "google_project_iam_custom_role" and r.name == resource_name
    ]
    role_id = squash(unquote(body["role_id"])).replace(
        '${replace(var.name_prefix,"-","_")}', "<name_prefix>"
    )
    return f"projects/<project>/roles/{role_id}"


def stage_grants(tf: Terraform) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(service account key, role) pairs the stage accounts hold, resource-scoped and
    project-level, read from the grant tables and the IAM resources."""
    env = tf.module("envs/dev")
    scoped: set[tuple[str, str]] = set()
    project: set[tuple[str, str]] = set()

    def add(resource: Resource, account: str, role: str) -> None:
        target = project if resource.type.startswith("google_project_iam") else scoped
        target.add((account, role))

    module_args: dict[Path, list[dict[str, Any]]] = {}
    for call in env.module_calls.values():
        source = (env.directory / unquote(call.get("source", '""'))).resolve()
        module_args.setdefault(source, []).append(call)

    for resource in tf.resources:
        if not re.search(r"_iam_(member|binding)$", resource.type):
            continue
        role = resource.body.get("role", "")
        member = str(resource.body.get("member", resource.body.get("members", "")))
        # Grant tables are locals of the root that declares the grant (dev or bootstrap).
        env_locals = {**env.locals, **tf.modules[resource.directory].locals}
        custom = CUSTOM_ROLE_REF.search(str(role))
        if custom:
            for account in STAGE_REF.findall(member):
                add(resource, account, custom_role_name(tf.modules[resource.directory], custom[1]))
        elif is_literal(role):
            accounts = STAGE_REF.findall(member)
            if "stage[each.key]" in member:
                table = re.fullmatch(r"\$\{local\.(\w+)\}", squash(resource.body.get("for_each")))
                if table is None:
                    raise AssertionError(f"{resource.address}: each.key from an unknown for_each")
                accounts += [unquote(key) for key in env_locals.get(table.group(1), {})]
            if "stage[each.value.sa]" in member:
                # A table keyed by stage, once per model (local.model_writes).
                table = re.search(r"keys\(local\.(\w+)\)", squash(resource.body.get("for_each")))
                if table is None:
                    raise AssertionError(
                        f"{resource.address}: each.value.sa from an unknown for_each"
                    )
                accounts += [unquote(key) for key in env_locals.get(table.group(1), {})]
            var_ref = re.search(r"\$\{var\.(\w+)\}", member)
            if not accounts and var_ref and resource.directory != env.directory:
                for call in module_args.get(resource.directory.resolve(), []):
                    accounts += STAGE_REF.findall(str(call.get(var_ref.group(1), "")))
            for account in accounts:
                add(resource, account, unquote(role))
        elif squash(role) == "${each.value.role}":
            table = GRANT_TABLE.search(squash(resource.body.get("for_each", "")))
            if table is None:
                raise AssertionError(f"{resource.address}: role from an unknown for_each")
            for grant in env_locals.get(table.group(1), []):
                add(resource, unquote(grant["sa"]), unquote(grant["role"]))
        elif not STAGE_REF.search(member) and "stage[" not in member:
            continue  # people's grants (production.tf's proposers, approvers): no stage's
        else:
            raise AssertionError(
                f"{resource.address}: role {role!r} is neither literal nor a grant table"
            )
    return scoped, project


# The attribute naming what an IAM resource grants on, by resource type.
GRANT_TARGETS = (
    "name",
    "bucket",
    "topic",
    "repository",
    "service_account_id",
    "project",
    "crypto_key_id",
)


def grants_of(terraform: Terraform, account: str) -> list[tuple[Resource, str, str]]:
    """(IAM resource, role, the resource it is granted on) for every grant of the
    environment to ``account``, a grant table's rows filled in."""
    env = terraform.module("envs/dev")
    found = []
    for resource in env.resources:
        if not resource.type.endswith("_iam_member"):
            continue
        target = squash(next(resource.body[key] for key in GRANT_TARGETS if key in resource.body))
        member = str(resource.body["member"])
        for_each = squash(resource.body.get("for_each", ""))
        rows = GRANT_TABLE.search(for_each)  # a grant table: one per row (and model)
        keys = re.fullmatch(r"\$\{local\.(\w+)\}", for_each)  # one per key of a map
        # one per key of a map and model
        model_keys = re.search(r"setproduct\(keys\(local\.(\w+)\),var\.models\)", for_each)
        if rows:
            for row in env.locals[rows[1]]:
                if unquote(row["sa"]) == account:
                    filled = target
                    for key, value in row.items():
                        filled = filled.replace(f"each.value.{key}", value)
                    found.append((resource, unquote(row["role"]), filled))
        elif (
            account in STAGE_REF.findall(member)
            or (
                keys
                and "stage[each.key]" in member
                and account in {unquote(key) for key in env.locals[keys[1]]}
            )
            or (
                model_keys
                and "stage[each.value.sa]" in member
                and account in {unquote(key) for key in env.locals[model_keys[1]]}
            )
        ):
            found.append((resource, unquote(resource.body["role"]), target))
    return found


# ------------------------------------------------------------------ production's account

SERVING_ACCOUNT, PRODUCTION_ACCOUNT = "staging", "production"
# What a production service needs beyond what a staging service serves with
# (terraform/envs/dev/production.tf), as (role, target, the folder its condition limits
# it to): call its model's staging service (the shadow mirror) and create objects under
# shadow/ (the comparisons).
PRODUCTION_ONLY_GRANTS = frozenset(
    {
        ("roles/run.invoker", "${module.staging_service[each.key].name}", ""),
        ("roles/storage.objectCreator", "${local.buckets.artifacts}", "shadow/"),
    }
)
# Who may act as the production account besides the deployer (terraform/envs/bootstrap):
# the sweep, which alone rolls a new production revision out.
PRODUCTION_ACTORS = frozenset({"sweep"})


def conditioned_grants_of(tf: Terraform, account: str) -> set[tuple[str, str, str]]:
    """(role, target, condition) of every grant of envs/dev to ``account``: the
    condition is the folder it limits the grant to (``shadow/``), its whole expression
    when it says more, "" without one."""
    found = set()
    for resource, role, target in grants_of(tf, account):
        expression = str((resource.body.get("condition") or [{}])[0].get("expression", ""))
        folder = OWN_FOLDER.fullmatch(unquote(expression))
        found.add((role, target, folder.group(1) if folder else squash(expression)))
    return found


def production_account_problems(tf: Terraform) -> list[str]:
    """The production services run as their own account, which holds what the staging
    account serves with and the production-only grants; the staging account holds none
    of those; only the sweep (and the deployer) acts as the production account."""
    calls = tf.module("envs/dev").module_calls
    problems = []
    for service, account in (
        ("staging_service", SERVING_ACCOUNT),
        ("production_service", PRODUCTION_ACCOUNT),
    ):
        runs_as = squash(calls[service]["service_account_email"])
        if runs_as != f'${{data.google_service_account.stage["{account}"].email}}':
            problems.append(f"module.{service} runs as {runs_as}, not the {account} account")
    staging = conditioned_grants_of(tf, SERVING_ACCOUNT)
    production = conditioned_grants_of(tf, PRODUCTION_ACCOUNT)
    problems += [
        f"{SERVING_ACCOUNT} holds production's {g}"
        for g in sorted(staging & PRODUCTION_ONLY_GRANTS)
    ]
    problems += [
        f"{PRODUCTION_ACCOUNT} lacks {g}" for g in sorted(PRODUCTION_ONLY_GRANTS - production)
    ]
    problems += [
        f"{PRODUCTION_ACCOUNT} lacks {SERVING_ACCOUNT}'s serving grant {g}"
        for g in sorted(staging - PRODUCTION_ONLY_GRANTS - production)
    ]
    problems += [
        f"{PRODUCTION_ACCOUNT} holds {g}, which neither serving nor the shadow needs"
        for g in sorted(production - staging - PRODUCTION_ONLY_GRANTS)
    ]
    bootstrap = tf.module("envs/bootstrap").locals
    key_roles = {
        account: {
            unquote(grant["role"])
            for grant in bootstrap["signing_key_grants"]
            if unquote(grant["sa"]) == account
        }
        for account in (SERVING_ACCOUNT, PRODUCTION_ACCOUNT)
    }
    if key_roles[PRODUCTION_ACCOUNT] != key_roles[SERVING_ACCOUNT]:
        problems.append(
            f"on the signing key, {PRODUCTION_ACCOUNT} holds "
            f"{sorted(key_roles[PRODUCTION_ACCOUNT])} and {SERVING_ACCOUNT} "
            f"{sorted(key_roles[SERVING_ACCOUNT])}"
        )
    actors = {
        unquote(grant["sa"])
        for grant in bootstrap["service_account_grants"]
        if unquote(grant["target"]) == PRODUCTION_ACCOUNT
    }
    if actors != PRODUCTION_ACTORS:
        problems.append(
            f"{sorted(actors)} act as {PRODUCTION_ACCOUNT}, not {sorted(PRODUCTION_ACTORS)}"
        )
    return problems


# The one exception to resource-scoped stage grants: Vertex AI models have no IAM policy
# of their own, so the stages that upload versions and move aliases hold this role on
# the project, and only while vertex_model_registry is on (terraform/envs/dev/vertex.tf).
VERTEX_PROJECT_GRANTS = frozenset(
    {("register", "roles/aiplatform.user"), ("deploy", "roles/aiplatform.user")}
)


# The exceptions of dask_training (terraform/envs/*/dask.tf): GCPCluster creates VMs,
# which have no IAM policy before they exist, and lists them per zone, so the training
# account's custom role is project-level; the VMs write logs, which have no narrower
# resource.
DASK_PROJECT_GRANTS = frozenset(
    {
        ("train", "projects/<project>/roles/<name_prefix>_dask_cluster"),
        ("dask", "roles/logging.logWriter"),
    }
)


# The production canary (terraform/envs/dev/production.tf): the sweep reads the
# revisions' request metrics in Cloud Monitoring, which has no resource narrower than
# the project.
MONITORING_PROJECT_GRANTS = frozenset({("sweep", "roles/monitoring.viewer")})


def iam_problems(tf: Terraform, documented: set[tuple[str, str, str]]) -> list[str]:
    """Stage accounts: resource-scoped roles only (but Vertex AI's and the Dask
    cluster's); every account's roles as documented."""
    problems = []
    scoped, project = stage_grants(tf)
    exceptions = VERTEX_PROJECT_GRANTS | DASK_PROJECT_GRANTS | MONITORING_PROJECT_GRANTS
    for account, role in sorted(project):
        if account in STAGE_ACCOUNTS and (account, role) not in exceptions:
            problems.append(f"stage account {account} holds {role} at project level")
        if role in FORBIDDEN_PROJECT_ROLES:
            problems.append(f"{account} holds {role} at project level")
    actual = {(a, r, "project") for a, r in project} | {(a, r, "resource") for a, r in scoped}
    for row in sorted(actual - documented):
        problems.append(f"granted in Terraform but not in the docs/deploy.md IAM table: {row}")
    for row in sorted(documented - actual):
        problems.append(f"in the docs/deploy.md IAM table but not granted in Terraform: {row}")
    accounts = set(service_accounts(tf))
    undocumented = accounts - {account for account, _, _ in documented}
    if undocumented:
        problems.append(f"service accounts missing from the IAM table: {sorted(undocumented)}")
    return problems


def service_accounts(tf: Terraform) -> list[str]:
    """The pipeline's service accounts: those envs/bootstrap creates."""
    return [unquote(k) for k in tf.module("envs/bootstrap").locals.get("service_accounts", {})]


def documented_grants(deploy_md: Path) -> set[tuple[str, str, str]]:
    """Rows of the IAM tables in docs/deploy.md: | `account` | `role` | scope | why |
    (the stage accounts' table, and one per resource documented in its own section).

    The scope cell starts with "project" for a project-level grant."""
    rows: set[tuple[str, str, str]] = set()
    in_table = False
    for line in deploy_md.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:3] == ["service account", "role", "scope"]:
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table:
            continue
        if set(cells[0]) <= {"-", ":", " "}:
            continue
        account, role, scope = cells[0].strip("`"), cells[1].strip("`"), cells[2]
        rows.add((account, role, "project" if scope.lower().startswith("project") else "resource"))
    return rows


# ------------------------------------------------------------------ least privilege

# Predefined roles holding cloudkms.cryptoKeyVersions.useToSign.
SIGNING_ROLES = frozenset(
    {"roles/cloudkms.signer", "roles/cloudkms.signerVerifier", "roles/cloudkms.cryptoOperator"}
)
MANIFEST_SIGNER = "register"


def signing_key_problems(tf: Terraform) -> list[str]:
    """Only register signs manifests: no other account holds a role that signs, on the
    signing key or the project (the staging service trusts what that key signed)."""
    scoped, project = stage_grants(tf)
    return [
        f"{account} holds {role}: only {MANIFEST_SIGNER} may sign manifests"
        for account, role in sorted(scoped | project)
        if role in SIGNING_ROLES and account != MANIFEST_SIGNER
    ]


REGISTRY_WRITER = "register"
# What another stage may write of a model's registry (local.model_writes, relative to
# models/<model>/): deploy moves the staging alias; deploy and the sweep hold leases; the
# sweep notes which time of the model's [retrain] schedule has fired; the monitor, when
# its [retrain] on_drift last started a retrain.
ALIAS_OBJECT = re.compile(
    r"aliases/\w+\.json|leases/\w+\.json|leases/register-"
    r"|policies/schedule\.json|policies/retrain-on-drift\.json"
    # Production's promotion outcomes and rollout steps (the sweep carries them out).
    r"|promotions/|rollouts/"
)
# A model's definition (models/<model>/definition.json): the operator's and the deploy
# build's (`modelrail add`), never a stage's.
DEFINITION = "definition.json"


def _roles(resource: Resource, env_locals: dict[str, Any]) -> list[str]:
    """The roles an IAM resource grants: its literal role, or its grant table's."""
    role = resource.body.get("role", "")
    if is_literal(role):
        return [unquote(role)]
    table = GRANT_TABLE.search(squash(resource.body.get("for_each", "")))
    rows = env_locals.get(table.group(1), []) if table else []
    return [unquote(row["role"]) for row in rows if isinstance(row, dict)]


def bucket_write_problems(tf: Terraform) -> list[str]:
    """Object writes on a bucket are granted only under a condition on object names, and
    only register writes the registry (models/); a stage writes no whole run (runs/)."""
    env_locals = tf.module("envs/dev").locals if (tf.root / "envs" / "dev").is_dir() else {}
    problems = []
    for resource in tf.resources:
        if not resource.type.startswith("google_storage_bucket_iam_"):
            continue
        writes = sorted(set(_roles(resource, env_locals)) & OBJECT_WRITE_ROLES)
        condition = (resource.body.get("condition") or [{}])[0]
        if writes and OBJECT_NAME_CONDITION not in str(condition.get("expression", "")):
            problems.append(f"{resource.address}: {writes} with no condition on object names")
    for key, scope in env_locals.get("artifact_writes", {}).items():
        account = unquote(key)
        for prefix in (unquote(p) for p in scope.get("prefixes", [])):
            if prefix.startswith("models/") and account != REGISTRY_WRITER:
                problems.append(f"{account} writes the registry: {prefix}")
            elif not prefix.startswith("models/"):
                problems.append(f"{account} writes every object under {prefix}")
    for key, names in env_locals.get("model_writes", {}).items():
        for name in (unquote(n) for n in names):
            if not ALIAS_OBJECT.fullmatch(name):
                problems.append(f"{unquote(key)} writes the registry: models/<model>/{name}")
    for account, patterns in (artifact_write_objects(tf) if env_locals else {}).items():
        if may_write(patterns, f"models/m/{DEFINITION}", "m"):
            problems.append(
                f"{account} writes the models' definitions: models/<model>/{DEFINITION}"
            )
    return problems


PR_BUILD = "pr_build"
PR_BUILD_ROLES = frozenset({"roles/logging.logWriter"})


def pr_build_problems(tf: Terraform) -> list[str]:
    """Pull-request triggers run as the pull-request build account, which holds nothing
    but build logs: no admin role, no actAs, no bucket."""
    env = tf.module("envs/dev")
    call = env.module_calls.get("cloudbuild_triggers", {})
    expected = f'${{data.google_service_account.stage["{PR_BUILD}"].id}}'
    problems = []
    for resource in tf.resources:
        if resource.type != "google_cloudbuild_trigger":
            continue
        github = (resource.body.get("github") or [{}])[0]
        if "pull_request" not in github:
            continue
        account = squash(resource.body.get("service_account", ""))
        variable = re.fullmatch(r"\$\{var\.(\w+)\}", account)
        if variable:
            account = squash(call.get(variable.group(1), ""))
        if account != expected:
            problems.append(
                f"{resource.address}: pull requests build as {account or 'the default'}"
            )
    scoped, project = stage_grants(tf)
    problems += [
        f"{PR_BUILD} holds {role} on a resource"
        for account, role in sorted(scoped)
        if account == PR_BUILD
    ]
    problems += [
        f"{PR_BUILD} holds {role} at project level"
        for account, role in sorted(project)
        if account == PR_BUILD and role not in PR_BUILD_ROLES
    ]
    return problems


def artifact_write_objects(tf: Terraform) -> dict[str, set[str]]:
    """{stage: the objects it may write}, as the IAM table spells them: ``runs/*/<name>``
    for an object of any run, ``runs/**/*<suffix>`` for any run's objects whose names
    end so, ``<prefix>*`` for a prefix, ``models/<model>/<name>`` for an object of every
    model's registry (local.model_writes); ``not <prefix>*<suffix>`` for what a prefix
    leaves out (except_suffixes)."""
    env_locals = tf.module("envs/dev").locals
    written: dict[str, set[str]] = {}
    for key, scope in env_locals.get("artifact_writes", {}).items():
        names = {f"runs/*/{unquote(name)}" for name in scope.get("run_objects", [])}
        names |= {f"runs/**/*{unquote(suffix)}" for suffix in scope.get("run_suffixes", [])}
        for prefix in (unquote(p) for p in scope.get("prefixes", [])):
            # A prefix that is not a whole object name (a folder, ``leases/register-``).
            names.add(prefix if prefix.endswith(".json") else f"{prefix}*")
            for suffix in (unquote(s) for s in scope.get("except_suffixes", [])):
                names.add(f"not {prefix}*{suffix}")
        written[unquote(key)] = names
    for key, model_names in env_locals.get("model_writes", {}).items():
        for name in (f"models/<model>/{unquote(n)}" for n in model_names):
            written.setdefault(unquote(key), set()).add(
                name if name.endswith(".json") else f"{name}*"
            )
    # A folder of its own granted to one account outside the tables (the notifier's
    # notifications/): objectUser under a condition naming that prefix alone.
    for resource in tf.resources:
        if (
            resource.type != "google_storage_bucket_iam_member"
            or unquote(resource.body.get("role")) != "roles/storage.objectUser"
        ):
            continue
        expression = str((resource.body.get("condition") or [{}])[0].get("expression", ""))
        folder = OWN_FOLDER.fullmatch(unquote(expression))
        accounts = STAGE_REF.findall(str(resource.body.get("member", "")))
        if folder and len(accounts) == 1:
            written.setdefault(accounts[0], set()).add(f"{folder.group(1)}*")
    return written


OWN_FOLDER = re.compile(
    r'resource\.name\.startsWith\(\\"\$\{local\.artifact_objects\}([\w-]+/)\\"\)'
)


def permits(pattern: str, name: str, model: str) -> bool:
    """Whether the IAM condition made from ``pattern`` (as artifact_write_objects spells
    it) matches the object ``name``: ``runs/*/<tail>`` is startsWith("runs/") &&
    endsWith("/<tail>"), ``runs/**/*<suffix>`` startsWith("runs/") && endsWith("<suffix>"),
    ``<prefix>*<suffix>`` startsWith("<prefix>") && endsWith("<suffix>"); anything else is
    startsWith (``models/*`` the prefix models/, a full name that object), with
    ``<model>`` the model."""
    pattern = pattern.replace("<model>", model)
    if pattern.startswith("runs/**/*"):
        return name.startswith("runs/") and name.endswith(pattern.removeprefix("runs/**/*"))
    if pattern.startswith("runs/*/"):
        return name.startswith("runs/") and name.endswith(pattern.removeprefix("runs/*"))
    prefix, star, suffix = pattern.partition("*")
    return name.startswith(prefix) and (not star or name.endswith(suffix))


def may_write(patterns: set[str], name: str, model: str) -> bool:
    """Whether an account allowed ``patterns`` (artifact_write_objects) may write ``name``:
    some pattern permits it and no ``not`` pattern leaves it out."""
    allowed = any(permits(p, name, model) for p in patterns if not p.startswith("not "))
    return allowed and not any(
        permits(p.removeprefix("not "), name, model) for p in patterns if p.startswith("not ")
    )


def documented_artifact_writes(deploy_md: Path) -> dict[str, set[str]]:
    """{account: the objects its conditional objectUser row names} from the IAM table;
    a name after "not" is one it may not write (``not <name>``)."""
    written: dict[str, set[str]] = {}
    for line in deploy_md.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1] == "`roles/storage.objectUser`":
            written[cells[0].strip("`")] = {
                f"{negated}{name}" for negated, name in re.findall(r"(not )?`([^`]+)`", cells[2])
            }
    return written
