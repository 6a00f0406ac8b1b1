"""When the data legitimately changes: a refused upload proposes the contract change it
asks for, a person accepts it as a new contract version and the model retrains on that
upload; or a person blesses a candidate the gate rejected, on the record.

On real public data shipped in installed packages, split into an "old" upload the
model is defined from and a "changed" one: vega-datasets' iris (150 flowers of three
species, the petal width predicted from the other measurements and the species; the
old upload has no virginica, whose petals and sepals are also longer than the other
two species' ever are) and statsmodels' engel (235 Belgian households' income and
food expenditure; the old upload has the incomes below 1,500 francs).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from modelrail.domain.dataset import evolution as evolution_domain
from modelrail.domain.dataset.checks import Problem
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.domain.lineage import Lineage
from modelrail.domain.models import Definition
from modelrail.domain.registry import MANIFEST
from modelrail.domain.runs import StageRecord
from modelrail.entry import init
from modelrail.kernel.errors import Refused
from modelrail.kernel.resources import schema_problems
from modelrail.service import evolution
from modelrail.service.container import Container
from modelrail.service.stages import register
from modelrail.service.sweep import sweep
from modelrail.ui import create_app
from tests.conftest import installed
from tests.unit.conftest import Harness

IRIS, ENGEL = "iris", "engel"


def _iris() -> pd.DataFrame:
    return pd.read_json(resources.files("vega_datasets") / "_data" / "iris.json")


def _old_iris() -> pd.DataFrame:
    iris = _iris()
    return iris[iris.species != "virginica"]


def _engel() -> pd.DataFrame:
    return pd.read_csv(resources.files("statsmodels.datasets") / "engel" / "engel.csv")


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _install(
    harness: Harness, frame: pd.DataFrame, name: str, target: str, tmp_path: Path
) -> Container:
    """``name`` defined by ``init`` from ``frame`` (the old upload), in the harness."""
    csv_path = tmp_path / f"{name}.csv"
    csv_path.write_bytes(_csv(frame))
    config_path, _ = init.write(init.infer(csv_path, target, name=name), tmp_path / name)
    return installed(harness.container, config_path)


def _upload(harness: Harness, model: str, data: bytes, name: str) -> str:
    event = harness.upload(data, f"uploads/{model}/{name}")
    harness.run()
    return event.idempotency_key


def _run_of(harness: Harness, key: str):  # type: ignore[no-untyped-def]
    [run] = [run for run in harness.runs() if run.trigger.get("key") == key]
    return run


@pytest.fixture
def iris(harness: Harness, tmp_path: Path) -> Container:
    """iris installed from, and trained on, the old upload (no virginica)."""
    old = _old_iris()
    container = _install(harness, old, IRIS, "petalWidth", tmp_path)
    run = _run_of(harness, _upload(harness, IRIS, _csv(old), "old.csv"))
    assert run.outcome == "deployed", run.failure
    return container


def test_a_new_species_and_longer_petals_are_proposed_and_accepting_them_retrains(
    harness: Harness, iris: Container
) -> None:
    before = harness.container.models.config(IRIS).contract
    key = _upload(harness, IRIS, _csv(_iris()), "with-virginica.csv")
    refused = _run_of(harness, key)
    assert refused.outcome == "failed"
    error = refused.stages["validate"].error
    assert error is not None
    assert error["kind"] == "contract_violation"
    # The message names the new value, and where to look next.
    assert "'virginica'" in error["message"]
    assert f"modelrail contract diff {refused.run_id}" in error["message"]
    assert any("'virginica'" in reason for reason in refused.failure["reasons"])  # type: ignore[index]

    proposed = evolution.proposal(harness.container, refused.run_id)
    assert proposed["model"] == IRIS
    assert proposed["based_on"]["contract_version"] == 1
    changes = {c["column"]: c for c in proposed["changes"]}
    assert [c["change"] for c in proposed["changes"]] == ["categories", "range", "range"]
    assert (changes["species"]["add"], changes["species"]["rows"]) == (["virginica"], 50)
    virginica = _iris()[lambda f: f.species == "virginica"]
    for column in ("petalLength", "sepalLength"):
        highest = float(virginica[column].max())
        assert changes[column]["observed"] == {"min": None, "max": highest}
        assert "min" not in changes[column]  # only the side that broke moves
        assert changes[column]["max"] > highest
    assert "sepalWidth" not in changes  # within its range
    assert proposed["unaddressed"] == []

    version, request = evolution.accept(
        harness.container, refused.run_id, who="ana", reason="virginica joined the garden"
    )
    harness.run()

    assert version == 2
    models = harness.container.models
    assert models.versions(IRIS) == [1, 2]
    contract = models.config(IRIS).contract
    assert contract.column("species").categories == ("setosa", "versicolor", "virginica")
    assert contract.column("petalLength").min == before.column("petalLength").min
    assert contract.column("petalLength").max == changes["petalLength"]["max"]
    assert models.definition(IRIS, 1).config().contract == before
    accepted = models.definition(IRIS).accepted
    assert accepted is not None
    assert (accepted["who"], accepted["reason"], accepted["run_id"]) == (
        "ana",
        "virginica joined the garden",
        refused.run_id,
    )
    retrained = _run_of(harness, request.idempotency_key)
    assert retrained.outcome == "deployed", retrained.failure
    assert retrained.lineage is not None
    assert retrained.lineage.contract == {"name": before.name, "version": 2}
    assert retrained.lineage.data is not None
    assert retrained.lineage.data["uri"] == proposed["data_uri"]
    manifest = harness.container.registry.manifest(IRIS, 2)
    assert manifest.lineage.contract == {"name": before.name, "version": 2}
    _drift_is_reported_not_refused(harness, retrained.run_id, manifest.lineage)

    _records_match_their_schemas(harness)

    # The proposal was made against version 1: it cannot be applied twice.
    with pytest.raises(Refused, match="changed since the change was proposed"):
        evolution.accept(harness.container, refused.run_id, who="bo", reason="again")
    assert models.versions(IRIS) == [1, 2]


def test_values_past_a_range_are_proposed_as_a_range_widened_to_cover_them(
    harness: Harness, tmp_path: Path
) -> None:
    engel = _engel()
    old = engel[engel.income < 1500]
    _install(harness, old, ENGEL, "foodexp", tmp_path)
    assert _run_of(harness, _upload(harness, ENGEL, _csv(old), "old.csv")).outcome == "deployed"
    before = harness.container.models.config(ENGEL).contract.column("income")

    refused = _run_of(harness, _upload(harness, ENGEL, _csv(engel), "all.csv"))
    assert refused.outcome == "failed"

    [change] = evolution.proposal(harness.container, refused.run_id)["changes"]
    assert (change["column"], change["change"]) == ("income", "range")
    highest = float(engel.income.max())
    assert change["observed"] == {"min": None, "max": highest}
    assert "min" not in change  # only the side that broke moves
    assert change["max"] > highest
    evolution.accept(harness.container, refused.run_id, who="ana", reason="richer households")
    after = harness.container.models.config(ENGEL).contract.column("income")
    assert (after.min, after.max) == (before.min, change["max"])


def test_a_column_added_and_one_gone_are_proposed_and_problems_of_the_data_are_not(
    harness: Harness, iris: Container
) -> None:
    changed = _old_iris().drop(columns=["sepalWidth"])
    changed["garden"] = [f"bed {i % 7}" for i in range(len(changed))]
    changed["petalWidth"] = changed["petalWidth"].astype(object)
    changed.loc[changed.index[3], "petalWidth"] = "lost"  # broken data, not a change
    refused = _run_of(harness, _upload(harness, IRIS, _csv(changed), "changed.csv"))

    proposed = evolution.proposal(harness.container, refused.run_id)
    assert [(c["change"], c["column"]) for c in proposed["changes"]] == [
        ("remove_column", "sepalWidth"),
        ("add_column", "garden"),
    ]
    [unaddressed] = proposed["unaddressed"]
    assert unaddressed.startswith("[type] column 'petalWidth'")

    evolution.accept(harness.container, refused.run_id, who="ana", reason="new form")
    harness.run()
    contract = harness.container.models.config(IRIS).contract
    assert [c.name for c in contract.columns] == [
        "sepalLength", "petalLength", "petalWidth", "species", "garden"
    ]  # fmt: skip
    assert (contract.column("garden").type, contract.column("garden").role) == ("text", "ignore")
    # The retrain on that upload is refused for the broken value alone.
    [retrained] = [r for r in harness.runs() if r.trigger.get("kind") == "retrain"]
    assert retrained.outcome == "failed"
    assert [reason.split("]")[0] for reason in retrained.failure["reasons"]] == ["[type"]  # type: ignore[index]


def test_a_refusal_that_is_no_contract_change_has_no_proposal(
    harness: Harness, iris: Container
) -> None:
    broken = _old_iris()
    broken["sepalWidth"] = broken["sepalWidth"].astype(object)
    broken.loc[broken.index[0], "sepalWidth"] = "wide"
    refused = _run_of(harness, _upload(harness, IRIS, _csv(broken), "broken.csv"))
    assert refused.outcome == "failed"
    assert "contract diff" not in refused.stages["validate"].error["message"]  # type: ignore[index]
    with pytest.raises(Refused, match="none of its problems is a change of the contract"):
        evolution.proposal(harness.container, refused.run_id)
    with pytest.raises(Refused, match="no run 'run-0'"):
        evolution.proposal(harness.container, "run-0")


def test_accepting_refuses_a_definition_changed_meanwhile(
    harness: Harness, iris: Container, tmp_path: Path
) -> None:
    refused = _run_of(harness, _upload(harness, IRIS, _csv(_iris()), "with-virginica.csv"))
    models = harness.container.models
    current = models.definition(IRIS)
    # Someone re-adds the model with another pipeline.toml meanwhile.
    edited = dataclasses.replace(current, pipeline=current.pipeline + "\n# edited\n")
    models.add(edited)

    with pytest.raises(Refused, match="changed since the change was proposed"):
        evolution.accept(harness.container, refused.run_id, who="ana", reason="virginica")
    assert models.definition(IRIS) == edited
    assert models.versions(IRIS) == [1]


def test_a_change_the_pipeline_cannot_take_is_refused_whole(
    harness: Harness, iris: Container
) -> None:
    # Every feature gone: no model can be trained, and nothing is written.
    only_target = _old_iris()[["petalWidth"]]
    refused = _run_of(harness, _upload(harness, IRIS, _csv(only_target), "bare.csv"))
    assert len(evolution.proposal(harness.container, refused.run_id)["changes"]) == 4
    with pytest.raises(Exception, match="no feature columns"):
        evolution.accept(harness.container, refused.run_id, who="ana", reason="bare")
    assert harness.container.models.versions(IRIS) == [1]


def _strict_gate(container: Container, staging: str = "blessed") -> None:
    """The model's gate asks for an r2 no candidate reaches."""
    models = container.models
    current = models.definition(container.model)
    pipeline = current.pipeline.replace("min = 0.0", "min = 0.999")
    pipeline = pipeline.replace("[gate]\n", f'[gate]\nstaging = "{staging}"\n')
    assert pipeline != current.pipeline
    models.add(dataclasses.replace(current, pipeline=pipeline))


@pytest.mark.parametrize("staging", ["blessed", "champion"])
def test_a_rejected_candidate_blessed_by_hand_is_registered_and_deployed_never_champion(
    harness: Harness, iris: Container, staging: str
) -> None:
    _strict_gate(iris, staging)
    rejected = _run_of(harness, _upload(harness, IRIS, _csv(_iris()[:100]), "next.csv"))
    assert rejected.outcome == "rejected"

    record = evolution.bless(harness.container, rejected.run_id, who="ana", reason="r2 is noisy")
    harness.run()

    run = harness.container.runs.run(rejected.run_id)
    assert run is not None
    assert run.outcome == "deployed", run.failure
    assert run.failure is None
    assert run.blessed_by is not None
    assert (run.blessed_by["who"], run.blessed_by["reason"]) == ("ana", "r2 is noisy")
    assert record.stage == "bless"
    registry = harness.container.registry
    # v1 from the old upload stays the champion; the blessed v2 serves in staging.
    assert registry.aliases(IRIS) == {"champion": 1, "staging": 2}
    manifest = registry.manifest(IRIS, 2)
    assert manifest.lineage.blessed_by == run.blessed_by
    assert manifest.verdict["blessed_by"] == run.blessed_by
    assert manifest.verdict["promote"] is False
    card = registry.file(manifest, "card.html")
    assert card is not None
    assert b"Blessed by hand" in card
    assert b"r2 is noisy" in card

    _records_match_their_schemas(harness)
    client = create_app(harness.container).test_client()
    page = client.get(f"/runs/{rejected.run_id}").get_data(as_text=True)
    assert "blessed by hand" in page
    assert "ana blessed it at " in page
    assert "r2 is noisy" in page
    listed = client.get("/").get_data(as_text=True)
    assert "(blessed by hand by ana)" in listed

    with pytest.raises(Refused, match="blessed already, by ana"):
        evolution.bless(harness.container, rejected.run_id, who="bo", reason="again")


@pytest.mark.fault
def test_a_blessed_run_whose_register_message_is_lost_is_ended_by_the_sweep(
    harness: Harness, iris: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _strict_gate(iris)
    rejected = _run_of(harness, _upload(harness, IRIS, _csv(_iris()[:100]), "next.csv"))
    evolution.bless(harness.container, rejected.run_id, who="ana", reason="r2 is noisy")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies mid-delivery: the bus goes with it

    monkeypatch.setattr(register, "handle", killed)
    with pytest.raises(KeyboardInterrupt):
        harness.run()
    run = harness.container.runs.run(rejected.run_id)
    assert run is not None
    assert run.outcome == "running"
    blessed = datetime.fromisoformat(run.stages["bless"].finished_at)

    # The same bound as for a run evaluate passed (the register deliveries' backoffs
    # and starts): none is ended before it, this one after it.
    assert sweep(harness.container, now=blessed + timedelta(seconds=450)) == []
    [record] = sweep(harness.container, now=blessed + timedelta(seconds=451))
    assert (record.run_id, record.stage, record.error["kind"]) == (
        rejected.run_id,
        "register",
        "stuck",
    )


def test_only_a_run_the_gate_rejected_can_be_blessed(harness: Harness, iris: Container) -> None:
    [deployed] = harness.runs()
    with pytest.raises(Refused, match="registered already"):
        evolution.bless(harness.container, deployed.run_id, who="ana", reason="why not")
    refused = _run_of(harness, _upload(harness, IRIS, _csv(_iris()), "with-virginica.csv"))
    with pytest.raises(Refused, match="refused before the gate"):
        evolution.bless(harness.container, refused.run_id, who="ana", reason="why not")
    with pytest.raises(Refused, match="say why"):
        evolution.bless(harness.container, refused.run_id, who="ana", reason=" ")


def test_lineage_written_before_contract_versions_and_blessing_still_reads() -> None:
    old = {"trigger": {"kind": "upload", "key": "k"}, "config": {"hash": "0" * 64, "model": "m"}}
    lineage = Lineage.from_json(old)
    assert (lineage.contract, lineage.blessed_by) == (None, None)
    assert lineage.to_json() == old


def test_a_contract_without_a_version_is_version_1() -> None:
    spec = {"name": "c", "target": "y", "columns": [
        {"name": "y", "type": "number"}, {"name": "x", "type": "number"}]}  # fmt: skip
    assert DatasetContract.from_spec(spec, "c").version == 1
    assert DatasetContract.from_spec({**spec, "version": 3}, "c").version == 3
    body = Definition("m", "", "c.json", orjson.dumps(spec).decode()).to_json()
    assert "accepted" not in body  # a definition as added keeps the bytes it had


def _records_match_their_schemas(harness: Harness) -> None:
    """Every stage record and manifest written (a ``bless`` record, lineage with a
    contract version or ``blessed_by``) matches its schema and reads back the same."""
    store = harness.container.artifacts
    checked = 0
    for info in store.list():
        body = orjson.loads(store.read(info.key).data) if info.key.endswith(".json") else None
        if "/stages/" in info.key:
            assert schema_problems("stage-record", body, kind="records") == [], info.key
            assert StageRecord.from_json(body).to_json() == body
            checked += 1
        elif info.key.endswith(f"/{MANIFEST}"):
            assert schema_problems("manifest", body, kind="records") == [], info.key
            checked += 1
    assert checked


def test_a_column_with_too_many_new_values_is_no_category_change_and_memory_stays_bounded() -> None:
    contract = DatasetContract.from_spec(
        {"name": "c", "target": "y", "columns": [
            {"name": "y", "type": "number"},
            {"name": "kind", "type": "category", "categories": ["a"]}]},
        "c",
    )  # fmt: skip
    observed = evolution_domain.Observed()
    column = contract.column("kind")
    for batch in range(3):  # the same values again in each batch count once
        observed.add(column, "category", np.array([f"k{i}" for i in range(600 * batch, 700)]))
    assert observed.categories["kind"]["k0"] == 1
    assert observed.categories["kind"]["k650"] == 2
    observed.add(column, "category", np.array([f"k{i}" for i in range(700, 1400)]))
    assert "kind" not in observed.categories  # forgotten once past the bound
    problem = Problem("category", "column 'kind': 1400 row(s) with …", "kind", 1400)
    assert evolution_domain.propose(contract, [problem], observed) is None


def _drift_is_reported_not_refused(harness: Harness, run_id: str, lineage: Lineage) -> None:
    """The retrain of an accepted upload: its drift past the fail limit (the new
    species) is in its report and lineage with who accepted it, and did not refuse it."""
    accepted = {"contract_version": 2, "by": "ana"}
    assert lineage.drift is not None
    assert lineage.drift["accepted"] == accepted
    report = harness.container.runs.report(run_id, "validation")
    assert report["drift"]["accepted"] == accepted
    failing = [row["column"] for row in report["drift"]["columns"] if row["status"] == "fail"]
    assert "species" in failing
