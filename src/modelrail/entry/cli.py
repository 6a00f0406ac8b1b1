"""The ``modelrail`` command line: run the pipeline locally and look at what it did.

What every command shares is ``entry.console``; production's commands are
``entry.production``, the local stack's ``entry.stack``: each added to ``main`` here."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from modelrail.domain.runs import RunSummary, failure_reasons
from modelrail.entry.console import (
    MOMENTS,
    Cli,
    fail,
    model_option,
    window,
    window_options,
)
from modelrail.entry.history_text import promotion_in_full, promotion_listed
from modelrail.entry.history_text import short as _short
from modelrail.entry.production import (
    approve,
    promote,
    promotions,
    rollout,
    shadow,
    sweep_production,
)
from modelrail.entry.stack import down, status, up
from modelrail.kernel import logs, resources
from modelrail.kernel.errors import ModelrailError
from modelrail.kernel.events import RetrainRequested, utcnow

if TYPE_CHECKING:
    from modelrail.service.reconcile import Convergence

DEMO_DATA = Path("data/penguins.csv")
DEMO_CONFIG = "pipeline.toml"  # the bundled penguins model, at the checkout's root
CARD = "card.html"


def _actor(cli: Cli, by: str | None) -> str:
    """Who takes a decision recorded in the history: ``--by``, else the settings' user
    (``MODELRAIL_ACTOR``, what a CI job or a cloud shell sets, else the OS user)."""
    return by or cli.settings.user


def _run_model(cli: Cli, run_id: str, model: str | None) -> None:
    """Refuse a ``--model`` that is not the run's (the run names its model)."""
    run = cli.container.runs.run(run_id)
    if model is not None and run is not None and run.model != model:
        fail(f"run {run_id} is a run of model {run.model!r}, not {model!r}")


# How long a command waits, without a new record, for a run another process carries
# (the deploy subscription's ack deadline: no stage's delivery holds longer).
CARRIED_QUIET_S = 600.0
_POLL_S = 0.5


def _await_carried(cli: Cli, run: RunSummary) -> RunSummary:
    """The run once it ended, when another process carries it.

    Embedded mode delivers everything this command published before it reports: a run
    that has not ended then lost a message (this bus dead-lettered one: reported at
    once), or another process is doing its work (the same request id from two
    commands: this one's deliveries found the stage held and were acknowledged). That
    one is waited for on its records while its newest is younger than
    ``CARRIED_QUIET_S``; a run quiet for longer was left by a process that died.
    """
    bus = cli.container.bus
    dead_letter = cli.container.topology.dead_letter_topic
    if any(topic == dead_letter for topic, _ in getattr(bus, "history", [])):
        return run
    announced = False
    while run.outcome in ("running", "registered"):
        if _quiet_s(run) > CARRIED_QUIET_S:
            return run  # nothing has recorded for longer than a delivery holds: lost
        if not announced:
            click.echo(f"run {run.run_id} is being carried by another process: waiting for it")
            announced = True
        time.sleep(_POLL_S)  # polling interval: the wait is on the run's records
        run = cli.latest_run(run.trigger.get("key", "")) or run
    return run


def _quiet_s(run: RunSummary) -> float:
    """How long ago the run's newest record was written."""
    stamps = [
        datetime.fromisoformat(record.finished_at or record.started_at)
        for record in run.stages.values()
    ]
    return (datetime.now(UTC) - max(stamps)).total_seconds() if stamps else 0.0


def _report_run(cli: Cli, run: RunSummary | None) -> None:
    if run is None:
        fail("no run was recorded for this trigger")
        return
    if cli.container.runs_here and run.outcome in ("running", "registered"):
        run = _await_carried(cli, run)
    click.echo(f"run {run.run_id}: {run.outcome}")
    for stage in run.stages.values():
        if stage.status == "failed":
            error = stage.error or {}
            click.echo(f"  {stage.stage} failed ({error['kind']}): {error['message']}")
            for problem in error.get("details", {}).get("problems", []):
                rows = f" rows {problem['rows']}" if problem.get("rows") else ""
                values = ", ".join(repr(v) for v in problem.get("examples", ())[:5])
                shown = f"; values {values}" if values else ""
                click.echo(f"    - [{problem['check']}] {problem['message']}{rows}{shown}")
            if error.get("details", {}).get("report_uri"):
                click.echo(f"  report: {cli.location(error['details']['report_uri'])}")
    if run.outcome in ("failed", "rejected"):
        sys.exit(1)
    _say_why_it_passed(cli, run)
    if cli.container.runs_here and run.outcome in ("running", "registered"):
        # Every message has been delivered: a run that has not ended lost one.
        last = list(run.stages)[-1] if run.stages else "its first stage"
        fail(
            f"run {run.run_id} stopped after {last}: a message could not be delivered or "
            f"recorded; see {cli.settings.home / 'dead-letter.jsonl'}"
        )


def _say_why_it_passed(cli: Cli, run: RunSummary) -> None:
    """A passing run's gate in a few lines: its checks, whether it became the champion
    and why, and the drift warnings its data raised."""
    if run.blessed_by is not None:
        by = run.blessed_by
        click.echo(
            f"  gate: rejected; blessed by hand by {by['who']} at {by['at']}: {by['reason']} "
            "(registered and deployed, not the champion)"
        )
        return
    if "evaluate" not in run.stages or run.stages["evaluate"].status != "succeeded":
        return
    verdict = cli.container.runs.report(run.run_id, "evaluation")["verdict"]
    checks = [check["reason"] for check in verdict["checks"]]
    click.echo(f"  gate: {'; '.join(checks) if checks else 'no thresholds configured'}")
    if "judged_by" in verdict:
        said = [*verdict.get("warnings", []), *verdict.get("notes", [])]
        click.echo(f"  judged by {verdict['judged_by']}" + "".join(f"; {s}" for s in said))
    if "promotion" in verdict:
        click.echo(f"  champion: {verdict['promotion']}")
    lineage = run.lineage
    drift = (lineage.drift or {}) if lineage is not None else {}
    warnings = drift.get("warnings", [])
    if warnings:
        shifted = ", ".join(
            f"{w['column']} PSI {w['psi']} (warn above {w['warn']})" for w in warnings
        )
        click.echo(f"  drift: {shifted}")
    if drift.get("accepted"):
        accepted = drift["accepted"]
        click.echo(
            f"  drift past the fail limit is reported, not refused: {accepted['by']} accepted "
            f"contract version {accepted['contract_version']} on this upload"
        )


@click.group()
@click.version_option(package_name="modelrail")
def main() -> None:
    """modelrail: validate, train, evaluate, register and deploy LightGBM models on events."""


@main.command()
@click.option(
    "--data", "data_path", type=click.Path(exists=True, path_type=Path), default=DEMO_DATA
)
def demo(data_path: Path) -> None:
    """Install the bundled penguins model, run the whole pipeline on its dataset and
    call its staging server."""
    installation = Cli(every_model=True)
    model = installation.add(resources.checkout_root() / DEMO_CONFIG)
    cli = Cli(model=model)
    click.echo(f"modelrail demo ({cli.settings.mode} mode, state in {cli.settings.home})")
    cli.note_code_version()
    uri = cli.upload(data_path)
    cli.drain()
    run = cli.latest_run(f"{uri}")
    _report_run(cli, run)
    staging = cli.container.registry.alias(model, "staging")
    if staging is None:
        fail("staging serves no version")
        return
    deployment = cli.container.deployer.current()
    if deployment is None:
        fail("the staging server is not running")
        return
    examples = cli.container.registry.manifest(model, staging.version).examples[:1]
    from modelrail.service.smoke import predict

    response = predict(deployment.url, examples)
    click.echo(
        f"\nversion {staging.version} of {model!r} is registered; "
        f"staging serves it at {deployment.url}"
    )
    click.echo(f"POST {deployment.url}/predict {orjson.dumps({'instances': examples}).decode()}")
    click.echo(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode())
    card = cli.location(cli.container.registry.file_uri(model, staging.version, CARD))
    click.echo(f"\nmodel card: {card}")
    click.echo("runs, versions and cards in a browser: modelrail ui  (http://127.0.0.1:8780)")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Object name under uploads/MODEL/ (default: the file's name).")
@model_option
def upload(path: Path, name: str | None, model: str | None) -> None:
    """Upload a dataset to the model's folder in the data bucket; the upload starts a run."""
    cli = Cli(model=model)
    cli.note_code_version()
    uri = cli.upload(path, name)
    if cli.container.runs_here:
        cli.drain()
        _report_run(cli, cli.latest_run(uri))


@main.command()
@click.option("--request-id", help="Idempotency key: the same id is the same run (default: new).")
@click.option(
    "--data-uri", help="gs://bucket/object[#generation] (default: the model's newest upload)."
)
@click.option("--reason", help="Why, for the run history.")
@model_option
def retrain(
    request_id: str | None, data_uri: str | None, reason: str | None, model: str | None
) -> None:
    """Request a retrain of the model on its newest upload (or on --data-uri)."""
    cli = Cli(model=model)
    cli.note_code_version()
    request = RetrainRequested(
        model=cli.container.model,
        request_id=request_id or uuid.uuid4().hex,
        data_uri=data_uri,
        reason=reason,
        requested_at=utcnow(),
    )
    message_id = cli.container.bus.publish(
        "retrain-requested", orjson.dumps(request.to_body()), {"event_type": request.event_type}
    )
    click.echo(f"published retrain request {request.request_id} (message {message_id})")
    if cli.container.runs_here:
        cli.drain()
        _report_run(cli, cli.latest_run(request.idempotency_key))


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--model", "model", help="Only this model's runs (default: every model's).")
def runs(run_id: str | None, as_json: bool, model: str | None) -> None:
    """Each run: model, trigger, stages, durations, outcome, and why a failed run failed;
    among them, in the order they began, each promotion to production: production's
    move, who proposed and approved it, each rollout step, what came of it. In --json
    each entry's ``kind`` says which (``run`` or ``promotion``).

    With RUN_ID: that run in full (every stage's record, reports, events, lineage); with
    a proposal's id, that promotion in full.
    """
    from modelrail.domain.history import timeline
    from modelrail.service import history

    cli = Cli(quiet=True, model=model, every_model=True)
    names = [cli.container.model] if model else cli.installation.models.names()
    if run_id is not None:
        _show_run(cli, run_id, names, as_json)
        return
    summaries = cli.container.runs.runs(model and cli.container.model)
    promoted = [e for name in names for e in history.promotions(cli.installation, name)]
    entries = timeline(summaries, promoted)
    if as_json:
        shown = [
            {"kind": "run", **e.to_dict()}
            if isinstance(e, RunSummary)
            else {"kind": "promotion", **e}
            for e in entries
        ]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
        return
    if not entries:
        click.echo("no runs yet")
    for entry in entries:
        if isinstance(entry, RunSummary):
            _list_run(entry)
        else:
            click.echo(promotion_listed(entry))


def _list_run(run: RunSummary) -> None:
    trigger = run.trigger
    click.echo(
        f"{run.run_id}  {run.started_at}  {run.model or '(no model)'}  "
        f"{run.outcome:<11} {trigger.get('kind')}: {trigger.get('key')}"
    )
    for name, stage in run.stages.items():
        click.echo(f"    {name:<16} {stage.status:<10} {stage.duration_s:>7.2f} s")
    if run.blessed_by is not None:
        by = run.blessed_by
        click.echo(f"    blessed by hand by {by['who']}: {_short(str(by['reason']))}")
    failure = run.failure
    if failure is not None:
        click.echo(f"    {failure['stage']} failed ({failure['kind']}):")
        for reason in failure["reasons"][:3]:
            click.echo(f"      - {_short(reason)}")
        if len(failure["reasons"]) > 3:
            more = len(failure["reasons"]) - 3
            click.echo(f"      … {more} more: modelrail runs {run.run_id}")


def _show_run(cli: Cli, run_id: str, models: list[str], as_json: bool) -> None:
    from modelrail.service.history import promotion

    runlog = cli.container.runs
    run = runlog.run(run_id)
    if run is None:
        entry = promotion(cli.installation, models, run_id)
        if entry is None:
            fail(f"no run or proposal {run_id!r} (modelrail runs lists them)")
        elif as_json:
            click.echo(orjson.dumps({"kind": "promotion", **entry}, option=orjson.OPT_INDENT_2))
        else:
            click.echo(f"{entry['model']} production promotion {promotion_in_full(entry)}")
        return
    reports = runlog.reports(run_id)
    if as_json:
        records = {name: record.to_json() for name, record in run.stages.items()}
        full = {**run.to_dict(), "records": records, "reports": reports}
        click.echo(orjson.dumps(full, option=orjson.OPT_INDENT_2))
        return
    trigger = run.trigger
    click.echo(f"run {run.run_id}: {run.outcome}")
    click.echo(f"  model     {run.model or '(none: no installed model owned its trigger)'}")
    click.echo(f"  trigger   {trigger.get('kind')}: {trigger.get('key')}")
    for field in ("requested_by", "reason", "commit_sha"):
        if trigger.get(field):
            click.echo(f"  {field:<9} {trigger[field]}")
    lineage_now = run.lineage
    if lineage_now is not None and lineage_now.contract is not None:
        contract = lineage_now.contract
        click.echo(f"  contract  {contract['name']} version {contract['version']}")
    if run.blessed_by is not None:
        by = run.blessed_by
        click.echo(
            f"  blessed   by hand by {by['who']} at {by['at']}: {by['reason']} (the gate "
            "rejected it; registered and deployed, not the champion)"
        )
    click.echo(f"  started   {run.started_at}   total {run.duration_s:.2f} s")
    for name, record in run.stages.items():
        click.echo(
            f"\n  {name}: {record.status}  {record.started_at} → "
            f"{record.finished_at}  ({record.duration_s:.2f} s)"
        )
        if record.memory is not None:
            click.echo(f"    memory: {record.memory}")
        for key, value in record.output.items():
            if not isinstance(value, dict | list):
                shown = cli.location(value) if isinstance(value, str) else value
                click.echo(f"    {key}: {shown}")
        if record.status == "failed":
            error = record.error or {}
            click.echo(f"    failed ({error.get('kind')}): {error.get('message')}")
            for reason in failure_reasons(error):
                click.echo(f"      - {reason}")
        event = record.event
        if event:
            click.echo(f"    published {event['event_type']} (event {event['event_id']})")
    for name in sorted(reports):
        report_uri = runlog.store.uri(f"runs/{run_id}/reports/{name}.json")
        click.echo(f"\n  {name} report: {cli.location(report_uri)}")
    click.echo("\n  lineage:")
    lineage = run.lineage.to_json() if run.lineage is not None else {}
    for line in orjson.dumps(lineage, option=orjson.OPT_INDENT_2).decode().splitlines():
        click.echo(f"    {line}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--model", "model", help="Only this model (default: every model installed).")
def models(as_json: bool, model: str | None) -> None:
    """Each model installed: where its staging service answers and what it says it
    serves there, its versions, aliases, metrics, lineage, and where each version lives
    (its folder in the artifact bucket, its package in Artifact Registry, its Vertex AI
    model version when pipeline.toml turns it on, its model card)."""
    cli = Cli(quiet=True, model=model, every_model=True)
    names = [cli.container.model] if model else cli.installation.models.names()
    result = [_describe_model(cli, name) for name in names]
    if as_json:
        shown = [{k: v for k, v in entry.items() if not k.endswith("_text")} for entry in result]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
        return
    if not result:
        click.echo("no model is installed yet: modelrail init CSV --target COL, or modelrail add")
    for entry in result:
        pointers = ", ".join(
            f"{name} → v{version}" for name, version in sorted(entry["aliases"].items())
        )
        click.echo(f"{entry['model']}  (aliases: {pointers or 'none'})")
        click.echo(f"  staging {entry['staging_url'] or 'not running'}: {entry['served_text']}")
        click.echo(
            f"  production {entry['production_url'] or 'not running'}: {entry['production_text']}"
        )
        for v in entry["versions"]:
            metrics = ", ".join(f"{k}={val:.4f}" for k, val in sorted(v["metrics"].items()))
            lineage, published = v["lineage"], v["published"]
            click.echo(
                f"  v{v['version']:<3} {','.join(v['aliases']) or '-':<18} {metrics}\n"
                f"        data {lineage['data']['uri']}  code {lineage['code']['version']}  "
                f"trigger {lineage['trigger']['kind']}\n"
                f"        stored {v['location']}\n"
                + (
                    f"        published {published['package']} {published['version']}"
                    f"  {published['uri']}\n"
                    if published
                    else "        published not yet\n"
                )
                + (
                    f"        vertex {published['vertex']['model']}"
                    f"@{published['vertex']['version_id']}\n"
                    if published and "vertex" in published
                    else ""
                )
                + f"        card {v['card']}"
            )


def _describe_model(cli: Cli, model: str) -> dict[str, Any]:
    """A model's versions and aliases, and what its staging service says it serves
    (read from the service, and set beside what the staging alias names)."""
    from modelrail.service.smoke import served

    registry = cli.installation.registry
    versions = [
        {
            **summary,
            "location": cli.location(summary["location"]),
            "card": cli.location(registry.file_uri(model, summary["version"], CARD)),
            "manifest": cli.location(registry.manifest_uri(model, summary["version"])),
        }
        for summary in registry.summaries(model)
    ]
    aliases = registry.aliases(model)
    scoped = cli.installation.for_model(model)
    described: dict[str, Any] = {"model": model, "aliases": aliases}
    for role in ("staging", "production"):
        deployer = scoped.deployer if role == "staging" else scoped.production_deployer
        try:
            deployment = deployer.current()
        except ModelrailError as exc:  # a production service the deployment lacks
            if role == "staging":
                raise
            described.update(production_url=None, production_text=f"unknown: {exc}")
            continue
        answer = served(deployment) if deployment is not None else {"status": "not running"}
        described[f"{role}_url"] = deployment.url if deployment is not None else None
        described["served" if role == "staging" else f"{role}_served"] = answer
        described[f"{role}_text"] = _served_text(
            model, role, deployment is not None, answer, aliases.get(role)
        )
    described["served_text"] = described.pop("staging_text")
    return {**described, "versions": versions}


def _served_text(
    model: str, role: str, running: bool, answer: dict[str, Any], named: int | None
) -> str:
    """What a service says it serves, set beside what its alias (``role``) names."""
    serving = (answer.get("model"), answer.get("version"))
    if not running:
        return "nothing is served" + (f" (its alias names v{named})" if named else "")
    if "version" not in answer:
        return f"{answer['status']}: {answer.get('error', '')}".rstrip(": ")
    if serving == (model, named):
        return f"serves {model} v{named}, what its {role} alias names"
    return (
        f"DISAGREES: the service says it serves {serving[0]} v{serving[1]}, "
        f"its {role} alias names {f'v{named}' if named else 'no version'}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@main.command()
@model_option
def serve(model: str | None) -> None:
    """Keep the model's staging server up, serving the version its staging alias names."""
    cli = Cli(quiet=True, model=model)
    model = cli.container.model
    staging = cli.container.registry.alias(model, "staging")
    if staging is None:
        fail("no version is in staging yet: run `modelrail demo` or upload data first")
        return
    deployer = cli.container.deployer
    signal.signal(signal.SIGTERM, _interrupt)  # stopping `serve` stops the server too
    try:
        (convergence,) = _reconcile_staging(cli, [model])
        current = deployer.current()
        if current is None or convergence.status == "failed":
            fail(f"staging could not serve {model} v{staging.version}: {convergence.detail}")
            return
        click.echo(f"staging serves {model} v{current.version} at {current.url} (Ctrl-C stops it)")
        signal.pause()
    except KeyboardInterrupt:
        deployer.stop()


@main.command()
@click.option("--to", "to_version", type=click.IntRange(min=1), help="The version to serve.")
@click.option("--reason", help="Why, for the run history.")
@click.option("--by", "requested_by", help="Who asks (default: the user running this).")
@model_option
def rollback(
    to_version: int | None, reason: str | None, requested_by: str | None, model: str | None
) -> None:
    """Move the model's staging back to the version it served before (or to --to VERSION).

    The version is redeployed and smoke-tested as a deploy is; if the test fails,
    staging keeps serving what it serves now. The rollback is a run in the history.
    """
    from modelrail.service.rollback import rollback as roll_back

    cli = Cli(model=model)
    record = roll_back(
        cli.container,
        to=to_version,
        reason=reason,
        requested_by=requested_by or cli.settings.user,
    )
    if cli.container.runs_here:
        cli.drain()  # embedded mode: its model-deployed reaches the notifier here
    if record.status != "succeeded":
        _report_run(cli, cli.container.runs.run(record.run_id))
        return
    output = record.output
    click.echo(
        f"staging moved from v{output['from_version']} to v{output['to_version']} "
        f"({output['revision']} at {output['url']}); run {record.run_id}"
    )


@main.command()
@window_options
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: staging's.")
@click.option(
    "--every-model",
    is_flag=True,
    help="Every model installed, each its staging version over the same window (the "
    "cloud's scheduled monitor); a model nothing serves yet is named, not failed.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def monitor(
    hours: float,
    since: datetime | None,
    until: datetime | None,
    version: int | None,
    every_model: bool,
    as_json: bool,
    model: str | None,
) -> None:
    """Compare what the model's served version was asked (its prediction log, over
    the last --hours) with what it was trained on: per feature the drift (PSI, with
    the [drift] limits), the out-of-range values and unseen categories; the
    predictions' drift; the volume. The report is kept in the artifact bucket. A drift
    is published as drift-detected, and with [retrain] on_drift starts a retrain."""
    from modelrail.service.monitoring import monitor as run_monitor
    from modelrail.service.monitoring import monitor_every

    if every_model and (model is not None or version is not None):
        raise click.UsageError(
            "--every-model monitors each model's staging version: no --model or --version"
        )
    cli = Cli(quiet=as_json, model=model, every_model=every_model)
    start, end = window(hours, since, until)
    if every_model:
        names = cli.installation.models.names()
        reports = monitor_every(cli.installation, names, since=start, until=end)
    else:
        reports = [run_monitor(cli.container, since=start, until=end, version=version)]
    if as_json:
        if cli.container.runs_here:
            cli.drain()  # embedded mode: the notifier and a retrain run here, before the end
        shown = reports if every_model else reports[0]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
        return
    if every_model and not names:
        click.echo("no model is installed: nothing to monitor")
    for report in reports:
        _show_monitoring(cli, report)
    if cli.container.runs_here:
        cli.drain()  # embedded mode: drift-detected reaches the notifier here


def _show_monitoring(cli: Cli, report: dict[str, Any]) -> None:
    """A monitoring report as a table, or why a model was not monitored."""
    if report.get("monitored") is False:
        click.echo(f"{report['model']}: not monitored: {report['why']}")
        return
    window = report["window"]
    refused = sum(report["refused"].values())
    click.echo(
        f"{report['model']} v{report['version']}, {window['from']} to {window['to']}: "
        f"{report['requests']:,} logged request(s), {report['instances']:,} instance(s), "
        f"{refused:,} refused"
    )
    if not report["instances"]:
        click.echo("  no data: nothing was logged in the window")
    elif not report["judged"]:
        click.echo(
            f"  fewer than {report['min_instances']:,} instances: shown, not judged "
            "(a PSI of so few rows moves by chance)"
        )
    heading = ("feature", "PSI", "status", "missing", "beyond range", "unseen")
    click.echo("  {:<24} {:>8}  {:<8} {:>8} {:>13} {:>8}".format(*heading))
    for row in report["features"]:
        psi = "-" if row["psi"] is None else f"{row['psi']:.4f}"
        click.echo(
            f"  {row['feature']:<24} {psi:>8}  {row['status']:<8} "
            f"{row['missing']:>8.1%} {row['out_of_range']:>13.1%} {row['unseen']:>8.1%}"
        )
    if report["predictions"] is not None:
        predicted = report["predictions"]
        click.echo(f"  {'(predictions)':<24} {predicted['psi']:>8.4f}  {predicted['status']}")
    drifted = report["drifted"]
    click.echo(f"drifted: {', '.join(drifted)}" if drifted else "no feature drifted")
    click.echo(f"report: {report['report_uri']}")
    actions = report["actions"]
    retrain = actions.get("retrain") or {}
    if "drift_detected" in actions:
        click.echo(f"published drift-detected {actions['drift_detected']}")
    if retrain and not retrain["started"]:
        click.echo(f"no retrain on drift: {retrain['why']}")
    elif retrain:
        click.echo(f"retrain on drift {retrain['request_id']}: {retrain['reason']}")
        if cli.container.runs_here:
            cli.drain()
            _report_run(cli, cli.latest_run(f"request:{retrain['request_id']}"))


# -- batch prediction ----------------------------------------------------------------


def _local_parts(path: Path) -> list[Any]:
    """The parts a local input names: the file, or the files under the folder."""
    from modelrail.domain.dataset.stream import upload_format
    from modelrail.kernel.ports import BlobStream
    from modelrail.service.batch import Part

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = [(file, upload_format(file.name)) for file in files]
    return [
        Part(
            str(file.absolute()),
            fmt,
            lambda file=file: BlobStream(str(file), 0, file.stat().st_size, file.open("rb")),  # type: ignore[misc]
        )
        for file, fmt in found
        if fmt is not None and not file.name.startswith(("_", "."))
    ]


@main.command()
@click.option("--input", "source", required=True,
              help="A .csv, .csv.gz or .parquet file, or a folder of them: a local path or "
              "gs://bucket/prefix.")  # fmt: skip
@click.option("--output", "target", required=True,
              help="The folder (local, or gs://bucket/prefix) to write the output to.")  # fmt: skip
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: --alias's.")
@click.option("--alias", default=None, help="The alias whose version scores (default: staging).")
@click.option("--explain", is_flag=True, help="Add each feature's contribution (SHAP values).")
@click.option("--threads", type=click.IntRange(min=1), help="Default: every core.")
@click.option("--cloud", is_flag=True,
              help="Run it as the batch Cloud Run job (parallel tasks over the input's parts); "
              "input and output are then gs:// prefixes.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def predict(
    source: str,
    target: str,
    version: int | None,
    alias: str | None,
    explain: bool,
    threads: int | None,
    cloud: bool,
    as_json: bool,
    model: str | None,
) -> None:
    """Score a file (or a folder of them) with a registered version, as its staging
    service would answer each row: the rows the contract refuses are listed with their
    problems (_refused/), the scored ones written as Parquet with their identifiers,
    and the scored data compared with the version's training data (_drift.json)."""
    import os

    from modelrail.adapters.local.filesystem import FilesystemStore
    from modelrail.composition import batch as batch_job
    from modelrail.kernel.events import BatchRequested
    from modelrail.service import batch

    cli = Cli(quiet=True, model=model)
    container = cli.container
    if cloud:
        if not (source.startswith("gs://") and target.startswith("gs://")):
            fail("--cloud reads and writes buckets: give gs:// --input and --output")
        request = BatchRequested(
            model=container.model, input=source, output=target, version=version, alias=alias,
            explain=explain,
        )  # fmt: skip
        container.bus.publish(
            request.event_type, orjson.dumps(request.to_body()), {"event_type": request.event_type}
        )
        click.echo(f"published batch-requested {request.request_id}: the batch job scores it")
        if container.runs_here:
            cli.drain()  # embedded mode: the job runs here, now
        click.echo(f"the output is complete once {target.rstrip('/')}/{batch.MANIFEST} exists")
        return
    if source.startswith("gs://"):
        parts = batch_job.bucket_parts(container, source)
    elif Path(source).exists():
        parts = _local_parts(Path(source))
    else:
        fail(f"--input {source}: no such file or folder")
    if target.startswith("gs://"):
        output = batch_job.bucket_output(container, target)
    else:
        folder = Path(target).absolute()
        output = batch.Output(FilesystemStore(folder.parent, folder.name), "", str(folder))
    manifest = batch.predict(
        container,
        parts,
        output,
        version=batch.version_to_score(container, version, alias),
        scorer_of=batch_job.scorer_of,
        explain=explain,
        threads=threads or os.cpu_count() or 1,
        source=source,
    )
    if as_json:
        click.echo(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return
    for line in batch.lines(manifest):
        click.echo(line)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--at",
    "at",
    type=click.DateTime(MOMENTS),
    help="Judge the [retrain] schedules as of this moment (UTC, not after now) instead of "
    "now: fires a time a paused or failed sweep missed, if no later time has fired.",
)
@click.option(
    "--timeout-seconds",
    "timeout_s",
    type=click.FloatRange(min=1),
    help="How long this sweep may run (its Cloud Run job's timeout): a production "
    "canary that could not end in time is not started.",
)
def sweep(as_json: bool, at: datetime | None, timeout_s: float | None) -> None:
    """End the runs that can no longer end: a training job that died, a lost message;
    and start the retrains a model's [retrain] schedule names."""
    from modelrail.service.schedules import fire_due
    from modelrail.service.sweep import sweep as sweep_runs

    started = time.monotonic()
    now = datetime.now(UTC)
    moment = now if at is None else at.replace(tzinfo=UTC)
    if moment > now:
        raise click.BadParameter(
            f"{moment.isoformat()} is later than now: a schedule fires when its time has come",
            param_hint="--at",
        )
    cli = Cli(quiet=True, every_model=True)
    failed = sweep_runs(cli.container)
    # One listing of the installation's models for the schedules and the reconciliation.
    names = cli.installation.models.names()
    for due in fire_due(cli.installation, names, moment):
        if due["fired"]:
            said = f"scheduled retrain of {due['model']} ({due['schedule']}, {due['slot']}): "
            click.echo(said + due["request_id"], err=as_json)
        elif due.get("declined"):
            said = f"no scheduled retrain of {due['model']} ({due['schedule']}, {due['slot']}): "
            click.echo(said + due["why"], err=as_json)
    if cli.container.runs_here:
        cli.drain()  # embedded mode: the retrains run, and the failures reach the notifier
    # The scheduled sweep is also the cloud's reconciliation pass: what each model's
    # staging serves converges to its alias (modelrail.service.reconcile), on stderr
    # unless it did something.
    for convergence in _reconcile_staging(cli, names):
        if convergence.status not in ("in_step", "nothing_staged"):
            click.echo(_describe_convergence(convergence), err=as_json)
    deadline = None if timeout_s is None else (timeout_s, started + timeout_s)
    sweep_production(cli, names, as_json, deadline)
    if as_json:
        shown = [record.to_json() for record in failed]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
        return
    for record in failed:
        error = record.error or {}
        stage = f"{record.stage} failed ({error['kind']})"
        click.echo(f"run {record.run_id}: {stage}: {error['message']}")
    click.echo(f"{len(failed)} run(s) ended" if failed else "no run is stuck")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--model", "model", help="Only this model (default: every model installed).")
def reconcile(as_json: bool, model: str | None) -> None:
    """Make each model's staging serve what its alias names (a crash may have left
    another version)."""
    cli = Cli(quiet=True, model=model, every_model=True)
    names = [cli.container.model] if model else cli.installation.models.names()
    convergences = _reconcile_staging(cli, names)
    if as_json:
        shown = [convergence.to_json() for convergence in convergences]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
    else:
        for convergence in convergences:
            click.echo(_describe_convergence(convergence))
    if any(convergence.status == "failed" for convergence in convergences):
        sys.exit(1)


def _reconcile_staging(cli: Cli, models: list[str]) -> list[Convergence]:
    from modelrail.service.reconcile import Reconciler

    convergences = []
    for model in models:
        container = cli.installation.for_model(model)
        reconciler = Reconciler(
            model,
            registry=container.registry,
            leases=container.leases,
            deployer=container.deployer,
        )
        convergences.append(reconciler.reconcile())
    return convergences


def _describe_convergence(convergence: Convergence) -> str:
    return f"{convergence.model}: {_convergence_text(convergence)}"


def _convergence_text(convergence: Convergence) -> str:
    named = f"v{convergence.alias_version}"
    served = (
        f"v{convergence.served_version}" if convergence.served_version is not None else "nothing"
    )
    return {
        "in_step": f"staging serves {named}, what its alias names",
        "converged": f"staging served {served}, its alias names {named}: it serves {named} now",
        "nothing_staged": "staging's alias names no version yet",
        "deferred": f"staging serves {served}, its alias names {named}: a rollout is "
        f"in progress ({convergence.detail})",
        "failed": f"staging did not converge to its alias: {convergence.detail}",
    }[convergence.status]


@main.command()
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8780, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
def ui(port: int, host: str) -> None:
    """Browse runs, versions, metrics and model cards in a web browser (read-only)."""
    from werkzeug.serving import make_server

    from modelrail.ui import create_app

    cli = Cli(quiet=True, every_model=True)
    server = make_server(host, port, create_app(cli.installation), threaded=True)
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(
        f"modelrail ui ({cli.settings.mode} mode) at http://{host}:{server.port} (Ctrl-C stops it)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.argument(
    "csv_path", metavar="CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--target", required=True, help="The column to predict.")
@click.option("--name", help="The model's name (default: the file's name).")
@click.option(
    "--objective",
    type=click.Choice(["auto", "binary", "multiclass", "regression"]),
    default="auto",
    show_default=True,
    help="auto: two values binary, a few labels multiclass, other numbers regression.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write pipeline.toml and the contract (default: ./NAME).",
)
@click.option("--force", is_flag=True, help="Replace files (and a model) that exist.")
@click.option(
    "--explain",
    is_flag=True,
    help="Print every decision with its rule and evidence (counts, steps, name matches).",
)
def init(
    csv_path: Path,
    target: str,
    name: str | None,
    objective: str,
    out: Path | None,
    force: bool,
    explain: bool,
) -> None:
    """Infer a dataset contract and a pipeline.toml from your CSV, say why, and add the
    model to the installation."""
    from modelrail.entry import init

    inference = init.infer(csv_path, target, name=name, objective=objective)
    click.echo(init.summary(inference, explain=explain))
    cli = Cli(every_model=True)
    if inference.name in cli.installation.models.names() and not force:
        fail(
            f"a model {inference.name!r} is already installed: pass --name for another "
            "model, or --force to replace its definition"
        )
    config_path, contract_path = init.write(inference, out or Path(inference.name), force=force)
    click.echo(f"\nwrote {config_path} and {contract_path}")
    model = cli.add(config_path)
    click.echo(f"then: modelrail upload {csv_path} --model {model}")
    click.echo(f"(after editing either file: modelrail add {config_path})")


@main.command()
@click.argument(
    "config_path", metavar="PIPELINE_TOML", type=click.Path(dir_okay=False, path_type=Path)
)
def add(config_path: Path) -> None:
    """Add the model PIPELINE_TOML defines (with the contract it names) to the
    installation, or update its definition: checked first, as every stage will."""
    Cli(every_model=True).add(config_path)


@main.command()
@click.option("--rows", type=click.IntRange(min=1), required=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("synthetic.csv")
)
@click.option("--seed", type=int, default=0)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A pipeline.toml whose contract to meet (default: the installed --model's).",
)
@model_option
def synth(rows: int, out: Path, seed: int, config_path: Path | None, model: str | None) -> None:
    """Write a synthetic CSV of ROWS rows that meets a model's dataset contract."""
    from modelrail.domain.config import PipelineConfig
    from modelrail.domain.dataset.synth import write_csv

    if config_path is not None:
        contract = PipelineConfig.load(config_path).contract
    else:
        contract = Cli(quiet=True, model=model).container.config.contract
    write_csv(contract, rows, out, seed)
    click.echo(f"wrote {rows} rows to {out}")


@main.group()
def contract() -> None:
    """When the data legitimately changed: see and accept the contract change a refused
    run asks for, or show a contract version."""


@contract.command("diff")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def contract_diff(run_id: str, as_json: bool, model: str | None) -> None:
    """The contract change run RUN_ID's refused upload asks for (exit 1 if none)."""
    from modelrail.service import evolution

    cli = Cli(quiet=True, every_model=True)
    _run_model(cli, run_id, model)
    proposed = evolution.proposal(cli.container, run_id)
    if as_json:
        click.echo(orjson.dumps(proposed, option=orjson.OPT_INDENT_2))
        return
    based_on = proposed["based_on"]
    click.echo(
        f"run {run_id} ({proposed['model']}, {proposed['data_uri']}) asks contract "
        f"{based_on['contract']!r} version {based_on['contract_version']} for:"
    )
    for change in proposed["changes"]:
        click.echo(f"  {_CHANGE_MARKS[change['change']]} {change['text']}")
    if proposed["unaddressed"]:
        click.echo("not contract changes (the upload still fails for these once accepted):")
        for problem in proposed["unaddressed"]:
            click.echo(f"  ! {_short(problem)}")
    click.echo(
        f"accept it as version {based_on['contract_version'] + 1} and retrain on that upload: "
        f'modelrail contract accept {run_id} --reason "…"'
    )


_CHANGE_MARKS = {"remove_column": "-", "add_column": "+", "categories": "~", "range": "~"}


@contract.command("accept")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why the data legitimately changed (recorded).")
@click.option("--by", "by", help="Who accepts it (default: $MODELRAIL_ACTOR, else your user).")
@model_option
def contract_accept(run_id: str, reason: str, by: str | None, model: str | None) -> None:
    """Apply run RUN_ID's proposed contract change as the model's next contract version
    (earlier versions are kept) and retrain the model on that run's upload."""
    from modelrail.service import evolution

    cli = Cli(every_model=True)
    _run_model(cli, run_id, model)
    cli.note_code_version()
    version, request = evolution.accept(cli.container, run_id, who=_actor(cli, by), reason=reason)
    click.echo(
        f"model {request.model!r}: contract version {version} written; retrain on "
        f"{request.data_uri} requested ({request.request_id})"
    )
    if cli.container.runs_here:
        cli.drain()
        _report_run(cli, cli.latest_run(request.idempotency_key))


@contract.command("show")
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: the current.")
@model_option
def contract_show(version: int | None, model: str | None) -> None:
    """Print the model's contract (or an earlier version of it) as JSON, with who
    accepted it and why: to keep your contract file in step after an accept."""
    cli = Cli(quiet=True, model=model)
    models = cli.container.models
    definition = models.definition(cli.container.model, version)
    accepted = definition.accepted
    kept = ", ".join(str(v) for v in models.versions(cli.container.model))
    note = (
        f"accepted by {accepted['who']} at {accepted['at']} from run {accepted['run_id']}: "
        f"{accepted['reason']}"
        if accepted is not None
        else "as added (modelrail init or add)"
    )
    click.echo(f"# {definition.contract_file}: {note}; versions kept: {kept}", err=True)
    click.echo(definition.contract.rstrip("\n"))


@main.command()
@click.argument("run_id")
@click.option("--reason", required=True, help="Why the rejected candidate should serve (recorded).")
@click.option("--by", "by", help="Who blesses it (default: $MODELRAIL_ACTOR, else your user).")
@model_option
def bless(run_id: str, reason: str, by: str | None, model: str | None) -> None:
    """Register and deploy to staging the candidate of run RUN_ID, which the gate
    rejected, recording who blessed it and why. It never becomes the champion."""
    from modelrail.service import evolution

    cli = Cli(every_model=True)
    _run_model(cli, run_id, model)
    record = evolution.bless(cli.container, run_id, who=_actor(cli, by), reason=reason)
    click.echo(f"run {run_id}: blessed by {record.output['who']}; register and deploy follow")
    if cli.container.runs_here:
        cli.drain()
        _report_run(cli, cli.container.runs.run(run_id))


# -- production (docs/architecture.md, "Production") -----------------------------------
@main.command()
@click.argument("version", type=click.IntRange(min=1))
@model_option
def card(version: int, model: str | None) -> None:
    """Version VERSION's model card (HTML, on stdout) with where it served: staging and
    production from when to when, who proposed and approved each promotion, each
    rollout step. The card stored with the version is signed as it was registered;
    this adds what happened since."""
    from modelrail.domain.card import served
    from modelrail.kernel.errors import NotFound
    from modelrail.service import history

    cli = Cli(quiet=True, model=model)
    name = cli.container.model
    try:
        stored = cli.container.registry.read_file(name, version, CARD)
    except NotFound:
        stored = None
    if stored is None:
        fail(f"{name} has no card for version {version} (modelrail models lists its versions)")
        return
    periods, entries = history.served(cli.container, name), history.promotions(cli.container, name)
    sys.stdout.buffer.write(served(stored, version, periods, entries))


for _command in (up, down, status, promote, approve, promotions, rollout, shadow):
    main.add_command(_command)


def run() -> None:
    # Stage failures are shown by the progress lines; the log adds only real errors.
    logs.configure(level="ERROR")
    try:
        main(standalone_mode=True)
    except ModelrailError as exc:
        fail(str(exc))
