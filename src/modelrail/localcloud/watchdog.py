"""The emulator stack's watchdog: restarts a member of the stack that died.

``modelrail up --emulators`` starts it last, as a member of its own
(``python -m modelrail.localcloud.watchdog``, logging to ``<home>/stack/logs/watchdog.log``).
Every second it reads ``<home>/stack/state.json`` and starts again, through the same
``Stack.members`` / ``spawn`` / ``prepare`` that ``up`` uses, any member whose recorded
process is gone: the emulators (bootstrapped again: the Pub/Sub emulator forgets its
topics, subscriptions and messages in flight), the control plane (whose own
reconciliation then converges staging to the alias) and each stage's
functions-framework process. One line per restart goes to its log.

A member that dies again within ``STABLE_S`` of its restart waits before the next one,
1 s, then 2, 4, ... up to ``MAX_BACKOFF_S``, so a crash loop does not spin. The
watchdog stops when the state file goes (``modelrail down`` stops it first, then the
rest) or names another watchdog. Nothing restarts the watchdog itself: ``modelrail up``
run again does, as it restores any member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType

import click

from modelrail.kernel.processes import ProcessRecord, stop_groups
from modelrail.localcloud.stack import STARTUP_TIMEOUT_S, WATCHDOG, Stack
from modelrail.settings.process import Settings

CHECK_EVERY_S = 1.0
STABLE_S = 30.0  # up this long after a restart: the next death restarts at once again
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: the watchdog exits where it is."""


@dataclasses.dataclass
class Backoff:
    """When a member may be restarted next: at once, unless its last restart did not
    hold for ``STABLE_S``; then after a delay that doubles each time."""

    restarts: int = 0  # in a row, each within STABLE_S of the one before
    started_at: float = float("-inf")
    not_before: float | None = None

    def due(self, now: float) -> bool:
        """The member is dead at ``now``: may it be started now?"""
        if self.not_before is None:
            if now - self.started_at >= STABLE_S:
                self.restarts = 0
            delay = 0.0 if self.restarts == 0 else FIRST_BACKOFF_S * 2 ** (self.restarts - 1)
            self.not_before = now + min(delay, MAX_BACKOFF_S)
        return now >= self.not_before

    def started(self, now: float) -> None:
        self.restarts += 1
        self.started_at = now
        self.not_before = None


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} watchdog: {message}", flush=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM/SIGINT wait until a spawned process is recorded: `down` then finds it."""
    held = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def restart(
    stack: Stack,
    dead: ProcessRecord,
    children: dict[str, subprocess.Popen[bytes]],
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> None:
    """Start the member ``dead`` records again, as `up` starts it (its process kept in
    ``children``), and wait until it is ready (``StartupFailed`` if it is not)."""
    state = stack.state()
    if state is None:
        return
    [member] = [m for m in stack.members(state.ports, state.env) if m.name == dead.name]
    # What is left of its process group (a forked worker) may hold its port.
    stop_groups([dead], timeout_s=5.0)
    with _signals_held():
        record, process = stack.spawn(member)
        stack.replace(record)
        children[member.name] = process
    stack.wait_ready([member], {member.name: process}, timeout_s)
    stack.prepare(member.name, state.ports, state.env)


def watch(stack: Stack, *, every_s: float = CHECK_EVERY_S) -> None:
    """Restart dead members until the stack's state says this watchdog is done."""
    backoffs: dict[str, Backoff] = {}
    children: dict[str, subprocess.Popen[bytes]] = {}  # the members this watchdog started
    while True:
        for child in children.values():
            child.poll()  # reaps one that died: a zombie is no longer "alive" either way
        state = stack.state()
        if state is None:
            if not stack.state_file.exists():
                _log("the stack's state is gone (modelrail down): stopping")
                return
        else:
            mine = [r for r in state.processes if r.name == WATCHDOG]
            if mine and mine[0].pid != os.getpid() and mine[0].alive():
                _log(f"another watchdog (pid {mine[0].pid}) watches this stack: stopping")
                return
            for record in state.processes:
                if record.name == WATCHDOG or record.alive():
                    continue
                backoff = backoffs.setdefault(record.name, Backoff())
                now = time.monotonic()
                if not backoff.due(now):
                    continue
                backoff.started(now)
                began = time.monotonic()
                try:
                    restart(stack, record, children)
                except Exception as exc:  # the watchdog outlives any one failed restart
                    _log(f"{record.name} (pid {record.pid}) died; its restart failed: {exc}")
                    continue
                restarted = next(
                    (r for r in (stack.state() or state).processes if r.name == record.name),
                    record,
                )
                _log(
                    f"{record.name} (pid {record.pid}) died; restarted as pid {restarted.pid}, "
                    f"ready in {time.monotonic() - began:.1f} s "
                    f"(restart {backoff.restarts} in a row)"
                )
        time.sleep(every_s)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


@click.command()
@click.option("--every", "every_s", type=float, default=CHECK_EVERY_S, show_default=True)
def main(every_s: float) -> None:
    """Restart the emulator stack's members when they die."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stack = Stack(Settings.from_env())
    _log(f"watching {stack.state_file} every {every_s:g} s")
    try:
        watch(stack, every_s=every_s)
    except Stopped as exc:
        _log(f"stopped ({exc})")
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
