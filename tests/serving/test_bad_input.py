"""Every class of bad input gets its status and an RFC 9457 problem body, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from .conftest import RegisteredModels

PROBLEM = "application/problem+json"


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.content_type == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert body["type"] == f"urn:modelrail:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"instances": [{"bill_length_mm": NaN}]}',
        b'{"instances": [{"bill_length_mm": Infinity}]}',
        b'{"instances": [{"bill_length_mm": -Infinity}]}',
        b'{"instances": [{"bill_length_mm": 1e999}]}',
        b'{"instances": [',
        b"",
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
        b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "1e999",
        "truncated",
        "empty",
        "bad-utf8",
        "deep-array",
        "deep-instances",
    ],
)
def test_malformed_json_is_400(client: Any, raw: bytes) -> None:
    response = client.post("/predict", data=raw, content_type="application/json")
    problem(response, 400, "malformed-json")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/csv", "application/x-www-form-urlencoded", ""]
)
def test_wrong_content_type_is_415(client: Any, content_type: str) -> None:
    response = client.post("/predict", data=b'{"instances": []}', content_type=content_type)
    problem(response, 415, "unsupported-media-type")


def test_json_with_charset_is_accepted(client: Any, models: RegisteredModels) -> None:
    import orjson

    response = client.post(
        "/predict",
        data=orjson.dumps({"instances": models.records[:1]}),
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200


def bad_record(models: RegisteredModels, **changes: Any) -> dict[str, Any]:
    record = dict(models.records[0])
    for name, value in changes.items():
        if value is ...:
            del record[name]
        else:
            record[name] = value
    return record


@pytest.mark.parametrize(
    ("changes", "pointer", "detail"),
    [
        (
            {"bill_length_mm": True},
            "/instances/0/bill_length_mm",
            "expected a number, got a boolean",
        ),
        (
            {"bill_length_mm": "39.1 mm"},
            "/instances/0/bill_length_mm",
            'expected a number, got the string "39.1 mm"',
        ),
        ({"bill_length_mm": [1]}, "/instances/0/bill_length_mm", "expected a number, got an array"),
        (
            {"bill_length_mm": {"v": 1}},
            "/instances/0/bill_length_mm",
            "expected a number, got an object",
        ),
        ({"island": 3}, "/instances/0/island", "expected a string category, got a number"),
        ({"island": None}, "/instances/0/island", "null is not allowed"),
        ({"island": ...}, "/instances/0/island", "missing feature"),
        ({"wingspan": 3.0}, "/instances/0/wingspan", "unknown feature"),
    ],
    ids=[
        "bool-in-number",
        "non-number-string-in-number",
        "array",
        "object",
        "number-in-category",
        "null-not-nullable",
        "missing",
        "unknown",
    ],
)
def test_wrong_values_are_422_pointing_at_them(
    client: Any, models: RegisteredModels, changes: dict[str, Any], pointer: str, detail: str
) -> None:
    instances = [models.records[1], bad_record(models, **changes)]
    response = client.post("/predict", json={"instances": instances})
    body = problem(response, 422, "invalid-instances")
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert error["pointer"] == pointer.replace("/0/", "/1/")
    assert error["instance"] == 1
    assert detail in error["detail"]


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"instances": {}},
        {"instances": []},
        {"instances": [1, 2]},
        {"instances": [[1.0, 2.0]]},
        {"instances": [], "dataframe_records": []},
        {"rows": []},
        {"instances": [{}], "extra": 1},
        {"dataframe_records": [[1]]},
        {"dataframe_split": []},
        {"dataframe_split": {"columns": ["x"], "data": [[1]]}},
        {"dataframe_split": {"columns": [1], "data": []}},
        {"dataframe_split": {"columns": [], "data": [], "orient": "x"}},
        {"instances": [{}], "parameters": []},
        "instances",
        42,
        None,
    ],
    ids=lambda body: str(body)[:40],
)
def test_wrong_shapes_are_422(client: Any, body: Any) -> None:
    import orjson

    response = client.post("/predict", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 422, response.data
    assert response.content_type == PROBLEM


def test_many_errors_are_capped_and_counted(client: Any, models: RegisteredModels) -> None:
    instances = [bad_record(models, bill_length_mm="x", island=1)] * 100
    body = problem(client.post("/predict", json={"instances": instances}), 422, "invalid-instances")
    assert len(body["errors"]) == 50
    assert body["detail"].startswith("200 problem(s) (first 50 shown)")


def test_too_many_instances_is_413(
    make_client: Callable[..., Any], models: RegisteredModels
) -> None:
    client = make_client(max_instances=10)
    body = problem(
        client.post("/predict", json={"instances": models.records[:11]}), 413, "too-many-instances"
    )
    assert body["limit"] == 10
    assert client.post("/predict", json={"instances": models.records[:10]}).status_code == 200


def test_body_over_the_limit_is_413(
    make_client: Callable[..., Any], models: RegisteredModels
) -> None:
    client = make_client(max_body_bytes=4096)
    large = {"instances": models.records[:40]}
    problem(client.post("/predict", json=large), 413, "payload-too-large")


def test_unknown_route_and_method(client: Any) -> None:
    problem(client.get("/nope"), 404, "not-found")
    body = problem(client.get("/predict"), 405, "method-not-allowed")
    assert body["instance"] == "/predict"
    problem(client.post("/healthz"), 405, "method-not-allowed")


def test_not_ready_answers_503(make_client: Callable[..., Any], models: RegisteredModels) -> None:
    client = make_client(model_version=models.tampered)
    assert client.get("/healthz").status_code == 200
    body = problem(client.get("/readyz"), 503, "not-ready")
    assert "does not match the sha256" in body["detail"]
    problem(client.post("/predict", json={"instances": models.records[:1]}), 503, "not-ready")


@pytest.mark.fault
def test_a_version_whose_manifest_was_rewritten_is_not_ready(
    make_client: Callable[..., Any], models: RegisteredModels
) -> None:
    # v4's model was replaced and the sha256 in its manifest rewritten to match.
    client = make_client(model_version=models.forged)

    body = problem(client.get("/readyz"), 503, "not-ready")
    assert "manifest.json does not match its signature" in body["detail"]
    problem(client.post("/predict", json={"instances": models.records[:1]}), 503, "not-ready")


def test_a_version_that_must_load_and_fails_its_signature_ends_the_start(
    make_client: Callable[..., Any], models: RegisteredModels
) -> None:
    from modelrail.kernel.errors import IntegrityError

    with pytest.raises(IntegrityError, match="does not match its signature"):
        make_client(model_version=models.forged, require_model=True)


def test_missing_version_is_not_ready(make_client: Callable[..., Any]) -> None:
    client = make_client(model_version=99)
    problem(client.get("/readyz"), 503, "not-ready")


def test_alias_is_followed_at_start(
    make_client: Callable[..., Any], models: RegisteredModels
) -> None:
    models.registry.move_alias("penguins", "bench-alias", 2, force=True)
    client = make_client(model_version=None, model_alias="bench-alias")
    assert client.get("/readyz").get_json()["version"] == 2
    missing = make_client(model_version=None, model_alias="nobody")
    problem(missing.get("/readyz"), 503, "not-ready")


def test_responses_never_hold_nan(client: Any, models: RegisteredModels) -> None:
    names = models.schema.names
    nulls = {n: None for n in names} | {"island": "Dream"}
    response = client.post("/predict", json={"instances": [nulls]})
    assert response.status_code == 200
    assert b"NaN" not in response.data


@pytest.mark.parametrize(
    ("content_type", "passes"),
    [
        ("application/json; charset=utf-8", True),
        ('application/json; charset="UTF-8"', True),
        ("application/json;charset=utf8", True),
        ("application/json; charset=utf-16", False),
        ("application/json; charset=latin-1", False),
    ],
)
def test_a_body_in_another_charset_is_415(
    client: Any, models: RegisteredModels, content_type: str, passes: bool
) -> None:
    body = orjson.dumps({"instances": models.records[:1]})

    response = client.post("/predict", data=body, headers={"Content-Type": content_type})

    if passes:
        assert response.status_code == 200
    else:
        assert "is not" in problem(response, 415, "unsupported-media-type")["detail"]


def test_a_body_shorter_than_its_content_length_is_400(
    client: Any, models: RegisteredModels
) -> None:
    body = orjson.dumps({"instances": models.records[:3]})
    environ = EnvironBuilder(
        path="/predict", method="POST", data=body[:-20], content_type="application/json"
    ).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body))  # announced, then the client stopped

    response = Response.from_app(client.application, environ)

    assert response.status_code == 400
    assert f"ended after {len(body) - 20} of the {len(body)} bytes" in response.get_data(
        as_text=True
    )
