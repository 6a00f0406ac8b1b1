"""The staging service's server: ``python -m modelrail.serving.server``.

granian (a Rust HTTP/1.1 server) serves the Flask app (``app.StagingService``)
through its RSGI interface (``StagingService.__rsgi__``: bodies are awaited under a
deadline, so a slow client holds no thread, then Flask answers);
``docs/benchmarks.md`` shows why: on these cores a Python HTTP server's own request
handling caps a do-nothing app below the throughput the service needs. Only granian's
public API is used (its constructor, ``serve`` with a target loader, and the SIGTERM
handler it documents as overridable):

- **A short tail**: uvloop runs each worker's event loop, with asyncio's tasks.
  granian's Rust tasks cost less CPU per request but kept each request's coroutine
  and futures alive for as long as its connection stayed open; the growing pile made
  full collections take up to 230 ms, which was the p99 of a kept-alive client
  (``docs/benchmarks.md``). The body deadline does not depend on the task
  implementation (``app.BodyDeadlines``).
- **Preloaded app**: the master verifies and loads the model (``create_app``)
  before any worker exists, freezes what it loaded out of the collector's reach
  (``gc.freeze``), then forks the workers, which inherit it. With
  ``MODELRAIL_REQUIRE_MODEL=1`` a version that cannot load ends the process before it
  listens.
- **One listener**: ``MODELRAIL_BIND`` is ``host:port`` (Cloud Run, Vertex AI: each
  worker gets its own ``SO_REUSEPORT`` socket, granian's default, which spreads
  connections evenly) or ``unix:<path>`` (the local supervisor's backends).
- **Graceful SIGTERM** (to the master, as Cloud Run sends it): for
  ``MODELRAIL_DRAIN_S`` (1 s) every answer closes its connection, so kept-alive
  clients reconnect instead of racing the close; then granian stops accepting, lets
  in-flight requests finish within ``MODELRAIL_GRACEFUL_TIMEOUT_S`` and exits.
- **Workers never outlive their master**: each asks the kernel for SIGKILL when its
  parent dies (``die_with_parent``), so a killed master leaves no worker serving.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from modelrail.settings.service import ServiceSettings

_BACKLOG = 2048
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``); exit at once if the parent is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


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


def _log_config() -> dict[str, Any]:
    from modelrail.kernel.logs import dict_config

    return dict_config(
        {
            "_granian": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "granian.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        }
    )


def build_server(settings: ServiceSettings, draining: SharedFlag) -> Any:
    """A granian multi-process server on ``settings.bind``; on SIGTERM it sets
    ``draining`` (shared with the workers) and stops ``drain_s`` later."""
    from granian.constants import HTTPModes, Interfaces, Loops, TaskImpl
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import MPServer

    class ServiceServer(MPServer):
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # Answers carry "Connection: close" for drain_s first: a client on a
            # kept-alive connection then reconnects (locally, through the supervisor,
            # to the successor) instead of sending into a connection being closed.
            stop: Callable[..., None] = super().signal_handler_interrupt
            if draining.value or settings.drain_s <= 0:
                stop(*args, **kwargs)
                return
            draining.value = 1
            threading.Timer(settings.drain_s, stop).start()

    host, port, uds = settings.listener()
    return ServiceServer(
        "modelrail.serving",
        address=host,
        port=port,
        uds=uds,
        uds_permissions=0o600 if uds else None,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        # asyncio's tasks: under granian's Rust tasks each request left its coroutine,
        # context and futures alive on its kept-alive connection (7.5k objects of each
        # per collection here), so full collections grew to 250k objects and 230 ms:
        # the p99 tail of docs/benchmarks.md.
        task_impl=TaskImpl.asyncio,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.header_timeout_s * 1000), keep_alive=True
        ),
        websockets=False,
        workers=settings.workers,
        backlog=_BACKLOG,
        workers_kill_timeout=settings.graceful_timeout_s,
        log_level=LogLevels(settings.server_log_level),
        log_dictconfig=_log_config(),
    )


def main() -> None:
    # Before lib_lightgbm is loaded: one OpenMP thread, so forking after the load is
    # safe and each worker's predictions stay on its own core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import multiprocessing

    # Workers must be forks of the master: they inherit the loaded model.
    multiprocessing.set_start_method("fork", force=True)

    from modelrail.serving import importguard
    from modelrail.serving.app import create_app

    importguard.install()
    # The model first, the port after: a TCP startup probe passes only once the
    # version is verified and loaded.
    app = create_app()
    # What the master loaded (the model, the libraries) lives as long as the process:
    # frozen, the collector never walks it again, and the forked workers' pages of it
    # stay shared.
    gc.collect()
    gc.freeze()
    draining = SharedFlag()
    app.draining = draining
    server = build_server(app.settings, draining)
    master = os.getpid()

    def load_in_worker(*_: Any) -> Any:
        # Called in each forked worker: threads do not survive the fork.
        die_with_parent(master)
        return app

    server.serve(target_loader=load_in_worker, wrap_loader=False)
    sys.exit(0)


if __name__ == "__main__":
    main()
