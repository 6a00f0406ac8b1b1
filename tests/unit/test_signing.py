"""Embedded mode's signing key file, and which key versions a signer trusts."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain import signing
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import ManifestSignature

KEY = "projects/p/locations/l/keyRings/r/cryptoKeys/manifests/cryptoKeyVersions/1"


def test_the_key_is_made_on_first_use_readable_by_its_owner_alone(tmp_path: Path) -> None:
    signer = LocalManifestSigner.in_home(tmp_path / "home")
    assert not signer.path.exists()

    signer.sign(b"manifest")

    assert stat.S_IMODE(signer.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(signer.path.parent.stat().st_mode) == 0o700
    assert signer.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in signer.path.parent.iterdir()] == [signer.path.name]  # no leftover


def test_signers_starting_at_once_make_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "manifest-signing.pem"
    signers = [LocalManifestSigner(path) for _ in range(8)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        signatures = list(pool.map(lambda s: s.sign(b"manifest"), signers))

    # Each verifies with the key on disk: every signer signed with that one key.
    reader = LocalManifestSigner(path)
    for signature in signatures:
        signing.verify(b"manifest", signing.encode(signature, b"manifest"), reader, "v1")


@pytest.mark.parametrize(
    ("named", "trusted"),
    [
        (KEY, True),
        (KEY.replace("Versions/1", "Versions/7"), True),  # the same key, rotated
        (KEY.replace("/manifests/", "/other/"), False),
        (KEY.replace("Versions/1", "Versions/1/x"), False),
        (KEY.removesuffix("/cryptoKeyVersions/1"), False),
        ("modelrail-local/manifest-signing", False),
    ],
)
def test_a_signer_trusts_the_versions_of_its_own_key_alone(named: str, trusted: bool) -> None:
    assert signing.same_key(KEY, named) is trusted


def test_a_signature_file_that_is_not_one_is_refused_saying_so(tmp_path: Path) -> None:
    signer = LocalManifestSigner(tmp_path / "key.pem")
    good = signing.encode(signer.sign(b"m"), b"m")

    with pytest.raises(IntegrityError, match="is not a signature file"):
        signing.verify(b"m", b"{}", signer, "penguins v1")
    with pytest.raises(IntegrityError, match="an RSA_SIGN_PSS_2048_SHA256 signature"):
        signing.verify(
            b"m", good.replace(b"EC_SIGN_P256_SHA256", b"RSA_SIGN_PSS_2048_SHA256"), signer, "v1"
        )
    bad = signing.encode(ManifestSignature(signer.key, b"0" * 70), b"m")
    with pytest.raises(IntegrityError, match="does not match its signature"):
        signing.verify(b"m", bad, signer, "penguins v1")
