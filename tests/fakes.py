"""Hand-written fakes of the ports, for unit tests (no servers, no mocks)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from modelrail.kernel.errors import NotFound, PreconditionFailed
from modelrail.kernel.ports import Blob, BlobInfo, BlobStream, Candidate, Deployment


class InMemoryStore:
    """A BlobStore in a dict, with GCS generation semantics."""

    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._next_generation = 1
        self._lock = threading.Lock()

    @property
    def bucket(self) -> str:
        return self._bucket

    def uri(self, key: str) -> str:
        return f"gs://{self._bucket}/{key}"

    def local_path(self, key: str) -> Path | None:
        return None

    def read(self, key: str, *, generation: int | None = None) -> Blob:
        with self._lock:
            if key not in self._objects:
                raise NotFound(self.uri(key))
            data, current = self._objects[key]
        if generation is not None and generation != current:
            raise NotFound(f"{self.uri(key)}#{generation}")
        return Blob(key, data, current)

    def open(self, key: str, *, generation: int | None = None) -> BlobStream:
        blob = self.read(key, generation=generation)  # bytes never change in place
        return BlobStream(key, blob.generation, len(blob.data), io.BytesIO(blob.data))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def write(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> int:
        with self._lock:
            current = self._objects.get(key, (b"", 0))[1]
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailed(f"{self.uri(key)}: {current} != {if_generation_match}")
            generation = self._next_generation
            self._next_generation += 1
            self._objects[key] = (bytes(data), generation)
            return generation

    def list(self, prefix: str = "") -> list[BlobInfo]:
        with self._lock:
            return [
                BlobInfo(key, generation, len(data))
                for key, (data, generation) in sorted(self._objects.items())
                if key.startswith(prefix)
            ]

    def corrupt(self, key: str, data: bytes) -> None:
        """Change bytes behind the store's back (tampering)."""
        with self._lock:
            self._objects[key] = (data, self._objects[key][1])


class InMemoryStorage:
    def __init__(self, *buckets: str) -> None:
        self.stores = {name: InMemoryStore(name) for name in buckets}

    def bucket(self, name: str) -> InMemoryStore:
        try:
            return self.stores[name]
        except KeyError:
            raise NotFound(name) from None


class FakeDeployer:
    """Records deploys; the candidates of ``fail_versions`` answer /predict with 500,
    so their smoke test fails and the previous one stays live."""

    def __init__(self, fail_versions: frozenset[int] = frozenset()) -> None:
        self.fail_versions = fail_versions
        self.deployed: list[Deployment] = []

    def current(self) -> Deployment | None:
        return self.deployed[-1] if self.deployed else None

    def start(self, model: str, version: int) -> Candidate:
        def probe(
            method: str, path: str, body: bytes | None, headers: Mapping[str, str], timeout_s: float
        ) -> tuple[int, bytes]:
            if path == "/readyz":
                return 200, b'{"status":"ready"}'
            if version in self.fail_versions:
                return 500, b'{"title":"the model failed to answer"}'
            rows = len(orjson.loads(body or b"{}").get("instances", []))
            answer = {"predictions": [[1.0]] * rows, "model": {"name": model, "version": version}}
            return 200, orjson.dumps(answer)

        return Candidate(model, version, f"rev-{version}", "http://staging.test", probe)

    def promote(self, candidate: Candidate) -> Deployment:
        deployment = Deployment(
            candidate.url, candidate.revision, candidate.model, candidate.version
        )
        self.deployed.append(deployment)
        return deployment

    def discard(self, candidate: Candidate) -> str:
        return "the revision before it still serves"

    def stop(self) -> None:
        """Nothing runs: the fake deploys nowhere."""


class FakeSplittingDeployer(FakeDeployer):
    """A production deployer that splits traffic (``service.rollout.Splitting``): at each
    split ``during_step`` runs with the candidate (the test's traffic meanwhile), and
    each revision answered ``answered`` requests without error at 10 ms."""

    def __init__(
        self, deployed: list[Deployment], during_step: Callable[[Candidate], None]
    ) -> None:
        super().__init__()
        self.deployed = list(deployed)
        self.during_step = during_step
        self.splits: list[float] = []
        self.answered = 50

    def split(self, candidate: Candidate, percent: float) -> None:
        self.splits.append(percent)
        self.during_step(candidate)

    def observe(self, candidate: Candidate) -> dict[str, Any]:
        window = {"requests": self.answered, "errors": 0, "p99_ms": 10.0}
        return {"new": window, "old": window, "exited": []}


class FakeWebhooks:
    """Answers each post with the next of ``answers`` (the last one ever after); an
    exception instance is raised instead. Every post is kept: (url, body)."""

    def __init__(self, *answers: int | OSError) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, body: bytes) -> int:
        self.posts.append((url, orjson.loads(body)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer

    def to(self, url: str) -> list[dict[str, Any]]:
        return [body for posted, body in self.posts if posted == url]
