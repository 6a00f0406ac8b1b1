"""ManifestSigner on a key file: embedded mode's signing key, and the key behind the
local control plane's Cloud KMS API (emulator mode).

The key is a P-256 private key in PEM (PKCS #8), made on first use: written to a
temporary file of mode 0600 in the same directory, then linked into place, which fails
if another process made the key meanwhile; that process's key is then the key. So the
file never holds a partial key and every process of a state directory signs with one
key. Signatures are Cloud KMS's ``EC_SIGN_P256_SHA256``: ECDSA over the SHA-256 digest,
DER-encoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import ManifestSignature

# What embedded mode's signatures name as their key: the state directory has one.
LOCAL_KEY = "modelrail-local/manifest-signing"


class LocalManifestSigner:
    """Signs with the P-256 key in ``path`` (made on first use) and names it ``key``."""

    def __init__(self, path: Path, key: str = LOCAL_KEY) -> None:
        self.path = path
        self._key = key
        self._private: Any = None
        self._lock = threading.Lock()

    @classmethod
    def in_home(cls, home: Path) -> LocalManifestSigner:
        """Embedded mode's signer: the key file in the state directory ``home``."""
        return cls(home / "keys" / "manifest-signing.pem")

    @property
    def key(self) -> str:
        return self._key

    def sign(self, data: bytes) -> ManifestSignature:
        return ManifestSignature(self.key, self.sign_digest(hashlib.sha256(data).digest()))

    def sign_digest(self, digest: bytes) -> bytes:
        """The DER signature of a SHA-256 ``digest`` (what Cloud KMS's asymmetricSign takes)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        signature: bytes = self._private_key().sign(
            digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
        return signature

    def public_key(self, key: str) -> bytes:
        if key != self.key:
            raise IntegrityError(f"{key} is not the local signing key {self.key}", {"key": key})
        from cryptography.hazmat.primitives import serialization

        pem: bytes = (
            self._private_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pem

    def _private_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        with self._lock:
            if self._private is None:
                try:
                    data = self.path.read_bytes()
                except FileNotFoundError:
                    data = self._create(
                        ec.generate_private_key(ec.SECP256R1()).private_bytes(
                            serialization.Encoding.PEM,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption(),
                        )
                    )
                self._private = serialization.load_pem_private_key(data, password=None)
            return self._private

    def _create(self, pem: bytes) -> bytes:
        """Put ``pem`` at ``path`` unless a key is there already; return the key there."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".key-")
        try:
            with os.fdopen(descriptor, "wb") as file:  # mkstemp makes it 0600
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, self.path)
        finally:
            os.unlink(temporary)
        return self.path.read_bytes()
