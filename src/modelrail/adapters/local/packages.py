"""PackageRepository as a local directory (embedded mode): ``<root>/<package>/<version>/``.

It keeps Artifact Registry's rule that a published file never changes: every file is
written to a temporary name and linked into place, which fails if the name exists, so
a file appears whole or not at all and is never overwritten. A version holding other
files or other bytes is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from modelrail.kernel.ports import PublishedVersion, files_to_publish

_PARTIAL = ".publishing-"  # a file being written, not yet linked into place


class LocalPackageRepository:
    """Packages of files under ``root``, one directory per version."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, package: str, version: str, files: Mapping[str, bytes]) -> PublishedVersion:
        for name in files_to_publish(package, version, self.files(package, version), files):
            if not self.add(package, version, name, files[name]):
                # A concurrent publication got there first: the same bytes, or a conflict.
                files_to_publish(package, version, self.files(package, version), files)
        return PublishedVersion(
            uri=(self.root / package / version).as_uri(),
            package=package,
            version=version,
            files=self.files(package, version),
        )

    def add(self, package: str, version: str, name: str, data: bytes) -> bool:
        """Store one file of a version unless a file of that name exists (then False)."""
        directory = self.root / package / version
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=_PARTIAL)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.link(temporary, directory / name)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def versions(self, package: str) -> list[str]:
        directory = self.root / package
        if not directory.is_dir():
            return []
        return sorted(entry.name for entry in directory.iterdir() if entry.is_dir())

    def files(self, package: str, version: str) -> dict[str, str]:
        directory = self.root / package / version
        if not directory.is_dir():
            return {}
        return {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(_PARTIAL)
        }
