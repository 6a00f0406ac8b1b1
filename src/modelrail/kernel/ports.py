"""The small abstract surfaces every side effect goes through.

Stages and the pipeline service layer depend only on these protocols; adapters in
``modelrail.adapters`` implement them for the filesystem, the in-process bus, Google
Cloud (and so the emulators) and the local staging server. Unit tests use fakes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from modelrail.kernel.errors import IntegrityError


@dataclass(frozen=True)
class Blob:
    """Bytes of one object with the generation they were read at."""

    key: str
    data: bytes
    generation: int


@dataclass(frozen=True)
class BlobInfo:
    """Listing entry: an object's key, generation and size in bytes."""

    key: str
    generation: int
    size: int


@dataclass(frozen=True)
class BlobStream:
    """An object opened for reading in pieces: ``file`` is readable and seekable, and
    serves the bytes of ``generation`` (``size`` bytes) however the object changes
    meanwhile. Close it (or use it as a context manager) when done."""

    key: str
    generation: int
    size: int
    file: BinaryIO

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore(Protocol):
    """One bucket. Semantics match GCS object preconditions.

    ``write(..., if_generation_match=0)`` creates only if absent; a positive value
    replaces only if the current generation equals it; ``None`` writes
    unconditionally. A lost precondition raises ``PreconditionFailed``. Writes are
    atomic: a reader sees the old bytes or the new bytes, never a partial object.
    ``open`` reads an object of any size in pieces, memory bounded by what the caller
    asks for at a time.
    """

    @property
    def bucket(self) -> str:
        """The bucket's name (``gs://<bucket>``)."""
        ...

    def uri(self, key: str) -> str:
        """The object's URI as users see it (``gs://bucket/key`` or ``file://...``)."""
        ...

    def read(self, key: str, *, generation: int | None = None) -> Blob:
        """Read an object (optionally a specific generation); ``NotFound`` if absent."""
        ...

    def open(self, key: str, *, generation: int | None = None) -> BlobStream:
        """Open an object (the current generation, or ``generation``) for reading in
        pieces; ``NotFound`` if absent. The stream is pinned to the generation it
        opened: a later write of the key does not change what it reads."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object if it exists (a missing one is not an error)."""
        ...

    def write(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> int:
        """Write an object and return its new generation."""
        ...

    def list(self, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with ``prefix``, sorted by key."""
        ...

    def local_path(self, key: str) -> Path | None:
        """Where the object is a file on this machine (a filesystem bucket), so a person
        can open it; None for a remote bucket."""
        ...


class Storage(Protocol):
    """Opens buckets by name (the name a GCS notification carries)."""

    def bucket(self, name: str) -> BlobStore:
        """The store for bucket ``name``."""
        ...


@dataclass(frozen=True)
class Message:
    """One bus message: the JSON event body and its string attributes."""

    data: bytes
    attributes: Mapping[str, str]
    message_id: str = ""
    delivery_attempt: int = 1
    published_at: str | None = None  # RFC 3339, when the bus accepted it
    # The topic it was published to, when the delivery says (a push names it; a job's
    # event in the environment does not): it decides what a trigger message is.
    topic: str | None = None


class EventBus(Protocol):
    """Publishes messages to topics (consumption is push, outside this port)."""

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish and return the message id once the bus has accepted it."""
        ...

    def drain(self) -> None:
        """Return once every message published here has been handled: the in-process
        bus delivers them now (embedded mode's runs happen here); Pub/Sub has taken
        each one before ``publish`` returned, and its subscribers run elsewhere."""
        ...


@dataclass(frozen=True)
class Deployment:
    """What a deploy produced: the serving URL, revision name and model version, and
    how to ask it something as its invoker (``probe``: an ID token in the cloud; None
    where a plain request does)."""

    url: str
    revision: str
    model: str
    version: int
    probe: Probe | None = field(default=None, compare=False, repr=False)


# One HTTP request to a candidate revision, wherever it listens: (method, path, body,
# headers, timeout in s) -> (status, body); ``OSError`` (urllib3's errors among them)
# when it cannot be reached.
Probe = Callable[[str, str, bytes | None, Mapping[str, str], float], tuple[int, bytes]]


@dataclass(frozen=True)
class Candidate:
    """A revision a deployer started for one version, before it is known to answer:
    the service layer smoke-tests it through ``probe`` (a private unix socket, the
    service's URL with an ID token, a fake), then promotes or discards it. ``url``
    names it in messages; ``handle`` is the deployer's own (an open connection, the
    template to put back)."""

    model: str
    version: int
    revision: str
    url: str
    probe: Probe
    handle: Any = None


class RevisionMetrics(Protocol):
    """What each revision of a service answered in a time window, where the platform
    keeps it (Cloud Monitoring's ``run.googleapis.com/request_count`` and
    ``request_latencies`` for Cloud Run): a production canary judges the numbers."""

    def window(self, service: str, revision: str, start: datetime, end: datetime) -> dict[str, Any]:
        """``requests``, ``errors`` (5xx) and ``p99_ms`` (None with no latency yet), as
        ``domain.rollout.Window`` reads them."""
        ...


class Deployer(Protocol):
    """Runs the staging service's revisions, each pinned to one model version. The
    service layer puts a version on staging (``modelrail.service.reconcile.deploy``):
    ``start``, probe the candidate, then ``promote`` or ``discard`` it."""

    def current(self) -> Deployment | None:
        """The deployment receiving traffic now, if any."""
        ...

    def start(self, model: str, version: int) -> Candidate:
        """A revision pinned to ``version``, ready to be probed; ``DeploymentFailed``
        when it never became ready (traffic stays where it was)."""
        ...

    def promote(self, candidate: Candidate) -> Deployment:
        """Give the candidate the traffic; return the live deployment."""
        ...

    def discard(self, candidate: Candidate) -> str:
        """Give up the candidate: traffic stays on, or returns to, the revision before
        it. Returns what now serves, in words, for the failure's message."""
        ...

    def stop(self) -> None:
        """Stop the servers this deployer runs on this machine (local staging); a
        managed service (Cloud Run) keeps serving and this does nothing."""
        ...


@dataclass(frozen=True)
class JobState:
    """Where a job execution is: ``running``, ``succeeded``, ``failed``, or ``unknown``
    (no such execution), with what the platform says about it."""

    status: str
    detail: str = ""


class JobLauncher(Protocol):
    """Starts the training job for one event (a Cloud Run job execution)."""

    def launch(self, job: str, event_json: bytes) -> str:
        """Start ``job`` with the event and return an execution name."""
        ...

    def state(self, execution: str) -> JobState:
        """Where the execution ``launch`` returned is now."""
        ...


@dataclass(frozen=True)
class PublishedVersion:
    """One version of a package in a package repository, as published."""

    uri: str  # the version's address: an Artifact Registry resource URL, a local directory
    package: str
    version: str
    files: Mapping[str, str]  # file name -> sha256 (hex)


class PackageRepository(Protocol):
    """Immutable, versioned packages of files: an Artifact Registry generic repository.

    The registry publishes each version there (package = model, version = ``v<N>``);
    the bucket stays the source of truth, the repository is where Google's tooling and
    people find the versions.
    """

    def publish(self, package: str, version: str, files: Mapping[str, bytes]) -> PublishedVersion:
        """Publish ``files`` as ``version`` of ``package``; idempotent.

        A version that already holds these files, or some of them with the same bytes
        (a publication that stopped half-way), is completed and returned. A version
        holding another file or other bytes is left as it is and ``IntegrityError`` is
        raised: a version, once published, never changes.
        """
        ...

    def versions(self, package: str) -> list[str]:
        """The package's versions, sorted; empty for a package never published."""
        ...

    def files(self, package: str, version: str) -> dict[str, str]:
        """File name -> sha256 (hex) of one version; empty for a version never published."""
        ...


@dataclass(frozen=True)
class ManifestSignature:
    """A signature over a version's manifest bytes: which key (version) made it, and the
    signature itself, DER-encoded ECDSA on P-256 over the bytes' SHA-256 (Cloud KMS's
    ``EC_SIGN_P256_SHA256``)."""

    key: str
    signature: bytes


class ManifestSigner(Protocol):
    """Signs manifests with one key, and gives the public keys that verify them: a Cloud
    KMS asymmetric signing key (its REST API; the local control plane serves the same in
    emulator mode), or a key file in the state directory (embedded mode).

    register signs what it writes; the staging service verifies before it trusts a
    manifest (``modelrail.domain.signing.verify``), so bucket write access alone cannot make a
    version it would serve."""

    @property
    def key(self) -> str:
        """The key version it signs with (``projects/…/cryptoKeyVersions/N`` in Cloud KMS)."""
        ...

    def sign(self, data: bytes) -> ManifestSignature:
        """Sign ``data`` (its SHA-256 digest) with ``key``."""
        ...

    def public_key(self, key: str) -> bytes:
        """The PEM public key of the key version ``key`` (``key`` or another version of
        the same key: versions signed before a rotation), fetched once and kept."""
        ...


def files_to_publish(
    package: str, version: str, existing: Mapping[str, str], files: Mapping[str, bytes]
) -> list[str]:
    """The names in ``files`` that a version holding ``existing`` (name -> sha256) still
    lacks; ``IntegrityError`` if it holds another file or other bytes. Every
    ``PackageRepository`` decides with this, before it writes anything."""
    wanted = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    differing = sorted(name for name, digest in existing.items() if wanted.get(name) != digest)
    if differing:
        raise IntegrityError(
            f"{package} {version} is already published with other contents "
            f"({', '.join(differing)}); a published version never changes",
            {"package": package, "version": version, "files": differing},
        )
    return sorted(name for name in wanted if name not in existing)


@dataclass(frozen=True)
class ModelUpload:
    """One registered version, as a model catalog (Vertex AI's Model Registry) takes it."""

    model: str  # the catalog's model id: the modelrail model's name
    version: int  # the modelrail version it is
    manifest_sha256: str  # of the version's manifest: which bytes it is
    artifact_uri: str  # the version's folder in the artifact bucket
    artifact_bucket: str  # where the serving container loads it from


@dataclass(frozen=True)
class CatalogVersion:
    """A modelrail version as a version of a catalog model."""

    model: str  # the catalog model's resource name (projects/P/locations/L/models/ID)
    version_id: str  # the catalog's own version id
    version: int  # the modelrail version it carries
    aliases: tuple[str, ...] = ()


class ModelCatalog(Protocol):
    """Versions of models with a serving container and movable aliases: Vertex AI's
    Model Registry. Each modelrail version becomes one version of the model named like
    it (the first creates the model), carrying its number and manifest in labels; the
    bucket stays the source of truth and the catalog mirrors its aliases."""

    def upload(self, upload: ModelUpload) -> CatalogVersion:
        """Add ``upload`` as a new version of its model; idempotent.

        A version already carrying this modelrail version with the same manifest and
        files is returned without uploading; one carrying it with another manifest or
        other files is ``IntegrityError``.
        """
        ...

    def find(self, model: str, version: int) -> CatalogVersion | None:
        """The catalog version carrying modelrail ``version`` of ``model``, if any."""
        ...

    def set_alias(self, model: str, alias: str, version: int) -> CatalogVersion | None:
        """Point ``alias`` at the catalog version carrying ``version`` (taking it from the
        version holding it). Without such a version (registered before the catalog was
        used) the alias is taken off whichever version holds it, and None is returned."""
        ...


class DaskClusters(Protocol):
    """Where training on Dask gets its cluster (``[training.dask]``)."""

    def client(self, scheduler: str | None, workers: int) -> AbstractContextManager[Any]:
        """A ``distributed.Client`` for the block: on the cluster at ``scheduler``, else
        on one this port starts for the block (``workers`` worker processes) and stops
        after it."""
        ...


class Secrets(Protocol):
    """Where a credential named in a configuration is kept: Secret Manager in the cloud
    (a secret version, ``projects/P/secrets/S/versions/V``), the process's environment
    on this machine (a variable's name). Each adapter reads the reference of its kind."""

    def reveal(self, secret: str | None, variable: str | None) -> str:
        """The value ``secret`` (a secret version) or ``variable`` (an environment
        variable) holds, whichever this adapter reads; ``SecretUnavailable`` (permanent)
        when it is not named, or not there, ``TransientError`` when the store cannot
        answer now."""
        ...


class Webhooks(Protocol):
    """Posts a JSON body to a webhook (notifications)."""

    def post(self, url: str, body: bytes) -> int:
        """POST ``body`` and return the HTTP status; ``OSError`` (``TimeoutError`` among
        them) when the webhook cannot be reached or does not answer in time."""
        ...
