"""``modelrail monitor``: one window of a served version's prediction log, judged
against its training data (``domain.monitoring``), kept as a report.

The version is the one staging serves unless one is named. Its manifest is verified
as the service verifies it (``Registry.load``) before its training profile is trusted.
The log is read a day's folder at a time (``predictions/<model>/v<version>/<date>/``),
an object at a time: memory holds one object and the tallies, whatever the window. A
line that is not JSON, or not a record of this version, is skipped and counted
(``skipped_lines``), never fatal. The report is written to
``monitoring/<model>/v<version>/<end>-<start>.json`` in the artifact bucket.

A window that drifted (a feature over its ``[drift]`` fail limit, on enough instances)
is published as ``drift-detected``. With ``[retrain] on_drift``, it also starts a
retrain of the model on its newest upload, as a ``retrain-requested`` whose policy
(``drift``) becomes the run's trigger kind and whose reason names the features, unless:
- the newest upload is the data the served version trained on: a retrain would train
  the same model again (new data that shows the change is what helps);
- the newest upload holds fewer new rows than ``[retrain] min_new_rows`` asks
  (``service.retrain_data``: the counts validate recorded);
- a retrain on drift started within ``cooldown_hours``: the cool-down is one object,
  ``models/<model>/policies/retrain-on-drift.json``, moved by compare-and-set, so two
  monitors of one window start one retrain.
The report's ``actions`` say what was published, or why not.

``monitor_every`` judges one window for each of an installation's models (the cloud's
scheduled monitor job): a model nothing serves yet is named with why, not failed, and a
model whose version logged nothing in the window gets its report of no data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from modelrail.domain import monitoring, predictions
from modelrail.domain.dataset import profile
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import PROFILE_FILE, Manifest
from modelrail.domain.rollout import Shift
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import NotFound, Refused
from modelrail.kernel.events import DriftDetected, RetrainRequested, utcnow
from modelrail.service import policy_state, retrain_data
from modelrail.service.container import Container
from modelrail.service.reconcile import STAGING

REPORT_PREFIX = "monitoring/"


def monitor(
    container: Container,
    *,
    since: datetime,
    until: datetime,
    version: int | None = None,
) -> dict[str, Any]:
    """The monitoring report of the model's version (staging's unless named) over
    [``since``, ``until``), saved in the artifact bucket."""
    if since >= until:
        raise Refused(f"the window is empty: {since.isoformat()} is not before {until.isoformat()}")
    model, registry = container.model, container.registry
    if version is None:
        alias = registry.alias(model, STAGING)
        if alias is None:
            raise Refused(f"model {model!r} has no version in staging: nothing serves it yet")
        version = alias.version
    try:
        loaded = registry.load(model, version)
    except NotFound:
        raise Refused(f"model {model!r} has no version {version}") from None
    baseline = registry.file(loaded.manifest, PROFILE_FILE)
    if baseline is None:
        raise Refused(f"{model} v{version} kept no training profile to compare with")
    tally = monitoring.Tally(
        FeatureSchema.from_dict(loaded.manifest.features), orjson.loads(baseline)
    )
    start, end = predictions.timestamp(since), predictions.timestamp(until)
    for line in _lines(container, model, version, since, until):
        if isinstance(line, dict) and start <= str(line.get("time", "")) < end:
            tally.add(line)
        elif not isinstance(line, dict):
            tally.skipped += 1
    config = container.config
    result = monitoring.report(
        tally,
        config.drift_columns,
        config.drift,
        model=model,
        version=version,
        window={"from": start, "to": end},
    )
    # Named by the window, its end first: the same window is the same report, and a
    # listing sorts by the end.
    moments = "-".join(f"{m.astimezone(UTC):%Y%m%dT%H%M%S%fZ}" for m in (until, since))
    key = f"{REPORT_PREFIX}{model}/v{version}/{moments}.json"
    result["report_uri"] = container.artifacts.uri(key)
    result["actions"] = _act(container, result, loaded.manifest, until, key)
    container.artifacts.write(key, canonical_json(result), content_type="application/json")
    return result


def monitor_every(
    installation: Container, models: Sequence[str], *, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Each of ``models``' report over [``since``, ``until``) (its staging version's), or
    ``{"model", "monitored": False, "why"}`` for a model that cannot be judged (nothing
    serves it yet, its version kept no profile): one model never stops the others'."""
    done = []
    for name in models:
        try:
            done.append(monitor(installation.for_model(name), since=since, until=until))
        except Refused as exc:
            done.append({"model": name, "monitored": False, "why": str(exc)})
    return done


def reports(container: Container, limit: int = 50) -> list[dict[str, Any]]:
    """The model's latest ``limit`` monitoring reports, every version's, oldest first
    (by the end of their windows)."""
    store = container.artifacts
    keys = sorted(
        (blob.key for blob in store.list(f"{REPORT_PREFIX}{container.model}/")),
        key=lambda key: key.rsplit("/", 1)[-1],
    )[-limit:]
    return [orjson.loads(store.read(key).data) for key in keys]


def _act(
    container: Container, report: dict[str, Any], manifest: Manifest, until: datetime, key: str
) -> dict[str, Any]:
    """Publish the drift, and start a retrain where the policy says so."""
    if not report["drifted"]:
        return {}
    over = [
        {"feature": row["feature"], "psi": row["psi"], "fail": row["fail"]}
        for row in report["features"]
        if row["status"] == "fail"
    ]
    detected = DriftDetected(
        model=report["model"],
        version=report["version"],
        window=report["window"],
        features=over,
        report_uri=report["report_uri"],
    )
    bus = container.bus
    bus.publish(
        detected.event_type, orjson.dumps(detected.to_body()), {"event_type": detected.event_type}
    )
    actions: dict[str, Any] = {"drift_detected": detected.event_id}
    if container.config.retrain_on_drift:
        why = ", ".join(f"{f['feature']} (PSI {f['psi']} > {f['fail']})" for f in over)
        actions["retrain"] = _retrain_on_drift(container, manifest, until, why, key)
    return actions


def _retrain_on_drift(
    container: Container, manifest: Manifest, until: datetime, why: str, report_key: str
) -> dict[str, Any]:
    """The retrain [retrain] on_drift starts, or why it starts none. It names the
    report (``report_key``), whose drift validate then takes as confirmed by live
    traffic."""
    model = container.model
    newest = retrain_data.newest(container)
    trained_on = manifest.lineage.data or {}
    if newest is None:
        return {"started": False, "why": "no upload to retrain on"}
    if (newest.key, newest.generation) == (trained_on.get("key"), trained_on.get("generation")):
        return {
            "started": False,
            "why": f"the newest upload is the data v{manifest.version} trained on: a retrain "
            "would train the same model; upload data that shows the change",
        }
    too_few = retrain_data.too_few_new_rows(container, newest, manifest)
    if too_few is not None:
        return {"started": False, "why": too_few}
    state = policy_state.read(container.artifacts, model, "retrain-on-drift")
    now = until.timestamp()
    if state.value is not None:
        last = state.value
        if now - float(last["at_s"]) < container.config.retrain_cooldown_s:
            return {
                "started": False,
                "why": f"a retrain on drift started at {last['at']} "
                f"({container.config.retrain_cooldown_s / 3600:g} h cool-down)",
            }
    request = RetrainRequested(
        model=model,
        request_id=f"drift:{model}:v{manifest.version}:{until:%Y%m%dT%H%M%S}",
        data_uri=retrain_data.upload_uri(container, newest),
        reason=f"drift in what v{manifest.version} is asked: {why}"[:500],
        requested_at=utcnow(),
        policy="drift",
        monitoring_report=report_key,
    )
    started = {"at": request.requested_at, "at_s": now, "request_id": request.request_id}
    if not state.replace(container.artifacts, started):
        return {"started": False, "why": "another monitor started a retrain on drift meanwhile"}
    container.bus.publish(
        request.event_type, orjson.dumps(request.to_body()), {"event_type": request.event_type}
    )
    return {"started": True, "request_id": request.request_id, "reason": request.reason}


def prediction_shift(
    container: Container, old: int, new: int, since: datetime, until: datetime, *, service: str
) -> Shift:
    """How version ``new``'s predictions logged by ``service`` over [``since``,
    ``until``) differ from version ``old``'s there over the same time (a canary step:
    one traffic, split between them; the same versions' answers on another service, or
    from a server that named none, are not that traffic): the PSI of the new one's
    against the old one's, both in the old version's training-target bins. A version
    that kept no profile, or logged nothing, gives no PSI."""
    model, registry = container.model, container.registry
    manifests = {version: registry.signed_manifest(model, version) for version in (old, new)}
    baseline = registry.file(manifests[old], PROFILE_FILE)
    if baseline is None:
        return Shift(None, 0, 0)
    profile_of_old = orjson.loads(baseline)
    start, end = predictions.timestamp(since), predictions.timestamp(until)
    tallies = {}
    for version, manifest in manifests.items():
        tally = monitoring.Tally(FeatureSchema.from_dict(manifest.features), profile_of_old)
        for line in _lines(container, model, version, since, until):
            if (
                isinstance(line, dict)
                and line.get("service") == service
                and start <= str(line.get("time", "")) < end
            ):
                tally.add(line)
        tallies[version] = tally
    before, after = tallies[old].predicted(), tallies[new].predicted()
    index = None if before is None or after is None else profile.psi(before, after)
    return Shift(index, tallies[old].instances, tallies[new].instances)


def _lines(
    container: Container, model: str, version: int, since: datetime, until: datetime
) -> Iterator[Any]:
    """Every line of the version's log in the days the window touches (None for a line
    that is not JSON), but those of objects written before the window began: a batch
    holds lines recorded before its write, so none of them is in the window (a canary
    step reads minutes of a day's log, not the whole day)."""
    store = container.artifacts
    start = since.astimezone(UTC)
    day = start.date()
    while day <= until.astimezone(UTC).date():
        for blob in store.list(predictions.day_prefix(model, version, day)):
            if day == start.date() and predictions.written_before(blob.key, start):
                continue
            for line in store.read(blob.key).data.splitlines():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None
        day += timedelta(days=1)
