"""The model registry, on any BlobStore (GCS or the filesystem store).

Layout (under ``models/<model>/``, beside the model's ``definition.json``:
``domain.models``)::

    versions/<N>/claim.json     create-only: who claimed number N
    versions/<N>/model.txt      LightGBM text format (never pickle)
    versions/<N>/card.html      human-readable model card
    versions/<N>/reference.parquet  the hold-out it was judged on: later gates' trusted set
    versions/<N>/profile.json   its training data's profile: the baseline for drift
    versions/<N>/predictor-*.so compiled predictors, built and verified by the training job
    versions/<N>/manifest.sig   create-only, before the manifest: its signature (``signing``)
    versions/<N>/manifest.json  written last, create-only: the version exists once this does
    versions/<N>/publication.json  create-only, after the manifest: where the version was
                                published (package repository: Artifact Registry)
    by-run/<run_id>.json        a run registers at most one version
    aliases/<alias>.json        mutable pointers (champion, staging, production),
                                compare-and-set
    leases/<name>.json          who holds a rollout or a registration (``leases``)

Numbers are claimed create-only (``ifGenerationMatch=0``), retrying on conflict, so
concurrent registrations of different runs get distinct, contiguous numbers. A run
first claims ``by-run/<run_id>.json``; a redelivery finds that claim and either returns
the finished version or resumes writing it, so a run never makes a second version.

A run is registered under its registration lease (``leases.Leases.registration``,
renewed by a heartbeat while the work goes on, so it is sized to the work, not to the
worst-case redelivery chain). Whoever holds the lease
owns the run's claim: a claim with no version yet was left by a delivery that released
the lease (it failed) or let it expire (it died), and is taken over at once, resuming
the number the run had already claimed, so a crash leaves neither a stuck run nor a
gap. A delivery that finds the lease held by a live one waits, then is redelivered
(``DeliveryInProgress``): two deliveries never register one run at once.

The manifest is signed (``ManifestSigner``) before it is written: ``manifest.sig`` is
written create-only first, so a version that exists is signed. A resumed registration
writes the same manifest bytes, finds the signature made for them and signs nothing; a
concurrent one that signed too loses the create-only write and keeps the first
signature. The staging service reads a version with ``load``, which verifies the
signature over the manifest's exact bytes before trusting any sha256 in it.

A complete version is then published to a ``PackageRepository`` (package = model,
version = ``v<N>``: the manifest, its signature and every file it lists) and, when
pipeline.toml says so, uploaded to a ``ModelCatalog`` (Vertex AI's Model Registry: a
version of the model named like this one, its files this version's folder). The
manifest cannot say where, as it is written (and hashed) before: ``publication.json``
beside it does. The catalog mirrors the aliases: each move sets its alias there too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from modelrail.domain import signing
from modelrail.domain.lineage import Lineage
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import (
    IntegrityError,
    NotFound,
    PreconditionFailed,
    TransientError,
)
from modelrail.kernel.ports import (
    BlobStore,
    ManifestSigner,
    ModelCatalog,
    ModelUpload,
    PackageRepository,
)

log = logging.getLogger(__name__)


def _now() -> str:
    # Imported here: reading the registry (the staging service) needs no event types.
    from modelrail.kernel.events import utcnow

    return utcnow()


MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLICATION = "publication.json"
MODEL_FILE = "model.txt"
# Beside the model, every version holds the hold-out its gate judged it on (evaluate
# scores a challenger against the champion on it) and its training data's profile
# (validate measures drift against the champion's); a run snapshots both under these
# names before register copies them in.
REFERENCE_FILE = "reference.parquet"
PROFILE_FILE = "profile.json"
# The alias the gate compares against, and register moves to each blessed version.
CHAMPION = "champion"
_MAX_CLAIM_TRIES = 1000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Alias:
    name: str
    version: int
    generation: int
    updated_at: str


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of a version, as its manifest lists it."""

    sha256: str
    size: int

    @classmethod
    def of(cls, data: bytes) -> FileEntry:
        return cls(sha256(data), len(data))


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A registered version: what it is, how it was judged, where it came from and its
    files' sha256s. Its JSON form (``schemas/records/manifest.schema.json``) is what is
    signed, byte for byte, so ``to_json`` writes exactly the keys it read: ``compiled``
    and ``diagnostics`` only where the version has them (older ones do not)."""

    model: str
    version: int
    run_id: str
    format: str
    created_at: str
    features: Mapping[str, Any]
    best_iteration: int
    params: Mapping[str, Any]
    train_metrics: Mapping[str, float]
    metrics: Mapping[str, float]
    champion: Mapping[str, Any] | None
    verdict: Mapping[str, Any]
    lineage: Lineage
    examples: list[dict[str, Any]]
    files: Mapping[str, FileEntry]
    compiled: Mapping[str, Any] | None = None
    diagnostics: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Manifest:
        return cls(
            model=body["model"],
            version=int(body["version"]),
            run_id=body["run_id"],
            format=body["format"],
            created_at=body["created_at"],
            features=dict(body["features"]),
            best_iteration=int(body["best_iteration"]),
            params=dict(body["params"]),
            train_metrics=dict(body["train_metrics"]),
            metrics=dict(body["metrics"]),
            champion=dict(body["champion"]) if body.get("champion") is not None else None,
            verdict=dict(body["verdict"]),
            lineage=Lineage.from_json(body["lineage"]),
            examples=list(body["examples"]),
            files={
                name: FileEntry(entry["sha256"], int(entry["size"]))
                for name, entry in body["files"].items()
            },
            compiled=dict(body["compiled"]) if body.get("compiled") is not None else None,
            diagnostics=dict(body["diagnostics"]) if body.get("diagnostics") is not None else None,
        )

    @classmethod
    def parse(cls, data: bytes, subject: str) -> Manifest:
        """The manifest in ``data``; ``IntegrityError`` naming ``subject`` if it is not one."""
        try:
            return cls.from_json(orjson.loads(data))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(
                f"{subject}: its manifest is not a manifest ({type(exc).__name__}: {exc})",
                {"subject": subject},
            ) from None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "format": self.format,
            "created_at": self.created_at,
            "features": dict(self.features),
            "best_iteration": self.best_iteration,
            "params": dict(self.params),
            "train_metrics": dict(self.train_metrics),
            "metrics": dict(self.metrics),
            "champion": dict(self.champion) if self.champion is not None else None,
            "verdict": dict(self.verdict),
            "lineage": self.lineage.to_json(),
            "examples": list(self.examples),
            "files": {
                name: {"sha256": entry.sha256, "size": entry.size}
                for name, entry in sorted(self.files.items())
            },
        }
        if self.compiled is not None:
            body["compiled"] = dict(self.compiled)
        if self.diagnostics is not None:
            body["diagnostics"] = dict(self.diagnostics)
        return body


@dataclasses.dataclass(frozen=True)
class Publication:
    """Where a version was published (``publication.json``; its JSON form is
    ``schemas/records/publication.schema.json``): the package repository's copy and,
    when Vertex AI's Model Registry is on, the catalog's model and version id."""

    uri: str
    package: str
    version: str
    files: Mapping[str, str]
    vertex: Mapping[str, str] | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Publication:
        vertex = body.get("vertex")
        return cls(
            body["uri"], body["package"], body["version"], dict(body["files"]),
            dict(vertex) if vertex is not None else None,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "uri": self.uri,
            "package": self.package,
            "version": self.version,
            "files": dict(sorted(self.files.items())),
        }
        if self.vertex is not None:
            body["vertex"] = dict(self.vertex)
        return body


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """A version whose every file matched its manifest's sha256."""

    model: str
    version: int
    manifest: Manifest
    model_text: bytes


class Registry:
    """Versions plus mutable aliases for every model, on one bucket.

    Its collaborators are given once: the ``signer`` that signs the manifests it
    registers and verifies the ones it loads (a registry without one reads versions
    unverified, ``manifest``, and refuses to ``load`` or register them), the package
    repository versions are ``publish``ed to, and the ``catalog`` (Vertex AI's Model
    Registry) that mirrors versions and aliases when pipeline.toml turns it on.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        signer: ManifestSigner | None = None,
        packages: PackageRepository | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.store = store
        self._signer, self._packages, self.catalog = signer, packages, catalog

    @property
    def signer(self) -> ManifestSigner:
        if self._signer is None:
            raise TypeError("this registry was given no signer: it cannot sign or verify")
        return self._signer

    @property
    def packages(self) -> PackageRepository:
        if self._packages is None:
            raise TypeError("this registry was given no package repository to publish to")
        return self._packages

    # -- reading -----------------------------------------------------------------
    def _prefix(self, model: str) -> str:
        return f"models/{model}/"

    def versions(self, model: str) -> list[int]:
        """Complete versions (those with a manifest), ascending."""
        prefix = f"{self._prefix(model)}versions/"
        found = []
        for info in self.store.list(prefix):
            number, _, name = info.key[len(prefix) :].partition("/")
            if name == MANIFEST and number.isdigit():
                found.append(int(number))
        return sorted(found)

    def manifest_uri(self, model: str, version: int) -> str:
        return self.file_uri(model, version, MANIFEST)

    def file_uri(self, model: str, version: int, name: str) -> str:
        """The URI of one file of a version (``card.html``, ``manifest.json``, …)."""
        return self.store.uri(self._version_key(model, version, name))

    def manifest(self, model: str, version: int) -> Manifest:
        data = self.store.read(self._version_key(model, version, MANIFEST)).data
        return Manifest.parse(data, f"{model} v{version}")

    def signed_manifest(self, model: str, version: int) -> Manifest:
        """A version's manifest, once its signature (``manifest.sig``) is verified over its
        exact bytes with the signer's key and it names this model and version (a signed
        manifest copied under another number is not that version); else ``IntegrityError``."""
        subject = f"{model} v{version}"
        data = self.store.read(self._version_key(model, version, MANIFEST)).data
        try:
            signature = self.store.read(self._version_key(model, version, SIGNATURE)).data
        except NotFound:
            raise IntegrityError(
                f"{subject} has no signature ({SIGNATURE} beside its manifest): it was "
                "registered before manifests were signed, or its signature was removed; "
                "register a new version (`modelrail retrain`) and deploy that",
                {"model": model, "version": version},
            ) from None
        signing.verify(data, signature, self.signer, subject)
        manifest = Manifest.parse(data, subject)
        if (manifest.model, manifest.version) != (model, version):
            raise IntegrityError(
                f"{subject}: its signed manifest is that of {manifest.model} v{manifest.version}",
                {"model": model, "version": version},
            )
        return manifest

    def load(self, model: str, version: int) -> LoadedVersion:
        """Read a version as every reader of a registered version does (the staging
        service, evaluate's champion): its manifest's signature verified first
        (``signed_manifest``), then its model's sha256, before anyone parses it."""
        manifest = self.signed_manifest(model, version)
        return LoadedVersion(model, version, manifest, self._checked(manifest, MODEL_FILE))

    def read_file(self, model: str, version: int, name: str) -> bytes | None:
        """One file of a version, its sha256 checked; None if the version has none
        (versions registered before the file existed)."""
        return self.file(self.manifest(model, version), name)

    def file(self, manifest: Manifest, name: str) -> bytes | None:
        """One file of the version ``manifest`` describes (a ``LoadedVersion``'s, already
        verified), its sha256 checked against that manifest; None if it lists none."""
        if name not in manifest.files:
            return None
        return self._checked(manifest, name)

    def _checked(self, manifest: Manifest, name: str) -> bytes:
        model, version = manifest.model, manifest.version
        data = self.store.read(self._version_key(model, version, name)).data
        if sha256(data) != manifest.files[name].sha256:
            raise IntegrityError(
                f"{model} v{version}: {name} does not match the sha256 in its manifest",
                {"model": model, "version": version, "file": name},
            )
        return data

    def summaries(self, model: str) -> list[dict[str, Any]]:
        """Each complete version of ``model``, oldest first, as people look at it:
        number, aliases, creation time, run, metrics, lineage and its files."""
        aliases = self.aliases(model)
        summaries = []
        for version in self.versions(model):
            manifest = self.manifest(model, version)
            published = self.publication(model, version)
            summaries.append(
                {
                    "version": version,
                    "aliases": sorted(a for a, v in aliases.items() if v == version),
                    "created_at": manifest.created_at,
                    "run_id": manifest.run_id,
                    "metrics": dict(manifest.metrics),
                    "lineage": manifest.lineage.to_json(),
                    "files": sorted(manifest.files),
                    "location": self.store.uri(self._version_key(model, version, "")),
                    "published": published.to_json() if published is not None else None,
                }
            )
        return summaries

    def publication(self, model: str, version: int) -> Publication | None:
        """Where the version was published; None before it is (or for versions
        registered before publishing existed)."""
        try:
            data = self.store.read(self._version_key(model, version, PUBLICATION)).data
        except NotFound:
            return None
        return Publication.from_json(orjson.loads(data))

    def alias(self, model: str, name: str) -> Alias | None:
        try:
            blob = self.store.read(self._alias_key(model, name))
        except NotFound:
            return None
        body = orjson.loads(blob.data)
        return Alias(name, int(body["version"]), blob.generation, body["updated_at"])

    def aliases(self, model: str) -> dict[str, int]:
        prefix = f"{self._prefix(model)}aliases/"
        result = {}
        for info in self.store.list(prefix):
            name = info.key[len(prefix) :].removesuffix(".json")
            alias = self.alias(model, name)
            if alias is not None:
                result[name] = alias.version
        return result

    def version_for_run(self, model: str, run_id: str) -> int | None:
        try:
            claim = orjson.loads(self.store.read(self._run_key(model, run_id)).data)
        except NotFound:
            return None
        version = claim.get("version")
        if version is None or version not in self.versions(model):
            return None
        return int(version)

    # -- writing -----------------------------------------------------------------
    def move_alias(
        self,
        model: str,
        name: str,
        version: int,
        *,
        force: bool = False,
        if_generation: int | None = None,
    ) -> bool:
        """Point ``name`` at ``version`` by compare-and-set.

        Aliases only move forward: a late, out-of-order event naming an older version
        is a no-op (returns False). ``force`` moves it anywhere (an operator's rollback).
        With a catalog the alias moves there first, so a failure there leaves the
        bucket's alias where it was and a retry moves both; when the bucket's alias
        stays on another version, the catalog's follows it back.

        ``if_generation`` moves it anywhere, but only from the state a decision was taken
        on: the alias's generation then (0: it did not exist); ``PreconditionFailed`` if
        it moved since (a promotion to production: ``service.promotion``).
        """
        if version not in self.versions(model):
            raise NotFound(f"{model} has no version {version}")
        body = canonical_json({"alias": name, "version": version, "updated_at": _now()})
        catalog = self.catalog
        if if_generation is not None:
            current = self.alias(model, name)
            if (current.generation if current is not None else 0) != if_generation:
                raise PreconditionFailed(f"alias {model}@{name} moved since")
            if catalog is not None:
                catalog.set_alias(model, name, version)
            self.store.write(
                self._alias_key(model, name),
                body,
                if_generation_match=if_generation,
                content_type="application/json",
            )
            return True
        if catalog is not None:
            current = self.alias(model, name)
            if force or current is None or current.version < version:
                catalog.set_alias(model, name, version)
        for _ in range(_MAX_CLAIM_TRIES):
            current = self.alias(model, name)
            if current is not None and not force and current.version >= version:
                if catalog is not None:
                    catalog.set_alias(model, name, current.version)
                return False
            generation = 0 if current is None else current.generation
            try:
                self.store.write(
                    self._alias_key(model, name),
                    body,
                    if_generation_match=generation,
                    content_type="application/json",
                )
                return True
            except PreconditionFailed:
                continue  # someone moved it meanwhile: re-read and decide again
        raise TransientError(f"alias {model}@{name} kept changing; giving up for now")

    def register(
        self,
        model: str,
        run_id: str,
        files_for: Callable[[int], Mapping[str, bytes]],
        describe: Callable[[int, Mapping[str, FileEntry]], Manifest],
        *,
        attempt: int = 1,
        fence: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """Make the files an immutable version for ``run_id``; idempotent per run.

        ``files_for(version)`` returns the version's files (a card may show its own
        number); it must return the same bytes when called again for the same run.
        ``describe(version, files)`` is its manifest, for this model, number and run.
        The registry's signer signs the manifest. ``attempt`` is the delivery attempt
        registering it (kept in the claim, for people). The caller holds the run's
        registration lease (``Leases.registration``): any claim the run left is its own
        to resume; ``fence`` (the lease's ``check``) is called before the version is
        signed and committed, so a delivery that lost its lease meanwhile commits
        nothing. Returns the version number and the manifest bytes.
        """
        version = self._claim_for_run(model, run_id, attempt)
        files = files_for(version)
        if MODEL_FILE not in files:
            raise ValueError(f"a version needs {MODEL_FILE}")
        for name, data in files.items():
            self._write_once(self._version_key(model, version, name), data)
        described = describe(version, {name: FileEntry.of(data) for name, data in files.items()})
        if (described.model, described.version, described.run_id) != (model, version, run_id):
            raise ValueError(
                f"the manifest describes {described.model} v{described.version} of "
                f"{described.run_id}, not {model} v{version} of {run_id}"
            )
        manifest = canonical_json(described.to_json())
        key = self._version_key(model, version, MANIFEST)
        with contextlib.suppress(NotFound):
            manifest = self.store.read(key).data  # an earlier delivery finished it
        if fence is not None:
            fence()
        self._sign_once(model, version, manifest)
        # A concurrent delivery may write it first: its bytes are these, the ones the
        # signature was made for (``_sign_once`` let it through for them alone).
        with contextlib.suppress(PreconditionFailed):
            self.store.write(key, manifest, if_generation_match=0, content_type="application/json")
        return version, manifest

    def _sign_once(self, model: str, version: int, manifest: bytes) -> None:
        """Make sure ``manifest.sig`` holds a signature over exactly ``manifest``: kept if
        a delivery of the run made it (a redelivery signs nothing), else signed and
        written create-only (of two concurrent deliveries, the first signature stays)."""
        key = self._version_key(model, version, SIGNATURE)
        try:
            existing = self.store.read(key).data
        except NotFound:
            signed = signing.encode(self.signer.sign(manifest), manifest)
            try:
                self.store.write(
                    key, signed, if_generation_match=0, content_type="application/json"
                )
                return
            except PreconditionFailed:
                existing = self.store.read(key).data  # a concurrent delivery signed first
        _, signed_sha256 = signing.decode(existing, f"{model} v{version}")
        if signed_sha256 != sha256(manifest):
            raise IntegrityError(
                f"{model} v{version}: {SIGNATURE} signs other manifest bytes than this "
                "registration writes",
                {"model": model, "version": version},
            )

    def publish(self, model: str, version: int) -> Publication:
        """Publish a complete version to the package repository as ``v<N>`` (its
        manifest, its signature and every file the manifest lists, each checked against
        its sha256, so the published copy can be verified as the bucket's is) and upload
        it to the catalog, if there is one; then record where in ``publication.json``, create-only
        (the catalog's model and version id under ``vertex``). Idempotent: a redelivery
        publishes nothing new and keeps the first record; a different version under the
        same number in the repository or the catalog is an ``IntegrityError``."""
        manifest_bytes = self.store.read(self._version_key(model, version, MANIFEST)).data
        manifest = Manifest.parse(manifest_bytes, f"{model} v{version}")
        files = {name: self._checked(manifest, name) for name in manifest.files}
        signature = self.store.read(self._version_key(model, version, SIGNATURE)).data
        published = self.packages.publish(
            model, f"v{version}", {**files, MANIFEST: manifest_bytes, SIGNATURE: signature}
        )
        vertex = None
        if self.catalog is not None:
            uploaded = self.catalog.upload(
                ModelUpload(
                    model=model,
                    version=version,
                    manifest_sha256=sha256(manifest_bytes),
                    artifact_uri=self.store.uri(self._version_key(model, version, "")),
                    artifact_bucket=self.store.bucket,
                )
            )
            vertex = {"model": uploaded.model, "version_id": uploaded.version_id}
        record = Publication(
            published.uri, published.package, published.version, published.files, vertex
        )
        key = self._version_key(model, version, PUBLICATION)
        try:
            self.store.write(
                key,
                canonical_json(record.to_json()),
                if_generation_match=0,
                content_type="application/json",
            )
        except PreconditionFailed:
            # An earlier delivery's record stands.
            record = Publication.from_json(orjson.loads(self.store.read(key).data))
        return record

    def _claim_for_run(self, model: str, run_id: str, attempt: int) -> int:
        """The run's number: the one it claimed before (its claim is the caller's, who
        holds the run's registration lease), else the next free one."""
        key = self._run_key(model, run_id)
        body = {"run_id": run_id, "version": None, "claimed_at": _now(), "attempt": attempt}
        try:
            generation = self.store.write(
                key, canonical_json(body), if_generation_match=0, content_type="application/json"
            )
        except PreconditionFailed:
            blob = self.store.read(key)
            claim = orjson.loads(blob.data)
            if claim["version"] is not None:
                return int(claim["version"])  # resume (or confirm) that version
            generation = blob.generation  # a delivery that ended left it: take it over
        version = self._claim_next_number(model, run_id)
        try:
            self.store.write(
                key,
                canonical_json({**body, "version": version}),
                if_generation_match=generation,
                content_type="application/json",
            )
        except PreconditionFailed:
            raise TransientError(f"run {run_id}'s claim changed under it") from None
        return version

    def orphaned_number(self, model: str, run_id: str) -> int | None:
        """The number ``run_id`` claimed without completing a version under it (a
        registration that died and will not be resumed leaves it unused: a gap)."""
        try:
            claim = orjson.loads(self.store.read(self._run_key(model, run_id)).data)
        except NotFound:
            claim = {}
        number = claim.get("version")
        if number is None:
            number = self._claimed_by(model, run_id)
        if number is None or int(number) in self.versions(model):
            return None
        return int(number)

    def _numbers(self, model: str) -> dict[int, set[str]]:
        prefix = f"{self._prefix(model)}versions/"
        files: dict[int, set[str]] = {}
        for info in self.store.list(prefix):
            digits, _, name = info.key[len(prefix) :].partition("/")
            if digits.isdigit():
                files.setdefault(int(digits), set()).add(name)
        return files

    def _claimed_by(self, model: str, run_id: str) -> int | None:
        """A number ``run_id`` claimed with no manifest under it yet."""
        for number, names in sorted(self._numbers(model).items()):
            if MANIFEST not in names and "claim.json" in names:
                claim = orjson.loads(
                    self.store.read(self._version_key(model, number, "claim.json")).data
                )
                if claim.get("run_id") == run_id:
                    return number
        return None

    def _claim_next_number(self, model: str, run_id: str) -> int:
        # A number this run claimed before its delivery ended: resume it.
        resumed = self._claimed_by(model, run_id)
        if resumed is not None:
            return resumed
        candidate = max(self._numbers(model), default=0) + 1
        body = canonical_json({"run_id": run_id, "claimed_at": _now()})
        for _ in range(_MAX_CLAIM_TRIES):
            try:
                self.store.write(
                    self._version_key(model, candidate, "claim.json"),
                    body,
                    if_generation_match=0,
                    content_type="application/json",
                )
                return candidate
            except PreconditionFailed:
                candidate += 1  # a concurrent registration took it
        raise TransientError(f"could not claim a version number for {model}")

    def _write_once(self, key: str, data: bytes) -> None:
        try:
            self.store.write(key, data, if_generation_match=0)
        except PreconditionFailed:
            if sha256(self.store.read(key).data) != sha256(data):
                raise IntegrityError(f"{key} exists with different bytes", {"key": key}) from None

    def _version_key(self, model: str, version: int, name: str) -> str:
        return f"{self._prefix(model)}versions/{version}/{name}"

    def _alias_key(self, model: str, name: str) -> str:
        return f"{self._prefix(model)}aliases/{name}.json"

    def _run_key(self, model: str, run_id: str) -> str:
        return f"{self._prefix(model)}by-run/{run_id}.json"
