"""The registry: create-only numbers, per-run idempotency, forward-only aliases, hashes."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.models import LocalModels
from modelrail.adapters.local.packages import LocalPackageRepository
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.catalog import Catalog
from modelrail.domain.leases import Leases
from modelrail.domain.registry import Registry, sha256
from modelrail.kernel.errors import IntegrityError, LeaseHeld, LeaseLost, NotFound, TransientError
from modelrail.kernel.ports import BlobStore
from tests.conftest import wait_for
from tests.fakes import InMemoryStore
from tests.manifests import describe

MODEL = "penguins"


def _files(text: bytes) -> Callable[[int], dict[str, bytes]]:
    return lambda version: {"model.txt": text, "card.html": f"v{version}".encode()}


@pytest.fixture
def signer(tmp_path: Path) -> LocalManifestSigner:
    return LocalManifestSigner(tmp_path / "keys" / "manifest-signing.pem")


@pytest.fixture(params=["memory", "filesystem"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return InMemoryStore("artifacts")
    return FilesystemStore(tmp_path, "artifacts")


@pytest.mark.fault
def test_versions_are_contiguous_under_concurrent_registration(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)

    def register(i: int) -> int:
        files = _files(b"tree %d" % i)
        return registry.register(MODEL, f"run-{i:020d}", files, describe(MODEL, f"run-{i:020d}"))[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(register, range(24)))

    assert sorted(numbers) == list(range(1, 25))
    assert registry.versions(MODEL) == list(range(1, 25))


def test_a_run_registers_at_most_one_version(store: BlobStore, signer: LocalManifestSigner) -> None:
    registry = Registry(store, signer=signer)

    first = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    again = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))

    assert first == again
    assert registry.versions(MODEL) == [1]
    assert registry.version_for_run(MODEL, "run-a") == 1


def test_a_redelivery_resumes_the_number_its_run_claimed(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    registry._claim_for_run(MODEL, "run-a", 1)  # a delivery claimed the run, then stalled

    # Its version number is taken; the files are not written yet.
    assert registry.versions(MODEL) == []
    # A concurrent delivery of the same run resumes the same number, never a second one.
    assert registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))[0] == 1


@pytest.mark.fault
def test_a_live_registration_lease_keeps_a_second_delivery_of_the_run_out(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    leases = Leases(store)
    with leases.registration(MODEL, "run-a", "first"):
        with (
            pytest.raises(LeaseHeld, match="held by first"),
            leases.registration(MODEL, "run-a", "second", wait_s=0),
        ):
            pass
        # Another run's registration is not held up.
        with leases.registration(MODEL, "run-b", "other", wait_s=0):
            assert (
                registry.register(MODEL, "run-b", _files(b"tree"), describe(MODEL, "run-b"))[0] == 1
            )


@pytest.mark.fault
def test_a_registration_whose_holder_died_is_taken_over_and_resumes_its_number(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    leases = Leases(store)
    # A delivery took the lease, claimed number 1 for run-a and was killed: its lease
    # ran out (no heartbeat), its claim stayed.
    store.write(
        f"models/{MODEL}/leases/register-run-a.json",
        orjson.dumps({"holder": "killed", "taken_at": 0.0, "expires_at": time.time() - 1}),
        if_generation_match=0,
    )
    registry._claim_for_run(MODEL, "run-a", 1)
    assert registry.orphaned_number(MODEL, "run-a") == 1

    with leases.registration(MODEL, "run-a", "next", wait_s=0):
        assert registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))[0] == 1
    assert registry.orphaned_number(MODEL, "run-a") is None
    with leases.registration(MODEL, "run-b", "other", wait_s=0):
        assert (
            registry.register(MODEL, "run-b", _files(b"tree b"), describe(MODEL, "run-b"))[0] == 2
        )


@pytest.mark.fault
def test_a_registration_that_lost_its_lease_while_paused_commits_nothing(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    leases = Leases(store)
    key = f"models/{MODEL}/leases/register-run-a.json"

    def files_while_taken_over(version: int) -> dict[str, bytes]:
        # Paused past its lease meanwhile: the sweep (or the next delivery) took it.
        store.write(key, orjson.dumps({"holder": "sweep", "taken_at": 0.0, "expires_at": 9e9}))
        return _files(b"tree")(version)

    with (
        leases.registration(MODEL, "run-a", "paused", wait_s=0) as lease,
        pytest.raises(LeaseLost),
    ):
        registry.register(
            MODEL,
            "run-a",
            files_while_taken_over,
            describe(MODEL, "run-a"),
            fence=lease.check,
        )
    assert registry.versions(MODEL) == []
    assert [i.key for i in store.list(f"models/{MODEL}/versions/1/manifest")] == []


def test_a_heartbeat_keeps_a_lease_past_its_ttl_and_release_ends_it(store: BlobStore) -> None:
    leases = Leases(store)
    taken = time.time()
    # A ttl forty beats long: a busy machine may delay a beat, not forty.
    with leases.hold(MODEL, "work", "slow", ttl_s=2.0, wait_s=0, heartbeat_s=0.05):
        # Renewed after the first expiry would have passed: the holder is alive.
        wait_for(
            lambda: (
                (state := leases.state(MODEL, "work")) is not None and state.until > taken + 2.5
            ),
            "the heartbeat to renew the lease past its first expiry",
        )
        with (
            pytest.raises(LeaseHeld),
            leases.hold(MODEL, "work", "eager", ttl_s=0.5, wait_s=0),
        ):
            pass
    state = leases.state(MODEL, "work")
    assert state is not None
    assert (state.live, state.holder) == (False, "slow")


@pytest.mark.fault
def test_a_number_claimed_by_a_delivery_that_died_is_resumed_not_skipped(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    # A delivery claimed number 1 for run-a and died before recording it in its run
    # claim (the disk filled up, the process was killed).
    assert registry._claim_next_number(MODEL, "run-a") == 1

    assert (
        registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"), attempt=2)[0]
        == 1
    )
    assert registry.register(MODEL, "run-b", _files(b"tree b"), describe(MODEL, "run-b"))[0] == 2
    assert registry.versions(MODEL) == [1, 2]


def test_aliases_only_move_forward_unless_forced(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    for i in range(3):
        registry.register(MODEL, f"run-{i}", _files(b"t%d" % i), describe(MODEL, f"run-{i}"))

    assert registry.move_alias(MODEL, "staging", 2) is True
    assert registry.move_alias(MODEL, "staging", 1) is False
    assert registry.alias(MODEL, "staging").version == 2  # type: ignore[union-attr]
    assert registry.move_alias(MODEL, "staging", 1, force=True) is True
    assert registry.aliases(MODEL) == {"staging": 1}
    with pytest.raises(NotFound):
        registry.move_alias(MODEL, "staging", 9)


def test_concurrent_alias_moves_end_at_the_newest_version(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    for i in range(8):
        registry.register(MODEL, f"run-{i}", _files(b"t%d" % i), describe(MODEL, f"run-{i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: registry.move_alias(MODEL, "champion", v), range(1, 9)))

    assert registry.aliases(MODEL) == {"champion": 8}


@pytest.mark.fault
def test_a_tampered_artifact_is_refused_before_parsing(
    tmp_path: Path, signer: LocalManifestSigner
) -> None:
    store = FilesystemStore(tmp_path, "artifacts")
    registry = Registry(store, signer=signer)
    registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    store.local_path(f"models/{MODEL}/versions/1/model.txt").write_bytes(b"tree tampered")

    with pytest.raises(IntegrityError, match="does not match the sha256"):
        registry.load(MODEL, 1)


def test_a_version_is_complete_only_with_its_manifest(
    store: BlobStore, signer: LocalManifestSigner
) -> None:
    registry = Registry(store, signer=signer)
    store.write(f"models/{MODEL}/versions/1/claim.json", b"{}", if_generation_match=0)

    assert registry.versions(MODEL) == []
    number, _ = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    assert number == 2


def test_a_version_is_published_whole_and_its_first_record_stays(
    store: BlobStore, tmp_path: Path, signer: LocalManifestSigner
) -> None:
    packages = LocalPackageRepository(tmp_path / "packages")
    registry = Registry(store, signer=signer, packages=packages)
    version, manifest = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))

    first = registry.publish(MODEL, version)
    again = registry.publish(MODEL, version)
    # A redelivery after the repository's address changed (an emulator restarted on
    # other ports) keeps the first record.
    elsewhere = LocalPackageRepository(tmp_path / "moved")
    moved = Registry(store, signer=signer, packages=elsewhere).publish(MODEL, version)

    assert again == first == moved == registry.publication(MODEL, version)
    assert first.uri == (tmp_path / "packages" / MODEL / "v1").as_uri()
    assert (first.package, first.version) == (MODEL, "v1")
    assert first.files == {
        "card.html": sha256(b"v1"),
        "manifest.json": sha256(manifest),
        # The signature travels with the manifest: the published copy verifies too.
        "manifest.sig": sha256(store.read(f"models/{MODEL}/versions/1/manifest.sig").data),
        "model.txt": sha256(b"tree"),
    }
    assert registry.summaries(MODEL)[0]["published"] == first.to_json()


def test_a_tampered_version_is_not_published(
    store: BlobStore, tmp_path: Path, signer: LocalManifestSigner
) -> None:
    packages = LocalPackageRepository(tmp_path / "packages")
    registry = Registry(store, signer=signer, packages=packages)
    version, _ = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    store.write(f"models/{MODEL}/versions/{version}/card.html", b"<script>")

    with pytest.raises(IntegrityError, match=r"card\.html does not match"):
        registry.publish(MODEL, version)

    assert packages.versions(MODEL) == []
    assert registry.publication(MODEL, version) is None


def _catalogued(
    store: BlobStore, tmp_path: Path, versions: int, signer: LocalManifestSigner
) -> tuple[Registry, Catalog]:
    """``versions`` registered and uploaded to a local model catalog."""
    catalog = Catalog(LocalModels(tmp_path / "vertex-ai", "p", "europe-west1"), "staging:test")
    packages = LocalPackageRepository(tmp_path / "packages")
    registry = Registry(store, signer=signer, packages=packages, catalog=catalog)
    for i in range(1, versions + 1):
        files = _files(b"tree %d" % i)
        version, _ = registry.register(MODEL, f"run-{i}", files, describe(MODEL, f"run-{i}"))
        registry.publish(MODEL, version)
    return registry, catalog


def _catalog_aliases(catalog: Catalog) -> dict[str, list[str]]:
    return {
        r["labels"]["modelrail_version"]: r["versionAliases"]
        for r in catalog.models.versions(MODEL)
    }


def test_a_catalog_alias_follows_the_buckets_when_a_late_move_is_refused(
    store: BlobStore, tmp_path: Path, signer: LocalManifestSigner
) -> None:
    registry, catalog = _catalogued(store, tmp_path, 2, signer)
    # Moved while the catalog missed it.
    assert Registry(store, signer=signer).move_alias(MODEL, "staging", 2) is True

    # A late event for v1: refused in the bucket, and the catalog follows the bucket.
    assert registry.move_alias(MODEL, "staging", 1) is False

    assert registry.aliases(MODEL) == {"staging": 2}
    assert _catalog_aliases(catalog) == {"1": ["default"], "2": ["staging"]}


def test_a_failed_catalog_leaves_the_buckets_alias_unmoved(
    store: BlobStore, tmp_path: Path, signer: LocalManifestSigner
) -> None:
    registry, catalog = _catalogued(store, tmp_path, 2, signer)
    registry.move_alias(MODEL, "staging", 1)

    class Unavailable:
        def set_alias(self, model: str, alias: str, version: int) -> None:
            raise TransientError("Vertex AI: HTTP 503")

    unavailable = Registry(store, signer=signer, catalog=Unavailable())  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        unavailable.move_alias(MODEL, "staging", 2)

    assert registry.aliases(MODEL) == {"staging": 1}  # so the retry moves both
    assert registry.move_alias(MODEL, "staging", 2) is True
    assert _catalog_aliases(catalog) == {"1": ["default"], "2": ["staging"]}
