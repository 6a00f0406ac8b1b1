"""BlobStore and Storage on Google Cloud Storage (``google-cloud-storage``).

The same code talks to Cloud Storage and to fake-gcs-server: the client library reads
``STORAGE_EMULATOR_HOST`` itself and then uses anonymous credentials, so nothing here
knows which one it is talking to.

Preconditions map one to one: ``if_generation_match=0`` is GCS's create-only write,
a positive value its compare-and-set, and HTTP 412 becomes ``PreconditionFailed``,
the error the filesystem store raises for the same lost race.
"""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrail.kernel.errors import NotFound, PreconditionFailed
from modelrail.kernel.ports import Blob, BlobInfo, BlobStream

if TYPE_CHECKING:
    from google.cloud.storage import Client

# Seconds per HTTP request; the library retries idempotent calls within its own deadline.
_TIMEOUT_S = 60.0
# Bytes per ranged download of an opened object: what one read asks the server for.
_READ_CHUNK = 8 * 2**20


class GcsStore:
    """One bucket, through a shared ``google.cloud.storage.Client``."""

    def __init__(self, client: Client, bucket: str) -> None:
        self._client = client
        self._bucket_name = bucket
        self._bucket = client.bucket(bucket)

    @property
    def bucket(self) -> str:
        return self._bucket_name

    def uri(self, key: str) -> str:
        return f"gs://{self._bucket_name}/{key}"

    def local_path(self, key: str) -> Path | None:
        return None  # the object lives in Cloud Storage

    def read(self, key: str, *, generation: int | None = None) -> Blob:
        from google.api_core import exceptions

        blob = self._bucket.blob(key, generation=generation)
        try:
            data = blob.download_as_bytes(timeout=_TIMEOUT_S)
        except exceptions.NotFound:
            suffix = "" if generation is None else f"#{generation}"
            raise NotFound(f"{self.uri(key)}{suffix}") from None
        # The download response carries the generation it served (x-goog-generation).
        served = blob.generation if blob.generation is not None else generation
        if served is None:  # pragma: no cover - every GCS implementation sends it
            raise NotFound(f"{self.uri(key)}: the server did not report a generation")
        return Blob(key, data, int(served))

    def open(self, key: str, *, generation: int | None = None) -> BlobStream:
        from google.api_core import exceptions

        blob = self._bucket.blob(key, generation=generation)
        try:
            blob.reload(timeout=_TIMEOUT_S)  # the generation and size it will serve
        except exceptions.NotFound:
            suffix = "" if generation is None else f"#{generation}"
            raise NotFound(f"{self.uri(key)}{suffix}") from None
        assert blob.generation is not None
        assert blob.size is not None
        # Every ranged read names the generation (not the object's mediaLink, which
        # some servers answer with the current one): once a newer upload replaces it,
        # a read fails with NotFound rather than serve other bytes.
        pinned = self._bucket.blob(key, generation=blob.generation)
        raw = _RangedReader(pinned, int(blob.size), f"{self.uri(key)}#{blob.generation}")
        file = io.BufferedReader(raw, buffer_size=_READ_CHUNK)
        return BlobStream(key, int(blob.generation), int(blob.size), file)

    def delete(self, key: str) -> None:
        from google.api_core import exceptions

        with contextlib.suppress(exceptions.NotFound):
            self._bucket.blob(key).delete(timeout=_TIMEOUT_S)

    def write(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> int:
        from google.api_core import exceptions

        if not key or key.startswith("/"):
            raise ValueError(f"invalid object name {key!r}")
        blob = self._bucket.blob(key)
        try:
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=if_generation_match,
                timeout=_TIMEOUT_S,
            )
        except exceptions.PreconditionFailed:
            raise PreconditionFailed(
                f"{self.uri(key)}: generation is not {if_generation_match}"
            ) from None
        except exceptions.NotFound:
            raise NotFound(f"no bucket named {self._bucket_name!r}") from None
        assert blob.generation is not None  # set from the upload's response
        return int(blob.generation)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        from google.api_core import exceptions

        try:
            found = [
                BlobInfo(blob.name, int(blob.generation), int(blob.size or 0))
                for blob in self._client.list_blobs(
                    self._bucket_name, prefix=prefix or None, timeout=_TIMEOUT_S
                )
            ]
        except exceptions.NotFound:
            raise NotFound(f"no bucket named {self._bucket_name!r}") from None
        return sorted(found, key=lambda info: info.key)


class _RangedReader(io.RawIOBase):
    """One generation of an object, read by ranged downloads where the reader asks."""

    def __init__(self, blob: Any, size: int, uri: str) -> None:
        super().__init__()
        self._blob = blob
        self._size = size
        self._uri = uri
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from google.api_core import exceptions

        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        try:
            data = self._blob.download_as_bytes(
                start=self._position,
                end=self._position + wanted - 1,  # inclusive
                checksum=None,  # a range has no checksum of its own
                timeout=_TIMEOUT_S,
            )
        except exceptions.NotFound:
            raise NotFound(f"{self._uri} was replaced or deleted while being read") from None
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class GcsStorage:
    """Opens buckets of one project; the client is created on first use, once."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._client: Any = None
        self._stores: dict[str, GcsStore] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                from google.cloud.storage import Client

                # With STORAGE_EMULATOR_HOST set, the library picks the emulator's
                # endpoint and anonymous credentials by itself.
                self._client = Client(project=self.project)
            client: Client = self._client
            return client

    def bucket(self, name: str) -> GcsStore:
        client = self.client
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = GcsStore(client, name)
            return store
