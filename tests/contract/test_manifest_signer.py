"""One ManifestSigner contract, proven against every implementation.

Embedded mode's key file and the Cloud KMS adapter (here on the local control plane's
Cloud KMS API, in the cloud on Google's) must agree: a signature names the signer's key
and verifies over exactly the bytes signed, with the public key the signer gives for
that key; it does not verify over other bytes; the key outlives the signer (another
instance verifies what an earlier one signed); and a key that is not the signer's (nor
a version of it) gets no public key, so nothing it signed is trusted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.google.kms import CloudKmsSigner
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain import signing
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import ManifestSigner
from modelrail.localcloud.kms import default_key
from tests.integration.emulator_support import control_plane_with_apis

PROJECT, REGION = "modelrail-contract", "europe-west1"
KEY = default_key(PROJECT, REGION)
ROTATED = KEY.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2")
OTHER_KEY = KEY.replace("cryptoKeys/manifest-signing", "cryptoKeys/another")
MANIFEST = b'{"files": {"model.txt": {"sha256": "ab"}}, "version": 1}'


@pytest.fixture(params=["key-file", "cloud-kms"])
def signers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ManifestSigner]]:
    """Two signers of the same key (two processes' adapters), then one of another key."""
    if request.param == "key-file":
        path = tmp_path / "keys" / "manifest-signing.pem"
        yield [
            LocalManifestSigner(path),
            LocalManifestSigner(path),
            LocalManifestSigner(tmp_path / "other.pem", "another/key"),
        ]
        return
    keys = (KEY, ROTATED, OTHER_KEY)
    with control_plane_with_apis(tmp_path, PROJECT, REGION, "models", keys=keys) as (
        _,
        endpoint,
    ):
        yield [
            CloudKmsSigner(KEY, endpoint),
            CloudKmsSigner(KEY, endpoint),
            CloudKmsSigner(OTHER_KEY, endpoint),
        ]


def _signature_file(signer: ManifestSigner, data: bytes) -> bytes:
    return signing.encode(signer.sign(data), data)


def test_a_signature_names_its_key_and_verifies_over_the_bytes_signed(
    signers: list[ManifestSigner],
) -> None:
    signer = signers[0]

    signature = signer.sign(MANIFEST)

    assert signature.key == signer.key
    assert signer.public_key(signer.key).startswith(b"-----BEGIN PUBLIC KEY-----")
    signing.verify(MANIFEST, signing.encode(signature, MANIFEST), signer, "penguins v1")


def test_a_signature_does_not_verify_over_other_bytes(signers: list[ManifestSigner]) -> None:
    signer = signers[0]
    signature_file = _signature_file(signer, MANIFEST)

    with pytest.raises(IntegrityError, match="does not match its signature"):
        signing.verify(MANIFEST.replace(b"ab", b"cd"), signature_file, signer, "penguins v1")


def test_the_key_outlives_the_signer(signers: list[ManifestSigner]) -> None:
    signature_file = _signature_file(signers[0], MANIFEST)

    signing.verify(MANIFEST, signature_file, signers[1], "penguins v1")


def test_another_key_is_not_trusted(signers: list[ManifestSigner]) -> None:
    signer, other = signers[0], signers[2]
    signature_file = _signature_file(other, MANIFEST)

    with pytest.raises(IntegrityError, match="which is not the manifest signing key"):
        signing.verify(MANIFEST, signature_file, signer, "penguins v1")
    with pytest.raises(IntegrityError):
        signer.public_key(other.key)
