"""The local staging supervisor: ``python -m modelrail.localcloud.supervisor``.

One long-lived process per local staging service. It owns the stable public port and
forwards each connection, byte for byte, to the current server, a granian server on a
private unix socket. It owns those servers too: each runs in its own process group
and dies with the supervisor (``PR_SET_PDEATHSIG``), and its workers die with it.

A rollout is one connection to the control socket (JSON lines), so that it ends with
its caller: ``start`` (waits for any other rollout, saying so every second, then
starts the candidate on a new unix socket and names it), then ``switch`` (new
connections go to the candidate, the previous server is stopped gracefully) or
``abort``. A caller that disconnects before ``switch`` (killed mid-rollout) gets its
candidate stopped. A candidate whose master dies is found out at once: its process
group is killed (no stray worker) and ``switch`` is refused. ``status`` names the
supervisor's pid and the current server; ``stop`` stops it and the supervisor.

A production rollout may split the traffic before its switch (a canary): ``split``
with a percentage sends that share of new connections to the candidate and the rest to
the current server, and resets both servers' counts; ``stats`` answers each one's
requests, server errors (5xx) and p99 latency since. The supervisor reads those from
the answers it forwards (each HTTP/1.1 response's status line and length, ``_Responses``).
``switch`` then gives the candidate all the traffic; ``abort``, or the caller going
away, gives it all back to the current server, and stops the candidate.

With ``--reconcile-every`` it also converges what it serves to the registry's staging
alias (``reconcile_staging``): at start, then on that schedule, so a deploy killed
between its switch and its alias move, or a server killed, is repaired without
anyone running a command.

When the server closes a connection while its client is still sending (it answered a
request it refused before the request's end), the supervisor half-closes towards the
client and reads what the client still sends for a while before it closes (a
lingering close): the client reads the answer, not a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import click
import orjson

from modelrail.serving.server import die_with_parent

_STOP_TIMEOUT_S = 20.0  # the server's graceful timeout (8 s) plus margin
_CHUNK = 65536
# How often a caller waiting for its turn to roll out hears that it waits: well within
# its read timeout (LocalStagingDeployer's answer_timeout_s).
_WAITING_EVERY_S = 1.0
# A client still sending when its server closed is read (and ignored) for this long, as
# web servers' lingering close does, so that it reads the answer instead of a reset.
_LINGER_IDLE_S = 2.0
_LINGER_MAX_S = 30.0


# The latencies a server's counts keep (its p99 is taken over these).
_LATENCIES_KEPT = 100_000
# A response head longer than this is not parsed: the connection is counted no further.
_MAX_HEAD = 65536


@dataclasses.dataclass
class Counts:
    """What a server answered since its counts were last reset."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = dataclasses.field(
        default_factory=lambda: deque(maxlen=_LATENCIES_KEPT)
    )

    def add(self, status: int, latency_ms: float) -> None:
        self.requests += 1
        self.errors += status >= 500
        self.latencies_ms.append(latency_ms)

    def describe(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None
        return {"requests": self.requests, "errors": self.errors, "p99_ms": p99}


class _Responses:
    """Counts the HTTP/1.1 responses in what a server sends back on one connection:
    each one's status, and how long after its request's first byte it began. A response
    with no length it can follow (chunked) ends the counting of that connection."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.head = b""
        self.body_left = 0
        self.counting = True
        self.request_started: float | None = None

    def request(self) -> None:
        if self.request_started is None:
            self.request_started = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        while chunk and self.counting:
            if self.body_left:
                skipped = min(self.body_left, len(chunk))
                self.body_left -= skipped
                chunk = chunk[skipped:]
                continue
            self.head += chunk
            chunk = b""
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                self.counting = len(self.head) <= _MAX_HEAD
                return
            head, chunk, self.head = self.head[:end], self.head[end + 4 :], b""
            self._response(head)

    def _response(self, head: bytes) -> None:
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            self.counting = False
            return
        status = int(parts[1])
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines)
        }
        if status < 200:  # 100 Continue: the final answer follows
            return
        started = self.request_started or time.monotonic()
        self.counts.add(status, (time.monotonic() - started) * 1000.0)
        self.request_started = None
        length = fields.get(b"content-length", b"0")
        if b"chunked" in fields.get(b"transfer-encoding", b"") or not length.isdigit():
            self.counting = False
        self.body_left = int(length) if length.isdigit() else 0


@dataclasses.dataclass
class Backend:
    """One granian server: its master's pid (= its process group) and its socket."""

    process: asyncio.subprocess.Process
    revision: str
    model: str
    version: int
    socket: Path
    log: Path
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    counts: Counts = dataclasses.field(default_factory=Counts)

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.process.pid,
            "revision": self.revision,
            "model": self.model,
            "version": self.version,
            "socket": str(self.socket),
            "log": str(self.log),
        }


class Supervisor:
    def __init__(
        self,
        port: int,
        state_dir: Path,
        socket_dir: Path,
        *,
        model: str,
        reconcile_every_s: float | None = None,
        alias: str = "staging",
    ) -> None:
        self.port = port
        self.model = model
        self.alias = alias
        self.state_dir = state_dir
        self.socket_dir = socket_dir
        self.reconcile_every_s = reconcile_every_s
        # Set by "stop" and on the way out: ends the reconciliation loop and refuses
        # new rollouts (a loop's pass must not start a server as the supervisor stops).
        self.stopping = threading.Event()
        self.current: Backend | None = None
        self.candidate: Backend | None = None
        # A canary: the candidate given ``canary_percent`` of new connections.
        self.canary: Backend | None = None
        self.canary_percent = 0.0
        self.rollout = asyncio.Lock()
        self.done = asyncio.Event()

    # -- forwarding ---------------------------------------------------------------
    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.current
        canary = self.canary
        if canary is not None and random.random() * 100.0 < self.canary_percent:
            backend = canary
        try:
            if backend is None:
                return
            # A bare socket, not a stream pair: a failed send (the server closed while
            # the client was still sending) must not discard the answer it sent first.
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.setblocking(False)
            with upstream:
                try:
                    await asyncio.get_running_loop().sock_connect(upstream, str(backend.socket))
                except OSError:
                    return
                responses = _Responses(backend.counts)
                request = asyncio.ensure_future(_send_requests(reader, upstream, responses))
                await _send_answers(upstream, writer, responses)  # until the server closes
                client_done = request.done() and not request.cancelled() and request.result()
                if not client_done:
                    # The server closed while the client may still be sending (it
                    # answered a request it refused before its end: 431, 413): let the
                    # client finish, discarding what it sends, so that closing does not
                    # reset the connection under the answer it has not read yet.
                    request.cancel()
                    await _linger(reader, writer)
        finally:
            writer.close()

    # -- servers ------------------------------------------------------------------
    async def start(self, request: dict[str, Any]) -> Backend:
        counter = self.state_dir / "revision-counter"
        number = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(number))
        revision = f"{request['service']}-{number:05d}-v{request['version']}"
        socket_path = self.socket_dir / f"{number}.sock"
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        log = self.state_dir / f"{revision}.log"
        env = {**request["env"], "MODELRAIL_BIND": f"unix:{socket_path}"}
        with log.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                request.get("module", "modelrail.serving.server"),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                process_group=0,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )
        backend = Backend(process, revision, request["model"], request["version"], socket_path, log)
        asyncio.get_running_loop().create_task(self._watch(backend))
        return backend

    async def _watch(self, backend: Backend) -> None:
        await backend.process.wait()
        # Its workers die with their master; the group kill covers any that did not yet.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(backend.process.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            backend.socket.unlink()
        if self.current is backend:
            self.current = None
        if self.canary is backend:  # a canary that died gets no more traffic
            self.canary = None
        backend.exited.set()

    async def stop_backend(self, backend: Backend) -> None:
        """SIGTERM the master (it drains, then stops); SIGKILL its group after a deadline."""
        with contextlib.suppress(ProcessLookupError):
            backend.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(backend.exited.wait(), _STOP_TIMEOUT_S)
        if not backend.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(backend.process.pid, signal.SIGKILL)
            await backend.exited.wait()

    # -- control ------------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            request = orjson.loads(line)
            operation = request.get("op")
            if operation == "status":
                await _reply(
                    writer,
                    {
                        "supervisor": os.getpid(),
                        **{
                            role: backend.describe() if backend else None
                            for role, backend in (
                                ("current", self.current),
                                ("candidate", self.candidate),
                            )
                        },
                        # A canary's share of new connections, while one is split.
                        "split": self.canary_percent if self.canary is not None else None,
                    },
                )
            elif operation == "stop":
                self.stopping.set()  # no rollout starts from now on, the loop's included
                async with self.rollout:
                    if self.current is not None:
                        await self.stop_backend(self.current)
                await _reply(writer, {"stopped": True})
                self.done.set()
            elif operation == "start" and self.stopping.is_set():
                await _reply(writer, {"error": "the staging supervisor is stopping"})
            elif operation == "start":
                await self._await_turn(writer)
                try:
                    await self._rollout(request, reader, writer)
                finally:
                    self.rollout.release()
        except ConnectionError:
            pass  # the caller went away; _rollout has stopped its candidate
        finally:
            writer.close()

    async def _await_turn(self, writer: asyncio.StreamWriter) -> None:
        """Take the rollout lock, telling a caller that waits behind other rollouts that
        it waits (``{"waiting": ...}`` lines), so that its read timeout tells a
        supervisor that stopped answering from a long queue."""
        turn = asyncio.ensure_future(self.rollout.acquire())
        try:
            while not turn.done():
                done, _ = await asyncio.wait({turn}, timeout=_WAITING_EVERY_S)
                if not done:
                    await _reply(writer, {"waiting": "another rollout"})
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.rollout.release()
            turn.cancel()
            raise

    async def _rollout(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(0)  # let an end of file that came with the request be seen
        if reader.at_eof():
            return  # its caller went away while it waited (timed out, killed): start nothing
        candidate = self.candidate = await self.start(request)
        try:
            await self._decide(candidate, reader, writer)
        finally:
            self.candidate = None
            # Whatever ended the rollout before the switch (the caller gone before it
            # read the candidate, a broken connection), the candidate does not stay.
            if self.current is not candidate and not candidate.exited.is_set():
                await self.stop_backend(candidate)

    async def _decide(
        self, candidate: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _reply(writer, {"candidate": candidate.describe()})
        try:
            decision = await self._split(candidate, reader, writer)
        finally:
            self.canary, self.canary_percent = None, 0.0
        if decision and orjson.loads(decision).get("op") == "switch":
            if candidate.exited.is_set():
                await _reply(writer, {"error": f"{candidate.revision} exited before the switch"})
                return
            previous, self.current = self.current, candidate
            if previous is not None:
                await self.stop_backend(previous)
            await _reply(writer, {"switched": candidate.describe()})
            return
        await self.stop_backend(candidate)
        with contextlib.suppress(ConnectionError):
            await _reply(writer, {"aborted": candidate.revision})

    async def _split(
        self, candidate: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        """Answer a canary's ``split`` and ``stats`` until the rollout's decision (its
        line: ``switch``, ``abort``; empty when the caller went away)."""
        while True:
            line = await reader.readline()
            request = orjson.loads(line) if line else {}
            operation = request.get("op")
            if operation == "split":
                if candidate.exited.is_set():
                    await _reply(writer, {"error": f"{candidate.revision} exited"})
                    continue
                for backend in (self.current, candidate):
                    if backend is not None:
                        backend.counts = Counts()
                self.canary, self.canary_percent = candidate, float(request["percent"])
                await _reply(writer, {"split": self.canary_percent})
            elif operation == "stats":
                await _reply(
                    writer,
                    {
                        "candidate": candidate.counts.describe(),
                        "current": self.current.counts.describe() if self.current else None,
                        "exited": [
                            backend.revision
                            for backend in (self.current, candidate)
                            if backend is not None and backend.exited.is_set()
                        ]
                        + ([] if self.current is not None else ["current"]),
                    },
                )
            else:
                return line

    async def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        public = await asyncio.start_server(
            self.forward, "127.0.0.1", self.port, backlog=2048, reuse_address=True
        )
        control_path = self.socket_dir / "supervisor.sock"
        with contextlib.suppress(FileNotFoundError):
            control_path.unlink()
        control = await asyncio.start_unix_server(self.control, str(control_path))
        os.chmod(control_path, 0o600)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.done.set)
        print(f"{self.alias} supervisor on 127.0.0.1:{self.port}", flush=True)
        if self.reconcile_every_s is not None:
            threading.Thread(
                target=reconcile_staging,
                args=(self.stopping, self.reconcile_every_s, self.model, self.alias),
                name="reconcile",
                daemon=True,
            ).start()
        await self.done.wait()
        self.stopping.set()
        public.close()
        control.close()
        if self.current is not None:
            await self.stop_backend(self.current)
        with contextlib.suppress(FileNotFoundError):
            control_path.unlink()


def reconcile_staging(
    stop: threading.Event, every_s: float, model: str, alias: str = "staging"
) -> None:
    """The supervisor's reconciliation loop (``modelrail.service.reconcile.Reconciler``): what
    it serves converges to the ``alias`` (staging, production: the service's own) of the
    registry its servers load from, on start and every ``every_s``, until ``stop``.
    Embedded mode's: in emulator mode the control plane starts its supervisor without
    it and reconciles its Cloud Run service itself."""
    from modelrail.adapters.local.staging import LocalStagingDeployer
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.kernel import logs
    from modelrail.service.reconcile import Reconciler
    from modelrail.settings.process import Settings

    logs.configure()
    try:
        settings = Settings.from_env()
        container = bootstrap(settings)
        reconciler = Reconciler(
            model,
            registry=container.registry,
            leases=container.leases,
            # This supervisor, over its own control socket (a rollout like any other);
            # never another supervisor started in its place as this one stops.
            deployer=LocalStagingDeployer(settings, model, start_supervisor=False, role=alias),
            holder=f"reconcile:{alias}-supervisor:{os.getpid()}",
            alias=alias,
        )
    except Exception:  # it serves on without the loop; its log says why
        logging.getLogger(__name__).exception("no reconciliation: the settings did not load")
        return
    reconciler.run(stop, every_s)


async def _send_requests(
    reader: asyncio.StreamReader, upstream: socket.socket, responses: _Responses
) -> bool:
    """Copy what the client sends to the server, then half-close towards the server;
    True if the client's end came, False if either side failed first."""
    loop = asyncio.get_running_loop()
    try:
        while chunk := await reader.read(_CHUNK):
            responses.request()
            await loop.sock_sendall(upstream, chunk)
        upstream.shutdown(socket.SHUT_WR)
    except (ConnectionError, OSError):
        return False
    return True


async def _send_answers(
    upstream: socket.socket, writer: asyncio.StreamWriter, responses: _Responses
) -> None:
    """Copy what the server sends to the client until the server closes, counting its
    answers."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await loop.sock_recv(upstream, _CHUNK):
            responses.feed(chunk)
            writer.write(chunk)
            await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A lingering close: end what this side sends, then read and discard what the
    client still sends until it stops, is idle for ``_LINGER_IDLE_S`` or
    ``_LINGER_MAX_S`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LINGER_MAX_S
    with contextlib.suppress(ConnectionError, OSError, TimeoutError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        while (remaining := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(_CHUNK), min(_LINGER_IDLE_S, remaining)):
                return


async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    writer.write(orjson.dumps(body) + b"\n")
    await writer.drain()


@click.command()
@click.option("--port", type=int, required=True, help="The public port on 127.0.0.1.")
@click.option("--state-dir", type=click.Path(path_type=Path), required=True)
@click.option("--socket-dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", required=True, help="The model whose service this is.")
@click.option(
    "--alias",
    type=click.Choice(["staging", "production"]),
    default="staging",
    show_default=True,
    help="The service, and the alias it converges to.",
)
@click.option(
    "--reconcile-every",
    "reconcile_every_s",
    type=float,
    default=None,
    help="Converge what is served to the staging alias this often (seconds).",
)
def main(
    port: int,
    state_dir: Path,
    socket_dir: Path,
    model: str,
    alias: str,
    reconcile_every_s: float | None,
) -> None:
    """Own a model's local staging (or production) port and its servers."""
    supervisor = Supervisor(
        port, state_dir, socket_dir, model=model, reconcile_every_s=reconcile_every_s, alias=alias
    )
    asyncio.run(supervisor.run())


if __name__ == "__main__":
    main()
