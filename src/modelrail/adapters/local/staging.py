"""The local Deployer: staging servers on this machine, replaced with no downtime.

Each model has its own staging service: a long-lived supervisor
(``modelrail.localcloud.supervisor``, one per model of a ``MODELRAIL_HOME``) owns the
model's port on 127.0.0.1 and forwards its connections to the current server,
a granian server on a private unix socket. One rollout (``service.reconcile.deploy``)
is start → probe → promote, over one connection to the supervisor:

1. ``start``: the supervisor starts the candidate (``python -m modelrail.serving.server``)
   on a new unix socket, pinned to the version, with ``MODELRAIL_REQUIRE_MODEL=1``: the
   master loads and hash-checks the model before it listens, so a version that
   cannot load exits and never answers; this deployer waits until it is ready;
2. the service layer smoke-tests it on its unix socket;
3. ``promote`` asks for the switch: new connections go to the candidate, and the
   previous server is stopped gracefully (it drains its kept-alive connections
   first); ``discard`` has the candidate stopped, and the previous server keeps
   serving.

The supervisor serialises rollouts, stops the candidate of a caller that went away
before the switch, and owns its servers: none outlives it, and a candidate whose
master dies is refused the switch.

The installation chooses each model's port once, the first time it is needed, and
records it (``StagingPorts``, in the home): the URL a deploy reports is where the
model's supervisor listens, whatever ``MODELRAIL_STAGING_PORT`` (the first port to
choose from) says later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from modelrail.kernel.errors import DeploymentFailed
from modelrail.kernel.ports import Candidate, Deployment
from modelrail.kernel.processes import port_bindable, port_in_use, running
from modelrail.kernel.unix_http import unix_pool, unix_probe
from modelrail.settings.process import Settings
from modelrail.settings.service import ServiceSettings, pin_env

# The services a model has on this machine, each converging to the alias of its name.
STAGING, PRODUCTION = "staging", "production"
_READY_TIMEOUT_S = 60.0
_START_TIMEOUT_S = 30.0
_POLL_S = 0.02
# How long the supervisor may leave a request unanswered before the deploy fails: it
# answers at once, or says every second that the rollout waits its turn.
ANSWER_TIMEOUT_S = 30.0
# Answers that come after stopping a server (switch, abort, stop) may also take the
# server's graceful stop (the supervisor's _STOP_TIMEOUT_S).
_STOP_ALLOWANCE_S = 25.0


class StagingPorts:
    """Each model's port for one service (``role``: staging, production), chosen once
    and recorded in the home (``<role>-ports.json``): the first port from ``first`` up
    that no other model holds, no other service recorded and nothing listens on."""

    def __init__(self, home: Path, first: int, role: str = STAGING) -> None:
        self.home = home
        self.path = home / f"{role}-ports.json"
        self.first = first

    def recorded(self) -> dict[str, int]:
        try:
            ports: dict[str, int] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return ports

    def port(self, model: str) -> int:
        """The model's port, chosen and recorded now if it has none."""
        known = self.recorded().get(model)
        if known is not None:
            return known
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / "staging-ports.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes never choose the same port
            ports = self.recorded()
            if model not in ports:
                taken = set(ports.values()) | self._others()
                port = self.first
                # Bindable, not merely unanswered: a client's connection may hold a
                # port nothing listens on, and the server's bind would then fail.
                while port in taken or not port_bindable(port):
                    port += 1
                ports[model] = port
                temporary = self.path.with_suffix(".tmp")
                temporary.write_bytes(orjson.dumps(ports, option=orjson.OPT_SORT_KEYS))
                temporary.replace(self.path)
            return ports[model]

    def _others(self) -> set[int]:
        """The ports the home's other services recorded."""
        taken: set[int] = set()
        for path in self.home.glob("*-ports.json"):
            if path != self.path:
                taken.update(orjson.loads(path.read_bytes()).values())
        return taken


def staging_deployers(settings: Settings) -> list[LocalStagingDeployer]:
    """The staging and production services of every model this home has chosen a port
    for."""
    return [
        LocalStagingDeployer(settings, model, role=role)
        for role in (STAGING, PRODUCTION)
        for model in sorted(StagingPorts(settings.home, 0, role).recorded())
    ]


class LocalStagingDeployer:
    """Implements the ``Deployer`` port with the local staging supervisor.

    ``service_env`` adds environment variables to every server it starts (limits,
    workers: see ``ServiceSettings``). Every request to the supervisor waits at most
    ``answer_timeout_s`` for its answer: a supervisor that does not answer (paused,
    wedged) fails the deploy with that reason instead of hanging it. The supervisor it
    starts converges what it serves to the staging alias every ``reconcile_every_s``
    (None, the default: never; ``modelrail.service.reconcile``). With
    ``start_supervisor`` false it only talks to a running supervisor (the supervisor's
    own loop uses it so). ``role`` names the service: ``staging``, or ``production``,
    whose supervisor, state and port are its own and which converges to the
    ``production`` alias.
    """

    def __init__(
        self,
        settings: Settings,
        model: str,
        *,
        service_env: dict[str, str] | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        reconcile_every_s: float | None = None,
        start_supervisor: bool = True,
        role: str = STAGING,
        server_module: str | None = None,
    ) -> None:
        if role not in (STAGING, PRODUCTION):
            raise ValueError(f"a local service is staging or production, not {role!r}")
        self.role = role
        # The program each server runs: the settings' (MODELRAIL_LOCAL_SERVER_MODULE),
        # which every process of the installation reads alike, unless named here.
        self.server_module = server_module or settings.local_server_module
        self.settings = settings
        self.service_env = dict(service_env or {})
        self.answer_timeout_s = answer_timeout_s
        self.reconcile_every_s = reconcile_every_s
        self.start_supervisor = start_supervisor
        self.model = model
        self.state_dir = settings.home / "run" / role / model
        # Unix socket paths are limited to ~100 bytes: a deep home keeps them in /tmp.
        self.socket_dir = self.state_dir
        if len(str(self.state_dir)) > 80:
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
            self.socket_dir = Path(tempfile.gettempdir()) / f"modelrail-{digest}"
        self.control_path = self.socket_dir / "supervisor.sock"

    @functools.cached_property
    def port(self) -> int:
        """The model's port, chosen and recorded when it is first needed."""
        settings = self.settings
        first = settings.staging_port if self.role == STAGING else settings.production_port
        return StagingPorts(settings.home, first, self.role).port(self.model)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the port -----------------------------------------------------------------
    def current(self) -> Deployment | None:
        current = self.servers().get("current")
        return self._deployment(current) if current else None

    def servers(self) -> dict[str, Any]:
        """The supervisor's servers: ``current`` and a rollout's ``candidate`` (each
        with its master's ``pid``, which is its process group), if any; none when no
        supervisor listens. One that does not answer is ``DeploymentFailed`` with that
        reason: "serving nothing" would start a rollout it cannot take either."""
        try:
            return self._request({"op": "status"})
        except (ConnectionRefusedError, FileNotFoundError):
            return {}

    def start(self, model: str, version: int) -> Candidate:
        """A server for ``version`` on its private socket, ready; the connection to the
        supervisor stays open until ``promote`` or ``discard``: should this process
        die first, the supervisor stops the candidate when it closes."""
        if model != self.model:
            raise ValueError(f"this is {self.model}'s staging, not {model}'s")
        # The service's settings as this process has them (its environment, then
        # service_env), pinned to the version: each is parsed here, and written whole.
        service = ServiceSettings.from_env(
            {**os.environ, **self.service_env, **pin_env(model, version)}
        )
        name = self.settings.service(self.role, model)
        env = {
            **os.environ,
            **self.service_env,
            **self.settings.to_env(),
            **dataclasses.replace(service, require_model=True, service_name=name).to_env(),
        }
        env.pop("MODELRAIL_MODEL_ALIAS", None)
        if self.role == PRODUCTION:
            # The candidate production mirrors requests to with [production] shadow
            # on (serving.shadow): the model's staging server, on its own port.
            env.setdefault("MODELRAIL_SHADOW_URL", LocalStagingDeployer(self.settings, model).url)
        request = {
            "op": "start",
            "service": name,
            "model": model,
            "version": version,
            "env": env,
            "module": self.server_module,
        }
        control = self._connect()
        stream = control.makefile("rwb")
        try:
            control.settimeout(self.answer_timeout_s)
            started = self._exchange(stream, request)
            if "candidate" not in started:
                raise DeploymentFailed(f"no rollout: {started.get('error')}")
            server = started["candidate"]
            self._await_ready(server)
        except BaseException:
            _close(control, stream)
            raise
        return Candidate(
            model, version, server["revision"], self.url,
            unix_probe(Path(server["socket"])), handle=(control, stream, server),
        )  # fmt: skip

    def promote(self, candidate: Candidate) -> Deployment:
        control, stream, server = candidate.handle
        try:
            control.settimeout(self.answer_timeout_s + _STOP_ALLOWANCE_S)
            answer = self._exchange(stream, {"op": "switch"})
        finally:
            _close(control, stream)
        if "switched" not in answer:
            raise DeploymentFailed(
                f"{self.role} server {server['revision']} was not switched to: "
                f"{answer.get('error')}: {_log_tail(server['log'])}",
                {"revision": server["revision"], "log": server["log"]},
            )
        return self._deployment(answer["switched"])

    def split(self, candidate: Candidate, percent: float) -> None:
        """Send ``percent`` of new connections to the candidate, the rest to the current
        server, and start both servers' counts afresh (a canary's step)."""
        _, stream, server = candidate.handle
        answer = self._exchange(stream, {"op": "split", "percent": percent})
        if "split" not in answer:
            raise DeploymentFailed(
                f"{self.role} server {server['revision']} got no traffic: {answer.get('error')}"
            )

    def observe(self, candidate: Candidate) -> dict[str, Any]:
        """Each server's counts since the last ``split``: ``new`` (the candidate's) and
        ``old`` (the current server's), each ``requests``, ``errors`` (5xx) and
        ``p99_ms``; ``exited`` names those that died."""
        _, stream, _ = candidate.handle
        answer = self._exchange(stream, {"op": "stats"})
        return {"new": answer["candidate"], "old": answer["current"], "exited": answer["exited"]}

    def discard(self, candidate: Candidate) -> str:
        control, stream, _ = candidate.handle
        try:
            control.settimeout(self.answer_timeout_s + _STOP_ALLOWANCE_S)
            self._exchange(stream, {"op": "abort"})
        finally:
            _close(control, stream)
        return "the server before it still serves"

    def stop(self) -> None:
        """Stop the supervisor and its server (gracefully), freeing the port."""
        with contextlib.suppress(OSError, DeploymentFailed):
            self._request({"op": "stop"}, timeout_s=self.answer_timeout_s + _STOP_ALLOWANCE_S)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    # -- steps --------------------------------------------------------------------
    def _await_ready(self, candidate: dict[str, Any]) -> None:
        pool = unix_pool(Path(candidate["socket"]))
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not running(candidate["pid"]):
                raise DeploymentFailed(
                    f"{self.role} server {candidate['revision']} exited before it was ready: "
                    f"{_log_tail(candidate['log'])}",
                    {"revision": candidate["revision"], "log": candidate["log"]},
                )
            with contextlib.suppress(Exception):
                if pool.request("GET", "/readyz", timeout=2.0).status == 200:
                    return
            time.sleep(_POLL_S)
        raise DeploymentFailed(
            f"{self.role} server {candidate['revision']} was not ready within "
            f"{_READY_TIMEOUT_S:.0f} s: {_log_tail(candidate['log'])}"
        )

    # -- the supervisor -----------------------------------------------------------
    def _request(
        self, request: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        control = self._try_connect()
        if control is None:
            raise ConnectionRefusedError(f"no staging supervisor at {self.control_path}")
        with control, control.makefile("rwb") as stream:
            control.settimeout(timeout_s or self.answer_timeout_s)
            return self._exchange(stream, request)

    def _exchange(self, stream: Any, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request``, return its answer (skipping "waiting" lines); the
        connection's timeout bounds each read."""
        try:
            return _exchange(stream, request)
        except TimeoutError:
            raise DeploymentFailed(
                f"the staging supervisor ({self.control_path}) did not answer "
                f"{request['op']!r} within {self.answer_timeout_s:g} s: it is paused or "
                f"wedged; its log: {_log_tail(str(self.state_dir / 'supervisor.log'))}",
                {"supervisor": str(self.control_path), "op": request["op"]},
            ) from None

    def _connect(self) -> socket.socket:
        """A connection to the supervisor, started first if none runs (under a lock
        file, so that concurrent deployers start one)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "supervisor.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            control = self._try_connect()
            if control is not None:
                return control
            if not self.start_supervisor:
                raise DeploymentFailed(f"no staging supervisor at {self.control_path}")
            return self._start_supervisor()

    def _try_connect(self) -> socket.socket | None:
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            control.connect(str(self.control_path))
        except OSError:
            control.close()
            return None
        return control

    def _start_supervisor(self) -> socket.socket:
        log = self.state_dir / "supervisor.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "modelrail.localcloud.supervisor",
                    "--port", str(self.port),
                    "--model", self.model,
                    "--alias", self.role,
                    "--state-dir", str(self.state_dir),
                    "--socket-dir", str(self.socket_dir),
                    *(
                        ["--reconcile-every", str(self.reconcile_every_s)]
                        if self.reconcile_every_s is not None
                        else []
                    ),
                ],
                env={**os.environ, **self.settings.to_env()},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it outlives this process: it owns the port
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentFailed(
                    f"the staging supervisor of {self.model} could not start on port "
                    f"{self.port}: {_log_tail(str(log))}"
                )
            control = self._try_connect()
            if control is not None:
                return control
            time.sleep(_POLL_S)
        # It never answered: it must not bind the port later, behind this failure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise DeploymentFailed(f"the staging supervisor did not start: {_log_tail(str(log))}")

    def _deployment(self, backend: dict[str, Any]) -> Deployment:
        return Deployment(
            url=self.url,
            revision=backend["revision"],
            model=backend["model"],
            version=backend["version"],
        )


def _exchange(stream: Any, request: dict[str, Any]) -> dict[str, Any]:
    stream.write(orjson.dumps(request) + b"\n")
    stream.flush()
    while True:
        line = stream.readline()
        if not line:
            raise DeploymentFailed("the staging supervisor closed the connection")
        answer: dict[str, Any] = orjson.loads(line)
        if "waiting" not in answer:  # it waits its turn behind another rollout
            return answer


def _close(control: socket.socket, stream: Any) -> None:
    """Close a rollout's connection to the supervisor now (a failed or finished
    rollout's must not wait for its file to be collected)."""
    with contextlib.suppress(OSError):
        stream.close()
    control.close()


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:])
