"""Production canaries on one local control plane: moving one model's traffic while
another's revision is still starting finishes both, instead of each waiting for the
other for good; closing the control plane discards a canary whose rollout never ended.
The control plane's backends are stand-ins that split traffic, and a start that the
test holds."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from modelrail.kernel.ports import Candidate
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.settings.service import pin_env
from tests.conftest import STATE_DEADLINE_S
from tests.fakes import FakeDeployer

REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"


class SplittingBackend(FakeDeployer):
    """A service's revisions that share traffic (``split``); with ``hold`` set, a start
    waits for ``release`` (``entered`` says it began)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.splits: list[float] = []
        self.discarded: list[str] = []

    def start(self, model: str, version: int) -> Candidate:
        self.entered.set()
        if self.hold:
            assert self.release.wait(STATE_DEADLINE_S)
        return super().start(model, version)

    def split(self, candidate: Candidate, percent: float) -> None:
        self.splits.append(percent)

    def discard(self, candidate: Candidate) -> str:
        self.discarded.append(candidate.revision)
        return super().discard(candidate)

    def observe(self, candidate: Candidate) -> dict[str, Any]:
        counts = {"requests": 0, "errors": 0, "p99_ms": None}
        return {"new": counts, "old": counts, "exited": []}


class WatchedLock:
    """A lock that says when a thread had to wait for it (``waited``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waited = threading.Event()

    def __enter__(self) -> WatchedLock:
        if not self.lock.acquire(blocking=False):
            self.waited.set()
            self.lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _canary(model: str, version: int, percent: int) -> dict[str, Any]:
    """A patch that pins ``version`` and gives its revision ``percent`` of the traffic."""
    env = [{"name": name, "value": value} for name, value in pin_env(model, version).items()]
    return {
        "template": {"containers": [{"env": env}], "revision": f"{model}-v{version}"},
        "traffic": _split(model, version, percent),
    }


def _split(model: str, version: int, percent: int) -> list[dict[str, Any]]:
    return [
        {"type": REVISION, "revision": f"{model}-v{version - 1}", "percent": 100 - percent},
        {"type": REVISION, "revision": f"{model}-v{version}", "percent": percent, "tag": "canary"},
    ]


def _plane(tmp_path: Path, backends: dict[str, SplittingBackend]) -> ControlPlane:
    return ControlPlane(
        project="proj-local",
        region="europe-west1",
        services=lambda short: (short, "http://production.test") if short in backends else None,
        backend=lambda short: backends[short],
        job_command=[sys.executable, "-c", "pass"],
        job_env={},
        state_dir=tmp_path / "stack",
    )


@pytest.mark.fault
def test_a_canarys_split_while_another_canary_starts_finishes_both(tmp_path: Path) -> None:
    backends = {"a": SplittingBackend(), "b": SplittingBackend()}
    plane = _plane(tmp_path, backends)
    backend_lock = plane._backend_lock = WatchedLock()  # type: ignore[assignment]
    a, b = (plane.resource_name("services", short) for short in backends)
    plane.patch_service(b, _canary("b", 2, 0))  # b's canary runs, with no traffic yet
    plane.wait_idle(STATE_DEADLINE_S)
    assert plane.candidate(b) is not None

    backends["a"].hold = True
    plane.patch_service(a, _canary("a", 2, 0))  # a's canary starts, and is held there
    assert backends["a"].entered.wait(STATE_DEADLINE_S)
    moved: list[dict[str, Any]] = []
    split = threading.Thread(
        target=lambda: moved.append(plane.patch_service(b, {"traffic": _split("b", 2, 10)})),
        daemon=True,
    )
    split.start()
    assert backend_lock.waited.wait(STATE_DEADLINE_S)  # b's move waits for a's start
    backends["a"].release.set()

    split.join(STATE_DEADLINE_S)
    assert not split.is_alive(), "b's traffic move and a's start wait for each other"
    plane.wait_idle(STATE_DEADLINE_S)
    assert moved[0]["done"]
    assert backends["b"].splits == [10.0]
    assert plane.candidate(a) is not None
    assert not plane.get_service(a)["reconciling"]
    assert [t["percent"] for t in plane.get_service(b)["traffic"]] == [90, 10]


@pytest.mark.fault
def test_a_closing_control_plane_discards_the_canaries_whose_rollouts_never_ended(
    tmp_path: Path,
) -> None:
    """A canary's caller that died leaves its candidate with the control plane: closing
    discards it, so stopping the service's supervisor waits on no rollout (it used to
    wait, and a stopped stack left the supervisor running)."""
    backends = {"a": SplittingBackend()}
    plane = _plane(tmp_path, backends)
    a = plane.resource_name("services", "a")
    plane.patch_service(a, _canary("a", 2, 10))
    plane.wait_idle(STATE_DEADLINE_S)
    held = plane.candidate(a)
    assert held is not None

    plane.close(STATE_DEADLINE_S)

    assert backends["a"].discarded == [held[1].revision]
    assert plane.candidate(a) is None
