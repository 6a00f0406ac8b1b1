"""Every deployable as it is shipped, outside the checkout.

The staging image installs the modelrail wheel into a virtual environment holding the
hash-locked closure of ``services/staging/requirements.lock``; the training image lays
the package out under ``/app`` beside ``topology.yaml`` with
``services/train-job/requirements.lock``; a Cloud Function is a ``make stage`` folder
whose ``requirements.txt`` the buildpack installs. Here each runs from a temporary
directory with exactly those files, the environment Terraform gives it
(``terraform/envs/dev/main.tf``, read with python-hcl2) and its entry point's command,
against fake-gcs-server, the Pub/Sub emulator and the local control plane's Cloud KMS.

The third-party closures are installed once per lock (``pip --require-hashes``, as the
images do) into a cache outside the checkout; each test's fresh environment reaches
them through a ``.pth`` file, so modelrail itself comes only from what is being tested.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.adapters.google.gcs import GcsStorage
from modelrail.adapters.google.kms import CloudKmsSigner
from modelrail.composition.bootstrap import bootstrap
from modelrail.localcloud.emulators import Emulators
from modelrail.localcloud.kms import default_key
from modelrail.service.container import Container
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS, REPO, installed, settings_env
from tests.fakes import FakeDeployer
from tests.infra.infra_checks import Module, Terraform, unquote
from tests.integration.emulator_support import control_plane_with_apis, require_emulators
from tests.unit.conftest import Harness

PROJECT = "modelrail-installed"
REGION = "europe-west1"
DATA_BUCKET = f"{PROJECT}-modelrail-data"
ARTIFACT_BUCKET = f"{PROJECT}-modelrail-artifacts"
INSTALL_TIMEOUT_S = 900
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
VENV_CACHE = _CACHE / "modelrail" / "test-venvs"
_http = urllib3.PoolManager(retries=False, timeout=30.0)


def locked_closure(lock: Path, *, require_hashes: bool = True) -> Path:
    """A virtual environment holding ``lock``'s packages and nothing else (no modelrail),
    installed as the images install them, cached outside the checkout by the lock's hash."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    target = VENV_CACHE / digest
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    venv.create(target, with_pip=True)
    flags = ["--require-hashes", "--only-binary=:all:", "--no-deps"] if require_hashes else []
    subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *flags, "-r", str(lock)],
        check=True, timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    (target / ".complete").touch()
    return target


def site_packages(environment: Path) -> Path:
    [found] = (environment / "lib").glob("python3.*/site-packages")
    return found


def fresh_venv(directory: Path, closure: Path) -> Path:
    """A new virtual environment in ``directory`` that sees ``closure``'s packages."""
    venv.create(directory, with_pip=False)
    (site_packages(directory) / "locked-closure.pth").write_text(f"{site_packages(closure)}\n")
    return directory / "bin" / "python"


# Where a deployable runs, checked from inside it: modelrail is imported from where it
# was installed, and no path of the checkout is importable.
WHERE = """
import json, sys
import modelrail
print(json.dumps({"modelrail": modelrail.__file__, "path": sys.path}))
"""


def assert_outside_checkout(python: Path, env: Mapping[str, str], cwd: Path, under: Path) -> None:
    result = subprocess.run(
        [str(python), "-c", WHERE], env=env, cwd=cwd, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    where = orjson.loads(result.stdout)
    assert Path(where["modelrail"]).is_relative_to(under), where["modelrail"]
    leaks = [entry for entry in where["path"] if entry and Path(entry).is_relative_to(REPO)]
    assert leaks == [], leaks


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The modelrail wheel, built as the staging image builds it: from a copy of what
    its Dockerfile copies (pyproject.toml, README.md, src), so nothing a build left in
    the checkout (``build/lib`` keeps modules that no longer exist) reaches it."""
    context = tmp_path_factory.mktemp("image-context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    shutil.copytree(
        REPO / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(out), str(context)],
        check=True, timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    [built] = out.glob("modelrail-*.whl")
    return built


# -- the environment Terraform gives each deployable -----------------------------------
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


def terraform_env(block: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """A Terraform map of environment variables with each ``${expression}`` replaced by
    ``values[expression]``; an expression the test does not know fails, naming it."""

    def value(text: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            expression = match[1].strip()
            assert expression in values, f"main.tf sets {text!r}: give the test a value"
            return values[expression]

        return _INTERPOLATION.sub(substitute, unquote(text))

    return {name: value(text) for name, text in block.items() if not name.startswith("__")}


@pytest.fixture(scope="session")
def dev() -> Module:
    """terraform/envs/dev, parsed."""
    return Terraform.load(REPO / "terraform").module("envs/dev")


# -- the cloud the deployables talk to -------------------------------------------------
@dataclass
class Cloud:
    """The emulators plus a pipeline that has registered and deployed version 1."""

    emulators: Emulators
    kms_endpoint: str
    signing_key: str
    harness: Harness

    @property
    def container(self) -> Container:
        return self.harness.container

    def env(self) -> dict[str, str]:
        """What reaches the emulators instead of Google (set by the test, not Terraform)."""
        return {**self.emulators.env(), "MODELRAIL_KMS_ENDPOINT": self.kms_endpoint}

    def values(self, **extra: str) -> dict[str, str]:
        """The Terraform expressions of main.tf's environments, for this cloud."""
        return {
            "var.project_id": PROJECT,
            "var.region": REGION,
            "var.code_version": "installed-check",
            "each.key": self.container.config.model_name,  # the staging service's model
            "local.buckets.data": DATA_BUCKET,
            "local.buckets.artifacts": ARTIFACT_BUCKET,
            "local.training_job_name": "modelrail-train",
            "local.staging_service_name": "modelrail-staging",
            "google_artifact_registry_repository.models.repository_id": "modelrail-models",
            "local.manifest_signing_key": self.signing_key,
            **extra,
        }

    def subscribe(self, topic: str, name: str) -> None:
        """A pull subscription on ``topic``, to see what a deployable published."""
        base = f"http://{self.emulators.pubsub_host}/v1/projects/{PROJECT}"
        response = _http.request(
            "PUT", f"{base}/subscriptions/{name}",
            body=orjson.dumps({"topic": f"projects/{PROJECT}/topics/{topic}"}),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status == 200, response.data

    def pull(self, name: str) -> list[dict[str, Any]]:
        """The event bodies waiting on subscription ``name``."""
        base = f"http://{self.emulators.pubsub_host}/v1/projects/{PROJECT}"
        response = _http.request(
            "POST", f"{base}/subscriptions/{name}:pull",
            body=orjson.dumps({"maxMessages": 50, "returnImmediately": True}),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status == 200, response.data
        import base64

        received = orjson.loads(response.data).get("receivedMessages", [])
        return [orjson.loads(base64.b64decode(m["message"]["data"])) for m in received]


def _create(url: str, body: Mapping[str, Any]) -> None:
    response = _http.request(
        "POST" if "storage" in url else "PUT", url, body=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status in (200, 409), (url, response.status, response.data)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_emulators()
    workdir = tmp_path_factory.mktemp("cloud")
    key = default_key(PROJECT, REGION)
    with (
        Emulators.start(workdir, PROJECT) as emulators,
        control_plane_with_apis(
            workdir / "plane", PROJECT, REGION, "modelrail-models", keys=(key,)
        ) as (_, kms_endpoint),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("STORAGE_EMULATOR_HOST", emulators.storage_url)
        for bucket in (DATA_BUCKET, ARTIFACT_BUCKET):
            _create(f"{emulators.storage_url}/storage/v1/b?project={PROJECT}", {"name": bucket})
        for topic in ("model-trained", "dataset-validated", "pipeline-failed"):
            _create(f"http://{emulators.pubsub_host}/v1/projects/{PROJECT}/topics/{topic}", {})
        # The pipeline in this process, on the same buckets and key: version 1 is
        # registered, signed by "Cloud KMS" and named by the staging alias.
        settings = Settings.from_env(
            settings_env(
                workdir / "home",
                GOOGLE_CLOUD_PROJECT=PROJECT,
                MODELRAIL_DATA_BUCKET=DATA_BUCKET,
                MODELRAIL_ARTIFACT_BUCKET=ARTIFACT_BUCKET,
            )
        )
        storage = GcsStorage(PROJECT)
        deployer = FakeDeployer()
        container = installed(
            bootstrap(
                settings,
                storage_factory=lambda: storage,
                deployer_factory=lambda _model: deployer,
                signer_factory=lambda: CloudKmsSigner(key, kms_endpoint),
            )
        )
        harness = Harness(container, storage, deployer)  # type: ignore[arg-type]
        harness.upload(PENGUINS.read_bytes())
        harness.run()
        assert container.registry.aliases(container.config.model_name).get("staging") == 1
        yield Cloud(emulators, kms_endpoint, key, harness)


def base_env(home: Path) -> dict[str, str]:
    """What every process starts with: no variable of the test's own environment."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
