"""``modelrail up --emulators``, ``modelrail down`` and ``modelrail status``."""

from __future__ import annotations

import dataclasses
import shlex
import sys

import click
import orjson

from modelrail.kernel.errors import ModelrailError
from modelrail.localcloud.emulators import EmulatorMissing, missing_emulators
from modelrail.localcloud.stack import STARTUP_TIMEOUT_S, Stack, StackState
from modelrail.settings.process import Settings


def _exports(state: StackState) -> str:
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in state.env.items())


def _print_endpoints(state: StackState, stack: Stack) -> None:
    env = state.env
    settings = stack.settings
    click.echo(f"  Pub/Sub emulator     {env['PUBSUB_EMULATOR_HOST']}")
    click.echo(f"  Cloud Storage        {env['STORAGE_EMULATOR_HOST']}")
    click.echo(f"  Cloud Run API        {env['MODELRAIL_RUN_API_ENDPOINT']}")
    for name, port in state.ports.items():
        if name.startswith("function-"):
            click.echo(f"  {name:<20} http://127.0.0.1:{port}")
    click.echo(
        f"  staging servers      one per model, from port {settings.staging_port} "
        "(after a deploy; `modelrail models` lists them)"
    )
    click.echo(
        f"  buckets              gs://{settings.data_bucket}  gs://{settings.artifact_bucket}"
    )
    click.echo(f"  logs                 {stack.logs}")


@click.command()
@click.option("--emulators", is_flag=True, help="Run the cloud graph on the local emulators.")
@click.option("--free-ports", is_flag=True, help="Pick free ports instead of the fixed defaults.")
@click.option("--timeout", "timeout_s", type=float, default=STARTUP_TIMEOUT_S, show_default=True)
@click.option(
    "--dask-workers",
    type=click.IntRange(min=0),
    default=None,
    help="Run a Dask scheduler and this many workers for models that train on Dask "
    "(default: MODELRAIL_STACK_DASK_WORKERS, else 0).",
)
def up(emulators: bool, free_ports: bool, timeout_s: float, dask_workers: int | None) -> None:
    """Start the local cloud: Pub/Sub emulator, fake-gcs-server, Cloud Run, functions."""
    if not emulators:
        raise click.UsageError(
            "say `modelrail up --emulators` (embedded mode needs no stack: `modelrail demo`)"
        )
    problem = missing_emulators()
    if problem:
        click.echo(problem, err=True)
        sys.exit(3)
    settings = Settings.from_env()
    if dask_workers is not None:
        settings = dataclasses.replace(settings, stack_dask_workers=dask_workers)
    stack = Stack(settings)
    was_running = stack.running()
    try:
        state = stack.up(free_ports=free_ports, timeout_s=timeout_s)
    except (EmulatorMissing, ModelrailError) as exc:
        click.echo(f"modelrail up failed: {exc}", err=True)
        sys.exit(1)
    if was_running:
        click.echo("The emulator stack is already up:")
    else:
        click.echo(f"The emulator stack is up ({state.ready_s} s), project {state.project}:")
    _print_endpoints(state, stack)
    click.echo("\nPoint gcloud, the Python clients and modelrail at it:\n")
    click.echo(_exports(state))
    click.echo(
        "\nthen, for example:\n"
        f"  gcloud storage cp data.csv gs://{stack.settings.data_bucket}/uploads/MODEL/data.csv\n"
        "  gcloud pubsub topics publish retrain-requested "
        """--message '{"schema_version": 1, "event_type": "retrain-requested", """
        """"model": "MODEL", "request_id": "r1"}'"""
    )


@click.command()
def down() -> None:
    """Stop everything `modelrail up --emulators` started, and the staging server."""
    stack = Stack(Settings.from_env())
    stopped = stack.down()
    click.echo("stopped: " + ", ".join(stopped) if stopped else "nothing was running")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--env", "as_env", is_flag=True, help="Print the exports for a shell (eval).")
def status(as_json: bool, as_env: bool) -> None:
    """Show what the emulator stack runs, and where."""
    stack = Stack(Settings.from_env())
    state = stack.state()
    rows = stack.status()
    if as_env:
        if state is None:
            raise click.ClickException("the emulator stack is not up")
        click.echo(_exports(state))
        return
    if as_json:
        body = {"up": stack.running(), "processes": rows, "env": dict(state.env) if state else {}}
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    if state is None:
        click.echo("the emulator stack is not up (start it with `modelrail up --emulators`)")
        return
    click.echo(f"emulator stack ({'up' if stack.running() else 'degraded'}), {stack.dir}")
    for row in rows:
        mark = click.style("✔", fg="green") if row["alive"] else click.style("✘", fg="red")
        pid = row["pid"] if row["pid"] is not None else "-"
        click.echo(f"  {mark} {row['name']:<26} pid {pid!s:<8} port {row['port']}")
