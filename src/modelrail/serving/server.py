"""The staging service's server: ``python -m modelrail.serving.server``.

granian (a Rust HTTP/1.1 server with a WSGI interface) answers the requests;
``docs/benchmarks.md`` shows why: on these cores gunicorn's Python HTTP handling alone
caps a do-nothing app below the throughput the service needs, and costs more per
request than the prediction. The behaviour the service had under gunicorn is kept:

- **Preloaded app**: the master verifies and loads the model (``create_app``) before
  any worker exists, then forks the workers, which inherit it. With
  ``MODELRAIL_REQUIRE_MODEL=1`` a version that cannot load ends the process before it
  accepts anything.
- **One accept queue**: the master opens (or inherits, ``MODELRAIL_BIND=fd://N``) a
  single listening socket that every worker accepts from, instead of granian's
  per-worker ``SO_REUSEPORT`` sockets, so that a successor can take it over
  (``handoff``) and retiring this server loses nothing queued.
- **Private unix socket**: a unix socket in ``MODELRAIL_BIND`` (the local deployer's
  readiness and smoke-test channel) is answered by a small stdlib server thread in
  the master, with the same app, so it reaches this server and never its predecessor.
- **Graceful SIGTERM** (to the master, as Cloud Run sends it): for
  ``MODELRAIL_DRAIN_S`` (1 s) every answer closes its connection, so kept-alive
  clients reconnect instead of racing the close; then granian stops accepting, lets
  in-flight requests finish within ``MODELRAIL_GRACEFUL_TIMEOUT_S`` and exits.
- **Ports**: Vertex AI's ``AIP_HTTP_PORT``, else Cloud Run's ``PORT``, else 8080.

``modelrail.serving.wsgi:create_app()`` under gunicorn (``gunicorn_conf``) still works
and gives the same answers; it is the slower of the two.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelrail.errors import ConfigError

_BACKLOG = 2048


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """How the process serves: listeners, workers, threads, shutdown grace."""

    binds: tuple[str, ...]
    workers: int
    threads: int
    graceful_timeout_s: int
    drain_s: float
    header_timeout_s: float
    handoff_socket: Path | None
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        port = env.get("AIP_HTTP_PORT") or env.get("PORT") or "8080"
        try:
            settings = cls(
                binds=tuple(env.get("MODELRAIL_BIND", f"0.0.0.0:{port}").split(",")),
                workers=int(env.get("MODELRAIL_WORKERS") or len(os.sched_getaffinity(0))),
                # One thread per worker: the request path holds the GIL for all but the
                # LightGBM call, so a second thread only adds switching (measured).
                threads=int(env.get("MODELRAIL_THREADS") or 1),
                # Cloud Run sends SIGTERM and kills 10 s later.
                graceful_timeout_s=int(env.get("MODELRAIL_GRACEFUL_TIMEOUT_S") or 8),
                drain_s=float(env.get("MODELRAIL_DRAIN_S") or 1.0),
                # granian has no per-request timeout for WSGI apps; the request timeout
                # bounds the wait for a request's headers (granian allows 1 ms to 60 s).
                header_timeout_s=min(
                    max(float(env.get("MODELRAIL_REQUEST_TIMEOUT_S") or 30), 0.001), 60.0
                ),
                handoff_socket=Path(env["MODELRAIL_HANDOFF_SOCKET"])
                if env.get("MODELRAIL_HANDOFF_SOCKET")
                else None,
                log_level=env.get("MODELRAIL_SERVER_LOGLEVEL", "warning").lower(),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid staging server setting: {exc}") from exc
        if settings.workers < 1 or settings.threads < 1:
            raise ConfigError("MODELRAIL_WORKERS and MODELRAIL_THREADS must be >= 1")
        return settings


class SharedFlag:
    """One byte of memory shared with the forked workers: ``value`` is 0 or 1."""

    def __init__(self) -> None:
        import mmap

        self._memory = mmap.mmap(-1, 1)  # anonymous and shared: fork keeps it shared

    @property
    def value(self) -> int:
        return self._memory[0]

    @value.setter
    def value(self, flag: int) -> None:
        self._memory[0] = 1 if flag else 0


@dataclasses.dataclass
class Listeners:
    """Where the workers accept: one shared socket, or (``shared is None``) a socket of
    their own each on ``address``; and the unix sockets the master answers."""

    address: tuple[str, int]
    shared: socket.socket | None
    private: list[socket.socket]


def open_listeners(binds: Sequence[str], *, share: bool) -> Listeners:
    """Open (or adopt) the listeners ``binds`` names.

    An inherited socket (``fd://N``) or ``share`` (a successor may take the socket
    over) gives the workers one accept queue. Otherwise granian gives each worker its
    own ``SO_REUSEPORT`` socket, so that the kernel spreads new connections evenly:
    from one shared queue a worker can take a whole burst of connections before the
    other wakes, and leave it idle for as long as they stay open (measured: 8
    connections of 100-instance requests ran at 0.8k or 1.4k requests/s depending on
    how they happened to fall)."""
    tcp: list[tuple[str, int, socket.socket | None]] = []
    unix: list[socket.socket] = []
    for raw_bind in binds:
        bind = raw_bind.strip()
        if bind.startswith("unix:"):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(bind.removeprefix("unix:"))
            listener.listen(128)
        elif bind.startswith("fd://"):
            listener = socket.socket(fileno=int(bind.removeprefix("fd://")))
        else:
            bracketed_host, _, port_text = bind.rpartition(":")
            address = (bracketed_host.strip("[]"), int(port_text))
            if not share:
                tcp.append((*address, None))
                continue
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(_BACKLOG)
        if listener.family == socket.AF_UNIX:
            unix.append(listener)
        else:
            listener.set_inheritable(True)
            tcp.append((*listener.getsockname()[:2], listener))
    if len(tcp) != 1:
        raise ConfigError(f"MODELRAIL_BIND must hold exactly one TCP listener, got {binds}")
    host, port, shared = tcp[0]
    return Listeners((host, port), shared, unix)


def serve_private(listeners: Sequence[socket.socket], app: Callable[..., Any]) -> None:
    """Answer the unix listeners from this process (a daemon thread each), with
    wsgiref's request handling (imported here: only the local deployer needs it)."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """The app logs requests itself."""

    class UnixWSGIServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def __init__(self, listener: socket.socket) -> None:
            super().__init__("", QuietHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            self.base_environ = {
                "SERVER_NAME": "localhost",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PORT": "0",
                "REMOTE_HOST": "",
                "CONTENT_LENGTH": "",
                "SCRIPT_NAME": "",
            }

        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            connection, _ = self.socket.accept()
            return connection, ("127.0.0.1", 0)  # wsgiref expects an address pair

        def get_app(self) -> Callable[..., Any]:
            return app

    for listener in listeners:
        server = UnixWSGIServer(listener)
        threading.Thread(target=server.serve_forever, name="modelrail-private", daemon=True).start()


def _log_config() -> dict[str, Any]:
    from modelrail.logs import dict_config

    return dict_config(
        {
            "_granian": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "granian.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        }
    )


def build_server(settings: ServerSettings, listeners: Listeners, draining: SharedFlag) -> Any:
    """A granian multi-process server on ``listeners``; on SIGTERM it sets ``draining``
    (shared with the workers) and stops ``drain_s`` later."""
    from granian._granian import SocketHolder
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.mp import MPServer

    shared = listeners.shared

    class ServiceServer(MPServer):
        def _init_shared_socket(self) -> None:
            if shared is None:
                super()._init_shared_socket()  # type: ignore[no-untyped-call]
                return
            # granian binds one SO_REUSEPORT socket per worker on Linux; an inherited
            # socket, or one a successor will inherit, must be the workers' only one.
            listener_fd = shared.fileno()
            self._ssp = None
            descriptor = os.dup(listener_fd)
            self._sfd = descriptor  # type: ignore[assignment]
            # The stub omits the constructor granian uses for inherited sockets.
            self._shd = SocketHolder(descriptor, False, _BACKLOG)  # type: ignore[call-arg,assignment]
            self._sso = socket.socket(fileno=descriptor)
            self._sso.set_inheritable(True)

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # Answers carry "Connection: close" for drain_s first: a client on a
            # kept-alive connection then reconnects (to the shared queue, which a
            # successor serves) instead of sending into a connection being closed.
            stop: Callable[..., None] = super().signal_handler_interrupt
            if draining.value or settings.drain_s <= 0:
                stop(*args, **kwargs)
                return
            draining.value = 1
            threading.Timer(settings.drain_s, stop).start()

    host, port = listeners.address
    server = ServiceServer(
        "modelrail.serving",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.header_timeout_s * 1000), keep_alive=True
        ),
        websockets=False,
        workers=settings.workers,
        blocking_threads=settings.threads,
        backlog=_BACKLOG,
        workers_kill_timeout=settings.graceful_timeout_s,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=_log_config(),
    )
    return server


def main() -> None:
    # Before lib_lightgbm is loaded: one OpenMP thread, so forking after the load is
    # safe and each worker's predictions stay on its own core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import multiprocessing

    # Workers must be forks of the master: they inherit the loaded model and socket.
    multiprocessing.set_start_method("fork", force=True)
    settings = ServerSettings.from_env(os.environ)

    from modelrail.serving import importguard
    from modelrail.serving.app import create_service

    importguard.install()
    # The model first, the port after (as gunicorn preloads): a TCP startup probe
    # passes only once the version is verified and loaded.
    app = create_service()
    listeners = open_listeners(settings.binds, share=settings.handoff_socket is not None)
    private = listeners.private
    draining = SharedFlag()
    app.draining = draining
    server = build_server(settings, listeners, draining)
    if settings.handoff_socket is not None and listeners.shared is not None:
        from modelrail.serving import handoff

        handoff.serve(settings.handoff_socket, [listeners.shared])
    spawn_workers = server._spawn_workers

    def spawn_then_answer_privately(*args: Any, **kwargs: Any) -> None:
        spawn_workers(*args, **kwargs)
        if private:
            serve_private(private, app)
            private.clear()  # once: respawned workers do not restart it

    server._spawn_workers = spawn_then_answer_privately

    server.serve(target_loader=lambda *_: app, wrap_loader=False)
    sys.exit(0)


if __name__ == "__main__":
    main()
