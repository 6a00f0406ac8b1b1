"""A BlobStore on a local directory with the same semantics as GCS preconditions.

Each bucket is a directory; an object is a plain file at its key, so users can look at
what the pipeline wrote. Generations live beside the data in ``.modelrail/meta``.
Every write goes to a temporary file first and is moved into place with ``os.replace``
(atomic on POSIX), and all conditional logic runs under an exclusive ``flock`` on the
bucket, readers under a shared one: a create-only or compare-and-set write either
wins whole or raises ``PreconditionFailed``, exactly like HTTP 412 from GCS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from modelrail.kernel.errors import NotFound, PreconditionFailed
from modelrail.kernel.ports import Blob, BlobInfo, BlobStream

_INTERNAL = ".modelrail"


class FilesystemStore:
    """One bucket at ``<root>/<bucket>``."""

    def __init__(self, root: Path, bucket: str) -> None:
        self._bucket = bucket
        self.path = (root / bucket).absolute()
        self._meta = self.path / _INTERNAL / "meta"
        self._tmp = self.path / _INTERNAL / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._meta.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path / _INTERNAL / "lock"
        self._lock_path.touch(exist_ok=True)

    @property
    def bucket(self) -> str:
        return self._bucket

    def uri(self, key: str) -> str:
        return f"gs://{self._bucket}/{key}"

    def local_path(self, key: str) -> Path:
        return self._object_path(key)

    def read(self, key: str, *, generation: int | None = None) -> Blob:
        path = self._object_path(key)
        with self._locked(fcntl.LOCK_SH):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise NotFound(self.uri(key)) from None
            current = self._generation(key, path)
        if generation is not None and generation != current:
            raise NotFound(f"{self.uri(key)}#{generation} (current generation is {current})")
        return Blob(key, data, current)

    def open(self, key: str, *, generation: int | None = None) -> BlobStream:
        # A write replaces the file (``os.replace``): the open descriptor keeps the
        # bytes it opened, as a GCS read pinned to its generation does.
        path = self._object_path(key)
        with self._locked(fcntl.LOCK_SH):
            try:
                handle = open(path, "rb")  # noqa: SIM115 - the caller closes the stream
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise NotFound(self.uri(key)) from None
            current = self._generation(key, path)
        if generation is not None and generation != current:
            handle.close()
            raise NotFound(f"{self.uri(key)}#{generation} (current generation is {current})")
        return BlobStream(key, current, os.fstat(handle.fileno()).st_size, handle)

    def delete(self, key: str) -> None:
        path = self._object_path(key)
        with self._locked(fcntl.LOCK_EX):
            for stale in (path, self._meta_path(key)):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    stale.unlink()

    def write(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> int:
        path = self._object_path(key)
        with self._locked(fcntl.LOCK_EX):
            current = self._generation(key, path) if path.is_file() else 0
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailed(
                    f"{self.uri(key)}: generation is {current}, not {if_generation_match}"
                )
            generation = max(time.time_ns() // 1000, current + 1)  # µs, like GCS
            path.parent.mkdir(parents=True, exist_ok=True)
            self._replace(path, data)
            meta = self._meta_path(key)
            meta.parent.mkdir(parents=True, exist_ok=True)
            self._replace(meta, str(generation).encode())
            return generation

    def list(self, prefix: str = "") -> list[BlobInfo]:
        found = []
        # Only the folder the prefix names is walked (``runs/`` of a bucket holding a
        # snapshot of thousands of parts elsewhere reads none of them).
        folder, _, _ = prefix.rpartition("/")
        segments = folder.split("/")
        inside = folder and ".." not in segments and segments[0] != _INTERNAL
        start = self.path / folder if inside else self.path
        with self._locked(fcntl.LOCK_SH):
            for directory, dirnames, filenames in os.walk(start):
                if directory == str(self.path):
                    dirnames[:] = [d for d in dirnames if d != _INTERNAL]
                for filename in filenames:
                    path = Path(directory, filename)
                    key = path.relative_to(self.path).as_posix()
                    if key.startswith(prefix):
                        found.append(
                            BlobInfo(key, self._generation(key, path), path.stat().st_size)
                        )
        return sorted(found, key=lambda info: info.key)

    # -- internals ---------------------------------------------------------------
    def _object_path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not key or key.startswith("/") or ".." in parts or (parts and parts[0] == _INTERNAL):
            raise ValueError(f"invalid object name {key!r}")
        return self.path.joinpath(*parts)

    def _meta_path(self, key: str) -> Path:
        return self._meta.joinpath(*PurePosixPath(key).parts)

    def _generation(self, key: str, path: Path) -> int:
        try:
            return int(self._meta_path(key).read_bytes())
        except FileNotFoundError:
            # A file dropped in by hand, not through the store: its mtime stands in.
            return path.stat().st_mtime_ns // 1000

    def _replace(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with open(self._lock_path, "rb") as lock:
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class FilesystemStorage:
    """Buckets as directories under one root; only the configured buckets exist."""

    def __init__(self, root: Path, buckets: tuple[str, ...]) -> None:
        self.root = root
        self._stores = {name: FilesystemStore(root, name) for name in buckets}

    def bucket(self, name: str) -> FilesystemStore:
        try:
            return self._stores[name]
        except KeyError:
            raise NotFound(f"no bucket named {name!r}") from None
