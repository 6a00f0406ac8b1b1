"""schemathesis against /openapi.json, bounded: no 5xx, and responses as documented.

Every operation is fuzzed with bodies that fit the document (positive) and bodies
that break it (negative). The positive-acceptance check is left out: the document
cannot say that a ``dataframe_split`` row's value types follow its column order, so
some bodies it calls valid are rightly refused with 422.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from modelrail.serving.app import create_app

from .conftest import MODEL, RegisteredModels

# The others take no body and any string.
NEGATABLE = {"/predict", "/explain", "/invocations", "/v1/models/{name}:predict",
             "/v2/models/{name}/infer"}  # fmt: skip


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(
    models: RegisteredModels, mode: GenerationMode
) -> None:
    app = create_app(
        {
            "store": models.store,
            "signer": models.signer,
            "model_name": MODEL,
            "model_version": 1,
            "max_instances": 20,
            "access_log": "off",
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/healthz", "/readyz"} | NEGATABLE
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path not in NEGATABLE:
            continue  # nothing to break: no body, no parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40 if operation.path == "/predict" else 10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
