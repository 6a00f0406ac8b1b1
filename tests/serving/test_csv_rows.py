"""A row copied from the CSV is answered: a model made by ``modelrail init`` from a
public CSV, trained and registered here, answers rows taken verbatim from that file
(every value a string, as ``csv.DictReader`` reads it) as it answers the same rows
typed, with one warning per converted feature.

The data is Cattaneo's (2010) 4,642 births (statsmodels ships it with its tests):
the birth weight, with yes/no columns (``fbaby``, ``prenatal1``), integers
(``mage``, ``medu``; ``mage2`` written ``576.0``; 0/1 columns, which ``init`` keeps
as integers) and text (``mmarried``, ``msmoke``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from importlib import resources
from typing import Any

import lightgbm
import numpy as np
import pytest

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain import training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks
from modelrail.domain.registry import Registry
from modelrail.entry import init

from .conftest import BUCKET, register

NAME = "births"
TARGET = "bweight"


@dataclasses.dataclass(frozen=True)
class Births:
    """The registered model, the file's rows as text and as the pipeline types them."""

    config: PipelineConfig
    store: FilesystemStore
    signer: LocalManifestSigner
    text_rows: list[dict[str, str]]
    typed_rows: list[dict[str, Any]]


def _csv() -> bytes:
    return (
        resources.files("statsmodels") / "treatment" / "tests" / "results" / "cataneo2.csv"
    ).read_bytes()


@pytest.fixture(scope="module")
def births(tmp_path_factory: pytest.TempPathFactory) -> Births:
    folder = tmp_path_factory.mktemp("births")
    data = _csv()
    (folder / "births.csv").write_bytes(data)
    config_path, _ = init.write(init.infer(folder / "births.csv", TARGET, name=NAME), folder / NAME)
    config = PipelineConfig.load(config_path)
    kinds = {c.name: c.type for c in config.contract.columns}
    assert kinds["fbaby"] == kinds["prenatal1"] == "boolean"  # what the rows must exercise
    assert kinds["mage"] == kinds["mage2"] == "integer"

    parsed = checks.load(data, config.contract)
    candidate = training.train(parsed, config)
    store = FilesystemStore(tmp_path_factory.mktemp("buckets"), BUCKET)
    signer = LocalManifestSigner.in_home(tmp_path_factory.mktemp("state"))
    version = register(
        Registry(store, signer=signer),
        signer,
        candidate.schema,
        lightgbm.Booster(model_str=candidate.model_text.decode()),
        "run-1",
        examples=candidate.examples,
        best_iteration=candidate.best_iteration,
        model=NAME,
    )
    assert version == 1
    text_rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert parsed.rows == len(text_rows)  # no row dropped: row i of each is row i of the file
    typed_rows = training.examples(parsed.columns, candidate.schema, np.arange(parsed.rows))
    return Births(config, store, signer, text_rows, typed_rows)


@pytest.fixture
def births_client(births: Births, make_client: Callable[..., Any]) -> Any:
    return make_client(store=births.store, signer=births.signer, model_name=NAME, model_version=1)


def _predict(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.data
    answer: dict[str, Any] = response.get_json()
    return answer


def _conversions(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The response's warnings about values read from strings, by feature."""
    found: dict[str, dict[str, Any]] = {}
    for warning in answer.get("warnings", []):
        if " read as " in warning["detail"]:
            assert warning["feature"] not in found, "one warning per feature per request"
            found[warning["feature"]] = warning
    return found


ROWS = [0, 1, 2, 7, 100, 4641]


def test_a_row_copied_from_the_csv_is_answered_as_the_typed_row(
    births: Births, births_client: Any
) -> None:
    for row in ROWS:
        copied = births.text_rows[row]
        assert all(type(value) is str for value in copied.values())
        answer = _predict(births_client, {"instances": [copied]})
        typed = _predict(births_client, {"instances": [births.typed_rows[row]]})
        assert answer["predictions"] == typed["predictions"], row
        assert "warnings" not in typed or not _conversions(typed)

        conversions = _conversions(answer)
        # Every boolean and integer feature (the 0/1 columns too) was written as a
        # string; categories are strings anyway, and the target is ignored.
        features = {f.name: f.type for f in births.config.contract.features}
        assert set(conversions) == {n for n, t in features.items() if t != "category"}
        fbaby = conversions["fbaby"]
        assert fbaby["pointer"] == "/instances/0/fbaby"
        assert fbaby["instance"] == 0
        spelled = copied["fbaby"]
        truth = "true" if spelled == "Yes" else "false"
        assert fbaby["detail"] == f'a string read as a boolean: "{spelled}" as {truth}'
        mage2 = conversions["mage2"]["detail"]
        assert mage2 == f'a string read as an integer: "{copied["mage2"]}" as ' + str(
            int(float(copied["mage2"]))
        )


def test_many_copied_rows_warn_once_per_feature(births: Births, births_client: Any) -> None:
    rows = births.text_rows[:200]
    answer = _predict(births_client, {"instances": rows})
    typed = _predict(births_client, {"instances": births.typed_rows[:200]})
    assert answer["predictions"] == typed["predictions"]
    fbaby = _conversions(answer)["fbaby"]
    assert fbaby["detail"].startswith(
        f'200 strings read as booleans, the first "{rows[0]["fbaby"]}"'
    )
    assert fbaby["instance"] == 0


def test_the_csv_as_columns_is_answered_as_the_typed_rows(
    births: Births, births_client: Any
) -> None:
    """MLflow's ``dataframe_split``, straight from the file's header and lines."""
    lines = list(csv.reader(io.StringIO(_csv().decode())))
    header, data = lines[0], lines[1:301]
    answer = _predict(births_client, {"dataframe_split": {"columns": header, "data": data}})
    typed = _predict(births_client, {"instances": births.typed_rows[:300]})
    assert answer["predictions"] == typed["predictions"]
    assert _conversions(answer)["prenatal1"]["pointer"].startswith("/dataframe_split/data/0/")


@pytest.mark.parametrize(
    ("feature", "value", "detail"),
    [
        ("mage", "24.5", 'expected an integer, got the string "24.5"'),
        ("mage", "twenty", 'expected an integer, got the string "twenty"'),
        ("fbaby", "maybe", 'expected a boolean, got the string "maybe"'),
        ("fbaby", "", "a blank string is a missing value, and the feature is not nullable"),
    ],
)
def test_a_copied_row_with_a_wrong_value_is_422_naming_it(
    births: Births, births_client: Any, feature: str, value: str, detail: str
) -> None:
    rows = [births.text_rows[0], {**births.text_rows[1], feature: value}]
    response = births_client.post("/predict", json={"instances": rows})
    assert response.status_code == 422, response.data
    assert response.content_type == "application/problem+json"
    [error] = response.get_json()["errors"]
    assert error == {
        "pointer": f"/instances/1/{feature}",
        "instance": 1,
        "feature": feature,
        "detail": detail,
    }


def test_the_openapi_document_says_strings_are_read(births_client: Any) -> None:
    schemas = births_client.get("/openapi.json").get_json()["components"]["schemas"]
    properties = schemas["InstanceObject"]["properties"]
    assert properties["fbaby"]["type"] == ["boolean", "string"]
    assert properties["mage"]["type"] == ["integer", "string"]
    assert properties["mmarried"]["type"] == "string"


def test_the_file_is_what_the_test_expects() -> None:
    """A new statsmodels that moved or changed the file fails here, plainly."""
    lines = _csv().decode().splitlines()
    assert len(lines) == 4643
    assert lines[0].startswith("bweight,mmarried,")
