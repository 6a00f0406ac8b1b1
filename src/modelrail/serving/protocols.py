"""The serving protocols other clients speak, as shapes over ``/predict``'s path.

Each protocol's request becomes one of the bodies ``RequestDecoder`` reads (the same
decoding and validation), its answer is made from the same predictions, and its
errors are the same problems rendered as its clients expect:

- **MLflow** (``POST /invocations``): ``application/json`` with ``dataframe_split``,
  ``dataframe_records``, ``instances`` or ``inputs`` (rows, or an object of columns),
  or ``text/csv`` with a header row; answers ``{"predictions": [...]}``; errors
  ``{"error_code", "message"}`` (MLflow's ``MlflowException`` JSON).
- **KServe v1** (``POST /v1/models/<name>:predict``): ``{"instances": [...]}``;
  answers ``{"predictions": [...]}``; errors ``{"error": "..."}``.
- **Open Inference Protocol v2** (``POST /v2/models/<name>/infer``): tensors, one per
  feature (shape ``[n]`` or ``[n, 1]``) or one ``[n, features]`` tensor in the
  model's feature order; answers tensors (``label``, ``probabilities``,
  ``probability`` or ``prediction``); errors ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from modelrail.kernel.problems import Problem

if TYPE_CHECKING:  # the app imports this module before it loads a model (and numpy)
    import numpy as np

    from modelrail.domain.decoding import Batch, RequestDecoder
    from modelrail.domain.features import FeatureSchema

JSON = "application/json"
CSV = "text/csv"
MLFLOW, KSERVE_V1, OIP_V2 = "mlflow", "kserve-v1", "oip-v2"
# MLflow's error codes (``mlflow.protos.databricks_pb2``) by status.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    408: "BAD_REQUEST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    503: "TEMPORARILY_UNAVAILABLE",
}
# How many of a problem's located errors an error message spells out.
_ERRORS_IN_MESSAGE = 10
# Open Inference Protocol tensor types, and the JSON values each holds.
_NUMBER_TYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP32", "FP64"}
)
_V2_TYPES = {**dict.fromkeys(_NUMBER_TYPES, "numbers"), "BOOL": "booleans", "BYTES": "strings"}
_V2_DATATYPE = {"number": "FP64", "integer": "INT64", "category": "BYTES", "boolean": "BOOL"}
# KServe's client also sends model_name (the path names the model).
_V2_MEMBERS = frozenset({"id", "inputs", "outputs", "parameters", "model_name", "model_version"})
_V2_INPUT_MEMBERS = frozenset({"name", "shape", "datatype", "data", "parameters"})


def media_type(content_type: str, accepted: Sequence[str] = (JSON,)) -> str:
    """The request's media type, one of ``accepted``, in UTF-8 (RFC 8259 for JSON): a
    body in another charset would be read as the wrong text, so it is refused."""
    found, _, parameters = content_type.partition(";")
    found = found.strip().lower()
    if found not in accepted:
        raise Problem(
            "unsupported-media-type",
            f"send Content-Type: {' or '.join(accepted)}, not {found or 'none'}",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise Problem(
                "unsupported-media-type", f"the body is read as UTF-8; charset={charset} is not"
            )
    return found


def error_body(protocol: str, problem: Problem) -> bytes:
    """``problem`` as ``protocol``'s clients read an error."""
    message = problem.detail
    located = problem.extensions.get("errors") or ()
    if located:
        message = problem.title + ": " + "; ".join(map(_located, located[:_ERRORS_IN_MESSAGE]))
        if len(located) > _ERRORS_IN_MESSAGE:
            message += f"; and {len(located) - _ERRORS_IN_MESSAGE} more"
    if protocol == MLFLOW:
        code = _MLFLOW_CODES.get(problem.status, "INTERNAL_ERROR")
        return orjson.dumps({"error_code": code, "message": message})
    return orjson.dumps({"error": message})


def _located(error: dict[str, Any]) -> str:
    where = [f"instance {error['instance']}"] if error.get("instance") is not None else []
    if error.get("feature") is not None:
        where.append(f"feature {error['feature']!r}")
    return f"{', '.join(where) or error['pointer']}: {error['detail']}"


def answer(predictions: list[Any], warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """MLflow's and KServe v1's answer: ``predictions`` (``warnings`` beside them when
    there are any, as MLflow's server adds its metadata beside them)."""
    body: dict[str, Any] = {"predictions": predictions}
    if warnings:
        body["warnings"] = warnings
    return body


# -- MLflow ----------------------------------------------------------------------------------
def mlflow_batch(decoder: RequestDecoder, content_type: str, body: bytes) -> Batch:
    """An MLflow scoring request's batch."""
    if media_type(content_type, (JSON, CSV)) == CSV:
        return decoder.decode_document(_csv_document(body))
    document = _mlflow_json(body)
    if type(document) is dict and "inputs" in document:
        document = _from_inputs(document)
    return decoder.decode_document(document)


def _mlflow_json(body: bytes) -> Any:
    """The JSON document; ``NaN`` (what pandas writes for a missing value, and MLflow's
    client sends) is read as null, the missing value it means."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        strict = exc
    import json  # only for bodies orjson refuses

    def constant(name: str) -> None:
        if name != "NaN":
            raise ValueError(f"{name} is not a number a feature can take")

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text} overflows a double")
        return value

    try:
        return json.loads(body, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError):
        raise Problem("malformed-json", f"invalid JSON: {strict}") from None


def _from_inputs(document: dict[str, Any]) -> dict[str, Any]:
    """MLflow's ``inputs``: rows (as ``instances``) or an object of columns (as a
    ``dataframe_split``)."""
    inputs = document.pop("inputs")
    if any(key in document for key in ("instances", "dataframe_split", "dataframe_records")):
        raise Problem("invalid-request", "send one of inputs, instances, dataframe_split, ...")
    if type(inputs) is list:
        return {"instances": inputs, **document}
    if type(inputs) is not dict or not all(type(c) is list for c in inputs.values()):
        raise Problem("invalid-request", "inputs must be an array of rows or an object of columns")
    return {"dataframe_split": _split(list(inputs), list(inputs.values())), **document}


def _split(columns: list[str], values: list[list[Any]]) -> dict[str, Any]:
    lengths = {len(column) for column in values}
    if len(lengths) > 1:
        raise Problem("invalid-request", f"the columns have different lengths {sorted(lengths)}")
    return {"columns": columns, "data": [list(row) for row in zip(*values, strict=True)]}


def _csv_document(body: bytes) -> dict[str, Any]:
    """A CSV with a header row as a ``dataframe_split`` of its cells, each a string as
    a row copied from the training file is (a blank cell is missing)."""
    import csv
    import io

    try:
        text = body.decode("utf-8-sig")
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    except UnicodeDecodeError as exc:
        raise Problem("bad-request", f"the CSV is not UTF-8: {exc}") from None
    except csv.Error as exc:
        raise Problem("bad-request", f"the CSV cannot be read: {exc}") from None
    if not rows:
        raise Problem("invalid-request", "the CSV has no header row")
    return {"dataframe_split": {"columns": rows[0], "data": rows[1:]}}


# -- Open Inference Protocol v2 ---------------------------------------------------------------
def v2_request(decoder: RequestDecoder, body: bytes) -> tuple[Batch, list[str] | None, Any]:
    """An inference request's batch, the outputs it asks for (None: all) and its id."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem("malformed-json", f"invalid JSON: {exc}") from None
    if type(document) is not dict or type(document.get("inputs")) is not list:
        raise Problem("invalid-request", "the body must be an object with an inputs array")
    unknown = sorted(set(document) - _V2_MEMBERS)
    if unknown:
        raise Problem("invalid-request", f"unknown member(s) {unknown}")
    inputs = [_tensor(tensor, position) for position, tensor in enumerate(document["inputs"])]
    if not inputs:
        raise Problem("invalid-request", "inputs is empty")
    names = set(decoder.names)
    if len(inputs) == 1 and inputs[0][0] not in names:
        _, shape, data = inputs[0]  # one [n, features] tensor, in feature order
        if len(shape) != 2:
            raise Problem(
                "invalid-request",
                f"a single input is one row per instance: shape [n, {len(names)}], not {shape}",
            )
        width = shape[1]
        rows = [data[i : i + width] for i in range(0, len(data), width)] if width else []
        batch = decoder.decode_document({"instances": rows})
    else:  # one tensor per feature
        for name, shape, _ in inputs:
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise Problem(
                    "invalid-request",
                    f"input {name!r}: a feature is shape [n] or [n, 1], not {shape}",
                )
        split = _split([name for name, _, _ in inputs], [data for _, _, data in inputs])
        batch = decoder.decode_document({"dataframe_split": split})
    return batch, _requested(document.get("outputs")), document.get("id")


def _tensor(tensor: Any, position: int) -> tuple[str, list[int], list[Any]]:
    if type(tensor) is not dict or not {"name", "shape", "datatype", "data"} <= tensor.keys():
        raise Problem(
            "invalid-request", f"inputs[{position}] must have name, shape, datatype and data"
        )
    unknown = sorted(set(tensor) - _V2_INPUT_MEMBERS)
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if unknown or type(name) is not str:
        raise Problem("invalid-request", f"inputs[{position}]: unknown member(s) {unknown}")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise Problem("invalid-request", f"input {name!r}: shape must be non-negative integers")
    if datatype not in _V2_TYPES:
        raise Problem(
            "invalid-request",
            f"input {name!r}: datatype {datatype!r} is not one of {sorted(_V2_TYPES)}",
        )
    data = _flat(tensor["data"])
    if len(data) != math.prod(shape):
        raise Problem(
            "invalid-request",
            f"input {name!r}: shape {shape} holds {math.prod(shape)} values, data has {len(data)}",
        )
    holds = _V2_TYPES[datatype]
    if not all(map(_HOLDS[holds], data)):
        raise Problem("invalid-request", f"input {name!r}: a {datatype} tensor holds {holds}")
    return name, shape, data


# A null stands for a missing value in any tensor (JSON has no NaN).
_HOLDS: dict[str, Callable[[Any], bool]] = {
    "numbers": lambda v: type(v) in (int, float) or v is None,
    "booleans": lambda v: type(v) is bool or v is None,
    "strings": lambda v: type(v) is str or v is None,
}


def _flat(data: Any) -> list[Any]:
    """Tensor data, nested or already flat (row-major)."""
    if type(data) is not list:
        raise Problem("invalid-request", "a tensor's data must be an array")
    if not any(type(v) is list for v in data):
        return data
    flat: list[Any] = []
    for value in data:
        flat += _flat(value) if type(value) is list else [value]
    return flat


def _requested(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if type(outputs) is not list or not all(
        type(o) is dict and type(o.get("name")) is str for o in outputs
    ):
        raise Problem("invalid-request", "outputs must be an array of objects with a name")
    return [o["name"] for o in outputs]


def v2_outputs(schema: FeatureSchema) -> list[dict[str, Any]]:
    """The output tensors a model answers (their metadata)."""
    if schema.objective in {"multiclass", "binary"}:
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(schema.classes)]},
        ]
        if schema.objective == "binary":
            outputs.append({"name": "probability", "datatype": "FP64", "shape": [-1]})
        return outputs
    return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]


def v2_answer(
    predictor: Any, outputs: np.ndarray, requested: list[str] | None
) -> list[dict[str, Any]]:
    """The output tensors of ``outputs`` (the model's numbers for a batch)."""
    import numpy as np

    rows = len(outputs)
    tensors: dict[str, dict[str, Any]] = {}
    if predictor.objective in ("multiclass", "binary"):
        probabilities = outputs if outputs.ndim == 2 else np.stack([1.0 - outputs, outputs], 1)
        tensors["label"] = {"datatype": "BYTES", "shape": [rows], "data": predictor.labels(outputs)}
        tensors["probabilities"] = {
            "datatype": "FP64",
            "shape": list(probabilities.shape),
            "data": probabilities.ravel().tolist(),
        }
        if outputs.ndim == 1:
            tensors["probability"] = {"datatype": "FP64", "shape": [rows], "data": outputs.tolist()}
    else:
        tensors["prediction"] = {"datatype": "FP64", "shape": [rows], "data": outputs.tolist()}
    if requested is None:
        requested = list(tensors)
    unknown = [name for name in requested if name not in tensors]
    if unknown:
        raise Problem(
            "invalid-request", f"unknown output(s) {unknown}; this model answers {list(tensors)}"
        )
    return [{"name": name, **tensors[name]} for name in requested]


def v2_model(predictor: Any) -> dict[str, Any]:
    """The model's metadata: its versions, input tensors (one per feature) and outputs."""
    schema: FeatureSchema = predictor.schema
    return {
        "name": predictor.model,
        "versions": [str(predictor.version)],
        "platform": "lightgbm",
        "inputs": [
            {"name": f.name, "datatype": _V2_DATATYPE[f.type], "shape": [-1]}
            for f in schema.features
        ],
        "outputs": v2_outputs(schema),
    }
