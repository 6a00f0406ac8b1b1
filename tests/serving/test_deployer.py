"""LocalStagingDeployer: deploys, zero failed requests while redeploying under load,
tampered versions refused with the previous server still serving."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.adapters.local import staging as local_staging
from modelrail.adapters.local.staging import LocalStagingDeployer
from modelrail.kernel.errors import DeploymentFailed
from modelrail.kernel.ports import Deployment
from modelrail.settings.process import Settings
from tests.conftest import STATE_DEADLINE_S, wait_for
from tests.serving.conftest import deploy

from .conftest import MODEL, ROOT, RegisteredModels, free_port, link_buckets

pytestmark = pytest.mark.xdist_group("staging-servers")


@pytest.fixture
def deployer(models: RegisteredModels, tmp_path: Path) -> Iterator[LocalStagingDeployer]:
    home = tmp_path / "home"
    link_buckets(models, home)
    settings = Settings.from_env(
        {
            "MODELRAIL_HOME": str(home),
            "MODELRAIL_TOPOLOGY": str(ROOT / "topology.yaml"),
            "MODELRAIL_STAGING_PORT": str(free_port()),
        }
    )
    deployer = LocalStagingDeployer(settings, MODEL, service_env={"MODELRAIL_WORKERS": "2"})
    yield deployer
    deployer.stop()


def _deploy_in_background(
    deployer: LocalStagingDeployer, version: int, outcome: list[BaseException | Deployment]
) -> threading.Thread:
    """A rollout of ``version`` on a thread of its own; its deployment or its exception
    lands in ``outcome``."""

    def roll_out() -> None:
        try:
            outcome.append(deploy(deployer, deployer.settings, version))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=roll_out, daemon=True)
    thread.start()
    return thread


class Load:
    """Clients posting predictions in a loop, each on its own kept-alive connection,
    with no retries: every error is a failed request."""

    def __init__(self, url: str, body: bytes, clients: int) -> None:
        self.url, self.body = url, body
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: list[list[int]] = [[] for _ in range(clients)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, index: int) -> None:
        pool = urllib3.HTTPConnectionPool(
            self.url.removeprefix("http://").split(":")[0],
            int(self.url.rsplit(":", 1)[1]),
            maxsize=1,
            retries=False,
        )
        seen = self.versions[index]
        while not self.stop.is_set():
            try:
                response = pool.request(
                    "POST",
                    "/predict",
                    body=self.body,
                    timeout=10,
                    headers={"Content-Type": "application/json"},
                )
            except urllib3.exceptions.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            if response.status != 200:
                self.failures.append(f"{response.status} {response.data[:200]!r}")
                continue
            seen.append(orjson.loads(response.data)["model"]["version"])

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    @property
    def total(self) -> int:
        return sum(map(len, self.versions))


@pytest.mark.fault
def test_deploy_redeploy_under_load_and_refuse_tampered(
    deployer: LocalStagingDeployer, models: RegisteredModels
) -> None:
    assert deployer.current() is None
    first = deploy(deployer, deployer.settings, 1)
    assert (first.model, first.version) == (MODEL, 1)
    assert deployer.current() == first
    body = orjson.dumps({"instances": models.records[:3]})

    with Load(first.url, body, clients=4) as load:
        wait_for(lambda: load.total >= 200, "load to start")
        before = load.total
        second = deploy(deployer, deployer.settings, 2)
        during = load.total - before
        wait_for(lambda: all(v and v[-1] == 2 for v in load.versions), "clients to see v2")
        mark = load.total
        wait_for(lambda: load.total >= mark + 200, "load after the deploy")

        with pytest.raises(DeploymentFailed, match="sha256"):
            deploy(deployer, deployer.settings, models.tampered)
        mark = load.total
        wait_for(lambda: load.total >= mark + 200, "load after the refused deploy")

    assert load.failures == []
    # Served throughout (a rate would be a speed target: those live in benchmarks/).
    assert during > 0, "no request was answered while the deploy ran"
    for seen in load.versions:
        assert seen == sorted(seen), "a client saw the version go back"
        assert seen[0] == 1
        assert seen[-1] == 2
    assert deployer.current() == second
    assert second.url == first.url
    ready = urllib3.request("GET", second.url + "/readyz", retries=False)
    assert orjson.loads(ready.data) == {
        "status": "ready",
        "model": MODEL,
        "version": 2,
        "predictor": "lightgbm",
        "reader": "python",
        "explainer": "lightgbm",
    }


def test_a_new_deployer_finds_and_stops_the_server(deployer: LocalStagingDeployer) -> None:
    deployment = deploy(deployer, deployer.settings, 1)
    other = LocalStagingDeployer(deployer.settings, deployer.model)
    assert other.current() == deployment
    other.stop()
    assert deployer.current() is None
    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.request("GET", deployment.url + "/healthz", retries=False, timeout=1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _served_version(url: str) -> int:
    answer = urllib3.request("GET", url + "/readyz", retries=False, timeout=10)
    version: int = orjson.loads(answer.data)["version"]
    return version


def _candidate_pid(deployer: LocalStagingDeployer) -> int | None:
    candidate = deployer.servers().get("candidate")
    return candidate["pid"] if candidate else None


@pytest.mark.fault
def test_killing_the_deploying_process_leaves_no_orphan(
    deployer: LocalStagingDeployer, models: RegisteredModels
) -> None:
    first = deploy(deployer, deployer.settings, 1)
    script = (
        "from modelrail.settings.process import Settings\n"
        "from tests.serving.conftest import deploy\n"
        "from modelrail.adapters.by_mode import local_staging\n"
        "settings = Settings.from_env()\n"
        f"deploy(local_staging(settings, {MODEL!r}), settings, 2)\n"
    )
    env = {**os.environ, **deployer.settings.to_env()}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    try:
        wait_for(lambda: _candidate_pid(deployer) is not None, "the candidate to start")
        candidate = _candidate_pid(deployer)
        process.kill()  # mid-rollout: before the switch
    finally:
        process.wait()
    assert candidate is not None
    wait_for(lambda: not _group_alive(candidate), "the candidate's processes to end")
    assert deployer.current() == first
    assert _served_version(first.url) == 1
    second = deploy(deployer, deployer.settings, 2)
    assert _served_version(second.url) == 2


class _CallerDied(Exception):
    """The deploying process dies: here, right after asking for a candidate."""


@pytest.mark.fault
def test_a_caller_gone_before_it_reads_its_candidate_leaves_no_candidate(
    deployer: LocalStagingDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = deploy(deployer, deployer.settings, 1)

    def ask_and_die(stream: Any, request: dict[str, Any]) -> dict[str, Any]:
        stream.write(orjson.dumps(request) + b"\n")
        stream.flush()
        raise _CallerDied  # its connection closes with the candidate's reply unread

    connect = LocalStagingDeployer._connect

    def resetting(self: LocalStagingDeployer) -> socket.socket:
        control = connect(self)
        # Closed with unread data, as by a killed process: a reset, not an end of file.
        control.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return control

    monkeypatch.setattr(local_staging, "_exchange", ask_and_die)
    monkeypatch.setattr(LocalStagingDeployer, "_connect", resetting)
    with pytest.raises(_CallerDied):
        deploy(deployer, deployer.settings, 2)
    monkeypatch.undo()

    seen: set[int] = set()

    def no_candidate() -> bool:
        pid = _candidate_pid(deployer)
        if pid is not None:
            seen.add(pid)
        return pid is None and not any(_group_alive(p) for p in seen)

    wait_for(no_candidate, "the supervisor to stop the abandoned candidate")
    assert deployer.current() == first
    assert _served_version(first.url) == 1


@pytest.mark.fault
def test_a_killed_candidate_fails_the_deploy_and_the_old_one_serves(
    deployer: LocalStagingDeployer, models: RegisteredModels
) -> None:
    first = deploy(deployer, deployer.settings, 1)
    outcome: list[BaseException | Deployment] = []

    thread = _deploy_in_background(deployer, 2, outcome)
    wait_for(lambda: _candidate_pid(deployer) is not None, "the candidate to start")
    candidate = _candidate_pid(deployer)
    assert candidate is not None
    os.kill(candidate, signal.SIGKILL)  # the master only: its workers must follow
    thread.join(STATE_DEADLINE_S)
    assert len(outcome) == 1
    assert isinstance(outcome[0], DeploymentFailed), outcome
    wait_for(lambda: not _group_alive(candidate), "no stray worker of the killed server")
    assert deployer.current() == first
    assert _served_version(first.url) == 1
    # A serving master killed: its forked workers (they answered above) go with it.
    serving = deployer.servers()["current"]["pid"]
    os.kill(serving, signal.SIGKILL)
    wait_for(lambda: not _group_alive(serving), "the killed server's workers to exit")
    assert deployer.current() is None


@pytest.mark.fault
def test_concurrent_deploys_are_serialised(
    deployer: LocalStagingDeployer, models: RegisteredModels
) -> None:
    deploy(deployer, deployer.settings, 1)
    done: list[Deployment] = []
    threads = [
        threading.Thread(target=lambda v=v: done.append(deploy(deployer, deployer.settings, v)))  # type: ignore[misc]
        for v in (2, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STATE_DEADLINE_S)
    assert len(done) == 2
    # The later of the two switches wins, and it is the one every answer reports.
    last = max(done, key=lambda deployment: deployment.revision)
    assert deployer.current() == last
    assert {_served_version(last.url) for _ in range(20)} == {last.version}


def _process_with_argument(argument: str) -> int | None:
    """The pid of the process whose command line holds ``argument``, if one does."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and argument.encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


def _raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` whole, then read the answer to its end."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=STATE_DEADLINE_S) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.fault
def test_an_oversized_header_gets_the_servers_431_through_the_supervisor(
    deployer: LocalStagingDeployer,
) -> None:
    """The server answers 431 and closes while the client is still sending: the
    supervisor passes the answer on and lets the client finish (a lingering close),
    instead of resetting the connection under it."""
    served = deploy(deployer, deployer.settings, 1)
    header = b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n"

    for _ in range(3):
        answer = _raw_request(served.url, b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert _served_version(served.url) == 1  # and it still serves


@pytest.mark.fault
def test_a_supervisor_that_does_not_answer_fails_the_deploy_with_a_reason(
    deployer: LocalStagingDeployer,
) -> None:
    """A paused (SIGSTOP) supervisor: the deploy ends within its answer timeout, as a
    deploy failure that says so, and the supervisor serves on once resumed."""
    first = deploy(deployer, deployer.settings, 1)
    supervisor = deployer.servers()["supervisor"]
    assert supervisor == _process_with_argument(str(deployer.state_dir))
    deployer.answer_timeout_s = 2.0
    os.kill(supervisor, signal.SIGSTOP)
    try:
        outcome: list[BaseException | Deployment] = []

        thread = _deploy_in_background(deployer, 2, outcome)
        thread.join(60)  # a bound on the hang, far above the 2 s answer timeout
        # Nor does it pass for "serving nothing", which would start another rollout.
        with pytest.raises(DeploymentFailed, match="did not answer"):
            deployer.current()
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert len(outcome) == 1, "the deploy still hangs on the paused supervisor"
    assert isinstance(outcome[0], DeploymentFailed), outcome
    assert "did not answer" in outcome[0].message
    wait_for(lambda: _candidate_pid(deployer) is None, "the abandoned rollout to end")
    assert deployer.current() == first
    assert _served_version(first.url) == 1
