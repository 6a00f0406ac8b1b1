"""Signed manifests in the registry: register signs exactly the manifest bytes it writes,
once per version whatever the deliveries; a reader with the signer's key refuses a
manifest that is not those bytes, a version with no signature, and a signed manifest
copied under another number."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.registry import MANIFEST, SIGNATURE, Registry, sha256
from modelrail.kernel.errors import IntegrityError, NotFound
from modelrail.kernel.ports import Blob, BlobStore, ManifestSignature
from tests.fakes import InMemoryStore
from tests.manifests import describe

MODEL = "penguins"


def _files(text: bytes) -> Callable[[int], dict[str, bytes]]:
    return lambda version: {"model.txt": text, "card.html": f"v{version}".encode()}


def _key(version: int, name: str) -> str:
    return f"models/{MODEL}/versions/{version}/{name}"


class CountingSigner:
    """A signer that counts what it signs."""

    def __init__(self, signer: LocalManifestSigner) -> None:
        self.signer = signer
        self.signed: list[bytes] = []

    @property
    def key(self) -> str:
        return self.signer.key

    def sign(self, data: bytes) -> ManifestSignature:
        self.signed.append(data)
        return self.signer.sign(data)

    def public_key(self, key: str) -> bytes:
        return self.signer.public_key(key)


@pytest.fixture
def signer(tmp_path: Path) -> CountingSigner:
    return CountingSigner(LocalManifestSigner(tmp_path / "keys" / "manifest-signing.pem"))


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore("artifacts")


def test_register_signs_the_manifest_bytes_it_writes(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)

    version, manifest = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))

    assert signer.signed == [manifest] == [store.read(_key(version, MANIFEST)).data]
    signature = orjson.loads(store.read(_key(version, SIGNATURE)).data)
    assert signature["algorithm"] == "EC_SIGN_P256_SHA256"
    assert signature["key"] == signer.key
    assert signature["manifest_sha256"] == sha256(manifest)
    loaded = registry.load(MODEL, version)
    assert loaded.model_text == b"tree"


@pytest.mark.fault
def test_a_manifest_rewritten_to_match_replaced_files_is_refused(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)
    registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    # Whoever can write the bucket replaces the model and the sha256 its manifest records.
    manifest = orjson.loads(store.read(_key(1, MANIFEST)).data)
    manifest["files"]["model.txt"] = {"sha256": sha256(b"evil tree"), "size": 9}
    store.write(_key(1, "model.txt"), b"evil tree")
    store.write(_key(1, MANIFEST), orjson.dumps(manifest))

    assert registry.read_file(MODEL, 1, "model.txt") == b"evil tree"  # the sha256s agree
    with pytest.raises(IntegrityError, match=r"manifest\.json does not match its signature"):
        registry.load(MODEL, 1)


def test_a_version_without_a_signature_is_refused_saying_how_to_replace_it(
    store: BlobStore, signer: CountingSigner
) -> None:
    Registry(store, signer=signer).register(
        MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a")
    )
    # A version registered before manifests were signed: the same files, no manifest.sig.
    unsigned = InMemoryStore("artifacts")
    for info in store.list():
        if not info.key.endswith(SIGNATURE):
            unsigned.write(info.key, store.read(info.key).data)
    registry = Registry(unsigned, signer=signer)

    with pytest.raises(IntegrityError, match=r"has no signature.*`modelrail retrain`"):
        registry.load(MODEL, 1)
    assert registry.read_file(MODEL, 1, "model.txt") == b"tree"  # there, unverified


def test_a_signed_manifest_copied_under_another_number_is_refused(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)
    registry.register(MODEL, "run-a", _files(b"old tree"), describe(MODEL, "run-a"))
    registry.register(MODEL, "run-b", _files(b"new tree"), describe(MODEL, "run-b"))
    for name in ("model.txt", "card.html", MANIFEST, SIGNATURE):
        store.write(_key(2, name), store.read(_key(1, name)).data)

    with pytest.raises(IntegrityError, match="is that of penguins v1"):
        registry.load(MODEL, 2)


def test_a_signature_by_another_key_is_refused(
    store: BlobStore, signer: CountingSigner, tmp_path: Path
) -> None:
    registry = Registry(store, signer=signer)
    same_name = LocalManifestSigner(tmp_path / "other.pem")  # another key, the same name
    other_name = LocalManifestSigner(tmp_path / "third.pem", "someone-else/key")
    Registry(store, signer=same_name).register(
        MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a")
    )
    Registry(store, signer=other_name).register(
        MODEL, "run-b", _files(b"tree b"), describe(MODEL, "run-b")
    )

    with pytest.raises(IntegrityError, match="does not match its signature"):
        registry.load(MODEL, 1)
    with pytest.raises(IntegrityError, match="signed by someone-else/key, which is not"):
        registry.load(MODEL, 2)


@pytest.mark.fault
def test_a_redelivered_registration_signs_nothing_new(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)
    first = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    signature = store.read(_key(1, SIGNATURE))

    again = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"), attempt=2)

    assert again == first
    assert len(signer.signed) == 1
    assert store.read(_key(1, SIGNATURE)).generation == signature.generation
    registry.load(MODEL, 1)


@pytest.mark.fault
def test_a_claim_taken_over_resumes_a_signed_version(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)
    registry._claim_for_run(MODEL, "run-a", 1)  # a delivery claimed the run, then died

    version, manifest = registry.register(
        MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"), attempt=2
    )

    assert version == 1
    assert signer.signed == [manifest]
    registry.load(MODEL, 1)


class ManifestWriteFails(InMemoryStore):
    """A store whose first write of a manifest fails: the delivery dies after signing."""

    failed = False

    def write(self, key: str, data: bytes, **kwargs: object) -> int:
        if key.endswith(f"/{MANIFEST}") and not self.failed:
            self.failed = True
            raise OSError("the delivery died")
        return super().write(key, data, **kwargs)  # type: ignore[arg-type]


@pytest.mark.fault
def test_a_delivery_that_died_after_signing_is_completed_with_that_signature(
    signer: CountingSigner,
) -> None:
    store = ManifestWriteFails("artifacts")
    registry = Registry(store, signer=signer)
    with pytest.raises(OSError, match="died"):
        registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))
    assert registry.versions(MODEL) == []  # signed, not yet a version

    version, manifest = registry.register(
        MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"), attempt=2
    )

    assert signer.signed == [manifest]
    assert registry.load(MODEL, version).model_text == b"tree"


def test_a_signature_over_other_bytes_is_not_kept_for_this_manifest(
    store: BlobStore, signer: CountingSigner
) -> None:
    registry = Registry(store, signer=signer)
    assert registry._claim_for_run(MODEL, "run-a", 1) == 1  # then the delivery died
    other = b'{"another": "manifest"}'
    store.write(
        _key(1, SIGNATURE),
        orjson.dumps(
            {
                "algorithm": "EC_SIGN_P256_SHA256",
                "key": signer.key,
                "manifest_sha256": hashlib.sha256(other).hexdigest(),
                "signature": "AA==",
            }
        ),
    )

    with pytest.raises(IntegrityError, match="signs other manifest bytes"):
        registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"), attempt=2)
    assert registry.versions(MODEL) == []


class RacingStore(InMemoryStore):
    """Another delivery of the run writes ``signature`` right after this one found none."""

    def __init__(self, signature: bytes) -> None:
        super().__init__("artifacts")
        self.signature: bytes | None = signature

    def read(self, key: str, *, generation: int | None = None) -> Blob:
        if key.endswith(f"/{SIGNATURE}") and self.signature is not None:
            super().write(key, self.signature, if_generation_match=0)
            self.signature = None
            raise NotFound(key)  # what this delivery saw, an instant before
        return super().read(key, generation=generation)


def test_of_two_concurrent_signatures_the_first_stays(signer: CountingSigner) -> None:
    # The other delivery's signature, over the same manifest bytes (registration is
    # deterministic per run).
    scratch = InMemoryStore("artifacts")
    Registry(scratch, signer=signer).register(
        MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a")
    )
    theirs = scratch.read(_key(1, SIGNATURE)).data
    store = RacingStore(theirs)
    registry = Registry(store, signer=signer)

    version, _ = registry.register(MODEL, "run-a", _files(b"tree"), describe(MODEL, "run-a"))

    assert len(signer.signed) == 2  # both signed; the create-only write kept theirs
    assert store.read(_key(version, SIGNATURE)).data == theirs
    assert registry.load(MODEL, version).model_text == b"tree"
