"""The durable records against their JSON Schemas (``modelrail/schemas/records``): what
the pipeline writes matches its schema, and each record type reads it back and writes
the same JSON; a manifest byte for byte, since its bytes are what is signed."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from modelrail.adapters.local.secrets import EnvironmentSecrets
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.lineage import Lineage
from modelrail.domain.notifications import NOTIFICATIONS_PREFIX, Delivery
from modelrail.domain.registry import MANIFEST, PUBLICATION, Manifest, Publication
from modelrail.domain.runs import CANDIDATE_FILE, CandidateRecord, StageRecord
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.resources import schema_problems
from modelrail.service.rollback import rollback
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS, REPO, installed, settings_env
from tests.fakes import FakeDeployer, FakeWebhooks, InMemoryStorage
from tests.unit.conftest import Harness

Record = StageRecord | Manifest | CandidateRecord | Publication | Lineage | Delivery
# Each record's schema, its type, and where the pipeline keeps it in the artifact bucket.
KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], Record], Callable[[str], bool]]] = {
    "stage records": (
        "stage-record",
        StageRecord.from_json,
        lambda key: key.startswith("runs/") and "/stages/" in key,
    ),
    "manifests": ("manifest", Manifest.from_json, lambda key: key.endswith(f"/{MANIFEST}")),
    "candidates": (
        "candidate",
        CandidateRecord.from_json,
        lambda key: key.endswith(f"/candidate/{CANDIDATE_FILE}"),
    ),
    "publications": (
        "publication",
        Publication.from_json,
        lambda key: key.endswith(f"/{PUBLICATION}"),
    ),
    "notification deliveries": (
        "notification",
        Delivery.from_json,
        lambda key: key.startswith(NOTIFICATIONS_PREFIX),
    ),
}
# The model's webhook answers each event's first post with 503 and the second with 204:
# a pending delivery record, then a delivered one.
NOTIFY = '\n[[notify.webhooks]]\nname = "team"\nurl_env = "TEAM_URL"\n'


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every object a deployed run, a rejected one, one whose data breaks its contract,
    a second deployed one and a rollback leave in the artifact bucket, and the
    notifications of them."""
    folder = tmp_path_factory.mktemp("records")
    settings = Settings.from_env(settings_env(folder / "home"))
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    config = (REPO / "pipeline.toml").read_text()
    config = config.replace('contract = "schemas/', f'contract = "{REPO}/schemas/', 1) + NOTIFY
    (folder / "pipeline.toml").write_text(config)
    webhooks = FakeWebhooks(*[503, 204] * 8)
    container = installed(
        bootstrap(
            settings,
            storage_factory=lambda: storage,
            deployer_factory=lambda _model: deployer,
            secrets_factory=lambda: EnvironmentSecrets({"TEAM_URL": "https://team.example/h"}),
            webhooks_factory=lambda: webhooks,
        ),
        folder / "pipeline.toml",
    )
    harness = Harness(container, storage, deployer)
    penguins = PENGUINS.read_bytes()
    harness.upload(penguins)
    harness.run()
    frame = pd.read_csv(io.BytesIO(penguins))
    frame["species"] = np.random.default_rng(0).permutation(frame["species"].to_numpy())
    harness.upload(frame.to_csv(index=False).encode(), "uploads/penguins/shuffled.csv")
    harness.run()
    harness.upload(b"species,island\nAdelie,Mars\n", "uploads/penguins/broken.csv")
    harness.run()
    harness.upload(penguins + penguins.split(b"\n", 1)[1], "uploads/penguins/twice.csv")
    harness.run()
    assert [run.outcome for run in harness.runs()] == ["deployed", "rejected", "failed", "deployed"]
    rollback(container, to=1, requested_by="records test")
    store = container.artifacts
    return {info.key: store.read(info.key).data for info in store.list()}


def test_the_runs_wrote_every_kind_of_record_and_every_stage_outcome(
    written: dict[str, bytes],
) -> None:
    for kind, (_, _, holds) in KINDS.items():
        assert any(holds(key) for key in written), f"no {kind} written"
    records = [
        orjson.loads(data) for key, data in written.items() if KINDS["stage records"][2](key)
    ]
    assert {r["status"] for r in records} == {"succeeded", "failed"}
    assert {r["stage"] for r in records} >= {
        "validate", "launch_training", "train", "evaluate", "register", "deploy", "rollback",
    }  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_every_written_record_matches_its_schema_and_reads_back_to_the_same_json(
    written: dict[str, bytes], kind: str
) -> None:
    schema, read, holds = KINDS[kind]
    for key, data in written.items():
        if not holds(key):
            continue
        body = orjson.loads(data)
        assert schema_problems(schema, body, kind="records") == [], key
        record = read(body)
        assert record.to_json() == body, key
        assert canonical_json(record.to_json()) == data, key  # one serialisation, bytes too


def test_every_lineage_matches_its_schema(written: dict[str, bytes]) -> None:
    lineages = [
        orjson.loads(data)["lineage"]
        for key, data in written.items()
        if KINDS["stage records"][2](key) or KINDS["manifests"][2](key)
    ]
    assert any("champion" in lineage for lineage in lineages)  # judged
    assert any("champion" not in lineage for lineage in lineages)  # not judged yet
    for lineage in lineages:
        assert schema_problems("lineage", lineage, kind="records") == []
        assert Lineage.from_json(lineage).to_json() == lineage


def test_the_schemas_refuse_a_record_that_breaks_them(written: dict[str, bytes]) -> None:
    data = next(d for k, d in written.items() if KINDS["manifests"][2](k))
    manifest = orjson.loads(data)
    del manifest["files"]["model.txt"]
    manifest["surprise"] = True
    problems = schema_problems("manifest", manifest, kind="records")
    assert any("model.txt" in problem for problem in problems), problems
    assert any("surprise" in problem for problem in problems), problems
    holds = KINDS["stage records"][2]
    records = [orjson.loads(d) for k, d in written.items() if holds(k)]
    record = next(r for r in records if r["status"] == "succeeded")
    assert schema_problems("stage-record", record, kind="records") == []
    record["status"] = "failed"  # a failure with no error
    assert schema_problems("stage-record", record, kind="records") != []


def test_a_manifest_from_before_compiled_predictors_and_diagnostics_reads_back_unchanged(
    written: dict[str, bytes],
) -> None:
    data = next(d for k, d in written.items() if KINDS["manifests"][2](k))
    older = orjson.loads(data)
    del older["compiled"], older["diagnostics"]
    assert schema_problems("manifest", older, kind="records") == []

    manifest = Manifest.from_json(older)

    assert (manifest.compiled, manifest.diagnostics) == (None, None)
    assert canonical_json(manifest.to_json()) == canonical_json(older)  # its signed bytes


def test_a_manifest_that_is_not_one_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="penguins v3: its manifest is not a manifest"):
        Manifest.parse(b'{"model": "penguins"}', "penguins v3")
