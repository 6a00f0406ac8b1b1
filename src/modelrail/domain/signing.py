"""Signed manifests: the signature file beside a version's manifest, and its check.

register signs the exact bytes of ``manifest.json`` with the ``ManifestSigner`` port and
writes ``manifest.sig`` beside it, create-only, before the manifest. The staging service
checks that signature before it trusts any sha256 the manifest lists, so an account that
can write the artifact bucket, but cannot sign, cannot make a version staging serves.

``manifest.sig`` is JSON::

    {"algorithm": "EC_SIGN_P256_SHA256", "key": "<key version>",
     "manifest_sha256": "<hex>", "signature": "<base64 of the DER signature>"}

``manifest_sha256`` names the bytes the signature was made for, so that a resumed
registration can tell, without the public key, that the signature it finds is for the
manifest it is about to write. The check itself never relies on it: it verifies the
signature over the manifest's bytes with the public key of the named key version,
provided that key version is one of the trusted key's.

``cryptography`` is imported by the check alone, when it runs: processes that never
verify (every stage but the staging service's load) do not pay for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson

from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import ManifestSignature, ManifestSigner

ALGORITHM = "EC_SIGN_P256_SHA256"
_VERSIONS = "/cryptoKeyVersions/"


def encode(signature: ManifestSignature, manifest: bytes) -> bytes:
    """The ``manifest.sig`` file of ``signature`` over ``manifest``."""
    return canonical_json(
        {
            "algorithm": ALGORITHM,
            "key": signature.key,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "signature": base64.b64encode(signature.signature).decode(),
        }
    )


def decode(data: bytes, subject: str) -> tuple[ManifestSignature, str]:
    """The signature in a ``manifest.sig`` file and the sha256 of the manifest it names."""
    try:
        body: dict[str, Any] = orjson.loads(data)
        algorithm, key, digest = body["algorithm"], body["key"], body["manifest_sha256"]
        signature = base64.b64decode(body["signature"], validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
        raise IntegrityError(
            f"{subject}: manifest.sig is not a signature file ({type(exc).__name__}: {exc})",
            {"subject": subject},
        ) from None
    if algorithm != ALGORITHM:
        raise IntegrityError(
            f"{subject}: manifest.sig is an {algorithm} signature, not {ALGORITHM}",
            {"subject": subject, "algorithm": algorithm},
        )
    return ManifestSignature(str(key), signature), str(digest)


def same_key(trusted: str, named: str) -> bool:
    """Whether the key version ``named`` is ``trusted`` or another version of the same
    Cloud KMS key (a version made by a rotation)."""
    if named == trusted:
        return True
    key, separator, _ = trusted.rpartition(_VERSIONS)
    version = named.removeprefix(key + _VERSIONS)
    return bool(separator) and version != named and version.isdigit()


def verify(manifest: bytes, signature_file: bytes, signer: ManifestSigner, subject: str) -> None:
    """Check that ``signature_file`` is a signature over exactly ``manifest`` by the
    signer's key (or another version of it); ``IntegrityError`` says why not."""
    signature, _ = decode(signature_file, subject)
    if not same_key(signer.key, signature.key):
        raise IntegrityError(
            f"{subject} is signed by {signature.key}, which is not the manifest signing key "
            f"{signer.key} (nor a version of it)",
            {"subject": subject, "key": signature.key, "trusted": signer.key},
        )
    if not _valid(signer.public_key(signature.key), signature.signature, manifest):
        raise IntegrityError(
            f"{subject}: manifest.json does not match its signature (manifest.sig, by "
            f"{signature.key}): it was changed after register signed it",
            {"subject": subject, "key": signature.key},
        )


def _valid(public_key_pem: bytes, signature: bytes, data: bytes) -> bool:
    """ECDSA P-256 / SHA-256 verification of ``signature`` (DER) over ``data``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public_key = load_pem_public_key(public_key_pem)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise IntegrityError(f"the public key is not a P-256 key, as {ALGORITHM} needs")
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
