"""Processes modelrail starts on this machine, and the state files that find them again.

Every server runs in its own process group (``start_new_session``) so that stopping it
also stops whatever it forked (the emulator's shell script execs a JVM; a server
forks workers). A process is remembered with its start time as the kernel reports it,
so a later ``modelrail down`` never signals an unrelated process that reused the PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson


def write_json(path: Path, body: Any) -> None:
    """Replace the JSON state file ``path`` whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """A server this stack started: enough to find it again from another process."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a PID reuse apart
    port: int | None
    log: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(body["name"]),
            pid=int(body["pid"]),
            start_ticks=int(body["start_ticks"]),
            port=None if body.get("port") is None else int(body["port"]),
            log=str(body["log"]),
        )

    def alive(self) -> bool:
        """The recorded process still runs (not a zombie, not a reused PID)."""
        return _process_state(self.pid, self.start_ticks) not in (None, "Z")

    def group_alive(self) -> bool:
        """Any process of its group still runs."""
        return bool(group_members(self.pid)) or self.alive()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def _process_state(pid: int, ticks: int) -> str | None:
    fields = _stat_fields(pid)
    if fields is None or (ticks and int(fields[19]) != ticks):
        return None
    return fields[0]


def running(pid: int) -> bool:
    """``pid`` is a live process (not a zombie)."""
    return _process_state(pid, 0) not in (None, "Z")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """A server could bind ``host:port`` now: nothing listens there, and no socket
    (a client's connection from that port, one bound and not listening) holds it,
    which ``port_in_use`` cannot see."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    port: int | None = None,
    cwd: Path | None = None,
) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start ``argv`` as the leader of a new process group, logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = ProcessRecord(name, process.pid, start_ticks(process.pid), port, str(log_path))
    return record, process


def stop_groups(
    records: Sequence[ProcessRecord],
    *,
    timeout_s: float = 10.0,
    first_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """Signal the records' process groups together, SIGKILL what is left after ``timeout_s``.

    Only a group whose leader is still the recorded process (same start time), or one
    whose leader is gone but whose members remain, is signalled.
    """
    live = [r for r in records if r.alive() or group_members(r.pid)]
    for record in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, first_signal)
    if wait_until(lambda: not any(r.group_alive() for r in live), timeout_s):
        return
    for record in live:
        if record.group_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
    wait_until(lambda: not any(r.group_alive() for r in live), 5.0)


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
