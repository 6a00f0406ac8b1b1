"""What a retrain a policy starts (``[retrain] on_drift``, ``schedule``) trains on: the
model's newest upload, and whether it holds enough new rows for ``[retrain]
min_new_rows`` over the data the served version trained on.

Row counts are what validate recorded, never read again: the served version's from
its manifest's lineage (``data.rows``), the newest upload's from the validate record of
the run that upload started. That run's id is derived from the upload and a
configuration hash (``derive_run_id``); the model's current definition's and the one
the served version was trained under are tried, so a definition changed since (adding
``min_new_rows`` changes it too) still finds the upload's count. An upload no run has
validated yet (its notification is on its way, a large upload's job is at work, it was
refused) has no count: no retrain starts on it, and the caller says why.
"""

from __future__ import annotations

from modelrail.domain.models import newest_upload
from modelrail.domain.registry import Manifest
from modelrail.kernel.events import derive_run_id
from modelrail.kernel.ports import BlobInfo
from modelrail.service.container import Container
from modelrail.service.stages.validate import DATA_SUFFIXES


def newest(container: Container) -> BlobInfo | None:
    """The model's newest upload: what a policy retrain trains on."""
    data = container.storage.bucket(container.settings.data_bucket)
    return newest_upload(data, container.model, DATA_SUFFIXES)


def upload_uri(container: Container, upload: BlobInfo) -> str:
    return f"gs://{container.settings.data_bucket}/{upload.key}#{upload.generation}"


def too_few_new_rows(container: Container, upload: BlobInfo, served: Manifest | None) -> str | None:
    """Why ``upload`` holds too few new rows for ``[retrain] min_new_rows`` over what
    ``served`` (None: nothing served, no rows) trained on; None when it holds enough,
    or no minimum is set."""
    needed = container.config.retrain_min_new_rows
    if not needed:
        return None
    uri = upload_uri(container, upload)
    rows = validated_rows(container, uri, served)
    if rows is None:
        return (
            f"[retrain] min_new_rows = {needed:,}: the newest upload, {uri}, has no row "
            "count yet (no run has validated it)"
        )
    trained = int((served.lineage.data or {}).get("rows", 0)) if served is not None else 0
    if rows - trained >= needed:
        return None
    than = f"the {trained:,} v{served.version} trained on" if served is not None else "none"
    return (
        f"[retrain] min_new_rows = {needed:,}: the newest upload, {uri}, holds {rows:,} "
        f"rows, {rows - trained:,} more than {than}"
    )


def validated_rows(container: Container, uri: str, served: Manifest | None) -> int | None:
    """The rows validate counted in the upload ``uri`` (``gs://bucket/key#generation``),
    from the record of the run it started; None if no such run validated it."""
    hashes = [container.config.sha256]
    if served is not None and served.lineage.config.get("hash") not in (None, *hashes):
        hashes.append(str(served.lineage.config["hash"]))
    for config_hash in hashes:
        record = container.runs.stage_record(derive_run_id(uri, config_hash), "validate")
        if record is not None and record.status == "succeeded" and record.lineage.data:
            return int(record.lineage.data["rows"])
    return None
