"""What a first `terraform apply` in a fresh project needs beyond a valid plan, and what
the deployer may not do (docs/deploy.md, steps 3 and 6):

- the functions' build account reads Cloud Functions' own copy of the sources
  (gcf-v2-sources-<project number>-<region>), not only the project's sources bucket;
- every compute resource (functions, jobs, the service, the Scheduler job, the push
  subscriptions) waits for IAM propagation after the grants this apply makes;
- a grant to a Google service agent follows the resource that creates that agent;
- the deployer holds no role that sets IAM on service accounts or on the signing key,
  and the root it applies declares no such grant.

Each check returns its problems, so the tests also run it on a broken copy.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import TERRAFORM_DIR, copy_terraform
from tests.infra.infra_checks import (
    REPO_ROOT,
    Module,
    Terraform,
    service_accounts,
    squash,
    unquote,
)

pytestmark = pytest.mark.infra

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
DEPLOYER_ROOT = "envs/dev"
OWNER_ROOT = "envs/bootstrap"


@pytest.fixture(scope="module")
def terraform() -> Terraform:
    return Terraform.load(TERRAFORM_DIR)


def resources_of(module: Module, resource_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.name, r.body) for r in module.resources if r.type == resource_type]


# ------------------------------------------------------------------ function builds

# Roles holding storage.objects.get.
OBJECT_READ_ROLES = frozenset(
    {
        "roles/storage.objectViewer",
        "roles/storage.objectUser",
        "roles/storage.objectAdmin",
        "roles/storage.admin",
    }
)
GCF_SOURCES = "projects/_/buckets/gcf-v2-sources-"


def expand_locals(text: str, module: Module, depth: int = 3) -> str:
    """``text`` with ``${local.X}`` replaced by X's expression (string locals only)."""
    for _ in range(depth):
        text = re.sub(
            r"\$\{local\.(\w+)\}",
            lambda m: unquote(str(module.locals.get(m[1], m[0]))),
            text,
        )
    return text


def function_build_source_problems(tf: Terraform) -> list[str]:
    """The build account can read objects of gcf-v2-sources-<number>-<region>, and only
    that bucket's when the grant is project-wide."""
    env = tf.module(DEPLOYER_ROOT)
    build_ref = 'google_service_account.stage["function_build"]'
    found = []
    for resource in env.resources:
        if resource.type not in ("google_project_iam_member", "google_storage_bucket_iam_member"):
            continue
        if build_ref not in str(resource.body.get("member")):
            continue
        if unquote(resource.body.get("role")) not in OBJECT_READ_ROLES:
            continue
        bucket = expand_locals(str(resource.body.get("bucket", "")), env)
        condition = (resource.body.get("condition") or [{}])[0]
        expression = expand_locals(str(condition.get("expression", "")), env)
        if resource.type == "google_storage_bucket_iam_member":
            if "gcf-v2-sources-" in bucket:
                found.append(resource.address)
            continue
        if not condition:
            return [f"{resource.address}: {resource.body['role']} on the whole project"]
        names = re.findall(r'resource\.name(?:\.startsWith\(|\s*==\s*)\\?"([^"\\]+)', expression)
        if names and all(name.startswith(GCF_SOURCES) for name in names):
            sources = "${data.google_project.this.number}-${var.region}"
            if all(name.startswith(GCF_SOURCES + sources) for name in names):
                found.append(resource.address)
    if not found:
        return ["function_build cannot read gcf-v2-sources-<project number>-<region>"]
    return []


def test_the_function_build_account_reads_cloud_functions_copy_of_the_sources(
    terraform: Terraform,
) -> None:
    assert function_build_source_problems(terraform) == []


def test_a_build_account_without_the_gcf_sources_grant_is_caught(tmp_path: Path) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    iam_tf = copy / "envs" / "dev" / "iam.tf"
    iam_tf.write_text(iam_tf.read_text().replace("gcf-v2-sources-", "gcf-v1-sources-"))

    assert function_build_source_problems(Terraform.load(copy)) == [
        "function_build cannot read gcf-v2-sources-<project number>-<region>"
    ]


# ------------------------------------------------------------------ IAM propagation

COMPUTE_TYPES = frozenset(
    {
        "google_cloudfunctions2_function",
        "google_cloud_run_v2_job",
        "google_cloud_run_v2_service",
        "google_cloud_scheduler_job",
    }
)
REFERENCE = re.compile(
    r"\b(module\.\w+|data\.\w+\.\w+|local\.\w+|var\.\w+|(?:google|time)_\w+\.\w+)"
)
MIN_WAIT_SECONDS = 30


def references(value: Any) -> set[str]:
    return set(REFERENCE.findall(str(value)))


def is_compute(resource_type: str, body: dict[str, Any]) -> bool:
    if resource_type == "google_pubsub_subscription":
        return "push_config" in body
    return resource_type in COMPUTE_TYPES


class Graph:
    """What each address of a root module refers to (arguments and depends_on), with
    child-module resources reached through their call's arguments."""

    def __init__(self, tf: Terraform, root: str) -> None:
        self.tf = tf
        self.root = tf.module(root)
        self.edges: dict[str, set[str]] = {}
        for resource in self.root.resources:
            self.edges[f"{resource.type}.{resource.name}"] = references(resource.body)
        for block in self.root.blocks("data"):
            for data_type, named in block.items():
                for name, body in named.items():
                    self.edges[f"data.{unquote(data_type)}.{unquote(name)}"] = references(body)
        for name, value in self.root.locals.items():
            self.edges[f"local.{name}"] = references(value)
        self.calls = self.root.module_calls
        for name, call in self.calls.items():
            self.edges[f"module.{name}"] = references(call)

    def closure(self, start: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            node = todo.pop()
            # A reference to an attribute or an instance names its resource.
            node = ".".join(
                node.split(".")[:3] if node.startswith("data.") else node.split(".")[:2]
            )
            if node in seen:
                continue
            seen.add(node)
            todo.extend(self.edges.get(node, ()))
        return seen

    def names_compute(self, body: dict[str, Any], compute_nodes: set[str]) -> bool:
        """Whether ``body`` names a compute resource: of this root, or through a module
        output whose value is one (a grant on the service or job comes after it)."""
        if references(body) & compute_nodes - {f"module.{name}" for name in self.calls}:
            return True
        for module_name, output in re.findall(r"module\.(\w+)(?:\[[^\]]*\])?\.(\w+)", str(body)):
            call = self.calls.get(module_name)
            if call is None:
                continue
            child = self.child(call)
            value = child.outputs.get(output, {}).get("value", "")
            named = {ref for ref in references(value) if not ref.startswith(("var.", "local."))}
            if any(
                r.type + "." + r.name in named and is_compute(r.type, r.body)
                for r in child.resources
            ):
                return True
        return False

    def child(self, call: dict[str, Any]) -> Module:
        source = (self.root.directory / unquote(call["source"])).resolve()
        return next(m for d, m in self.tf.modules.items() if d.resolve() == source)

    def compute(self) -> Iterator[tuple[str, set[str]]]:
        """(address, what it depends on) of every compute resource of the root and of
        the modules it calls."""
        for resource in self.root.resources:
            if is_compute(resource.type, resource.body):
                address = f"{resource.type}.{resource.name}"
                yield address, self.closure(references(resource.body))
        for name, call in self.calls.items():
            child = self.child(call)
            for resource in child.resources:
                if not is_compute(resource.type, resource.body):
                    continue
                used = references(resource.body)
                for _ in range(3):  # through the child's locals
                    used |= {
                        ref
                        for local in [u for u in used if u.startswith("local.")]
                        for ref in references(child.locals.get(local.split(".")[1], ""))
                    }
                # A child resource depends on the call's depends_on, and on each
                # argument it reads.
                start = references(call.get("depends_on", []))
                for variable in (u.split(".")[1] for u in used if u.startswith("var.")):
                    start |= references(call.get(variable, ""))
                yield f"module.{name}.{resource.type}.{resource.name}", self.closure(start)


def propagation_problems(tf: Terraform) -> list[str]:
    graph = Graph(tf, DEPLOYER_ROOT)
    waits = {
        f"time_sleep.{name}": body
        for name, body in resources_of(graph.root, "time_sleep")
        if re.fullmatch(r'"?(\d+)s"?', str(body.get("create_duration", "")))
        and int(re.sub(r"\D", "", str(body["create_duration"]))) >= MIN_WAIT_SECONDS
    }
    if not waits:
        return [f"{DEPLOYER_ROOT}: no time_sleep of at least {MIN_WAIT_SECONDS}s"]
    problems = []
    compute = list(graph.compute())
    compute_nodes = {address.split(".")[0] + "." + address.split(".")[1] for address, _ in compute}
    for address, depends in compute:
        if not depends & set(waits):
            problems.append(f"{address} does not wait for IAM propagation")
    # The wait comes after every grant of this root that no compute resource precedes.
    waited_for = set().union(*(references(body.get("depends_on", [])) for body in waits.values()))
    for resource in graph.root.resources:
        if not re.search(r"_iam_(member|binding)$", resource.type):
            continue
        address = f"{resource.type}.{resource.name}"
        if not graph.names_compute(resource.body, compute_nodes) and address not in waited_for:
            problems.append(f"the IAM propagation wait does not follow {address}")
    return problems


def test_every_compute_resource_waits_for_iam_propagation(terraform: Terraform) -> None:
    assert propagation_problems(terraform) == []


@pytest.mark.parametrize(
    ("relative", "old", "new", "problem"),
    [
        (
            "envs/dev/main.tf",
            "depends_on            = [module.apis, time_sleep.iam_propagation]",
            "depends_on            = [module.apis]",
            "module.training_job.google_cloud_run_v2_job.this does not wait for IAM propagation",
        ),
        (
            "envs/dev/iam.tf",
            "    google_pubsub_topic_iam_member.stage,\n",
            "",
            "the IAM propagation wait does not follow google_pubsub_topic_iam_member.stage",
        ),
    ],
)
def test_a_resource_that_skips_the_wait_is_caught(
    tmp_path: Path, relative: str, old: str, new: str, problem: str
) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    path = copy / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative} changed: update this test"
    path.write_text(text.replace(old, new))

    assert problem in propagation_problems(Terraform.load(copy))


def test_push_subscriptions_wait_through_the_functions(terraform: Terraform) -> None:
    """The pubsub module cannot depend on the wait as a whole (the wait follows the grants
    on its topics); its push subscriptions wait through the function URLs they push to."""
    compute = dict(Graph(terraform, DEPLOYER_ROOT).compute())
    push = compute["module.pubsub.google_pubsub_subscription.push"]
    assert {"module.functions", "time_sleep.iam_propagation"} <= push


# ------------------------------------------------------------------ service agents


def service_agent_problems(tf: Terraform) -> list[str]:
    """A grant to a Google service agent (service-<number>@gcp-sa-...) follows the
    google_project_service_identity that creates the agent: it names that resource's
    member or email."""
    problems = []
    for module in tf.modules.values():
        identities = {
            name: unquote(body.get("service"))
            for name, body in resources_of(module, "google_project_service_identity")
        }
        for resource in module.resources:
            if not re.search(r"_iam_(member|binding)$", resource.type):
                continue
            member = str(resource.body.get("member", ""))
            if "gcp-sa-" in member:
                problems.append(f"{resource.address}: names a service agent by its address")
            for name in re.findall(r"google_project_service_identity\.(\w+)", member):
                if name not in identities:
                    problems.append(f"{resource.address}: unknown service identity {name}")
    return problems


def test_the_vertex_ai_agent_grant_follows_its_service_identity(terraform: Terraform) -> None:
    env = terraform.module(DEPLOYER_ROOT)
    grant = dict(resources_of(env, "google_storage_bucket_iam_member"))[
        "vertex_agent_reads_artifacts"
    ]
    identities = dict(resources_of(env, "google_project_service_identity"))
    [name] = re.findall(r"google_project_service_identity\.(\w+)", str(grant["member"])) or [None]

    assert name in identities, "the Vertex AI agent's grant does not name its service identity"
    identity = identities[name]
    assert unquote(identity["service"]) == "aiplatform.googleapis.com"
    # google_project_service_identity exists in the beta provider only.
    assert squash(identity["provider"]).strip("${}") == "google-beta"
    assert squash(identity["count"]) == squash(grant["count"])
    assert service_agent_problems(terraform) == []


def test_a_service_agent_named_by_address_is_caught(tmp_path: Path) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    vertex_tf = copy / "envs" / "dev" / "vertex.tf"
    member = "google_project_service_identity.vertex_agent[0].member"
    text = vertex_tf.read_text()
    assert text.count(member) == 1
    vertex_tf.write_text(
        text.replace(
            member,
            '"serviceAccount:service-${data.google_project.this.number}'
            '@gcp-sa-aiplatform.iam.gserviceaccount.com"',
        )
    )

    assert service_agent_problems(Terraform.load(copy)) == [
        "dev/google_storage_bucket_iam_member.vertex_agent_reads_artifacts: names a service "
        "agent by its address"
    ]


# ------------------------------------------------------------------ the deployer

# Roles that let their holder set IAM on service accounts (and so act as any of them) or
# on the signing key (and so sign), or that are such grants already.
ESCALATING_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/iam.securityAdmin",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountUser",
        "roles/iam.workloadIdentityUser",
        "roles/cloudkms.admin",
        "roles/cloudkms.signer",
        "roles/cloudkms.signerVerifier",
        "roles/cloudkms.cryptoOperator",
    }
)
# Resource types whose management needs IAM administration on accounts or keys.
OWNER_ONLY_TYPES = re.compile(
    r"^google_(service_account(_iam_\w+|_key)?|kms_\w+|project_iam_custom_role)$"
)
# What applying each resource or data source type takes: a deployer role (docs step 3).
DEPLOYER_ROLE_FOR = {
    "google_project_service": "roles/serviceusage.serviceUsageAdmin",
    "google_project_service_identity": "roles/serviceusage.serviceUsageAdmin",
    "google_storage_": "roles/storage.admin",
    "google_pubsub_": "roles/pubsub.admin",
    "google_cloudfunctions2_": "roles/cloudfunctions.admin",
    "google_cloud_run_v2_": "roles/run.admin",
    "google_artifact_registry_": "roles/artifactregistry.admin",
    "google_cloudbuild_trigger": "roles/cloudbuild.builds.editor",
    "google_cloud_scheduler_job": "roles/cloudscheduler.admin",
    "google_project_iam_member": "roles/resourcemanager.projectIamAdmin",
    "data.google_service_account": "roles/iam.serviceAccountViewer",
    "data.google_kms_": "roles/cloudkms.viewer",
    # The project's number: resourcemanager.projects.get, which every role above holds.
    "data.google_project": "roles/serviceusage.serviceUsageAdmin",
    "data.google_storage_project_service_account": "roles/storage.admin",
}
# Terraform's own or local providers: nothing in the project.
LOCAL_TYPES = frozenset({"time_sleep", "data.archive_file"})


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


def deployer_grants(deploy_md: Path) -> dict[str, str | None]:
    """{role: condition file or None} the docs' commands grant the deployer on the
    project (`gcloud projects add-iam-policy-binding ... --member=serviceAccount:$DEPLOYER`,
    also through `for role in ...` loops)."""
    grants: dict[str, str | None] = {}
    for block in bash_blocks(deploy_md.read_text()):
        text = block.replace("\\\n", " ")
        loops = dict(
            (match[1], match[2].split()) for match in re.finditer(r"for (\w+) in ([^;]+); do", text)
        )
        for line in text.splitlines():
            if "add-iam-policy-binding" not in line or "projects" not in line:
                continue
            words = shlex.split(line.split(" #")[0])
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
            if flags.get("member") != "serviceAccount:$DEPLOYER":
                continue
            role = flags["role"]
            roles = loops.get(role[1:], []) if role.startswith("$") else [role]
            for each in roles:
                grants[each] = flags.get("condition-from-file") or (
                    None if flags.get("condition") in (None, "None") else flags["condition"]
                )
    return grants


def condition_roles(deploy_md: Path, condition_file: str) -> set[str]:
    """The roles a condition file written by the docs (cat > FILE <<'EOF') lets the
    deployer grant: its modifiedGrantsByRole hasOnly([...]) list."""
    text = deploy_md.read_text()
    match = re.search(rf"cat > {re.escape(condition_file)} <<'EOF'\n(.*?)\nEOF", text, re.S)
    if match is None:
        return set()
    only = re.search(r"hasOnly\(\[([^\]]*)\]\)", match[1])
    return set(re.findall(r"'([^']+)'", only[1])) if only else set()


def deployer_problems(tf: Terraform, deploy_md: Path) -> list[str]:
    problems = []
    grants = deployer_grants(deploy_md)
    if not grants:
        return ["docs/deploy.md grants the deployer nothing: the parse changed"]
    for role, condition in sorted(grants.items()):
        if role in ESCALATING_ROLES:
            problems.append(f"the deployer holds {role}")
        if role == "roles/resourcemanager.projectIamAdmin":
            allowed = condition_roles(deploy_md, condition or "")
            if not allowed:
                problems.append("the deployer's projectIamAdmin has no modifiedGrantsByRole list")
            problems += [f"the deployer may grant {r}" for r in sorted(allowed & ESCALATING_ROLES)]
    # What the deployer applies: envs/dev and every module it calls.
    env = tf.module(DEPLOYER_ROOT)
    applied: list[tuple[str, str]] = []
    called = {(env.directory / unquote(c["source"])).resolve() for c in env.module_calls.values()}
    for directory, module in tf.modules.items():
        if directory != env.directory and directory.resolve() not in called:
            continue
        applied += [(r.type, r.address) for r in module.resources]
        applied += [
            (f"data.{unquote(t)}", f"{directory.name}/data.{unquote(t)}")
            for block in module.blocks("data")
            for t in block
        ]
    for resource_type, address in applied:
        if OWNER_ONLY_TYPES.match(resource_type.removeprefix("data.")) and not (
            resource_type.startswith("data.")
        ):
            problems.append(f"{address}: only the owner's bootstrap may manage this")
        if resource_type in LOCAL_TYPES:
            continue
        needed = [r for p, r in DEPLOYER_ROLE_FOR.items() if resource_type.startswith(p)]
        if not needed:
            problems.append(f"{address}: no deployer role known for {resource_type}")
        elif needed[-1] not in grants:
            problems.append(f"{address}: needs {needed[-1]}, which the deployer lacks")
    # The project-level roles envs/dev grants are the ones its condition allows.
    allowed = next(
        (
            condition_roles(deploy_md, c or "")
            for r, c in grants.items()
            if r == "roles/resourcemanager.projectIamAdmin"
        ),
        set(),
    )
    for name, body in resources_of(env, "google_project_iam_member"):
        roles = (
            {unquote(body["role"])}
            if "${" not in str(body["role"])
            else {unquote(g["role"]) for g in env.locals.get("vertex_grants", [])}
        )
        for role in sorted(roles - allowed):
            problems.append(f"google_project_iam_member.{name}: the deployer may not grant {role}")
    return problems


def test_the_deployer_cannot_grant_itself_actas_or_signing(terraform: Terraform) -> None:
    assert deployer_problems(terraform, DEPLOY_MD) == []


def test_the_deployer_checks_catch_an_admin_role_and_an_owner_only_resource(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "deploy.md"
    loop_end = "roles/cloudkms.viewer; do"
    assert DEPLOY_MD.read_text().count(loop_end) == 1, "docs/deploy.md step 3 changed"
    docs.write_text(
        DEPLOY_MD.read_text().replace(loop_end, "roles/iam.serviceAccountAdmin " + loop_end)
    )
    copy = copy_terraform(tmp_path / "terraform")
    main_tf = copy / "envs" / "dev" / "main.tf"
    main_tf.write_text(
        main_tf.read_text()
        + '\nresource "google_service_account_iam_member" "acts_as" {\n'
        + '  service_account_id = "x"\n  role = "roles/iam.serviceAccountUser"\n'
        + '  member = "serviceAccount:${var.deployer_service_account_email}"\n}\n'
    )

    problems = deployer_problems(Terraform.load(copy), docs)

    assert "the deployer holds roles/iam.serviceAccountAdmin" in problems
    assert (
        "dev/google_service_account_iam_member.acts_as: only the owner's bootstrap may manage this"
        in problems
    )


def test_the_owner_bootstrap_creates_the_accounts_the_environment_looks_up(
    terraform: Terraform,
) -> None:
    env = terraform.module(DEPLOYER_ROOT)
    bootstrap = terraform.module(OWNER_ROOT)
    looked_up = {unquote(a) for a in re.findall(r'"(\w+)"', str(env.locals["stage_accounts"]))}

    assert looked_up == set(service_accounts(terraform))
    # The deployer may act as each of them, granted by the owner.
    [(_, acts_as)] = [
        (name, body)
        for name, body in resources_of(bootstrap, "google_service_account_iam_member")
        if name == "deployer_acts_as"
    ]
    assert squash(acts_as["for_each"]) == "${local.service_accounts}"
    assert unquote(acts_as["role"]) == "roles/iam.serviceAccountUser"
    assert unquote(squash(acts_as["member"])) == (
        "serviceAccount:${var.deployer_service_account_email}"
    )
    # Every grant on an account or the key is the owner's.
    owner_only = sorted(
        r.address
        for directory, module in terraform.modules.items()
        if directory != bootstrap.directory
        for r in module.resources
        if OWNER_ONLY_TYPES.match(r.type)
    )
    assert owner_only == []


# ------------------------------------------------------------------ upgrading

# What the bootstrap root creates that no earlier release of envs/dev managed: these
# types, and everything of these files (dask_training, the notifier's secrets and the
# promotion approver role were born in the bootstrap root).
NEW_IN_BOOTSTRAP = frozenset({"google_project_service_identity", "time_sleep"})
NEW_BOOTSTRAP_FILES = frozenset({"dask.tf", "notify.tf", "production.tf"})


def forgotten_resources(tf: Terraform) -> dict[str, bool]:
    """envs/dev's ``removed`` blocks: address -> whether the object is destroyed."""
    found = {}
    for block in tf.module(DEPLOYER_ROOT).blocks("removed"):
        address = unquote(block["from"]).removeprefix("${").removesuffix("}")
        found[address] = all(bool(life.get("destroy", True)) for life in block.get("lifecycle", []))
    return found


def adoption_problems(tf: Terraform) -> list[str]:
    """What the bootstrap root took over from envs/dev is forgotten there, never
    destroyed: an existing deployment's next push would otherwise delete the accounts
    every stage runs as and schedule the signing key's destruction."""
    forgotten = forgotten_resources(tf)
    owner = tf.module(OWNER_ROOT)
    born_here = {
        (r.type, r.name)
        for name in NEW_BOOTSTRAP_FILES & set(owner.files)
        for r in Module(owner.directory, {name: owner.files[name]}).resources
    }
    problems = []
    for resource in owner.resources:
        if resource.type in NEW_IN_BOOTSTRAP or (resource.type, resource.name) in born_here:
            continue
        address = f"{resource.type}.{resource.name}"
        if address not in forgotten:
            problems.append(f"{address}: no `removed` block in {DEPLOYER_ROOT}")
        elif forgotten[address]:
            problems.append(f"{address}: {DEPLOYER_ROOT} destroys it (lifecycle destroy = false)")
    return problems


def test_an_existing_deployment_forgets_what_the_bootstrap_took_over(terraform: Terraform) -> None:
    assert adoption_problems(terraform) == []
    assert {"google_service_account.stage", "google_kms_crypto_key.manifest_signing"} <= set(
        forgotten_resources(terraform)
    )


def test_a_taken_over_resource_that_envs_dev_would_destroy_is_caught(tmp_path: Path) -> None:
    copy = copy_terraform(tmp_path / "terraform")
    kms = copy / "envs" / "dev" / "kms.tf"
    text = kms.read_text()
    block = re.search(
        r"removed \{\n  from = google_kms_crypto_key\.manifest_signing\n.*?\n\}\n", text, re.S
    )
    assert block
    kms.write_text(text.replace(block[0], ""))

    assert adoption_problems(Terraform.load(copy)) == [
        f"google_kms_crypto_key.manifest_signing: no `removed` block in {DEPLOYER_ROOT}"
    ]
