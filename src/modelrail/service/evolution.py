"""When the data legitimately changed: accept a proposed contract change, or bless a
candidate the gate rejected. Both are a person's decision, recorded with who took it
and why; both go on through the ordinary pipeline, so validate, register and deploy
stay the only writers of snapshots, versions and staging.

- ``proposal`` / ``accept``: a run validate refused for a change of its contract (a
  new category value, a value past a range, a column added or gone) saved the change
  it asks for (``dataset.evolution``, the run's ``contract-proposal`` report).
  ``accept`` writes it as the model's next contract version (``Models.accept``: the
  old versions kept, refused if the definition changed since the proposal) and
  publishes a retrain of the model on that run's upload, which is then validated
  under the new contract: a new run, whose lineage names the contract version. That
  upload's drift from the champion's data is reported, not refused (the person
  accepting looked at its change); the gate judges its candidate as any other.
- ``bless``: a run whose candidate the gate rejected (evaluate saved its report and
  the candidate before refusing it) is registered and deployed anyway. It records a
  ``bless`` stage in that run, publishing the ``model-evaluated`` evaluate would have
  published, built from the trained candidate and the saved evaluation, its verdict
  and lineage marked ``blessed_by`` (who, why, when). Register then registers it and
  deploy deploys it to staging (also under ``[gate] staging = "champion"``: a person
  asked for it to be served). It never becomes the champion: later candidates are
  still judged against the best model the gate itself accepted.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelrail.domain.runs import BLESS, Began, RunSummary, StageRecord
from modelrail.kernel.errors import NotFound, Refused
from modelrail.kernel.events import ModelEvaluated, ModelTrained, RetrainRequested, utcnow
from modelrail.service.container import Container
from modelrail.service.pipeline import record_and_publish
from modelrail.service.stages.validate import PROPOSAL


def proposal(container: Container, run_id: str) -> dict[str, Any]:
    """The contract change run ``run_id`` asks for; ``Refused`` if it has none."""
    run = _run(container, run_id)
    try:
        return container.runs.report(run_id, PROPOSAL)
    except NotFound:
        raise Refused(
            f"run {run_id} has no proposed contract change: "
            + _why_no_proposal(run)
            + " (`modelrail runs RUN_ID` shows what happened)"
        ) from None


def accept(
    container: Container, run_id: str, *, who: str, reason: str
) -> tuple[int, RetrainRequested]:
    """Write run ``run_id``'s proposed contract change as the model's next contract
    version and publish a retrain on its upload; return the version and the request."""
    if not reason.strip():
        raise Refused("say why the change is accepted (--reason): it is kept with the contract")
    proposed = proposal(container, run_id)
    model = str(proposed["model"])
    at = utcnow()
    definition = container.models.accept(
        model,
        proposed["changes"],
        based_on=proposed["based_on"]["config_hash"],
        accepted={
            "who": who,
            "reason": reason,
            "at": at,
            "run_id": run_id,
            "data_uri": proposed["data_uri"],
        },
    )
    version = definition.config().contract.version
    request = RetrainRequested(
        model=model,
        request_id=f"contract-accept:{run_id}:v{version}",
        data_uri=proposed["data_uri"],
        reason=f"contract version {version} accepted by {who}: {reason}"[:500],
        requested_at=at,
    )
    container.bus.publish(
        RetrainRequested.event_type,
        orjson.dumps(request.to_body()),
        {"event_type": request.event_type},
    )
    return version, request


def bless(container: Container, run_id: str, *, who: str, reason: str) -> StageRecord:
    """Register and deploy the candidate of run ``run_id``, which the gate rejected;
    return the ``bless`` record. ``Refused`` for any other run."""
    if not reason.strip():
        raise Refused("say why the candidate is blessed (--reason): it is kept with the version")
    run = _run(container, run_id)
    evaluate = _rejected(run)
    model = run.model
    assert model is not None  # a run that reached evaluate has its model
    scoped = container.for_model(model)
    config = scoped.config
    if evaluate.lineage.config.get("hash") != config.sha256:
        raise Refused(
            f"the definition of model {model!r} changed since run {run_id} was trained: its "
            "candidate would be registered under a configuration it was not judged under; "
            "retrain it instead"
        )
    trained = scoped.runs.stage_record(run_id, "train")
    if trained is None or trained.event is None:
        raise Refused(f"run {run_id} recorded no trained candidate")
    candidate = ModelTrained.from_body(trained.event)
    report = scoped.runs.report(run_id, "evaluation")
    blessed_by = {"who": who, "reason": reason, "at": utcnow()}
    champion = report["champion"]
    evaluated = ModelEvaluated(
        run_id=run_id,
        causation_id=evaluate.event["event_id"] if evaluate.event else candidate.event_id,
        lineage={
            **candidate.lineage,
            "champion": champion and {"version": champion["version"]},
            "blessed_by": blessed_by,
        },
        dataset=candidate.dataset,
        candidate_uri=candidate.candidate_uri,
        model_sha256=candidate.model_sha256,
        metrics=report["metrics"],
        champion=champion,
        # The gate's checks and reasons as it gave them; blessed by a person, never
        # the champion (register moves the champion only on ``promote``).
        verdict={**report["verdict"], "blessed": True, "promote": False, "blessed_by": blessed_by},
        report_uri=scoped.runs.report_uri(run_id, "evaluation"),
    )
    record = StageRecord.ended(
        run_id,
        BLESS,
        "succeeded",
        began=Began.now(measured=False),
        lineage=evaluated.lineage,
        output={"who": who, "reason": reason},
        event=evaluated.to_body(),
    )
    return record_and_publish(scoped, record)


def _run(container: Container, run_id: str) -> RunSummary:
    run = container.runs.run(run_id)
    if run is None:
        raise Refused(f"no run {run_id!r} (`modelrail runs` lists them)")
    return run


def _rejected(run: RunSummary) -> StageRecord:
    """The evaluate record of ``run``, which the gate rejected; ``Refused`` otherwise,
    saying what the run is instead."""
    if run.blessed_by is not None:
        by = run.blessed_by
        raise Refused(f"run {run.run_id} was blessed already, by {by['who']} at {by['at']}")
    if "register" in run.stages:
        raise Refused(f"run {run.run_id} is registered already: there is nothing to bless")
    evaluate = run.stages.get("evaluate")
    if evaluate is None:
        failure = run.failure
        if failure is not None:
            raise Refused(
                f"run {run.run_id} was refused before the gate ({failure['stage']}: "
                f"{failure['kind']}): it has no candidate to bless"
            )
        raise Refused(f"run {run.run_id} has not reached the gate: nothing to bless yet")
    kind = (evaluate.error or {}).get("kind")
    if evaluate.status != "failed" or kind != "gate_rejected":
        state = "passed the gate" if evaluate.status == "succeeded" else f"failed ({kind})"
        raise Refused(
            f"run {run.run_id}'s evaluate {state}: only a candidate the gate rejected "
            "can be blessed"
        )
    return evaluate


def _why_no_proposal(run: RunSummary) -> str:
    failure = run.failure
    if failure is None:
        return f"it was not refused ({run.outcome})"
    if failure["kind"] != "contract_violation":
        return f"it failed in {failure['stage']} ({failure['kind']}), not for its contract"
    return (
        "none of its problems is a change of the contract (a value that is not a "
        "number, a missing value where none is allowed…): the data needs fixing"
    )
