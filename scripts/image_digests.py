"""Pin every image the builds pull by digest: `make image-digests`.

The images are the ``FROM`` lines of services/*/Dockerfile and the step images
(``name:``) of cloudbuild/*.yaml. A tag can be moved to other content; a digest cannot.
Each reference keeps its tag, for readers and for `make python-version`, and gains the
digest the registry serves for that tag now (the multi-platform index where there is
one): ``python:3.11.17-slim-bookworm@sha256:<64 hex>``. A Cloud Build substitution in
a step image (``python:${_PYTHON_VERSION}-bookworm``) is resolved with the pipeline's
default for it. Run it again to take a rebuilt tag (Debian security fixes) or after a
version changes; tests/infra fails on an image without a digest.

Usage: python scripts/image_digests.py [--check]   (--check: list unpinned, exit 1)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
FROM_LINE = re.compile(r"^(FROM\s+)(\S+)", re.MULTILINE)
STEP_IMAGE = re.compile(r"^(\s*(?:-\s+)?name:\s+)(\S+)\s*$", re.MULTILINE)
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def image_files(repo_root: Path = REPO_ROOT) -> list[Path]:
    return sorted((repo_root / "services").glob("*/Dockerfile")) + sorted(
        p for p in (repo_root / "cloudbuild").glob("*.yaml") if not p.name.startswith(".")
    )


def _pattern(path: Path) -> re.Pattern[str]:
    return FROM_LINE if path.name == "Dockerfile" else STEP_IMAGE


def references(path: Path) -> Iterator[str]:
    """The image references of a Dockerfile or a Cloud Build pipeline (build stages
    named by ``FROM <stage>`` are not images)."""
    text = path.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))
    for match in _pattern(path).finditer(text):
        if match.group(2) not in stages:
            yield match.group(2)


def unpinned(repo_root: Path = REPO_ROOT) -> list[str]:
    """``file: reference`` for every image without a digest."""
    return [
        f"{path.relative_to(repo_root)}: {reference}"
        for path in image_files(repo_root)
        for reference in references(path)
        if not DIGEST.search(reference)
    ]


def substituted(reference: str, path: Path) -> str:
    """The reference with the pipeline's substitution defaults filled in."""
    if path.suffix != ".yaml":
        return reference
    defaults = yaml.safe_load(path.read_text()).get("substitutions", {})
    return re.sub(r"\$\{(_[A-Z0-9_]+)\}", lambda m: str(defaults[m.group(1)]), reference)


def pin(path: Path, resolve: Callable[[str], str]) -> None:
    """Rewrite ``path`` with every reference at ``tag@digest`` (an old digest replaced)."""
    text = path.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))

    def pinned(match: re.Match[str]) -> str:
        reference = match.group(2)
        if reference in stages:
            return match.group(0)
        tagged = DIGEST.sub("", reference)
        return f"{match.group(1)}{tagged}@{resolve(substituted(tagged, path))}"

    path.write_text(_pattern(path).sub(pinned, text))


def registry_digest(reference: str) -> str:
    """The digest a registry serves for ``reference`` (Docker Hub or a gcr.io-style host),
    asked anonymously as the registry API (Distribution spec) allows for public images."""
    name, tag = reference, "latest"  # no tag: Docker's default
    if ":" in reference.rsplit("/", 1)[-1]:
        name, _, tag = reference.rpartition(":")
    first, _, rest = name.partition("/")
    if "." in first:
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    url = f"https://{registry}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        return _head_digest(url, headers)
    except urllib.error.HTTPError as challenge:
        if challenge.code != 401:
            raise
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge.headers["WWW-Authenticate"]))
        scope = fields.get("scope", f"repository:{repository}:pull")
        token_url = f"{fields['realm']}?service={fields.get('service', '')}&scope={scope}"
        with urllib.request.urlopen(token_url, timeout=30) as response:
            answer = json.load(response)
        headers["Authorization"] = f"Bearer {answer.get('token') or answer['access_token']}"
        return _head_digest(url, headers)


def _head_digest(url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, headers=headers, method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["Docker-Content-Digest"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="list unpinned images, exit 1")
    args = parser.parse_args(argv)
    if args.check:
        missing = unpinned()
        print("\n".join(missing) or "every image is pinned by digest")
        return 1 if missing else 0
    for path in image_files():
        pin(path, registry_digest)
        print(f"pinned {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
