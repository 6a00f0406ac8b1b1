"""What every ``modelrail`` command shares: the settings and the container it acts on
(``Cli``), how it fails, and the options several commands take."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.models import Definition, upload_prefix
from modelrail.domain.runs import RunSummary, StageRecord
from modelrail.service.container import Container
from modelrail.settings.process import UNVERSIONED, Settings


def echo_stage(record: StageRecord) -> None:
    """A stage's progress line: its mark, its time, its outcome in short."""
    status = record.status
    mark = {
        "succeeded": click.style("✔", fg="green"),
        "skipped": click.style("-", fg="yellow"),
    }.get(status, click.style("✘", fg="red"))
    detail = ""
    if status == "failed":
        detail = (record.error or {}).get("message", "")
    elif record.output:
        detail = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.output.items()
            if not isinstance(v, dict) and not k.endswith("_uri")
        )
    click.echo(f"  {mark} {record.stage:<16} {record.duration_s:>7.2f} s  {detail}")


class Cli:
    """What every command shares: settings and the container, acting for ``model``
    (None: the only model installed; ``every_model``: no model in particular)."""

    def __init__(
        self, quiet: bool = False, *, model: str | None = None, every_model: bool = False
    ) -> None:
        self.settings = Settings.from_env()
        self.installation: Container = bootstrap(
            self.settings, observer=None if quiet else echo_stage
        )
        self.container = self.installation
        if not every_model or model is not None:
            self.container = self.installation.for_model(self.installation.models.resolve(model))
            _ = self.container.config  # a broken definition fails here, not mid-run

    def drain(self) -> None:
        """Wait for what this command published (embedded mode: the run happens here)."""
        self.container.bus.drain()

    def upload(self, path: Path, name: str | None = None) -> str:
        object_name = name or path.name
        segments = object_name.split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            raise click.BadParameter(
                f"{object_name!r} is not an object name under "
                f"{upload_prefix(self.container.model)}: use a relative name "
                "without '.' or '..' segments, e.g. 2024-06/prices.csv",
                param_hint="--name",
            )
        data = path.read_bytes()
        key = f"{upload_prefix(self.container.model)}{object_name}"
        store = self.container.storage.bucket(self.settings.data_bucket)
        generation = store.write(key, data, content_type="text/csv")
        click.echo(f"uploaded {path} to gs://{store.bucket}/{key}#{generation}")
        if self.container.upload_notifier is not None:  # Cloud Storage publishes its own
            self.container.upload_notifier(store.bucket, key, generation)
        return f"gs://{store.bucket}/{key}#{generation}"

    def note_code_version(self) -> None:
        """Say so when runs started here record no code version in their lineage."""
        if self.container.runs_here and self.settings.code_version == UNVERSIONED:
            click.echo(
                "note: lineage records code version 'unversioned' (no MODELRAIL_CODE_VERSION, "
                "and the working directory is not a git checkout)"
            )

    def location(self, uri: str) -> str:
        """Where a person opens ``uri`` (``gs://bucket/key``): its file in embedded mode."""
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        if not uri.startswith("gs://") or not key:
            return uri
        path = self.container.storage.bucket(bucket).local_path(key.partition("#")[0])
        return str(path) if path is not None else uri

    def latest_run(self, trigger_key: str) -> RunSummary | None:
        runs = [r for r in self.container.runs.runs() if r.trigger.get("key") == trigger_key]
        return runs[-1] if runs else None

    def add(self, config_path: Path) -> str:
        """Add the model ``config_path`` defines to the installation (or update it)."""
        definition = Definition.from_files(config_path)
        changed = self.installation.models.add(definition)
        state = "added" if changed else "already installed, unchanged:"
        click.echo(f"{state} model {definition.name!r} from {config_path}")
        return definition.name


def fail(message: str) -> None:
    click.echo(click.style(f"error: {message}", fg="red"), err=True)
    sys.exit(1)


# The moments --since and --until take (UTC).
MOMENTS = ["%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]
model_option = click.option(
    "--model", "model", help="The model (may be left out while one is installed)."
)


def window_options(command: Any) -> Any:
    """--hours, or --since and --until: a window of time, as ``_window`` reads it."""
    for option in reversed(
        (
            click.option(
                "--hours",
                type=click.FloatRange(min=0, min_open=True),
                default=24.0,
                show_default=True,
                help="The window: this many hours up to now.",
            ),
            click.option(
                "--since", type=click.DateTime(MOMENTS), help="The window's start instead (UTC)."
            ),
            click.option(
                "--until",
                type=click.DateTime(MOMENTS),
                help="The window's end (UTC; default now).",
            ),
        )
    ):
        command = option(command)
    return command


def window(
    hours: float, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """The window's start and end in UTC: --until (default now) and --since, else the
    --hours before the end."""
    end = until.replace(tzinfo=UTC) if until is not None else datetime.now(UTC)
    start = since.replace(tzinfo=UTC) if since is not None else end - timedelta(hours=hours)
    return start, end
