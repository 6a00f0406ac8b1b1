"""A local Cloud KMS: the slice of its REST API v1 that ``adapters.kms.CloudKmsSigner``
calls, for asymmetric signing keys (``EC_SIGN_P256_SHA256``).

The local control plane serves it beside the Cloud Run API, so the cloud adapter runs
unchanged against it (``MODELRAIL_KMS_ENDPOINT``):

- ``POST /v1/{key version}:asymmetricSign``: signs the request's SHA-256 ``digest``;
  a ``digestCrc32c`` that does not match the digest is refused (INVALID_ARGUMENT), as
  Cloud KMS does; the answer carries ``signatureCrc32c`` and ``verifiedDigestCrc32c``.
- ``GET /v1/{key version}/publicKey``: the PEM public key with its ``pemCrc32c``.

Only the key versions it was given exist; each is a key file under ``<state dir>/kms/``
(``adapters.local.signing``), made on first use, so it outlives a restart.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any

import google_crc32c
import orjson

from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.signing import ALGORITHM
from modelrail.localcloud.google_api import ApiError, ApiRequest, ApiRoutes, EmulatedApi

_VERSION = (
    r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/[^/:]+"
)
_ROUTES = ApiRoutes(
    "Cloud KMS",
    [
        ("POST", re.compile(rf"^/v1/(?P<name>{_VERSION}):asymmetricSign$"), "sign"),
        ("GET", re.compile(rf"^/v1/(?P<name>{_VERSION})/publicKey$"), "public_key"),
    ],
)


def default_key(project: str, location: str) -> str:
    """The key version the emulator stack signs with unless ``MODELRAIL_SIGNING_KEY``
    names another."""
    return (
        f"projects/{project}/locations/{location}/keyRings/modelrail"
        "/cryptoKeys/manifest-signing/cryptoKeyVersions/1"
    )


class LocalKms(EmulatedApi):
    """Asymmetric signing key versions on the local disk."""

    routes = _ROUTES

    def __init__(self, state_dir: Path, keys: tuple[str, ...]) -> None:
        self.keys = {
            name: LocalManifestSigner(state_dir / "kms" / f"{name}.pem", name) for name in keys
        }

    def answer(self, action: str, match: re.Match[str], request: ApiRequest) -> dict[str, Any]:
        name = match["name"]
        signer = self.keys.get(name)
        if signer is None:
            raise ApiError(404, "NOT_FOUND", f"CryptoKeyVersion {name} not found.")
        if action == "sign":
            return self._sign(signer, request.raw)
        pem = signer.public_key(name).decode()
        return {
            "pem": pem,
            "algorithm": ALGORITHM,
            "pemCrc32c": str(google_crc32c.value(pem.encode())),
            "name": name,
            "protectionLevel": "SOFTWARE",
        }

    @staticmethod
    def _sign(signer: LocalManifestSigner, raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw or b"{}")
            digest = base64.b64decode(body["digest"]["sha256"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error):
            raise ApiError(
                400, "INVALID_ARGUMENT", "digest.sha256 (base64) is required for this key"
            ) from None
        if len(digest) != 32:
            raise ApiError(400, "INVALID_ARGUMENT", "digest.sha256 must be 32 bytes")
        checksum = body.get("digestCrc32c")
        if checksum is not None and int(checksum) != google_crc32c.value(digest):
            raise ApiError(
                400, "INVALID_ARGUMENT", "The checksum in field digest_crc32c did not match"
            )
        signature = signer.sign_digest(digest)
        return {
            "signature": base64.b64encode(signature).decode(),
            "signatureCrc32c": str(google_crc32c.value(signature)),
            "verifiedDigestCrc32c": checksum is not None,
            "name": signer.key,
            "verifiedDataCrc32c": False,
            "protectionLevel": "SOFTWARE",
        }
