"""/predict: the request shapes, the encoding and the numbers, in-process."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightgbm
import msgspec
import numpy as np
import orjson
import pytest

from modelrail.domain.decoding import RequestDecoder
from modelrail.domain.features import Feature, FeatureSchema
from modelrail.serving.predictor import _answers

from .conftest import MODEL, RegisteredModels


def test_instances_as_objects_match_lightgbm(client: Any, models: RegisteredModels) -> None:
    records = models.records[:50]
    response = client.post("/predict", json={"instances": records})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == {"name": MODEL, "version": 1}
    expected = models.boosters[1].predict(models.schema.encode_records(records), num_iteration=25)
    got = np.array(
        [[p["probabilities"][c] for c in models.schema.classes] for p in body["predictions"]]
    )
    np.testing.assert_array_equal(got, expected)  # exact: the same C function
    labels = [models.schema.classes[i] for i in expected.argmax(axis=1)]
    assert [p["label"] for p in body["predictions"]] == labels


def test_every_shape_gives_the_same_predictions(client: Any, models: RegisteredModels) -> None:
    records = models.records[5:15]
    names = models.schema.names
    shuffled = list(reversed(names))
    bodies = [
        {"instances": records},
        {"instances": [[r[n] for n in names] for r in records]},
        {"dataframe_records": records},
        {
            "dataframe_split": {
                "columns": shuffled,
                "data": [[r[n] for n in shuffled] for r in records],
            }
        },
        {"instances": records, "parameters": {}},
    ]
    answers = [client.post("/predict", json=b).get_json()["predictions"] for b in bodies]
    assert all(a == answers[0] for a in answers)


def test_nulls_where_allowed_encode_as_missing(client: Any, models: RegisteredModels) -> None:
    record = {**models.records[0], "sex": None, "bill_length_mm": None}
    response = client.post("/predict", json={"instances": [record]})
    assert response.status_code == 200
    expected = models.boosters[1].predict(models.schema.encode_records([record]), num_iteration=25)
    got = [response.get_json()["predictions"][0]["probabilities"][c] for c in models.schema.classes]
    assert got == expected[0].tolist()


def test_unseen_category_is_missing_and_flagged(client: Any, models: RegisteredModels) -> None:
    record = {**models.records[0], "island": "Atlantis"}
    response = client.post("/predict", json={"instances": [record]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["warnings"] == [
        {
            "pointer": "/instances/0/island",
            "instance": 0,
            "feature": "island",
            "detail": "unseen category, treated as missing",
        }
    ]
    expected = models.boosters[1].predict(
        models.schema.encode_records([{**record, "island": None}]), num_iteration=25
    )
    got = [body["predictions"][0]["probabilities"][c] for c in models.schema.classes]
    assert got == expected[0].tolist()


def test_both_decoders_equal_encode_records(models: RegisteredModels) -> None:
    """A valid batch takes the typed path; one unseen category sends the whole batch
    through the reporting path, which warns. Both give encode_records' numbers."""
    # Without the contract's ranges, so that a huge integer may take the typed path.
    unbounded = dataclasses.replace(
        models.schema,
        features=tuple(dataclasses.replace(f, min=None, max=None) for f in models.schema.features),
    )
    decoder = RequestDecoder(unbounded, max_instances=10_000)
    records = [
        *models.records,
        {**models.records[0], "body_mass_g": 4000, "bill_length_mm": 2**60 + 1},
    ]
    body = orjson.dumps({"instances": records})
    typed = decoder._decode_typed(body)
    assert typed is not None
    np.testing.assert_array_equal(typed, models.schema.encode_records(records))
    np.testing.assert_array_equal(decoder._decode_reporting(body).matrix, typed)
    unseen = orjson.dumps({"instances": [*records, {**models.records[0], "island": "Nowhere"}]})
    assert decoder._decode_typed(unseen) is None
    batch = decoder.decode(unseen)
    assert batch.warnings
    np.testing.assert_array_equal(
        batch.matrix, models.schema.encode_records(orjson.loads(unseen)["instances"])
    )


def test_a_row_straight_from_the_csv_is_answered_naming_what_was_ignored(
    client: Any, models: RegisteredModels
) -> None:
    # The target and an ignored column (year), as a row of the training file has them.
    row = {**models.records[0], "species": "Adelie", "year": 2009}
    plain = client.post("/predict", json={"instances": [models.records[0]]}).get_json()

    for body in (
        {"instances": [row]},
        {"dataframe_records": [row]},
        {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}},
    ):
        response = client.post("/predict", json=body)

        assert response.status_code == 200, response.data
        answer = response.get_json()
        assert answer["predictions"] == plain["predictions"]
        assert {w["feature"] for w in answer["warnings"]} == {"species", "year"}
        assert all("ignored" in w["detail"] for w in answer["warnings"])


def test_a_value_outside_the_contracts_range_is_answered_with_a_warning(
    client: Any, models: RegisteredModels
) -> None:
    heavy = {**models.records[0], "body_mass_g": 9000}  # the contract's max is 7000
    inside = {**models.records[0], "body_mass_g": 7000}

    response = client.post("/predict", json={"instances": [inside, heavy]})

    assert response.status_code == 200
    [warning] = response.get_json()["warnings"]
    assert (warning["instance"], warning["feature"]) == (1, "body_mass_g")
    assert warning["detail"] == "outside the contract's range [2000, 7000]"
    assert warning["pointer"] == "/instances/1/body_mass_g"


def test_numeric_category_codes_are_one_category_however_written() -> None:
    schema = FeatureSchema(
        objective="regression",
        features=(
            Feature("occupation", "category", False, ("1", "2", "6")),
            Feature("age", "number", False),
        ),
        target="affairs",
        classes=(),
    )
    decoder = RequestDecoder(schema, max_instances=10)
    spellings = [2, 2.0, "2", "2.0", "2e0", "two"]
    body = {"instances": [{"occupation": code, "age": 30.0} for code in spellings]}

    batch = decoder.decode(orjson.dumps(body))

    assert batch.warnings == [
        {
            "pointer": "/instances/5/occupation",
            "instance": 5,
            "feature": "occupation",
            "detail": "unseen category, treated as missing",
        }
    ]
    np.testing.assert_array_equal(batch.matrix[:, 0], [1.0] * 5 + [np.nan])


@pytest.mark.parametrize(
    ("objective", "labels", "raw", "expected"),
    [
        (
            "multiclass",
            ("a", "b/c", "Ünï ✓"),
            [[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]],
            [
                {"label": "b/c", "probabilities": {"a": 0.25, "b/c": 0.5, "Ünï ✓": 0.25}},
                {"label": "Ünï ✓", "probabilities": {"a": 0.1, "b/c": 0.2, "Ünï ✓": 0.7}},
            ],
        ),
        (
            "binary",
            ("no", "yes"),
            [0.5, 0.1, 0.75],
            [
                {"label": "yes", "probability": 0.5, "probabilities": {"no": 0.5, "yes": 0.5}},
                {"label": "no", "probability": 0.1, "probabilities": {"no": 0.9, "yes": 0.1}},
                {"label": "yes", "probability": 0.75, "probabilities": {"no": 0.25, "yes": 0.75}},
            ],
        ),
        (
            "multiclass",
            ('say "a"', "b\\c", "d\ne"),  # no msgspec field names: plain dicts
            [[0.25, 0.5, 0.25]],
            [{"label": "b\\c", "probabilities": {'say "a"': 0.25, "b\\c": 0.5, "d\ne": 0.25}}],
        ),
        (
            "binary",
            ("n\to", 'y"es'),
            [0.75],
            [
                {
                    "label": 'y"es',
                    "probability": 0.75,
                    "probabilities": {"n\to": 0.25, 'y"es': 0.75},
                }
            ],
        ),
        ("regression", (), [1.5, -0.0, 3e300], [1.5, -0.0, 3e300]),
    ],
)
def test_answers_are_written_as_the_api_documents(
    objective: str, labels: tuple[str, ...], raw: list[Any], expected: list[Any]
) -> None:
    """Structs renamed to the class labels are written as the documented objects,
    keys in order and every double round-tripping exactly."""
    written = msgspec.json.encode(_answers(objective, labels)(np.array(raw)))
    assert orjson.loads(written) == expected
    assert orjson.dumps(orjson.loads(written)) == orjson.dumps(expected)


def test_native_predictor_equals_lightgbm_for_any_batch(models: RegisteredModels) -> None:
    from modelrail.serving.predictor import NativeBooster

    text = models.boosters[2].model_to_string().encode()
    native = NativeBooster(text, num_iteration=35)
    reference = lightgbm.Booster(model_str=text.decode())
    matrix = models.schema.encode_records(models.records)
    for rows in (1, 2, 100, len(models.records)):
        np.testing.assert_array_equal(
            native.predict(matrix[:rows]), reference.predict(matrix[:rows], num_iteration=35)
        )


@pytest.mark.parametrize("best_iteration", [None, 0])
def test_no_best_iteration_means_every_tree(
    models: RegisteredModels, best_iteration: int | None
) -> None:
    from modelrail.serving.predictor import NativeBooster

    text = models.boosters[1].model_to_string().encode()
    native = NativeBooster(text, num_iteration=best_iteration)
    matrix = models.schema.encode_records(models.records[:20])
    np.testing.assert_array_equal(native.predict(matrix), models.boosters[1].predict(matrix))


def test_operational_routes(client: Any, models: RegisteredModels) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {
        "status": "ready",
        "model": MODEL,
        "version": 1,
        "predictor": "lightgbm",
        "reader": "python",
        "explainer": "lightgbm",
    }
    meta = client.get(f"/v1/models/{MODEL}").get_json()
    assert meta["version"] == 1
    assert meta["metrics"] == {"accuracy": 0.97, "multi_logloss": 0.1}
    assert meta["classes"] == list(models.schema.classes)
    assert meta["files"]["model.txt"]["sha256"]
    missing = client.get("/v1/models/other")
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert "/predict" in document["paths"]


def test_request_id_is_echoed(client: Any, models: RegisteredModels) -> None:
    response = client.post(
        "/predict", json={"instances": models.records[:1]}, headers={"X-Request-Id": "abc-123"}
    )
    assert response.headers["X-Request-Id"] == "abc-123"
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 32


def test_draining_answers_close_their_connection(client: Any, models: RegisteredModels) -> None:
    from modelrail.serving.server import SharedFlag

    body = {"instances": models.records[:1]}
    assert "Connection" not in client.post("/predict", json=body).headers
    draining = SharedFlag()
    client.application.draining = draining
    draining.value = 1
    assert client.post("/predict", json=body).headers["Connection"] == "close"
    assert client.get("/openapi.json").headers["Connection"] == "close"


def test_the_service_is_a_flask_app_users_extend_as_any_other(
    models: RegisteredModels,
) -> None:
    """What the server serves is a ``flask.Flask``: a blueprint and a WSGI middleware
    added the way Flask users add them work beside the service's own routes, and a
    missing route is still a problem with a request id."""
    import flask

    from modelrail.serving.app import create_app

    app = create_app(
        {"store": models.store, "signer": models.signer, "model_name": MODEL, "model_version": 1}
    )
    assert isinstance(app, flask.Flask)
    extra = flask.Blueprint("extra", __name__)
    extra.add_url_rule(
        "/extra/version", "version", lambda: {"version": app.state.predictor.version}
    )
    app.register_blueprint(extra)
    seen: list[str] = []
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    client = app.test_client()

    assert client.get("/extra/version").get_json() == {"version": 1}
    predicted = client.post("/predict", json={"instances": models.records[:1]})
    assert predicted.status_code == 200, predicted.get_data()
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.get_json()["request_id"] == missing.headers["X-Request-Id"]
    assert seen == ["/extra/version", "/predict", "/nowhere"]


def test_a_read_only_matrix_predicts_the_same(models: RegisteredModels) -> None:
    """The C functions get the data's address through the buffer protocol, which a
    read-only array refuses: it takes the slower way to the same numbers."""
    from modelrail.serving.predictor import NativeBooster

    native = NativeBooster(models.boosters[1].model_to_string().encode(), num_iteration=None)
    matrix = models.schema.encode_records(models.records[:20])
    frozen = matrix.copy()
    frozen.setflags(write=False)
    for rows in (1, 20):
        np.testing.assert_array_equal(native.predict(frozen[:rows]), native.predict(matrix[:rows]))
