"""validate: check the triggering dataset against its contract, compare it with the
champion's training data, and keep it as a typed snapshot for the stages after.

The upload (CSV, gzip-compressed CSV or Parquet) is read here, once, as a stream
(``dataset.stream``: memory bounded by ``[limits] batch_mb``, not by the file): train
and evaluate read the snapshot (Parquet parts named by an index), never the upload, so
every stage sees exactly the values validation passed. A refused file leaves no part
behind: the parts written so far are deleted, and no index ever names them.

A file refused for a change of its contract (a new category value, a value past a
range, a column added or gone) also leaves the change it asks for, the run's
``contract-proposal`` report (``dataset.evolution``), which ``modelrail contract
diff`` shows and ``contract accept`` applies; the refusal's message says so. The
retrain such an accept starts is not refused for drift (``_reviewed``), nor is the
retrain the drift policy starts, for the drift the monitor found in live traffic
(``_seen_live``)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, evolution, profile, snapshot, stream
from modelrail.domain.models import Models, newest_upload, upload_prefix
from modelrail.domain.registry import CHAMPION, PROFILE_FILE, Registry
from modelrail.domain.runs import RunLog
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import (
    ContractViolation,
    DataDrift,
    DataUnavailable,
    InvalidEvent,
    NotFound,
)
from modelrail.kernel.events import DatasetValidated, DataUploaded, RetrainRequested, Trigger
from modelrail.kernel.ports import BlobStore, Storage
from modelrail.service import policy_state
from modelrail.service.handoff import JobHandoff
from modelrail.service.stages import HANDED_OFF, Outcome

# What an upload may be, by its name's suffix (``stream.FORMATS``).
DATA_SUFFIXES = tuple(stream.FORMATS)
# The report a refusal for a change of the contract saves (``evolution``).
PROPOSAL = "contract-proposal"


def handle(
    trigger: Trigger,
    *,
    run_id: str,
    causation_id: str,
    config: PipelineConfig,
    storage: Storage,
    data_bucket: str,
    registry: Registry,
    runs: RunLog,
    code_version: str,
    handoff: JobHandoff | None,
    message_id: str,
    lineage: dict[str, Any],
) -> Outcome:
    bucket, key, generation = _locate(trigger, storage, data_bucket, config.model_name)
    try:
        source = storage.bucket(bucket)
    except NotFound as exc:
        raise DataUnavailable(f"dataset gs://{bucket}/{key} is not readable: {exc}") from exc
    contract, limits = config.contract, config.limits
    # Too large to read: refused from its listing, before a byte is in memory.
    listed = next((info for info in source.list(key) if info.key == key), None)
    if listed is not None and generation not in (None, listed.generation):
        listed = None  # another generation now: its size says nothing of this one
    if listed is not None and (too_big := checks.oversized(listed.size, limits.max_upload_bytes)):
        uri = f"gs://{bucket}/{key}#{listed.generation}"
        dataset = {"bucket": bucket, "key": key, "uri": uri, "size": listed.size, "rows": 0}
        raise _violation(runs, run_id, dataset, checks.refused(contract, too_big))
    # Larger than a function can read in its time: the job validates it (service.handoff).
    if handoff is not None and listed is not None and handoff.wanted(listed.size):
        execution = handoff.launch(
            trigger, f"gs://{bucket}/{key}#{listed.generation}", run_id=run_id,
            message_id=message_id, lineage=lineage, causation_id=causation_id,
        )  # fmt: skip
        return Outcome(None, {"job": handoff.job, "execution": execution}, status=HANDED_OFF)
    champion, baseline = _baseline(config, registry)
    parts = snapshot.PartWriter(runs.store, runs.snapshot_key(run_id, ""))
    dataset, result = _stream(source, bucket, key, generation, config, parts, baseline)
    report = result.report
    if not report.passed:
        proposal = evolution.propose(
            contract, report.problems, result.observed or evolution.Observed()
        )
        raise _violation(runs, run_id, dataset, report, _proposed(config, dataset, proposal))
    # Counted once by the split (``dataset.duplicates``): reported, not refused.
    dataset["duplicate_rows"] = result.duplicate_rows
    table = (
        profile.drift_table(
            baseline, result.drift_current, contract, config.drift_columns, config.drift
        )
        if baseline is not None
        else []
    )
    drift: dict[str, Any] = {"champion": champion, "columns": table}
    failing = [row["column"] for row in table if row["status"] == "fail"]
    reviewed = _reviewed(runs, config, str(dataset["uri"])) if failing else None
    if reviewed is not None:
        drift["accepted"] = reviewed  # a person accepted this upload's change: reported
    live = _seen_live(runs, config, trigger)
    if live is not None:  # what the served version is asked drifted: for evaluate too
        drift["seen_live"] = dataset["seen_live"] = live
    excused = reviewed is not None or (live is not None and set(failing) <= set(live["drifted"]))
    report_uri = runs.save_report(
        run_id, "validation", {"dataset": dataset, **report.to_dict(), "drift": drift}
    )
    if failing and not excused:
        parts.abort()
        raise DataDrift(
            f"{dataset['uri']} drifted from v{champion}'s training data past the fail "
            f"limit in {failing}: "
            + "; ".join(f"{r['column']} PSI {r['psi']}" for r in table if r["status"] == "fail"),
            {"report_uri": report_uri, "reasons": [f"{c} drifted" for c in failing], **drift},
        )
    assert result.profile is not None
    store = runs.store
    store.write(
        runs.snapshot_key(run_id, PROFILE_FILE),
        canonical_json(result.profile),
        content_type="application/json",
    )
    # Last: from here on the parts are a snapshot.
    written = snapshot.write_index(parts, runs.snapshot_key(run_id, snapshot.INDEX), result.parts)
    dataset["snapshot"] = written.to_dict()
    lineage = {
        "trigger": trigger.lineage(),
        "config": config.summary(),
        "contract": {"name": contract.name, "version": contract.version},
        "code": {"version": getattr(trigger, "commit_sha", None) or code_version},
        "data": dataset,
        "drift": {
            "champion": champion,
            "warnings": [r for r in table if r["status"] != "ok"],
            **({"accepted": reviewed} if reviewed is not None else {}),
        },
    }
    event = DatasetValidated(
        run_id=run_id,
        causation_id=causation_id,
        lineage=lineage,
        dataset=dataset,
        report_uri=report_uri,
    )
    return Outcome(event, {"rows": report.rows, "report_uri": report_uri})


def _stream(
    source: BlobStore,
    bucket: str,
    key: str,
    generation: int | None,
    config: PipelineConfig,
    parts: snapshot.PartWriter,
    baseline: dict[str, Any] | None,
) -> tuple[dict[str, Any], stream.Result]:
    """The upload read as a stream and checked, its parts written through ``parts``
    (deleted again if the file is refused or the read fails)."""
    contract, limits = config.contract, config.limits
    try:
        opened = source.open(key, generation=generation)
    except NotFound as exc:
        raise DataUnavailable(f"dataset gs://{bucket}/{key} is not readable: {exc}") from exc
    dataset: dict[str, Any] = {
        "bucket": bucket,
        "key": key,
        "generation": opened.generation,
        "uri": f"gs://{bucket}/{key}#{opened.generation}",
        "rows": 0,
    }
    too_big = checks.oversized(opened.size, limits.max_upload_bytes)  # another generation
    if too_big is not None:
        opened.close()
        return dataset, stream.Result(checks.refused(contract, too_big), "", opened.size)
    try:
        with opened:
            result = stream.validate(
                opened.file,
                stream.upload_format(key) or "csv",
                contract,
                stream.Limits(
                    batch_bytes=limits.batch_bytes,
                    max_line_bytes=limits.max_line_bytes,
                    max_columns=limits.max_columns,
                    max_header_bytes=limits.max_header_bytes,
                ),
                parts,
                baseline=baseline,
            )
    except NotFound as exc:
        parts.abort()
        raise DataUnavailable(f"dataset {dataset['uri']} is not readable: {exc}") from exc
    except BaseException:
        parts.abort()  # a transient failure: the redelivery writes them again
        raise
    if result.sha256:
        dataset["sha256"] = result.sha256
    dataset["rows"] = result.report.rows
    if not result.report.passed:
        parts.abort()
    return dataset, result


def _reviewed(runs: RunLog, config: PipelineConfig, uri: str) -> dict[str, Any] | None:
    """Who accepted the contract version this run validates against on this very
    upload (``modelrail contract accept``), if someone did: that person looked at the
    upload's change, so its drift past the fail limit is reported, not refused (the
    gate still judges the candidate against the champion). Read from the model's
    definition, in the artifact bucket the run log is kept in."""
    accepted = Models(runs.store).definition(config.model_name).accepted
    if (
        accepted is None
        or accepted.get("data_uri") != uri
        or accepted.get("version") != config.contract.version
    ):
        return None
    return {"contract_version": accepted["version"], "by": accepted["who"]}


def _seen_live(runs: RunLog, config: PipelineConfig, trigger: Trigger) -> dict[str, Any] | None:
    """The monitoring report a drift policy's retrain answers, and the features it
    found drifted in what the served version is asked. An upload drifted in those
    features alone shows the change the retrain is for, so its drift is reported, not
    refused; the gate still judges the candidate, on its own hold-out. Read from the
    artifact bucket, where only the monitor writes reports and its policy's state: the
    event names the report, it cannot vouch for it, so the request must be the one the
    monitor's state says it started."""
    if not isinstance(trigger, RetrainRequested) or trigger.policy != "drift":
        return None
    key, model = trigger.monitoring_report, config.model_name
    if key is None or not key.startswith(f"monitoring/{model}/"):
        return None
    # The retrain the monitor itself started last (its compare-and-set state, which
    # only the monitor writes): an old report named again by another request is not.
    started = policy_state.read(runs.store, model, "retrain-on-drift").value
    if started is None or started.get("request_id") != trigger.request_id:
        return None
    try:
        report = orjson.loads(runs.store.read(key).data)
    except (NotFound, orjson.JSONDecodeError):
        return None
    if not isinstance(report, dict) or report.get("model") != model or not report.get("drifted"):
        return None
    return {"monitoring_report": key, "drifted": list(report["drifted"])}


def _violation(
    runs: RunLog,
    run_id: str,
    dataset: dict[str, Any],
    report: checks.ValidationReport,
    proposal: dict[str, Any] | None = None,
) -> ContractViolation:
    """The failure of a file that breaks its contract, its report saved for people,
    with the contract change it asks for (``evolution``) when it asks for one."""
    report_uri = runs.save_report(run_id, "validation", {"dataset": dataset, **report.to_dict()})
    summary = "; ".join(p.message for p in report.problems[:5])
    details = {"report_uri": report_uri, **report.to_dict()}
    if proposal is not None:
        details["proposal_uri"] = runs.save_report(run_id, PROPOSAL, proposal)
        summary += (
            f". If the data changed legitimately, `modelrail contract diff {run_id}` shows "
            "the contract change it asks for"
        )
    return ContractViolation(
        f"{dataset['uri']} breaks contract {report.contract!r}: {summary}", details
    )


def _proposed(
    config: PipelineConfig, dataset: dict[str, Any], proposal: evolution.Proposal | None
) -> dict[str, Any] | None:
    """The report of a proposed contract change: the changes, the problems they leave,
    the upload, and the definition they apply to (accepting them is refused once
    that changed)."""
    if proposal is None:
        return None
    contract = config.contract
    return {
        "model": config.model_name,
        "data_uri": dataset["uri"],
        "based_on": {
            "config_hash": config.sha256,
            "contract": contract.name,
            "contract_version": contract.version,
            "contract_sha256": contract.sha256,
        },
        **proposal.to_dict(),
    }


def _baseline(
    config: PipelineConfig, registry: Registry
) -> tuple[int | None, dict[str, Any] | None]:
    """The champion's version and its training profile, the baseline of drift (None for
    the first model, or a champion with no profile). The profile is read against the
    champion's signed manifest: a rewritten one is an ``IntegrityError``, not a
    baseline."""
    champion = registry.alias(config.model_name, CHAMPION)
    if champion is None:
        return None, None
    manifest = registry.signed_manifest(config.model_name, champion.version)
    baseline = registry.file(manifest, PROFILE_FILE)
    if baseline is None:
        return champion.version, None
    loaded: dict[str, Any] = orjson.loads(baseline)
    return champion.version, loaded


def _locate(
    trigger: Trigger, storage: Storage, data_bucket: str, model: str
) -> tuple[str, str, int | None]:
    """The bucket, object and generation the trigger names, its names checked: a name no
    bucket can hold is a permanent ``InvalidEvent``, refused on the first delivery.
    A retrain naming no data trains on the model's newest upload, never another's."""
    if isinstance(trigger, DataUploaded):
        _check_names(trigger.bucket, trigger.name, f"gs://{trigger.bucket}/{trigger.name}")
        if not trigger.name.endswith(DATA_SUFFIXES):
            raise InvalidEvent(
                f"gs://{trigger.bucket}/{trigger.name} is not a {', '.join(DATA_SUFFIXES)} "
                "file; only CSV, gzip-compressed CSV and Parquet uploads start a run"
            )
        return trigger.bucket, trigger.name, trigger.generation
    if trigger.data_uri:
        located = _parse_uri(trigger.data_uri)
        if not located[1].endswith(DATA_SUFFIXES):
            raise InvalidEvent(
                f"{_shown(trigger.data_uri)} is not a {', '.join(DATA_SUFFIXES)} file"
            )
        return located
    # No dataset named: retrain on the model's newest upload.
    latest = newest_upload(storage.bucket(data_bucket), model, DATA_SUFFIXES)
    if latest is None:
        raise DataUnavailable(
            f"no {', '.join(DATA_SUFFIXES)} upload in gs://{data_bucket}/{upload_prefix(model)} "
            f"to retrain {model} on"
        )
    return data_bucket, latest.key, latest.generation


def _parse_uri(uri: str) -> tuple[str, str, int | None]:
    path, _, generation = uri.partition("#")
    scheme, _, rest = path.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "gs" or not bucket or not key or (generation and not generation.isdigit()):
        raise InvalidEvent(
            f"data_uri must look like gs://bucket/object[#generation], not {_shown(uri)}"
        )
    _check_names(bucket, key, uri)
    return bucket, key, int(generation) if generation else None


# Cloud Storage's rules: bucket names of 3 to 63 lower-case letters, digits, dots, dashes
# and underscores; object names of at most 1,024 bytes of UTF-8 without control
# characters. "." and ".." segments and a leading "/" are refused as well: no object
# of ours has them, and on the filesystem store they would leave the bucket.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_MAX_OBJECT_NAME_BYTES = 1024


def _check_names(bucket: str, key: str, uri: str) -> None:
    problem = None
    if not _BUCKET_NAME.fullmatch(bucket):
        problem = f"{_shown(bucket)} is not a bucket name"
    elif len(key.encode()) > _MAX_OBJECT_NAME_BYTES:
        problem = f"the object name is longer than {_MAX_OBJECT_NAME_BYTES} bytes"
    elif key.startswith("/") or any(part in (".", "..") for part in key.split("/")):
        problem = "the object name has a '.' or '..' segment"
    elif any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        problem = "the object name has control characters"
    if problem is not None:
        raise InvalidEvent(f"{_shown(uri)} names no object a bucket can hold: {problem}")


def _shown(text: str) -> str:
    """``text`` as a message quotes it: cut, whatever its length."""
    return repr(text if len(text) <= 200 else text[:200] + "…")
