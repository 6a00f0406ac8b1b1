"""The container a Vertex AI model version is registered with is the staging service's
own contract: Vertex AI hands the spec's routes and port back as AIP_* variables, and
the service answers them, its health route saying whether the version is ready."""

from __future__ import annotations

import dataclasses
from typing import Any

from modelrail.settings.service import ServiceSettings, vertex_container

from .conftest import BUCKET, MODEL, RegisteredModels


def _vertex_env(spec: dict[str, Any]) -> dict[str, str]:
    """What a container started from ``spec`` finds in its environment on Vertex AI."""
    return {entry["name"]: entry["value"] for entry in spec["env"]} | {
        "AIP_HTTP_PORT": str(spec["ports"][0]["containerPort"]),
        "AIP_HEALTH_ROUTE": spec["healthRoute"],
        "AIP_PREDICT_ROUTE": spec["predictRoute"],
    }


def _client(models: RegisteredModels, settings: ServiceSettings) -> Any:
    from modelrail.serving.app import create_app

    config = {"store": models.store, "signer": models.signer, **dataclasses.asdict(settings)}
    return create_app(config).test_client()


def test_the_service_serves_the_version_on_the_routes_vertex_is_given(
    models: RegisteredModels,
) -> None:
    spec = vertex_container("staging:abc", MODEL, 2, BUCKET)

    settings = ServiceSettings.from_env(_vertex_env(spec))

    assert spec["imageUri"] == "staging:abc"
    assert (settings.model_name, settings.model_version) == (MODEL, 2)
    assert settings.bind == f"0.0.0.0:{spec['ports'][0]['containerPort']}"
    assert _vertex_env(spec)["MODELRAIL_ARTIFACT_BUCKET"] == BUCKET
    client = _client(models, settings)
    assert client.get(spec["healthRoute"]).status_code == 200
    response = client.post(spec["predictRoute"], json={"instances": models.records[:2]})
    assert response.status_code == 200
    assert response.get_json()["model"] == {"name": MODEL, "version": 2}
    assert len(response.get_json()["predictions"]) == 2


def test_vertex_sends_no_traffic_to_a_version_that_cannot_load(models: RegisteredModels) -> None:
    spec = vertex_container("staging:abc", MODEL, models.tampered, BUCKET)

    client = _client(models, ServiceSettings.from_env(_vertex_env(spec)))

    # The health route is readiness, not liveness: a version refused at load is not ready.
    assert client.get(spec["healthRoute"]).status_code == 503
    assert client.get("/healthz").status_code == 200
