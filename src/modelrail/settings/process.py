"""Where modelrail runs: ``Settings``, built once from the environment by
``Settings.from_env`` in the composition root; nothing else reads the environment."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from modelrail.kernel import resources
from modelrail.kernel.errors import ConfigError
from modelrail.settings import environment
from modelrail.settings.environment import Variable

Mode = Literal["embedded", "emulator", "cloud"]


def _size_mb(text: str) -> float:
    size = float(text)
    if not size >= 0:  # NaN too
        raise ValueError("must be a size in MiB, 0 or more")
    return size


# Settings field -> the variable that sets it, and how its text is read. Read by
# ``Settings.from_env``, written back by ``to_env``; an unset field keeps its default.
_VARIABLES = (
    Variable("mode", "MODELRAIL_MODE"),
    Variable("home", "MODELRAIL_HOME", Path),
    Variable("topology_path", "MODELRAIL_TOPOLOGY", Path),
    Variable("data_bucket", "MODELRAIL_DATA_BUCKET"),
    Variable("artifact_bucket", "MODELRAIL_ARTIFACT_BUCKET"),
    Variable("project", "GOOGLE_CLOUD_PROJECT"),
    Variable("region", "MODELRAIL_REGION"),
    Variable("code_version", "MODELRAIL_CODE_VERSION"),
    Variable("staging_port", "MODELRAIL_STAGING_PORT", int),
    Variable("max_event_age_s", "MODELRAIL_MAX_EVENT_AGE_S", float),
    Variable("run_api_endpoint", "MODELRAIL_RUN_API_ENDPOINT"),
    Variable("training_job", "MODELRAIL_TRAINING_JOB"),
    Variable("validate_job", "MODELRAIL_VALIDATE_JOB"),
    Variable("validate_in_job_above_mb", "MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB", _size_mb),
    Variable("batch_job", "MODELRAIL_BATCH_JOB"),
    Variable("batch_tasks", "MODELRAIL_BATCH_TASKS", int),
    Variable("staging_service", "MODELRAIL_STAGING_SERVICE"),
    Variable("artifact_repository", "MODELRAIL_ARTIFACT_REPOSITORY"),
    Variable("artifact_registry_endpoint", "MODELRAIL_ARTIFACT_REGISTRY_ENDPOINT"),
    Variable("staging_image", "MODELRAIL_STAGING_IMAGE"),
    Variable("vertex_endpoint", "MODELRAIL_VERTEX_ENDPOINT"),
    Variable("signing_key", "MODELRAIL_SIGNING_KEY"),
    Variable("kms_endpoint", "MODELRAIL_KMS_ENDPOINT"),
    Variable("compiler", "MODELRAIL_COMPILER"),
    Variable("dask_scheduler", "MODELRAIL_DASK_SCHEDULER"),
    Variable("stack_dask_workers", "MODELRAIL_STACK_DASK_WORKERS", int),
    Variable("dask_cloud", "MODELRAIL_DASK_CLOUD"),
    Variable("dask_gcp_project", "MODELRAIL_DASK_GCP_PROJECT"),
    Variable("dask_gcp_zone", "MODELRAIL_DASK_GCP_ZONE"),
    Variable("dask_gcp_network", "MODELRAIL_DASK_GCP_NETWORK"),
    Variable("dask_gcp_machine_type", "MODELRAIL_DASK_GCP_MACHINE_TYPE"),
    Variable("dask_gcp_workers", "MODELRAIL_DASK_GCP_WORKERS", int),
    Variable("dask_gcp_service_account", "MODELRAIL_DASK_GCP_SERVICE_ACCOUNT"),
    Variable("dask_gcp_image", "MODELRAIL_DASK_GCP_IMAGE"),
    # Production (docs/architecture.md, "Production").
    Variable("production_port", "MODELRAIL_PRODUCTION_PORT", int),
    Variable("production_service", "MODELRAIL_PRODUCTION_SERVICE"),
    # The local services' server program (docs/local-cloud.md, "The server a revision runs").
    Variable("local_server_module", "MODELRAIL_LOCAL_SERVER_MODULE"),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where modelrail runs. Built once, from the environment, by the composition root
    (``from_env``; each variable is read by one row of ``_VARIABLES``). The staging
    service's own settings are ``modelrail.settings.service.ServiceSettings``, read the same way
    by the one program that serves."""

    mode: Mode
    home: Path
    # None: the checkout's topology.yaml, found when the event graph is first read (the
    # staging service never reads it, so an installed copy serves without one).
    topology_path: Path | None
    storage_root: Path | None  # filesystem buckets live here (embedded mode)
    code_version: str
    data_bucket: str = "modelrail-data"
    artifact_bucket: str = "modelrail-artifacts"
    project: str = "modelrail-local"
    region: str = "europe-west1"
    # The first port a model's local staging service may get (embedded and emulator
    # modes): each model's is chosen once and recorded (``adapters.local.staging``).
    staging_port: int = 8765
    max_event_age_s: float = 86400.0
    run_api_endpoint: str | None = None  # Cloud Run Admin API override (emulator mode)
    training_job: str = "modelrail-train"
    # The Cloud Run job that validates uploads larger than ``validate_in_job_above_mb``
    # MiB (their listed size), which a function could not read within its 9 minutes;
    # None: validate validates everything in place (``service.handoff``).
    validate_job: str | None = None
    validate_in_job_above_mb: float = 512.0
    # The Cloud Run job that scores batch predictions (``modelrail predict --cloud``), and
    # its parallel tasks where the local control plane runs it (Terraform sets the
    # cloud's: ``batch_job.tasks``).
    batch_job: str = "modelrail-batch"
    batch_tasks: int = 3
    # Each model's staging Cloud Run service is ``<staging_service>-<model>``.
    staging_service: str = "modelrail-staging"
    # Production, beside staging: each model's local production service's first port
    # (chosen and recorded as staging's is) and its Cloud Run service,
    # ``<production_service>-<model>``.
    production_port: int = 8865
    production_service: str = "modelrail-production"
    # The module every local revision's server runs (``python -m``), staging's and
    # production's alike, on this machine (embedded mode) and behind the emulator
    # stack's control plane: the service's own server. A test names one built to fail
    # (``tests/e2e/faulty_server.py``) to prove what a faulty revision sets off.
    local_server_module: str = "modelrail.serving.server"
    # Who runs the CLI ($MODELRAIL_ACTOR, else the OS user): recorded with an operator's
    # rollback, contract accept and bless.
    user: str = "unknown"
    # The Artifact Registry generic repository every version is published to (in
    # ``region``), and the endpoint that serves its API (emulator mode: the control plane).
    artifact_repository: str = "modelrail-models"
    artifact_registry_endpoint: str | None = None
    # Vertex AI's Model Registry ([vertex] model_registry): the image its model versions
    # serve with (the staging image; Terraform names it when it provides Vertex AI) and
    # the endpoint that serves its API (emulator mode: the control plane).
    staging_image: str | None = None
    vertex_endpoint: str | None = None
    # The Cloud KMS key version register signs manifests with, and whose key the staging
    # service trusts (cloud and emulator mode; embedded mode signs with a key file in
    # ``home``), and the endpoint that serves its API (emulator mode: the control plane).
    signing_key: str | None = None
    kms_endpoint: str | None = None
    # The C compiler the train stage builds the compiled predictor with (the training
    # job's image sets it); None builds none. Compiling hundreds of trees takes
    # minutes, so a local run does it only when asked (MODELRAIL_COMPILER=cc).
    compiler: str | None = None
    # The Dask scheduler training on Dask connects to when pipeline.toml names none (the
    # emulator stack's own `dask scheduler`); None starts a local cluster per run.
    dask_scheduler: str | None = None
    # The Dask workers (and a scheduler) the emulator stack runs beside the emulators (0:
    # none): training on Dask with no scheduler of its own joins them there.
    stack_dask_workers: int = 0
    # "gcp": a cluster of Compute Engine VMs per run (dask-cloudprovider's GCPCluster),
    # where Terraform's dask_training switch provisions it: their project, zone,
    # subnetwork, machine type, count, service account and image (the training image).
    dask_cloud: str | None = None
    dask_gcp_project: str | None = None
    dask_gcp_zone: str | None = None
    dask_gcp_network: str | None = None
    dask_gcp_machine_type: str = "e2-standard-4"
    dask_gcp_workers: int = 2
    dask_gcp_service_account: str | None = None
    dask_gcp_image: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        try:
            values = environment.read(_VARIABLES, env)
        except ValueError as exc:
            raise ConfigError(f"invalid modelrail setting: {exc}") from exc
        mode = values.setdefault("mode", "embedded")
        if mode not in ("embedded", "emulator", "cloud"):
            raise ConfigError(f"MODELRAIL_MODE must be embedded|emulator|cloud, not {mode!r}")
        home = values["home"] = values.get("home", Path(".modelrail")).absolute()
        if "topology_path" in values:
            values["topology_path"] = values["topology_path"].absolute()
        else:
            values["topology_path"] = None
        values["storage_root"] = home / "buckets" if mode == "embedded" else None
        if "code_version" not in values:
            values["code_version"] = checkout_commit(Path.cwd())
        # Who decides: a CI job or a cloud shell names itself, else the OS user.
        values["user"] = (
            env.get("MODELRAIL_ACTOR") or env.get("USER") or env.get("LOGNAME") or "unknown"
        )
        return cls(**values)

    def topology_file(self) -> Path:
        """The event graph this process runs: ``MODELRAIL_TOPOLOGY``, else the
        checkout's ``topology.yaml`` (``ConfigError`` in an installed copy without one)."""
        return self.topology_path or resources.checkout_root() / "topology.yaml"

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process's ``from_env()`` equal these
        settings (``user`` excepted: it is whoever runs that process)."""
        return environment.write(_VARIABLES, self)

    def service(self, role: str, model: str) -> str:
        """The name of ``model``'s ``staging`` or ``production`` service (Cloud Run's,
        and what its local servers call themselves)."""
        prefix = self.production_service if role == "production" else self.staging_service
        return f"{prefix}-{model}"


UNVERSIONED = "unversioned"


def checkout_commit(directory: Path) -> str:
    """The commit checked out where ``directory`` lies (lineage's code version when no
    ``MODELRAIL_CODE_VERSION`` names one); ``unversioned`` outside a git checkout or
    without git."""
    git = shutil.which("git")
    if git is None:
        return UNVERSIONED
    try:
        result = subprocess.run(
            [git, "rev-parse", "--verify", "--quiet", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNVERSIONED
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else UNVERSIONED
