"""``/explain``: each feature's contribution and the base value, LightGBM's exact TreeSHAP.

Models of every objective over features of every kind are registered with their
compiled predictors; the service, with either predictor, must answer exactly
``booster.predict(..., pred_contrib=True)`` on generated rows (missing values and
unseen categories included).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightgbm
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import Registry
from modelrail.native import builder
from tests.manifests import describe

from .conftest import BUCKET, RegisteredModels
from .test_compiled import need_cc

COLOURS = ["red", "green", "blue", "teal"]
FEATURES = [
    {"name": "width", "type": "number", "nullable": True, "categories": []},
    {"name": "count", "type": "integer", "nullable": False, "categories": []},
    {"name": "colour", "type": "category", "nullable": True, "categories": COLOURS},
    {"name": "flag", "type": "boolean", "nullable": True, "categories": []},
    {"name": "depth", "type": "number", "nullable": False, "categories": []},
]
CLASSES = {"regression": [], "binary": ["no", "yes"], "multiclass": ["a", "b", "c"]}
BEST_ITERATION = 12


@dataclasses.dataclass(frozen=True)
class Explained:
    store: FilesystemStore
    signer: LocalManifestSigner
    schema: dict[str, FeatureSchema]
    boosters: dict[str, lightgbm.Booster]


def records(rows: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        out.append(
            {
                "width": None if rng.random() < 0.1 else float(rng.normal(10, 3)),
                "count": int(rng.integers(0, 20)),
                "colour": None if rng.random() < 0.1 else str(rng.choice(COLOURS)),
                "flag": None if rng.random() < 0.1 else bool(rng.random() < 0.5),
                "depth": float(rng.uniform(-5, 5)),
            }
        )
    return out


def target(record: dict[str, Any]) -> float:
    return (
        (record["width"] or 0) / 5
        + record["count"] / 10
        + (record["colour"] in ("red", "teal"))
        + (record["flag"] is True)
        + record["depth"] / 3
    )


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> Explained:
    root = tmp_path_factory.mktemp("explain-buckets")
    store = FilesystemStore(root, BUCKET)
    signer = LocalManifestSigner.in_home(tmp_path_factory.mktemp("explain-state"))
    registry = Registry(store, signer=signer)
    schemas, boosters = {}, {}
    train = records(500, 5)
    signal = np.array([target(r) for r in train])
    for objective, classes in CLASSES.items():
        schema = FeatureSchema.from_dict(
            {"objective": objective, "target": "y", "classes": classes, "features": FEATURES}
        )
        matrix = schema.encode_records(train)
        if objective == "multiclass":
            label = np.digitize(signal, np.quantile(signal, [0.33, 0.66])).astype(float)
        elif objective == "binary":
            label = (signal > np.median(signal)).astype(float)
        else:
            label = signal
        params = {"objective": objective, "num_leaves": 7, "min_data_in_leaf": 5,
                  "min_data_per_group": 5, "cat_smooth": 1, "seed": 1, "deterministic": True,
                  "num_threads": 1, "verbosity": -1}  # fmt: skip
        if objective == "multiclass":
            params["num_class"] = 3
        data = lightgbm.Dataset(matrix, label, categorical_feature=[2], free_raw_data=False)
        booster = lightgbm.train(params, data, num_boost_round=BEST_ITERATION)
        text = booster.model_to_string().encode()
        built = builder.build(text, BEST_ITERATION, booster, matrix[:3].tolist(), "cc")
        compiled = {p.build.file: p.library for p in built.predictors}
        registry.register(
            objective,
            f"run-{objective}",
            lambda _version, text=text, compiled=compiled: {"model.txt": text, **compiled},
            describe(
                objective,
                f"run-{objective}",
                features=schema.to_dict(),
                best_iteration=BEST_ITERATION,
                examples=train[:3],
                compiled=built.record(),
            ),
        )
        schemas[objective], boosters[objective] = schema, booster
    return Explained(store, signer, schemas, boosters)


def served(explained: Explained, objective: str, predictor: str) -> Any:
    from modelrail.serving.app import create_app

    config = {"store": explained.store, "signer": explained.signer, "model_name": objective,
              "model_version": 1, "predictor": predictor, "access_log": "off"}  # fmt: skip
    return create_app(config).test_client()


_value = {
    "width": st.none() | st.floats(-50, 50, allow_nan=False),
    "count": st.integers(0, 25),
    "colour": st.none() | st.sampled_from([*COLOURS, "mauve", ""]),  # unseen ones too
    "flag": st.none() | st.booleans(),
    "depth": st.floats(-10, 10, allow_nan=False),
}
_instances = st.lists(st.fixed_dictionaries(_value), min_size=1, max_size=8)


def as_lightgbm_sees(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An unseen category is missing."""
    return [{**i, "colour": i["colour"] if i["colour"] in COLOURS else None} for i in instances]


def flat(explanation: dict[str, Any], schema: FeatureSchema) -> list[float]:
    """One explanation as pred_contrib's row: per output, the features, then the base."""
    outputs = explanation["classes"].values() if "classes" in explanation else [explanation]
    return [
        value
        for output in outputs
        for value in [*(output["contributions"][n] for n in schema.names), output["base_value"]]
    ]


@pytest.mark.parametrize("predictor", ["lightgbm", "compiled"])
@pytest.mark.parametrize("objective", list(CLASSES))
def test_contributions_are_lightgbms_pred_contrib(
    explained: Explained, objective: str, predictor: str
) -> None:
    if predictor == "compiled":
        need_cc()
    client = served(explained, objective, predictor)
    ready = client.get("/readyz").get_json()
    assert ready["predictor"] == predictor
    assert ready["explainer"] == "lightgbm"
    assert ("explainer_reason" in ready) == (predictor == "compiled")
    schema, booster = explained.schema[objective], explained.boosters[objective]

    @given(instances=_instances)
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(instances: list[dict[str, Any]]) -> None:
        answer = client.post("/explain", json={"instances": instances})
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        matrix = schema.encode_records(as_lightgbm_sees(instances))
        want = booster.predict(matrix, pred_contrib=True, num_iteration=BEST_ITERATION)
        got = np.array([flat(e, schema) for e in body["explanations"]])
        np.testing.assert_array_equal(got, want)
        predicted = client.post("/predict", json={"instances": instances}).get_json()
        assert body["predictions"] == predicted["predictions"]
        assert body.get("warnings") == predicted.get("warnings")

    check()


def test_contributions_sum_to_the_raw_score(explained: Explained) -> None:
    client = served(explained, "multiclass", "lightgbm")
    instances = records(20, 9)
    body = client.post("/explain", json={"instances": instances}).get_json()
    raw = explained.boosters["multiclass"].predict(
        explained.schema["multiclass"].encode_records(instances),
        raw_score=True,
        num_iteration=BEST_ITERATION,
    )
    for explanation, scores in zip(body["explanations"], raw, strict=True):
        for (label, output), score in zip(explanation["classes"].items(), scores, strict=True):
            assert label in CLASSES["multiclass"]
            total = output["base_value"] + sum(output["contributions"].values())
            assert total == pytest.approx(score, abs=1e-12)


def test_kserve_explain_route_and_errors(client: Any, models: RegisteredModels) -> None:
    sent = {"instances": models.records[:2]}
    explained = client.post("/v1/models/penguins:explain", json=sent)
    assert explained.status_code == 200
    assert explained.get_json() == client.post("/explain", json=sent).get_json()
    wrong = client.post("/v1/models/other:explain", json=sent)
    assert wrong.status_code == 404
    assert "error" in wrong.get_json()
    bad = client.post("/explain", json={"instances": [{}]})
    assert bad.status_code == 422
    assert bad.content_type == "application/problem+json"


def test_explanations_are_in_the_openapi_document(client: Any) -> None:
    document = client.get("/openapi.json").get_json()
    explanation = document["components"]["schemas"]["ExplainResponse"]["properties"]
    classes = explanation["explanations"]["items"]["properties"]["classes"]
    assert set(classes["required"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert "/explain" in document["paths"]
