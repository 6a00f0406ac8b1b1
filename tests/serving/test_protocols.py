"""MLflow's scoring protocol, KServe v1 and the Open Inference Protocol v2.

The real service is driven by those projects' own client code (``protocol_clients.py``,
run in ``build/protocol-clients-venv``, made by ``make protocol-clients``); the
in-process tests cover the shapes and errors the clients do not send.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.conftest import wait_for
from tests.prerequisites import skip_or_fail

from .conftest import MODEL, ROOT, RegisteredModels, Server
from .test_server import ready

CLIENTS_PYTHON = ROOT / "build" / "protocol-clients-venv" / "bin" / "python"
CLIENTS = Path(__file__).with_name("protocol_clients.py")
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


def rows(models: RegisteredModels) -> list[dict[str, Any]]:
    """Rows of every feature kind, some with missing values, one with an unseen island."""
    missing = [r for r in models.records if None in r.values()][:2]
    unseen = {**models.records[7], "island": "Atlantis"}
    return models.records[:4] + models.records[150:153] + missing + [unseen]


def expected(models: RegisteredModels, sent: list[dict[str, Any]]) -> np.ndarray:
    """LightGBM's probabilities for v1 (an unseen category is missing)."""
    known = [{**r, "island": r["island"] if r["island"] != "Atlantis" else None} for r in sent]
    return models.boosters[1].predict(models.schema.encode_records(known), num_iteration=25)


def probabilities(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in ("Adelie", "Chinstrap", "Gentoo")]
                     for p in predictions])  # fmt: skip


def test_real_clients(start_server: Callable[..., Server], models: RegisteredModels) -> None:
    skip_or_fail(
        None
        if CLIENTS_PYTHON.exists()
        else f"{CLIENTS_PYTHON} is missing: `make protocol-clients` makes it"
    )
    server = start_server(1)
    wait_for(lambda: ready(server), "the server to be ready")
    sent = rows(models)
    done = subprocess.run(
        [str(CLIENTS_PYTHON), str(CLIENTS), server.url, MODEL],
        input=json.dumps(sent).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    got = json.loads(done.stdout)
    want = expected(models, sent)
    labels = [("Adelie", "Chinstrap", "Gentoo")[i] for i in want.argmax(axis=1)]

    mlflow = got["mlflow"]
    for shape in ("dataframe", "inputs"):
        np.testing.assert_array_equal(probabilities(mlflow[shape]), want)
    status, body = mlflow["csv"]
    assert status == 200
    np.testing.assert_array_equal(probabilities(body["predictions"]), want)
    assert "error code 422" in mlflow["error"]
    assert '"error_code":"INVALID_PARAMETER_VALUE"' in mlflow["error"]
    assert "missing feature" in mlflow["error"]

    assert got["v1_live"] is True
    assert got["v1_ready"] is True
    np.testing.assert_array_equal(probabilities(got["v1"]), want)
    assert got["v1_error"][0] == 404
    assert "this service serves 'penguins', not 'elsewhere'" in got["v1_error"][1]

    assert got["v2_live"] is True
    assert got["v2_ready"] is True
    assert got["v2_model_ready"] is True
    v2 = got["v2"]
    assert v2["id"] == "r-1"
    assert v2["outputs"]["label"] == [[len(sent)], labels]
    shape, values = v2["outputs"]["probabilities"]
    assert shape == [len(sent), 3]
    np.testing.assert_array_equal(np.array(values), want)
    assert got["v2_error"][0] == 422
    assert "missing feature" in got["v2_error"][1]


# -- in process ------------------------------------------------------------------------------
def test_mlflow_shapes(client: Any, models: RegisteredModels) -> None:
    sent = rows(models)
    want = expected(models, sent)
    columns = {name: [r[name] for r in sent] for name in FEATURES}
    nan_body = json.dumps({"dataframe_split": {
        "columns": FEATURES,
        "data": [[np.nan if v is None else v for v in r.values()] for r in sent],
    }})  # fmt: skip
    assert "NaN" in nan_body
    for body, content_type in [
        (orjson.dumps({"dataframe_records": sent}), "application/json"),
        (orjson.dumps({"instances": sent}), "application/json"),
        (orjson.dumps({"inputs": columns, "params": {}}), "application/json"),
        (nan_body.encode(), "application/json; charset=utf-8"),
    ]:
        answer = client.post("/invocations", data=body, content_type=content_type)
        assert answer.status_code == 200, answer.get_json()
        np.testing.assert_array_equal(probabilities(answer.get_json()["predictions"]), want)
        assert answer.get_json()["warnings"][0]["detail"].startswith("unseen category")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "detail"),
    [
        (b"{}", "text/plain", 415, "BAD_REQUEST", "application/json or text/csv"),
        (b'{"inputs": [1', "application/json", 400, "BAD_REQUEST", "invalid JSON"),
        (b'{"inputs": [[Infinity]]}', "application/json", 400, "BAD_REQUEST", "invalid JSON"),
        (b'{"inputs": {"island": [1], "sex": []}}', "application/json", 422,
         "INVALID_PARAMETER_VALUE", "different lengths"),
        (b'a,"b\n', "text/csv", 400, "BAD_REQUEST", "the CSV cannot be read"),
        (b"", "text/csv", 422, "INVALID_PARAMETER_VALUE", "no header row"),
        (b"island\nDream\n", "text/csv", 422, "INVALID_PARAMETER_VALUE",
         "feature 'sex': missing feature"),
    ],
)  # fmt: skip
def test_mlflow_errors(
    client: Any, body: bytes, content_type: str, status: int, code: str, detail: str
) -> None:
    answer = client.post("/invocations", data=body, content_type=content_type)
    assert answer.status_code == status
    assert answer.content_type == "application/json"
    assert answer.get_json()["error_code"] == code
    assert detail in answer.get_json()["message"]


def test_v2_tensor_shapes(client: Any, models: RegisteredModels) -> None:
    sent = models.records[:3]
    want = expected(models, sent)
    columns = [
        {"name": name, "shape": [3, 1],
         "datatype": "BYTES" if name in ("island", "sex") else "FP64",
         "data": [[r[name]] for r in sent]}
        for name in FEATURES
    ]  # fmt: skip
    answer = client.post(
        f"/v2/models/{MODEL}/infer",
        json={"inputs": columns, "outputs": [{"name": "probabilities"}]},
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["model_version"] == "1"
    [output] = answer.get_json()["outputs"]
    assert output["name"] == "probabilities"
    assert output["shape"] == [3, 3]
    np.testing.assert_array_equal(np.array(output["data"]).reshape(3, 3), want)
    # One [n, features] tensor in the model's feature order (BYTES holds any JSON value).
    matrix = {"name": "x", "shape": [3, 6], "datatype": "BYTES",
              "data": [[r[n] for n in FEATURES] for r in sent]}  # fmt: skip
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [matrix]})
    assert answer.status_code == 422  # a BYTES tensor holds strings: the numbers are refused
    matrix["data"] = [str(v) if v is not None else None for r in sent for v in r.values()]
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [matrix]})
    assert answer.status_code == 200, answer.get_json()
    outputs = {o["name"]: o for o in answer.get_json()["outputs"]}
    np.testing.assert_array_equal(np.array(outputs["probabilities"]["data"]).reshape(3, 3), want)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"inputs": []}, 422, "inputs is empty"),
        ({"inputs": [{"name": "island"}]}, 422, "must have name, shape, datatype and data"),
        ({"inputs": [{"name": "island", "shape": [2], "datatype": "BYTES", "data": ["Dream"]}]},
         422, "holds 2 values, data has 1"),
        ({"inputs": [{"name": "island", "shape": [1], "datatype": "FP16", "data": [1]}]},
         422, "datatype 'FP16'"),
        ({"inputs": [{"name": "x", "shape": [6], "datatype": "FP64", "data": [1] * 6}]},
         422, "shape [n, 6]"),
        ({"inputs": [], "extra": 1}, 422, "unknown member(s) ['extra']"),
    ],
)  # fmt: skip
def test_v2_errors(client: Any, body: Any, status: int, detail: str) -> None:
    answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == status
    assert answer.content_type == "application/json"
    assert detail in answer.get_json()["error"]


def test_v2_unknown_output(client: Any, models: RegisteredModels) -> None:
    body = {"inputs": [{"name": n, "shape": [1], "datatype": "BYTES" if n in ("island", "sex")
                        else "FP64", "data": [models.records[0][n]]} for n in FEATURES],
            "outputs": [{"name": "prediction"}]}  # fmt: skip
    answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 422
    assert "unknown output(s) ['prediction']" in answer.get_json()["error"]


def test_protocol_metadata_and_readiness(client: Any, make_client: Callable[..., Any]) -> None:
    assert client.get("/").get_json() == {"status": "alive"}
    assert client.get("/ping").status_code == 200
    assert client.get("/v2").get_json()["name"] == "modelrail"
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get(f"/v1/models/{MODEL}").get_json()["ready"] is True
    assert client.get(f"/v2/models/{MODEL}/ready").get_json() == {"name": MODEL, "ready": True}
    meta = client.get(f"/v2/models/{MODEL}").get_json()
    assert meta["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("island", "BYTES"), ("bill_length_mm", "FP64"), ("bill_depth_mm", "FP64"),
        ("flipper_length_mm", "FP64"), ("body_mass_g", "FP64"), ("sex", "BYTES"),
    ]  # fmt: skip
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    missing = client.get("/v2/models/other")
    assert missing.status_code == 404
    assert "not 'other'" in missing.get_json()["error"]

    refused = make_client(model_version=3)  # tampered: not ready
    assert refused.get("/v2/health/ready").status_code == 503
    assert refused.get(f"/v2/models/{MODEL}/ready").status_code == 503
    assert refused.get(f"/v1/models/{MODEL}").status_code == 503
    assert refused.get("/ping").status_code == 503
    answer = refused.post("/invocations", json={"inputs": []})
    assert answer.status_code == 503
    assert answer.get_json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_protocols_reach_the_prediction_log(
    make_client: Callable[..., Any], models: RegisteredModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelrail.serving.prediction_log import PredictionLog

    answered: list[Any] = []
    refused: list[Any] = []
    monkeypatch.setattr(PredictionLog, "sampled", lambda self: True)
    monkeypatch.setattr(PredictionLog, "answered", lambda self, *a: answered.append(a))
    monkeypatch.setattr(PredictionLog, "refused", lambda self, *a: refused.append(a))
    client = make_client()
    sent = models.records[:2]
    assert client.post("/invocations", json={"inputs": sent}).status_code == 200
    assert client.post(f"/v1/models/{MODEL}:predict", json={"instances": sent}).status_code == 200
    assert client.post("/invocations", json={"inputs": [{}]}).status_code == 422
    assert client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []}).status_code == 422
    assert len(answered) == 2
    np.testing.assert_array_equal(answered[0][1], models.schema.encode_records(sent))
    assert [r[2] for r in refused] == ["invalid-instances", "invalid-request"]
