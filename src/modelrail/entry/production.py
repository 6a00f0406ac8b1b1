"""``modelrail promote``, ``approve``, ``promotions``, ``rollout status`` and ``shadow
report``: production's promotions (``service.promotion``), and the sweep's pass that
carries them out in the cloud."""

from __future__ import annotations

import time
from datetime import datetime

import click
import orjson

from modelrail.entry.console import Cli, fail, model_option, window, window_options
from modelrail.entry.history_text import promotion_in_full


@click.command()
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: staging's.")
@click.option("--reason", required=True, help="Why it should serve production (recorded).")
@model_option
def promote(version: int | None, reason: str, model: str | None) -> None:
    """Propose staging's version (or --version N) for production. Someone else approves
    it (modelrail approve PROPOSAL); the proposer is $MODELRAIL_ACTOR, else your user."""
    from modelrail.service.promotion import propose

    cli = Cli(quiet=True, model=model)
    proposal = propose(cli.container, version=version, reason=reason, proposed_by=cli.settings.user)
    before = f"v{proposal.production_version}" if proposal.production_version else "nothing"
    click.echo(
        f"proposal {proposal.id}: {proposal.model} v{proposal.version} for production "
        f"(serving {before}), proposed by {proposal.proposed_by}; "
        f"approve with: modelrail approve {proposal.id} --reason TEXT"
    )


@click.command()
@click.argument("proposal_id")
@click.option("--reason", required=True, help="Why you approve it (recorded).")
@model_option
def approve(proposal_id: str, reason: str, model: str | None) -> None:
    """Approve proposal PROPOSAL_ID and roll its version out to production. The approver
    ($MODELRAIL_ACTOR, else your user) is recorded."""
    from modelrail.service.promotion import approve as approve_proposal

    cli = Cli(quiet=True, model=model)
    # In the cloud the approver writes the approval only; the sweep's account, the one
    # allowed to move production, carries it out (docs/deploy.md, "Production").
    carry = cli.settings.mode != "cloud"
    outcome = approve_proposal(
        cli.container, proposal_id, reason=reason, approved_by=cli.settings.user, carry=carry
    )
    if outcome is None:
        click.echo(
            f"proposal {proposal_id} approved by {cli.settings.user}: the sweep rolls it out "
            "within 10 minutes (modelrail rollout status)"
        )
        return
    if outcome.status != "succeeded":
        fail(f"proposal {proposal_id} was approved, its rollout failed: {outcome.detail}")
    before = f"v{outcome.from_version}" if outcome.from_version else "nothing"
    click.echo(
        f"production moved from {before} to v{outcome.to_version} "
        f"({outcome.revision} at {outcome.url}); proposal {proposal_id}"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def promotions(as_json: bool, model: str | None) -> None:
    """The model's production history: each proposal, who proposed and approved it, each
    step of its rollout, and what production served from when on."""
    from modelrail.service.history import promotions as history

    cli = Cli(quiet=True, model=model)
    entries = history(cli.container, cli.container.model)
    if as_json:
        click.echo(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        return
    if not entries:
        click.echo(f"{cli.container.model}: nothing was proposed for production yet")
    for entry in entries:
        click.echo(promotion_in_full(entry))


@click.group()
def rollout() -> None:
    """Production's rollouts."""


@rollout.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def rollout_status(as_json: bool, model: str | None) -> None:
    """The model's newest approved promotion: its status and each canary step so far,
    with what the new and the old revision answered."""
    from modelrail.service.history import promotions as history

    cli = Cli(quiet=True, model=model)
    approved = [e for e in history(cli.container, cli.container.model) if e["approval"]]
    if not approved:
        click.echo(f"{cli.container.model}: no rollout to production yet")
        return
    if as_json:
        click.echo(orjson.dumps(approved[-1], option=orjson.OPT_INDENT_2))
        return
    click.echo(promotion_in_full(approved[-1]))


# -- shadow comparison (docs/architecture.md, "Shadow")
@click.group()
def shadow() -> None:
    """Production's requests mirrored to staging: how the candidate's answers compare."""


@shadow.command("report")
@window_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@model_option
def shadow_report(
    hours: float, since: datetime | None, until: datetime | None, as_json: bool, model: str | None
) -> None:
    """Per production version and candidate version: the requests mirrored and dropped,
    the agreement (classifiers) or MAE/RMSE (regression), each side's p50/p99 latency,
    and the candidate's errors."""
    from modelrail.service.shadow import report

    cli = Cli(quiet=True, model=model)
    start, end = window(hours, since, until)
    name = cli.container.model
    comparisons = report(cli.container.artifacts, name, since=start, until=end)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "model": name,
                    "window": {"from": start.isoformat(), "to": end.isoformat()},
                    "comparisons": [c.to_json() for c in comparisons],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        return
    if not comparisons:
        click.echo(f"{name}: nothing mirrored from {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC")
    for comparison in comparisons:
        click.echo(f"{name} {comparison.describe()}")


def sweep_production(
    cli: Cli, models: list[str], as_json: bool, deadline: tuple[float, float] | None
) -> None:
    """The sweep's production pass: what ``[production] approval = "none"`` promotes, and
    every approved proposal not carried out yet (``service.promotion``), within the
    sweep's ``deadline`` (its timeout, and when it ends on the monotonic clock)."""
    from modelrail.service.promotion import carry_out_approved, follow_staging

    for model in models:
        container = cli.installation.for_model(model)
        followed = follow_staging(container)
        if followed is not None:
            click.echo(
                f"{model}: staging's v{followed.version} proposed and approved for production "
                f"as {followed.id} ([production] approval = none)",
                err=as_json,
            )
        budget = (
            {}
            if deadline is None
            else {"timeout_s": deadline[0], "time_left_s": deadline[1] - time.monotonic()}
        )
        carried = carry_out_approved(container, **budget)
        for outcome in carried:
            click.echo(
                f"{model}: production promotion {outcome.proposal} {outcome.status}: "
                f"v{outcome.from_version} → v{outcome.to_version} {outcome.detail}".rstrip(),
                err=as_json,
            )
