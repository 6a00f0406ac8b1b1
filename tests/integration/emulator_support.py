"""What every emulator-backed test does first: skip with the reason, or fail under CI;
and the local control plane served in-process."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from modelrail.localcloud.artifact_registry import LocalArtifactRegistry
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.localcloud.emulators import free_port, missing_emulators
from modelrail.localcloud.kms import LocalKms
from modelrail.localcloud.vertex_ai import LocalVertexAi
from tests.fakes import FakeDeployer
from tests.prerequisites import skip_or_fail


def require_emulators(*, gcloud: bool = False) -> None:
    """Skip (locally) or fail (``CI=true``) when an emulator (or the gcloud CLI) is missing."""
    reason = missing_emulators()
    if reason is None and gcloud and shutil.which("gcloud") is None:
        reason = "the gcloud CLI is not installed (it ships with the Google Cloud SDK)"
    skip_or_fail(reason)


@contextlib.contextmanager
def control_plane_with_apis(
    state_dir: Path, project: str, region: str, repository: str, *, keys: tuple[str, ...] = ()
) -> Iterator[tuple[ControlPlane, str]]:
    """The local control plane in this process on a free port, serving Artifact
    Registry's API for ``repository``, Vertex AI's Model Registry and Cloud KMS's for the
    key versions ``keys`` (its Cloud Run side backed by a fake deployer): the plane (its
    ``requests`` say which calls were made) and its endpoint."""
    plane = ControlPlane(
        project=project,
        region=region,
        services=lambda short: ("penguins", "http://127.0.0.1:9") if short == "staging" else None,
        backend=lambda model: FakeDeployer(),
        job_command=["true"],
        job_env={},
        state_dir=state_dir,
        packages=LocalArtifactRegistry(state_dir, project, region, (repository,)),
        models=LocalVertexAi(state_dir, project, region),
        kms=LocalKms(state_dir, keys),
    )
    port = free_port()
    server = plane.server(port)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        yield plane, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
