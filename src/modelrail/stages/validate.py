"""validate: check the triggering dataset against its contract."""

from __future__ import annotations

import hashlib

from modelrail.dataset import checks
from modelrail.errors import ContractViolation, DataUnavailable, InvalidEvent, NotFound
from modelrail.events import DatasetValidated, DataUploaded, Trigger
from modelrail.stages import Outcome, StageContext

DATA_SUFFIX = ".csv"


def handle(trigger: Trigger, *, run_id: str, causation_id: str, ctx: StageContext) -> Outcome:
    bucket, key, generation = _locate(trigger, ctx)
    try:
        blob = ctx.storage.bucket(bucket).read(key, generation=generation)
    except NotFound as exc:
        raise DataUnavailable(f"dataset gs://{bucket}/{key} is not readable: {exc}") from exc
    dataset = {
        "bucket": bucket,
        "key": key,
        "generation": blob.generation,
        "uri": f"gs://{bucket}/{key}#{blob.generation}",
        "sha256": hashlib.sha256(blob.data).hexdigest(),
        "rows": 0,
    }
    report, _ = checks.validate(blob.data, ctx.config.contract)
    dataset["rows"] = report.rows
    report_uri = ctx.runs.save_report(
        run_id, "validation", {"dataset": dataset, **report.to_dict()}
    )
    if not report.passed:
        summary = "; ".join(p.message for p in report.problems[:5])
        raise ContractViolation(
            f"{dataset['uri']} breaks contract {report.contract!r}: {summary}",
            {"report_uri": report_uri, **report.to_dict()},
        )
    lineage = {
        "trigger": trigger.lineage(),
        "config": ctx.config.summary(),
        "code": {"version": getattr(trigger, "commit_sha", None) or ctx.code_version},
        "data": dataset,
    }
    event = DatasetValidated(
        run_id=run_id,
        causation_id=causation_id,
        lineage=lineage,
        dataset=dataset,
        report_uri=report_uri,
    )
    return Outcome(event, {"rows": report.rows, "report_uri": report_uri})


def _locate(trigger: Trigger, ctx: StageContext) -> tuple[str, str, int | None]:
    if isinstance(trigger, DataUploaded):
        if not trigger.name.endswith(DATA_SUFFIX):
            raise InvalidEvent(
                f"gs://{trigger.bucket}/{trigger.name} is not a {DATA_SUFFIX} file; "
                "only CSV uploads start a run"
            )
        return trigger.bucket, trigger.name, trigger.generation
    if trigger.data_uri:
        return _parse_uri(trigger.data_uri)
    # No dataset named: retrain on the newest CSV in the data bucket.
    objects = [
        info
        for info in ctx.storage.bucket(ctx.data_bucket).list()
        if info.key.endswith(DATA_SUFFIX)
    ]
    if not objects:
        raise DataUnavailable(f"no {DATA_SUFFIX} dataset in gs://{ctx.data_bucket} to retrain on")
    latest = max(objects, key=lambda info: info.generation)
    return ctx.data_bucket, latest.key, latest.generation


def _parse_uri(uri: str) -> tuple[str, str, int | None]:
    path, _, generation = uri.partition("#")
    scheme, _, rest = path.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "gs" or not bucket or not key or (generation and not generation.isdigit()):
        raise InvalidEvent(f"data_uri must look like gs://bucket/object[#generation], not {uri!r}")
    return bucket, key, int(generation) if generation else None
