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
                "Problem": problem_schema(),
            }
        },
    }
