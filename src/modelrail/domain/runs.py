"""The run history: each stage's durable record, reports and candidates, per run.

Layout (artifact bucket)::

    runs/<run_id>/stages/<stage>.json   the stage's outcome and the event it published
    runs/<run_id>/reports/<name>.json   validation and evaluation reports
    runs/<run_id>/candidate/            the trained model before it becomes a version
    runs/<run_id>/claims/<stage>.json   which delivery does a stage's one-off work: the
                                        training job's launch, validate's handoff to a job

A stage writes its record (create-only) before it publishes; a redelivered event finds
the record and re-publishes the same event instead of doing the work again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson

from modelrail.domain.lineage import Lineage
from modelrail.domain.registry import MODEL_FILE
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import IntegrityError, NotFound, PreconditionFailed
from modelrail.kernel.events import utcnow
from modelrail.kernel.memory import PeakMemory
from modelrail.kernel.ports import BlobStore

CANDIDATE_FILE = "candidate.json"
# The stage a person's ``modelrail bless`` records in the run the gate rejected.
BLESS = "bless"
# Compare-and-set tries when counting a failed delivery (deliveries rarely race).
_COUNT_TRIES = 5


@dataclasses.dataclass(frozen=True)
class Began:
    """When a stage began: its timestamp (``utcnow``), its clock (``time.perf_counter``)
    and, for a stage run in this process, its memory's high-water mark (None for a
    failure the sweep records on a stage's behalf)."""

    at: str
    clock: float
    memory: PeakMemory | None = None

    @classmethod
    def now(cls, *, measured: bool = True) -> Began:
        return cls(utcnow(), time.perf_counter(), PeakMemory.start() if measured else None)


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """What one stage of one run did: its one durable record, written once (``error``
    only when it failed; ``event``: what it published, if anything). Its JSON form is
    ``schemas/records/stage-record.schema.json``."""

    run_id: str
    stage: str
    status: str  # succeeded, skipped or failed
    started_at: str
    finished_at: str
    duration_s: float
    lineage: Lineage
    output: Mapping[str, Any]
    event: Mapping[str, Any] | None
    error: Mapping[str, Any] | None = None
    # What the stage's process used: ``peak_rss_bytes`` and its ``scope`` (``memory``),
    # and for a stage that ran on a Dask cluster its ``workers``' peaks. None for a
    # failure recorded on the stage's behalf, and in records written before.
    resources: Mapping[str, Any] | None = None

    @classmethod
    def ended(
        cls,
        run_id: str,
        stage: str,
        status: str,
        *,
        began: Began,
        lineage: Mapping[str, Any],
        output: Mapping[str, Any],
        event: Mapping[str, Any] | None,
        error: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> StageRecord:
        """The record of a stage that ends now, begun at ``began``, with the ``lineage``
        its event carries; its peak memory measured now, with any ``resources`` the
        stage reports beside it (a cluster's workers)."""
        duration = round(time.perf_counter() - began.clock, 4)
        used = None
        if began.memory is not None:
            used = {**began.memory.report(), **(resources or {})}
        return cls(
            run_id, stage, status, began.at, utcnow(), duration, Lineage.from_json(lineage),
            dict(output), event, error, used,
        )  # fmt: skip

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StageRecord:
        return cls(
            run_id=body["run_id"],
            stage=body["stage"],
            status=body["status"],
            started_at=body["started_at"],
            finished_at=body["finished_at"],
            duration_s=float(body["duration_s"]),
            lineage=Lineage.from_json(body["lineage"]),
            output=dict(body["output"]),
            event=dict(body["event"]) if body.get("event") is not None else None,
            error=dict(body["error"]) if body.get("error") is not None else None,
            resources=dict(body["resources"]) if body.get("resources") is not None else None,
        )

    @property
    def memory(self) -> str | None:
        """Its peak memory as people read it (``modelrail runs RUN_ID``, the UI)."""
        if self.resources is None:
            return None
        scope = "this stage" if self.resources.get("scope") == "stage" else "its process"
        shown = f"peak RSS {_megabytes(self.resources['peak_rss_bytes'])} ({scope})"
        workers = self.resources.get("workers") or []
        if workers:
            most = max(int(w["peak_rss_bytes"]) for w in workers)
            shown += f"; {len(workers)} Dask workers, each at most {_megabytes(most)}"
        return shown

    def to_json(self) -> dict[str, Any]:
        record = {
            "run_id": self.run_id,
            "stage": self.stage,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "lineage": self.lineage.to_json(),
            "output": dict(self.output),
            "event": dict(self.event) if self.event is not None else None,
        }
        if self.error is not None:
            record["error"] = dict(self.error)
        if self.resources is not None:
            record["resources"] = dict(self.resources)
        return record


@dataclasses.dataclass(frozen=True)
class CandidateRecord:
    """What train recorded with a run's model (``candidate.json``; its JSON form is
    ``schemas/records/candidate.schema.json``): register makes a version of it."""

    best_iteration: int
    params: Mapping[str, Any]
    features: Mapping[str, Any]
    train_metrics: Mapping[str, float]
    examples: list[dict[str, Any]]
    # The compiled predictors the training job built and verified: ``builds`` (file,
    # sha256, ...) and why others were ``not_built``.
    compiled: Mapping[str, Any]
    # How the rows were split (``training.SplitPlan``): evaluate holds out the same rows.
    # None for a candidate recorded before split plans (split by inputs).
    split: Mapping[str, Any] | None = None
    # Small data's judgement (``training.CrossValidation``): None if judged on a hold-out.
    cross_validation: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CandidateRecord:
        return cls(
            best_iteration=int(body["best_iteration"]),
            params=dict(body["params"]),
            features=dict(body["features"]),
            train_metrics=dict(body["train_metrics"]),
            examples=list(body["examples"]),
            # A candidate trained before predictors were compiled has none.
            compiled=dict(body.get("compiled") or {"builds": [], "not_built": []}),
            split=body.get("split"),
            cross_validation=body.get("cross_validation"),
        )

    def to_json(self) -> dict[str, Any]:
        body = {
            "best_iteration": self.best_iteration,
            "params": dict(self.params),
            "features": dict(self.features),
            "train_metrics": dict(self.train_metrics),
            "examples": list(self.examples),
            "compiled": dict(self.compiled),
        }
        if self.split is not None:
            body["split"] = dict(self.split)
        if self.cross_validation is not None:
            body["cross_validation"] = dict(self.cross_validation)
        return body


@dataclasses.dataclass(frozen=True)
class Handoff:
    """A stage handed to a job (``runs/<run_id>/claims/<stage>.json``; its JSON form is
    ``schemas/records/handoff.schema.json``). The delivery that hands off claims it
    create-only (``holder``: its message id) before it launches the job and adds the
    job's ``execution`` once launched. It keeps the run's lineage and causation, so the
    sweep can end a run whose job died without recording exactly as the stage would."""

    run_id: str
    stage: str
    holder: str
    job: str
    lineage: Mapping[str, Any]
    causation_id: str
    claimed_at: str
    execution: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Handoff:
        return cls(
            run_id=body["run_id"],
            stage=body["stage"],
            holder=body["holder"],
            job=body["job"],
            lineage=dict(body["lineage"]),
            causation_id=body["causation_id"],
            claimed_at=body["claimed_at"],
            execution=body.get("execution"),
        )

    def to_json(self) -> dict[str, Any]:
        body = {
            "run_id": self.run_id,
            "stage": self.stage,
            "holder": self.holder,
            "job": self.job,
            "lineage": dict(self.lineage),
            "causation_id": self.causation_id,
            "claimed_at": self.claimed_at,
        }
        if self.execution is not None:
            body["execution"] = self.execution
        return body


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def failure_reasons(error: Mapping[str, Any]) -> list[str]:
    """A failure's reasons, most specific first: the contract's problems (the missing
    column), the gate's failing checks, the drifted columns, else the message.

    Any record a version of modelrail wrote reads: problems stored as bare strings (a
    smoke test's, before problems had one shape) are reasons as they are."""
    details = error.get("details")
    details = details if isinstance(details, Mapping) else {}
    problems = details.get("problems") or []
    if isinstance(problems, list | tuple) and problems:
        return [_reason(problem) for problem in problems]
    verdict = details.get("verdict")
    verdict = verdict if isinstance(verdict, Mapping) else {}
    reasons = verdict.get("reasons") or details.get("reasons") or []
    if isinstance(reasons, list | tuple) and reasons:
        return [str(reason) for reason in reasons]
    return [str(error.get("message", ""))]


def _reason(problem: object) -> str:
    if not isinstance(problem, Mapping):
        return str(problem)
    message = str(problem.get("message", ""))
    return f"[{problem['check']}] {message}" if problem.get("check") else message


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run: its stage records, in the order they ran."""

    run_id: str
    stages: Mapping[str, StageRecord]

    @property
    def started_at(self) -> str:
        return min((s.started_at for s in self.stages.values()), default="")

    @property
    def trigger(self) -> Mapping[str, Any]:
        for record in self.stages.values():
            if record.lineage.trigger:
                return dict(record.lineage.trigger)
        return {}

    @property
    def blessed_by(self) -> Mapping[str, Any] | None:
        """Who blessed the candidate the gate rejected, why and when (``BLESS``'s
        record); None for a run no one blessed by hand."""
        record = self.stages.get(BLESS)
        if record is None or record.status != "succeeded":
            return None
        return record.lineage.blessed_by

    def _overridden(self, record: StageRecord) -> bool:
        """Whether ``record`` is the gate's rejection a person overrode."""
        kind = (record.error or {}).get("kind")
        return kind == "gate_rejected" and self.blessed_by is not None

    @property
    def outcome(self) -> str:
        """failed, rejected, deployed, superseded, registered, rolled-back, or running
        (a rejected run blessed by hand goes on as any other)."""
        for record in self.stages.values():
            if record.status == "failed" and not self._overridden(record):
                kind = (record.error or {}).get("kind")
                return "rejected" if kind == "gate_rejected" else "failed"
        if "rollback" in self.stages:
            return "rolled-back"
        deploy = self.stages.get("deploy")
        if deploy is not None:
            return "deployed" if deploy.status == "succeeded" else "superseded"
        return "registered" if "register" in self.stages else "running"

    @property
    def lineage(self) -> Lineage | None:
        """The latest stage's lineage: everything the run gathered."""
        last = list(self.stages.values())[-1:]
        return last[0].lineage if last else None

    @property
    def model(self) -> str | None:
        """The model the run is for (None: a trigger no installed model owned)."""
        lineage = self.lineage
        return lineage.model if lineage is not None else None

    @property
    def failure(self) -> dict[str, Any] | None:
        """The failed stage, its error kind, message and reasons; None if none failed
        (or the gate's rejection was overridden by hand and nothing failed since)."""
        for record in self.stages.values():
            if record.status == "failed" and not self._overridden(record):
                error = record.error or {}
                return {
                    "stage": record.stage,
                    "kind": error.get("kind", "unknown"),
                    "message": error.get("message", ""),
                    "reasons": failure_reasons(error),
                    "report_uri": (error.get("details") or {}).get("report_uri"),
                }
        return None

    @property
    def duration_s(self) -> float:
        return round(sum(s.duration_s for s in self.stages.values()), 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "failure": self.failure,
            "blessed_by": dict(self.blessed_by) if self.blessed_by is not None else None,
            "stages": {
                name: {
                    "status": record.status,
                    "duration_s": record.duration_s,
                    "started_at": record.started_at,
                    "error": record.error,
                }
                for name, record in self.stages.items()
            },
        }


class RunLog:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def stage_record(self, run_id: str, stage: str) -> StageRecord | None:
        try:
            data = self.store.read(self._stage_key(run_id, stage)).data
        except NotFound:
            return None
        return StageRecord.from_json(orjson.loads(data))

    def save_stage(self, record: StageRecord) -> StageRecord:
        """Store ``record`` unless its stage already has one; return the stored one."""
        try:
            self.store.write(
                self._stage_key(record.run_id, record.stage),
                canonical_json(record.to_json()),
                if_generation_match=0,
                content_type="application/json",
            )
            return record
        except PreconditionFailed:
            existing = self.stage_record(record.run_id, record.stage)
            assert existing is not None
            return existing  # a concurrent delivery finished first: its record stands

    def claim(self, run_id: str, stage: str, holder: str) -> bool:
        """Claim ``stage`` of ``run_id`` for ``holder`` (a delivery's message id),
        create-only; True if ``holder`` holds it (now or from before)."""
        key = self._claim_key(run_id, stage)
        try:
            self.store.write(
                key,
                canonical_json({"holder": holder}),
                if_generation_match=0,
                content_type="application/json",
            )
        except PreconditionFailed:
            held: dict[str, Any] = orjson.loads(self.store.read(key).data)
            return bool(held["holder"] == holder)
        return True

    def claimed_by(self, run_id: str, stage: str) -> str | None:
        """Who holds ``stage`` of ``run_id`` (``claim``); None if no one claimed it."""
        try:
            blob = self.store.read(self._claim_key(run_id, stage))
            held: dict[str, Any] = orjson.loads(blob.data)
        except NotFound:
            return None
        return str(held["holder"])

    def hand_off(self, handoff: Handoff) -> Handoff:
        """Claim ``handoff.stage`` of its run for a job, create-only; return the claim
        that stands: ``handoff``, or the one an earlier delivery wrote."""
        try:
            self.store.write(
                self._claim_key(handoff.run_id, handoff.stage),
                canonical_json(handoff.to_json()),
                if_generation_match=0,
                content_type="application/json",
            )
        except PreconditionFailed:
            found = self.handoff(handoff.run_id, handoff.stage)
            assert found is not None
            return found
        return handoff

    def launched(self, handoff: Handoff, execution: str) -> Handoff:
        """Add the job's ``execution`` to the claim ``handoff`` (its holder's, unchanged
        since: a claim is only ever written by its holder)."""
        key = self._claim_key(handoff.run_id, handoff.stage)
        generation = self.store.read(key).generation
        launched = dataclasses.replace(handoff, execution=execution)
        self.store.write(
            key,
            canonical_json(launched.to_json()),
            if_generation_match=generation,
            content_type="application/json",
        )
        return launched

    def handoff(self, run_id: str, stage: str) -> Handoff | None:
        """The claim of ``stage`` of ``run_id`` handed to a job; None if not handed off."""
        try:
            body = orjson.loads(self.store.read(self._claim_key(run_id, stage)).data)
        except NotFound:
            return None
        return Handoff.from_json(body) if "job" in body else None

    def handoffs(self, stage: str) -> list[Handoff]:
        """Every run's claim of ``stage`` handed to a job (a run whose job has not
        recorded yet has no stage record: ``runs`` does not list it)."""
        found = []
        for info in self.store.list("runs/"):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[2] == "claims" and parts[3] == f"{stage}.json":
                handoff = self.handoff(parts[1], stage)
                if handoff is not None:
                    found.append(handoff)
        return found

    def failed_deliveries(self, run_id: str, stage: str, message_id: str) -> int:
        """How many deliveries of message ``message_id`` to ``stage`` have failed."""
        try:
            blob = self.store.read(self._deliveries_key(run_id, stage, message_id))
        except NotFound:
            return 0
        return int(orjson.loads(blob.data)["failed"])

    def count_failed_delivery(self, run_id: str, stage: str, message_id: str) -> int:
        """Count one more failed delivery of ``message_id`` to ``stage``; return the count.

        Pub/Sub tells a push endpoint its delivery attempt, but the Pub/Sub emulator
        does not: counting here makes the last attempt known on every bus.
        """
        key = self._deliveries_key(run_id, stage, message_id)
        for _ in range(_COUNT_TRIES):
            try:
                blob = self.store.read(key)
                failed, generation = int(orjson.loads(blob.data)["failed"]), blob.generation
            except NotFound:
                failed, generation = 0, 0
            try:
                self.store.write(
                    key,
                    canonical_json({"failed": failed + 1}),
                    if_generation_match=generation,
                    content_type="application/json",
                )
                return failed + 1
            except PreconditionFailed:
                continue  # a concurrent delivery counted meanwhile
        return failed + 1

    def save_report(self, run_id: str, name: str, report: Mapping[str, Any]) -> str:
        key = self._report_key(run_id, name)
        self.store.write(key, canonical_json(report), content_type="application/json")
        return self.store.uri(key)

    def report_uri(self, run_id: str, name: str) -> str:
        """Where ``save_report`` keeps the report ``name`` of ``run_id``."""
        return self.store.uri(self._report_key(run_id, name))

    @staticmethod
    def _report_key(run_id: str, name: str) -> str:
        return f"runs/{run_id}/reports/{name}.json"

    def report(self, run_id: str, name: str) -> dict[str, Any]:
        report: dict[str, Any] = orjson.loads(self.store.read(self._report_key(run_id, name)).data)
        return report

    def candidate_key(self, run_id: str, name: str) -> str:
        return f"runs/{run_id}/candidate/{name}"

    def candidate(self, run_id: str, model_sha256: str) -> tuple[bytes, CandidateRecord]:
        """The run's trained model text, checked against the sha256 its event carries,
        and what train recorded with it (``candidate.json``)."""
        model_text = self.candidate_file(run_id, MODEL_FILE, model_sha256)
        meta = orjson.loads(self.store.read(self.candidate_key(run_id, CANDIDATE_FILE)).data)
        return model_text, CandidateRecord.from_json(meta)

    def save_candidate(self, run_id: str, record: CandidateRecord) -> None:
        """Keep what train recorded with the run's model, beside it."""
        self.store.write(
            self.candidate_key(run_id, CANDIDATE_FILE),
            canonical_json(record.to_json()),
            content_type="application/json",
        )

    def candidate_file(self, run_id: str, name: str, sha256: str) -> bytes:
        """One file train wrote for the run, checked against the sha256 recorded for it."""
        data = self.store.read(self.candidate_key(run_id, name)).data
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"candidate of {run_id}: {name} does not match its sha256")
        return data

    def snapshot_key(self, run_id: str, name: str) -> str:
        """Where validate keeps the run's typed data (``index.json`` naming its parts) and its
        profile (``profile.json``), and evaluate the hold-out it judged on
        (``reference.parquet``)."""
        return f"runs/{run_id}/snapshot/{name}"

    def runs(self, model: str | None = None) -> list[RunSummary]:
        """Every run (of ``model``, if given), oldest first."""
        stages: dict[str, dict[str, StageRecord]] = {}
        for info in self.store.list("runs/"):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[2] == "stages" and parts[3].endswith(".json"):
                record = StageRecord.from_json(orjson.loads(self.store.read(info.key).data))
                stages.setdefault(parts[1], {})[parts[3].removesuffix(".json")] = record
        summaries = [RunSummary(run_id, _in_order(records)) for run_id, records in stages.items()]
        return sorted(
            (run for run in summaries if model is None or run.model == model),
            key=lambda run: run.started_at,
        )

    def run(self, run_id: str) -> RunSummary | None:
        """One run's every stage record; None if it has none."""
        prefix = f"runs/{run_id}/stages/"
        records = {
            info.key[len(prefix) :].removesuffix(".json"): StageRecord.from_json(
                orjson.loads(self.store.read(info.key).data)
            )
            for info in self.store.list(prefix)
            if info.key.endswith(".json")
        }
        return RunSummary(run_id, _in_order(records)) if records else None

    def reports(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's reports (validation, evaluation) by name."""
        prefix = f"runs/{run_id}/reports/"
        return {
            info.key[len(prefix) :].removesuffix(".json"): orjson.loads(
                self.store.read(info.key).data
            )
            for info in self.store.list(prefix)
            if info.key.endswith(".json")
        }

    def _claim_key(self, run_id: str, stage: str) -> str:
        return f"runs/{run_id}/claims/{stage}.json"

    def _stage_key(self, run_id: str, stage: str) -> str:
        return f"runs/{run_id}/stages/{stage}.json"

    def _deliveries_key(self, run_id: str, stage: str, message_id: str) -> str:
        # Ends in the stage's own name: a stage account may write only its own objects.
        return f"runs/{run_id}/messages/{message_id}/failed/{stage}.json"


def _in_order(records: Mapping[str, StageRecord]) -> dict[str, StageRecord]:
    """A run's stage records in the order they ran (each starts after the one before
    it published; ``rollback`` is an operator's run of its own)."""
    return dict(sorted(records.items(), key=lambda item: item[1].started_at))
