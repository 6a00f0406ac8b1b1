"""ManifestSigner on a Cloud KMS asymmetric signing key (``EC_SIGN_P256_SHA256``), through
the REST API v1 (``rest``: one transport with the Artifact Registry adapter; in
emulator mode the local control plane serves the same calls). The calls:

- ``POST /v1/{key version}:asymmetricSign`` with the SHA-256 ``digest`` of the data and
  its ``digestCrc32c``: the DER signature and its ``signatureCrc32c``; an answer whose
  checksums do not hold (the digest was not verified, the signature is not what was
  sent) is a transient error, retried by the bus, as Google's integrity guidance says.
  Needs ``cloudkms.cryptoKeyVersions.useToSign`` (``roles/cloudkms.signer``).
- ``GET /v1/{key version}/publicKey``: the PEM public key and its ``pemCrc32c``. Needs
  ``cloudkms.cryptoKeyVersions.viewPublicKey`` (``roles/cloudkms.publicKeyViewer``). A
  key version's public key never changes: each is fetched once per process.

The data never leaves the process, only its digest.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from urllib.parse import quote

from modelrail.adapters.google.rest import GoogleRest
from modelrail.domain.signing import ALGORITHM, same_key
from modelrail.kernel.errors import ConfigError, IntegrityError, TransientError
from modelrail.kernel.ports import ManifestSignature

DEFAULT_ENDPOINT = "https://cloudkms.googleapis.com"
KEY_VERSION = re.compile(
    r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/\d+"
)


def crc32c(data: bytes) -> int:
    import google_crc32c

    value: int = google_crc32c.value(data)
    return value


class CloudKmsSigner:
    """Signs with the Cloud KMS key version ``key`` and serves its key's public keys."""

    def __init__(self, key: str, api_endpoint: str | None = None) -> None:
        if not KEY_VERSION.fullmatch(key):
            raise ConfigError(
                f"MODELRAIL_SIGNING_KEY must name a Cloud KMS key version "
                f"(projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N), "
                f"not {key!r}"
            )
        self._key = key
        self.api = GoogleRest("Cloud KMS", DEFAULT_ENDPOINT, api_endpoint)
        self._public_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        return self._key

    def sign(self, data: bytes) -> ManifestSignature:
        digest = hashlib.sha256(data).digest()
        status, body = self.api.call(
            "POST",
            f"/v1/{quote(self.key)}:asymmetricSign",
            json={
                "digest": {"sha256": base64.b64encode(digest).decode()},
                "digestCrc32c": str(crc32c(digest)),
            },
        )
        self.api.check(status, body, f"sign with {self.key}")
        signature = base64.b64decode(body.get("signature", ""))
        if not body.get("verifiedDigestCrc32c") or int(body.get("signatureCrc32c", -1)) != crc32c(
            signature
        ):
            raise TransientError(f"Cloud KMS: the signature by {self.key} failed its checksums")
        return ManifestSignature(self.key, signature)

    def public_key(self, key: str) -> bytes:
        if not same_key(self.key, key):
            raise IntegrityError(f"{key} is not a version of the signing key {self.key}")
        with self._lock:
            if key not in self._public_keys:
                status, body = self.api.call("GET", f"/v1/{quote(key)}/publicKey")
                self.api.check(status, body, f"read the public key of {key}")
                pem = str(body.get("pem", "")).encode()
                if int(body.get("pemCrc32c", -1)) != crc32c(pem):
                    raise TransientError(f"Cloud KMS: the public key of {key} failed its checksum")
                if body.get("algorithm") != ALGORITHM:
                    raise IntegrityError(
                        f"{key} is an {body.get('algorithm')} key, not {ALGORITHM}", {"key": key}
                    )
                self._public_keys[key] = pem
            return self._public_keys[key]
