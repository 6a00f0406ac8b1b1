"""The local Deployer: a staging server on 127.0.0.1, replaced with no downtime.

One deploy (serialised by a lock file):

1. Take the listening socket of the port: from the running server, which hands a
   duplicate over a unix socket (``modelrail.serving.handoff``), or, on the first
   deploy, by binding ``127.0.0.1:<staging_port>``.
2. Start the candidate (``python -m modelrail.serving.server``) in its own process
   group, pinned to the version,
   listening on that shared socket *and* on a private unix socket, with
   ``MODELRAIL_REQUIRE_MODEL=1``: the master loads and hash-checks the model before it
   forks a worker, so a version that cannot load exits and never accepts a connection.
   The private socket is answered by the candidate's master itself.
3. Wait until the candidate is ready and smoke-test it on its private socket (the
   shared port may route either server), with ``modelrail.smoke.smoke_test``.
4. Success: record it as current under ``<home>/run/staging/``, then retire the
   previous server with SIGTERM (it stops accepting and finishes in-flight
   requests). Both servers accept from one accept queue, so connections waiting in
   it are served by the candidate instead of being reset. Failure: stop the candidate
   the same way, keep the previous server, raise ``DeploymentFailed``.

The state file names the master's PID (= its process group), the revision, the port
and the sockets, so any process (the CLI, the embedded runtime, the local Cloud Run
control plane) can find, replace or stop the server another one started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from modelrail.config import Settings
from modelrail.errors import DeploymentFailed
from modelrail.ports import BlobStore, Deployment

_STATE = "staging.json"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0  # the server's graceful timeout (8 s) plus margin
_POLL_S = 0.02


@dataclasses.dataclass(frozen=True)
class _Record:
    pid: int
    revision: str
    model: str
    version: int
    port: int
    private_socket: str
    handoff_socket: str
    log: str

    def deployment(self) -> Deployment:
        return Deployment(
            url=f"http://127.0.0.1:{self.port}",
            revision=self.revision,
            model=self.model,
            version=self.version,
        )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process's ``Settings.from_env()`` equal ``settings``."""
    env = {
        "MODELRAIL_MODE": settings.mode,
        "MODELRAIL_HOME": str(settings.home),
        "MODELRAIL_CONFIG": str(settings.config_path),
        "MODELRAIL_TOPOLOGY": str(settings.topology_path),
        "MODELRAIL_DATA_BUCKET": settings.data_bucket,
        "MODELRAIL_ARTIFACT_BUCKET": settings.artifact_bucket,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "MODELRAIL_REGION": settings.region,
        "MODELRAIL_CODE_VERSION": settings.code_version,
        "MODELRAIL_STAGING_PORT": str(settings.staging_port),
        "MODELRAIL_MAX_EVENT_AGE_S": str(settings.max_event_age_s),
    }
    return env


class LocalStagingDeployer:
    """Implements the ``Deployer`` port with staging server processes on this machine.

    ``service_env`` adds environment variables to every server it starts (limits,
    workers: see ``ServiceSettings`` and ``serving.server``).
    """

    def __init__(
        self,
        settings: Settings,
        artifacts: BlobStore,
        *,
        service_env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.settings = settings
        self.artifacts = artifacts  # where the versions it serves are registered
        self.host = host
        self.service_env = dict(service_env or {})
        self.state_dir = settings.home / "run" / "staging"
        # Unix socket paths are limited to ~100 bytes: a deep home keeps them in /tmp.
        self.socket_dir = self.state_dir
        if len(str(self.state_dir)) > 80:
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
            self.socket_dir = Path(tempfile.gettempdir()) / f"modelrail-{digest}"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- the port -----------------------------------------------------------------
    def current(self) -> Deployment | None:
        record = self._live_record()
        return record.deployment() if record else None

    def deploy(self, model: str, version: int) -> Deployment:
        with self._lock():
            previous = self._live_record()
            revision = self._next_revision(version)
            candidate = self._start(model, version, revision, previous)
            try:
                self._await_ready(candidate)
                self._smoke(candidate)
            except DeploymentFailed:
                self._terminate(candidate.pid)
                self._cleanup(candidate)
                raise
            self._write_record(candidate)
            if previous is not None:
                self._terminate(previous.pid)
                self._cleanup(previous)
            return candidate.deployment()

    def stop(self) -> None:
        """Stop the server this deployer's state names (gracefully, by process group)."""
        with self._lock():
            record = self._live_record()
            if record is not None:
                self._terminate(record.pid)
                self._cleanup(record)
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / _STATE).unlink()

    # -- steps --------------------------------------------------------------------
    def _start(self, model: str, version: int, revision: str, previous: _Record | None) -> _Record:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        shared = self._shared_listener(previous)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        number = revision.split("-")[-2]
        private_path = self.socket_dir / f"{number}.sock"
        handoff_path = self.socket_dir / f"{number}.handoff"
        log_path = self.state_dir / f"{revision}.log"
        for path in (private_path, handoff_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        private.bind(str(private_path))
        private.listen(128)
        fds = (shared.fileno(), private.fileno())
        env = {
            **os.environ,
            **settings_env(self.settings),
            "MODELRAIL_MODEL_NAME": model,
            "MODELRAIL_MODEL_VERSION": str(version),
            "MODELRAIL_REQUIRE_MODEL": "1",
            "MODELRAIL_BIND": ",".join(f"fd://{fd}" for fd in fds),
            "MODELRAIL_HANDOFF_SOCKET": str(handoff_path),
            "MODELRAIL_PROC_NAME": f"modelrail-staging {revision}",
            **self.service_env,
        }
        env.pop("MODELRAIL_MODEL_ALIAS", None)
        try:
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "modelrail.serving.server"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=fds,
                    start_new_session=True,
                    close_fds=True,
                )
        finally:
            shared.close()  # the server holds its own duplicates now
            private.close()
        self._children[process.pid] = process
        return _Record(
            process.pid,
            revision,
            model,
            version,
            self._port_of(previous),
            str(private_path),
            str(handoff_path),
            str(log_path),
        )

    def _shared_listener(self, previous: _Record | None) -> socket.socket:
        if previous is not None:
            from modelrail.serving import handoff

            try:
                listeners = handoff.fetch(Path(previous.handoff_socket))
            except OSError as exc:
                raise DeploymentFailed(
                    f"the running staging server ({previous.revision}) did not hand over "
                    f"its socket: {exc}"
                ) from exc
            for extra in listeners[1:]:
                extra.close()
            return listeners[0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.settings.staging_port))
        except OSError as exc:
            listener.close()
            raise DeploymentFailed(
                f"cannot listen on {self.host}:{self.settings.staging_port}: {exc}"
            ) from exc
        listener.listen(2048)
        return listener

    def _port_of(self, previous: _Record | None) -> int:
        return previous.port if previous is not None else self.settings.staging_port

    def _await_ready(self, candidate: _Record) -> None:
        from modelrail.smoke import unix_pool

        pool = unix_pool(Path(candidate.private_socket))
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self._alive(candidate.pid):
                raise DeploymentFailed(
                    f"staging server {candidate.revision} exited before it was ready: "
                    f"{self._log_tail(candidate)}",
                    {"revision": candidate.revision, "log": candidate.log},
                )
            with contextlib.suppress(Exception):
                if pool.request("GET", "/readyz", timeout=2.0).status == 200:
                    return
            time.sleep(_POLL_S)
        raise DeploymentFailed(
            f"staging server {candidate.revision} was not ready within "
            f"{_READY_TIMEOUT_S:.0f} s: {self._log_tail(candidate)}"
        )

    def _smoke(self, candidate: _Record) -> None:
        from modelrail.registry import Registry
        from modelrail.smoke import smoke_test

        manifest = Registry(self.artifacts).manifest(candidate.model, candidate.version)
        examples = manifest.get("examples") or []
        if not examples:
            raise DeploymentFailed(
                f"{candidate.model} v{candidate.version} has no examples "
                "in its manifest to smoke-test with"
            )
        smoke_test(
            candidate.deployment().url,
            candidate.model,
            candidate.version,
            examples,
            unix_socket=Path(candidate.private_socket),
        )

    # -- processes ----------------------------------------------------------------
    def _alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(pid)

    def _terminate(self, pid: int) -> None:
        """SIGTERM the master, wait for it; SIGKILL the process group after the timeout.

        Only the master is signalled, as Cloud Run signals a container's first process:
        it first tells its workers to close kept-alive connections after their next
        answer, then stops them (``serving.server``), so no client of the shared port
        sends a request on a connection that is being closed."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            child = self._children.get(pid)
            if child is not None:
                child.wait(timeout=5)
        self._children.pop(pid, None)

    def _cleanup(self, record: _Record) -> None:
        for path in (record.private_socket, record.handoff_socket):
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()

    # -- state --------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "deploy.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_record(self) -> _Record | None:
        try:
            record = _Record(**orjson.loads((self.state_dir / _STATE).read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        return record if self._alive(record.pid) else None

    def _write_record(self, record: _Record) -> None:
        path = self.state_dir / _STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(dataclasses.asdict(record), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    def _next_revision(self, version: int) -> str:
        counter = self.state_dir / "revision-counter"
        number = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(number))
        return f"{self.settings.staging_service}-{number:05d}-v{version}"

    def _log_tail(self, record: _Record, lines: int = 15) -> str:
        try:
            text = Path(record.log).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text[-lines:])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"
