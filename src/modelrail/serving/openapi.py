"""The OpenAPI 3.1 document of the service, built from the loaded model's feature schema.

It states what the request path enforces (``modelrail.domain.decoding``): the three body shapes,
each feature's JSON type and nullability, the instance limit, and every error status
with its problem+json body. The schemathesis run in ``tests/serving`` holds the two
together.
"""

from __future__ import annotations

from typing import Any

from modelrail.domain.dataset.contract import FALSE_WORDS, TRUE_WORDS
from modelrail.domain.decoding import NUMBER_TEXT
from modelrail.domain.features import Feature, FeatureSchema
from modelrail.kernel.problems import POINTED_ITEM, PROBLEM_JSON, problem_schema
from modelrail.settings.service import ServiceSettings

_JSON_TYPES = {"number": "number", "integer": "integer", "category": "string", "boolean": "boolean"}
# What a number, integer or boolean may also be written as: a string as a CSV holds it.
_BOOLEAN_TEXT = "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)
    for word in TRUE_WORDS + FALSE_WORDS
)
_STRING_TEXT = {"number": NUMBER_TEXT, "integer": NUMBER_TEXT, "boolean": _BOOLEAN_TEXT}
_STRING_MEANS = {
    "number": 'a decimal number ("3.5", " 7 ")',
    "integer": 'a whole number ("42", "7.0"; "3.5" is refused)',
    "boolean": f"{'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)} in any case",
}


def _value_schema(feature: Feature) -> dict[str, Any]:
    kind = _JSON_TYPES[feature.type]
    types = [kind]
    if not feature.is_categorical:
        types.append("string")  # a value as a CSV writes it
    if feature.nullable:
        types.append("null")
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if feature.is_categorical:
        # Not an enum: an unseen category is accepted, encoded as missing, and flagged.
        schema["examples"] = list(feature.categories)
        schema["description"] = (
            "one of "
            + ", ".join(feature.categories)
            + ("; another value is treated as missing and reported in `warnings`")
        )
    else:
        # Only strings are held to the pattern; a blank one is missing where null is.
        text = _STRING_TEXT[feature.type]
        optional = "?" if feature.nullable else ""
        schema["pattern"] = rf"^\s*(?:{text}){optional}\s*$"
        schema["description"] = (
            f"a JSON {kind}, or a string as a CSV holds it: {_STRING_MEANS[feature.type]}, "
            "spaces around it ignored"
            + ("; a blank string is missing" if feature.nullable else "")
            + "; a string is read as validation reads the cell and reported once per "
            "feature in `warnings`"
        )
    return schema


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def build(
    settings: ServiceSettings, schema: FeatureSchema | None, model: str, version: int | None
) -> dict[str, Any]:
    features = list(schema.features) if schema else []
    names = [f.name for f in features]
    if schema is not None:
        instance_object: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: _value_schema(f) for f in features},
            "required": names,
            "additionalProperties": False,
        }
        instance_array: dict[str, Any] = {
            "type": "array",
            "description": "values in the model's feature order: " + ", ".join(names),
            "prefixItems": [_value_schema(f) for f in features],
            "items": False,
            "minItems": len(features),
            "maxItems": len(features),
        }
    else:
        instance_object = {"type": "object"}
        instance_array = {"type": "array"}
    # The instance limit is stated, not encoded as maxItems: going over it is a 413
    # (a size limit), not a 422 like the schema violations.
    rows = {
        "minItems": 1,
        "description": f"at most {settings.max_instances} rows per request (else 413)",
    }
    cell: dict[str, Any] = {"type": ["number", "string", "boolean", "null"]}
    request = {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": {
                        "type": "array",
                        **rows,
                        "items": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/InstanceObject"},
                                {"$ref": "#/components/schemas/InstanceArray"},
                            ]
                        },
                    },
                    "parameters": {"type": "object"},
                },
            },
            {
                "type": "object",
                "required": ["dataframe_records"],
                "additionalProperties": False,
                "properties": {
                    "dataframe_records": {
                        "type": "array",
                        **rows,
                        "items": {"$ref": "#/components/schemas/InstanceObject"},
                    },
                    "params": {"type": "object"},
                },
            },
            {
                "type": "object",
                "required": ["dataframe_split"],
                "additionalProperties": False,
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["columns", "data"],
                        "additionalProperties": False,
                        "properties": {
                            "columns": {
                                "type": "array",
                                "uniqueItems": True,
                                "items": {"enum": names} if names else {"type": "string"},
                                "minItems": len(names),
                                "maxItems": len(names),
                            },
                            "data": {
                                "type": "array",
                                **rows,
                                "items": {
                                    "type": "array",
                                    "items": cell,
                                    "minItems": len(names),
                                    "maxItems": len(names),
                                },
                            },
                            "index": {"type": "array"},
                        },
                    },
                    "params": {"type": "object"},
                },
            },
        ]
    }
    classes = list(schema.classes) if schema else []
    if schema is None or schema.objective == "regression":
        prediction: dict[str, Any] = {"type": "number"}
    else:
        probabilities = {
            "type": "object",
            "required": classes,
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes},
            "additionalProperties": False,
        }
        prediction = {
            "type": "object",
            "required": ["label", "probabilities"],
            "properties": {
                "label": {"enum": classes},
                "probabilities": probabilities,
                "probability": {"type": "number"},
            },
        }
    response = {
        "type": "object",
        "required": ["predictions", "model"],
        "properties": {
            "predictions": {"type": "array", "items": prediction},
            "model": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
            },
            "warnings": {
                "type": "array",
                "items": POINTED_ITEM,
            },
        },
    }
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    ready = {
        "type": "object",
        "required": ["status", "model", "version", "predictor", "reader"],
        "properties": {
            "status": {"const": "ready"},
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "predictor": {
                "enum": ["lightgbm", "compiled"],
                "description": "what computes predictions now (both give the same numbers)",
            },
            "reader": {
                "enum": ["native", "python"],
                "description": "what reads the common /predict body into the feature matrix "
                "(the compiled predictor's body reader, or Python; the same numbers)",
            },
            "explainer": {
                "const": "lightgbm",
                "description": "what computes /explain's contributions",
            },
            "explainer_reason": {
                "type": "string",
                "description": "why the predictor in use does not compute them, where it does not",
            },
        },
    }
    predict_responses = {
        "200": {
            "description": "one prediction per instance, in order",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}
            },
        },
        "400": _problem(
            "the body is not valid JSON (syntax, NaN/Infinity, overflowing "
            "numbers, invalid UTF-8, nesting deeper than 1024)"
        ),
        "413": _problem(
            f"body over {settings.max_body_bytes} bytes or more than "
            f"{settings.max_instances} instances"
        ),
        "415": _problem("the content type is not application/json"),
        "422": _problem(
            "valid JSON that does not match the request shape or the "
            "feature schema; `errors` point at each offending value"
        ),
        "503": _problem("no model is loaded"),
    }
    predict_operation = {
        "operationId": "predict",
        "summary": f"Predict with {model}" + (f" v{version}" if version else ""),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
            },
        },
        "responses": predict_responses,
    }
    paths: dict[str, Any] = {
        settings.predict_route: {"post": predict_operation},
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "the process is up",
                        "content": {"application/json": {"schema": status}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the model is loaded and hash-verified",
                "responses": {
                    "200": {
                        "description": "ready",
                        "content": {"application/json": {"schema": ready}},
                    },
                    "503": _problem("not ready"),
                },
            }
        },
        "/v1/models/{name}": {
            "get": {
                "operationId": "model",
                "summary": "The served model's metadata",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "metadata",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "required": ["name", "version"]}
                            }
                        },
                    },
                    "404": _problem("no such model here"),
                    "503": _problem("no model is loaded"),
                },
            }
        },
    }
    if settings.predict_route != "/predict":
        paths["/predict"] = {"post": {**predict_operation, "operationId": "predictDefault"}}
    explain_operation = {
        "operationId": "explain",
        "summary": "Predict, with each feature's contribution (TreeSHAP)",
        "requestBody": predict_operation["requestBody"],
        "responses": {
            **predict_responses,
            "200": {
                "description": "predictions, and per instance each feature's contribution",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ExplainResponse"}}
                },
            },
        },
    }
    paths["/explain"] = {"post": explain_operation}
    paths.update(_protocol_paths(schema, prediction))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelrail staging service",
            "version": "1",
            "description": f"Serves {model}"
            + (f" version {version}" if version else "")
            + ". Errors are RFC 9457 problem details.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "PredictRequest": request,
                "InstanceObject": instance_object,
                "InstanceArray": instance_array,
                "PredictResponse": response,
                "ExplainResponse": _explain_response(schema),
                "Problem": problem_schema(),
            }
        },
    }


def _explain_response(schema: FeatureSchema | None) -> dict[str, Any]:
    names = schema.names if schema else []
    one = {
        "type": "object",
        "required": ["base_value", "contributions"],
        "properties": {
            "base_value": {"type": "number"},
            "contributions": {
                "type": "object",
                "required": names,
                "properties": {name: {"type": "number"} for name in names},
                "additionalProperties": False,
            },
        },
        "description": "in raw-score units (log-odds of the second class for a binary "
        "model, per class for multiclass): base_value plus the contributions is the raw "
        "score (LightGBM's pred_contrib, exact TreeSHAP)",
    }
    if schema is not None and schema.objective == "multiclass":
        explanation: dict[str, Any] = {
            "type": "object",
            "required": ["classes"],
            "properties": {
                "classes": {
                    "type": "object",
                    "required": list(schema.classes),
                    "properties": {c: one for c in schema.classes},
                    "additionalProperties": False,
                }
            },
        }
    else:
        explanation = one
    return {
        "allOf": [{"$ref": "#/components/schemas/PredictResponse"}],
        "required": ["explanations"],
        "properties": {"explanations": {"type": "array", "items": explanation}},
    }


def _errors(schema: dict[str, Any], statuses: dict[str, str]) -> dict[str, Any]:
    return {
        status: {"description": why, "content": {"application/json": {"schema": schema}}}
        for status, why in statuses.items()
    }


_REQUEST_ERRORS = {
    "400": "not valid JSON (or CSV)",
    "404": "this service serves another model",
    "413": "too large a body, or too many instances",
    "415": "an unsupported content type",
    "422": "a shape or value the model does not take",
    "503": "no model is loaded",
}
# MLflow's ``MlflowException`` JSON, and KServe's / the Open Inference Protocol's error.
_MLFLOW_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def _get(operation: str, summary: str, body: dict[str, Any], errors: Any = None) -> Any:
    responses = {
        "200": {"description": summary, "content": {"application/json": {"schema": body}}},
        **(errors or {}),
    }
    return {"get": {"operationId": operation, "summary": summary, "responses": responses}}


def _protocol_paths(schema: FeatureSchema | None, prediction: dict[str, Any]) -> dict[str, Any]:
    """MLflow's scoring protocol, KServe v1 and the Open Inference Protocol v2."""
    predictions = {
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {"type": "array", "items": prediction},
            "warnings": {"type": "array", "items": POINTED_ITEM},
        },
    }
    ok = {"description": "one prediction per instance", "content": {
        "application/json": {"schema": predictions}}}  # fmt: skip
    rows = {"type": "array", "minItems": 1, "items": {"oneOf": [
        {"$ref": "#/components/schemas/InstanceObject"},
        {"$ref": "#/components/schemas/InstanceArray"}]}}  # fmt: skip
    mlflow_request = {
        "oneOf": [
            {"$ref": "#/components/schemas/PredictRequest"},
            {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {
                    "inputs": {
                        "oneOf": [
                            rows,
                            {
                                "type": "object",
                                "description": "columns: a feature's values in each",
                                "additionalProperties": {"type": "array"},
                            },
                        ]
                    },
                    "params": {"type": "object"},
                },
            },
        ],
        "description": "as /predict takes, or MLflow's inputs; NaN is read as a missing value",
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "description": (
                "one tensor per feature (named after it, shape [n] or [n, 1]), or one "
                "[n, features] tensor in the model's feature order")},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}}}},
            "parameters": {"type": "object"},
        },
    }  # fmt: skip
    infer_response = {
        "type": "object",
        "required": ["model_name", "model_version", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": tensor},
            "parameters": {"type": "object"},
        },
    }
    v1_errors = _errors(_ERROR, _REQUEST_ERRORS)
    ready = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
    not_ready = _errors(_ERROR, {"404": "this service serves another model",
                                 "503": "no model is loaded"})  # fmt: skip
    json_body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}  # fmt: skip
    return {
        "/invocations": {
            "post": {
                "operationId": "mlflowInvocations",
                "summary": "MLflow's scoring protocol",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": mlflow_request},
                        "text/csv": {
                            "schema": {"type": "string"},
                            "description": "a header row of feature names, then one row each",
                        },
                    },
                },
                "responses": {"200": ok, **_errors(_MLFLOW_ERROR, _REQUEST_ERRORS)},
            }
        },
        "/ping": _get("mlflowPing", "MLflow's readiness", {"type": "object"},
                      _errors(_MLFLOW_ERROR, {"503": "no model is loaded"})),
        "/": _get("kserveLive", "KServe v1 liveness", {
            "type": "object", "required": ["status"],
            "properties": {"status": {"const": "alive"}}}),
        "/v1/models/{name}:predict": {"post": {
            "operationId": "kservePredict", "summary": "KServe v1 prediction",
            "parameters": _NAME, "requestBody": json_body,
            "responses": {"200": ok, **v1_errors}}},
        "/v1/models/{name}:explain": {"post": {
            "operationId": "kserveExplain", "summary": "KServe v1 explanation (as /explain)",
            "parameters": _NAME, "requestBody": json_body,
            "responses": {"200": {"description": "as /explain", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ExplainResponse"}}}}, **v1_errors}}},
        "/v2": _get("v2Server", "Open Inference Protocol server metadata", {
            "type": "object", "required": ["name", "version", "extensions"]}),
        "/v2/health/live": _get("v2Live", "Open Inference Protocol liveness", {
            "type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}),
        "/v2/health/ready": _get("v2Ready", "Open Inference Protocol readiness", ready,
                                 _errors(ready, {"503": "no model is loaded"})),
        "/v2/models/{name}": {"get": {**_get("v2Model", "the model's tensors", {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"]},
            not_ready)["get"], "parameters": _NAME}},
        "/v2/models/{name}/ready": {"get": {**_get("v2ModelReady", "model readiness", ready,
                                                   not_ready)["get"], "parameters": _NAME}},
        "/v2/models/{name}/infer": {"post": {
            "operationId": "v2Infer", "summary": "Open Inference Protocol inference",
            "parameters": _NAME,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": infer_request}}},
            "responses": {"200": {"description": "output tensors", "content": {
                "application/json": {"schema": infer_response}}}, **v1_errors}}},
    }  # fmt: skip
