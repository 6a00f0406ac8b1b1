"""The gate trusts only signed files: evaluate and validate read the champion (its model,
reference set and profile) against its signed manifest, as the staging service does.
A champion whose files were replaced and whose manifest was rewritten to match (what
write access to the bucket allows) ends the run as an integrity error, never steers
the gate."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelrail.domain.registry import MANIFEST
from modelrail.kernel.ports import Message
from modelrail.service import pipeline
from tests.unit.test_data_gate import _csv, _with_champion

REFERENCE = "reference.parquet"
PROFILE = "profile.json"


def _rewrite(harness_store: object, model: str, name: str, data: bytes) -> None:
    """Replace ``name`` of v1 and rewrite its sha256 in the manifest, as an attacker with
    write access to the bucket (but not to the signing key) can."""
    store = harness_store
    prefix = f"models/{model}/versions/1/"
    store.write(prefix + name, data)  # type: ignore[attr-defined]
    manifest = orjson.loads(store.read(prefix + MANIFEST).data)  # type: ignore[attr-defined]
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    store.write(prefix + MANIFEST, orjson.dumps(manifest))  # type: ignore[attr-defined]


@pytest.mark.fault
def test_a_champion_whose_reference_set_was_rewritten_fails_the_run_not_the_gate(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    harness, frame = _with_champion(tmp_path, penguins_csv)
    store, model = harness.container.artifacts, harness.model
    # Adelie and Gentoo swapped in the champion's reference set and in the new data:
    # judged on the tampered set, a label-swapped candidate would be blessed.
    key = f"models/{model}/versions/1/{REFERENCE}"
    table = pq.read_table(io.BytesIO(store.read(key).data))
    target = harness.container.config.contract.target
    swap = {"Adelie": "Gentoo", "Gentoo": "Adelie"}
    labels = [swap.get(v, v) for v in table.column(target).to_pylist()]
    column = pa.array(labels).cast(table.schema.field(target).type)
    swapped = table.set_column(table.schema.get_field_index(target), target, column)
    sink = io.BytesIO()
    pq.write_table(swapped, sink)
    frame[target] = frame[target].map(lambda v: swap.get(v, v))

    def tampered_then_evaluated(message: Message) -> object:
        # Tampered once validate has read the profile: evaluate's own check is tested.
        _rewrite(store, model, REFERENCE, sink.getvalue())
        return pipeline.consume(harness.container, "evaluate", message)

    harness.bus.subscribe("model-trained--evaluate", tampered_then_evaluated)

    harness.upload(_csv(frame), "uploads/penguins/swapped.csv")
    harness.run()

    run = harness.runs()[-1]
    assert run.outcome == "failed"
    assert run.failure is not None
    assert (run.failure["stage"], run.failure["kind"]) == ("evaluate", "integrity_error")
    assert "signature" in run.failure["message"]
    assert harness.container.registry.versions(model) == [1]
    assert harness.container.registry.aliases(model) == {"champion": 1, "staging": 1}


@pytest.mark.fault
def test_a_champion_whose_profile_was_rewritten_fails_validation(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    harness, frame = _with_champion(tmp_path, penguins_csv)
    store, model = harness.container.artifacts, harness.model
    profile = orjson.loads(store.read(f"models/{model}/versions/1/{PROFILE}").data)
    _rewrite(store, model, PROFILE, orjson.dumps({**profile, "rows": 1}))

    harness.upload(_csv(frame.iloc[::-1]), "uploads/penguins/again.csv")
    harness.run()

    run = harness.runs()[-1]
    assert run.failure is not None
    assert (run.failure["stage"], run.failure["kind"]) == ("validate", "integrity_error")
    assert harness.container.registry.versions(model) == [1]
