"""Parse, validate and encode a /predict body straight into LightGBM's feature matrix.

One pass over the decoded JSON checks every value against the model's feature schema
(the manifest's ``features``) and writes its encoding into a row, exactly as
``FeatureSchema.encode_records`` encodes training data (the tests hold the two equal):
numbers and integers as float, booleans as 0/1, a category as the index of its value
in the contract's category list, missing (JSON ``null``) as NaN. An unseen category
becomes NaN too, as LightGBM treats an unknown category, and is reported back as a
warning instead of failing the request. A warning is given once per feature and kind
in a request, at the first value, with the count where there were more (a batch copied
from the file with its target column is one warning, not one per row).

A row copied from the training CSV holds strings: a number, integer or boolean written
in a string is read as validation reads the CSV cell (spaces trimmed; a decimal number,
an integer's fraction zero; the contract module's ``TRUE_WORDS``/``FALSE_WORDS`` in any
case; blank, or one of the contract's null tokens such as ``NA``, is missing), and
reported in one warning per feature per request. A string that is none of these stays
an error naming the feature, the row and the value.

Accepted shapes: ``{"instances": [...]}`` (Vertex AI / KServe v1; each instance an
object keyed by feature or an array in the model's feature order), and MLflow's
``{"dataframe_split": {"columns": [...], "data": [[...]]}}`` and
``{"dataframe_records": [{...}]}``. orjson rejects ``NaN``/``Infinity`` tokens,
numbers that overflow a double (``1e999``), invalid UTF-8 and nesting deeper than
1024 levels; those become 400s, shape and type mistakes 422s.

Up to three paths, one answer. Where the version's compiled predictor carries a
verified body reader (``reader_c``: C generated from the schema, built where the model
was trained), the common body is read by it straight into the matrix, with no Python
object per value; it declines anything else, and this module decodes it. Here the
common body (``{"instances": [...]}`` of objects, every feature present with a value
of its type, every category known) is decoded by msgspec straight into typed structs
generated from the schema, which checks the types while it parses, without building
a dict per instance. Anything that typed decoder declines, for whatever reason, is
decoded again by orjson and checked value by value, which finds and reports every
problem (or the warnings). Each path only ever accepts bodies the next accepts, with
the same numbers; the tests hold them equal on generated and hand-picked bodies.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson

from modelrail.domain.dataset.contract import FALSE_WORDS, TRUE_WORDS, canonical_code, parse_code
from modelrail.domain.features import Feature, FeatureSchema
from modelrail.kernel.problems import Problem

_NUMBER, _INTEGER, _CATEGORY, _BOOLEAN = range(4)
# A feature type's number here, and in the generated body reader's C (``reader_c``).
KINDS = {"number": _NUMBER, "integer": _INTEGER, "category": _CATEGORY, "boolean": _BOOLEAN}
_MISSING = object()
_NAN = math.nan
# Enough to show a client every mistake in a typical batch without a huge answer.
MAX_REPORTED_ERRORS = 50
_astuple = msgspec.structs.astuple
_BODY_KEYS = ("instances", "dataframe_split", "dataframe_records")
# Vertex AI and MLflow may send request-level parameters; the model takes none.
_IGNORED_KEYS = frozenset({"parameters", "params"})
_INT64 = (-(2**63), 2**63 - 1)
# Up to this many instances the typed path builds the matrix row by row, beyond it
# column by column (each the faster, measured on the penguins model's requests).
_FEW_ROWS = 16
# A number written in a string, once its spaces are trimmed: decimal digits with an
# optional sign, fraction and exponent, as validation reads a CSV cell (not "nan",
# "inf", "0x1A" or "1_000", which Python's float() would also take).
NUMBER_TEXT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_number_text = re.compile(NUMBER_TEXT)
_BOOLEAN_WORDS = {**dict.fromkeys(TRUE_WORDS, 1.0), **dict.fromkeys(FALSE_WORDS, 0.0)}
# What a string was read as: one, and several.
_READ_AS = {
    _NUMBER: ("a number", "numbers"),
    _INTEGER: ("an integer", "integers"),
    _BOOLEAN: ("a boolean", "booleans"),
}
_UNSEEN = "unseen category, treated as missing"
# A value quoted in a problem or a warning: at most this many characters.
_QUOTED = 80


@dataclasses.dataclass(frozen=True)
class Batch:
    """A validated request: the feature matrix and what the client should know."""

    matrix: np.ndarray
    warnings: list[dict[str, Any]]
    # Per feature, the values that were categories the model does not know (missing in
    # ``matrix``, as a null is).
    unseen: Mapping[str, int] = dataclasses.field(default_factory=dict)


class _Errors:
    """Collects per-value problems; raises one 422 carrying all of them."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, pointer: str, detail: str, instance: int | None, feature: str | None) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED_ERRORS:
            item: dict[str, Any] = {"pointer": pointer, "detail": detail}
            if instance is not None:
                item["instance"] = instance
            if feature is not None:
                item["feature"] = feature
            self.items.append(item)

    def raise_if_any(self) -> None:
        if self.count:
            shown = "" if self.count <= len(self.items) else f" (first {len(self.items)} shown)"
            first = self.items[0]
            raise Problem(
                "invalid-instances",
                f"{self.count} problem(s){shown}; first: {first['pointer']}: {first['detail']}",
                errors=self.items,
            )


@dataclasses.dataclass
class _Converted:
    """One feature's values read from strings in one request, and its warning."""

    warning: dict[str, Any]  # its detail written by ``_Notes.finish``
    kind: int
    first: str = ""  # the first string read as a value, and that value as shown
    value: str = ""
    read: int = 0
    blank: int = 0  # blank strings, read as missing
    token: str = ""  # the first of the contract's null tokens read as missing
    tokens: int = 0


class _Notes:
    """What a request is warned about, once per feature and kind, at the first value,
    whatever the number of rows: the values it wrote in strings, and the repeated
    warnings (an unseen category, a value beyond the range, an ignored column), counted.
    ``finish`` writes their details."""

    def __init__(self) -> None:
        self.features: dict[str, _Converted] = {}
        self.repeated: dict[tuple[str, str], list[Any]] = {}  # -> [warning, count]

    def warn(self, warnings: list[dict[str, Any]], warning: dict[str, Any]) -> None:
        """``warning``, unless its feature already has one of the same detail."""
        seen = self.repeated.get((warning["feature"], warning["detail"]))
        if seen is None:
            self.repeated[warning["feature"], warning["detail"]] = [warning, 1]
            warnings.append(warning)
        else:
            seen[1] += 1

    def note(self, text: str, value: str | None, spec: _Spec, pointer: str, where: _Row) -> None:
        """``text`` was read as ``value`` (as it is shown; None: missing)."""
        name = spec[0]
        converted = self.features.get(name)
        if converted is None:
            warning = {"pointer": pointer, "instance": where.position, "feature": name}
            where.warnings.append(warning)
            converted = _Converted(warning, spec[1])
            self.features[name] = converted
        if value is None and not text.strip():
            converted.blank += 1
        elif value is None:
            if not converted.tokens:
                converted.token = text
            converted.tokens += 1
        else:
            if not converted.read:
                converted.first, converted.value = text, value
            converted.read += 1

    def unseen(self) -> dict[str, int]:
        """Per feature, how many values were unseen categories."""
        return {
            feature: count
            for (feature, detail), (_, count) in self.repeated.items()
            if detail == _UNSEEN
        }

    def finish(self) -> None:
        for warning, count in self.repeated.values():
            if count > 1:
                warning["detail"] += f" ({count} values; the first is pointed at)"
        for converted in self.features.values():
            parts = []
            if converted.read:
                one, several = _READ_AS[converted.kind]
                first = f"{_quoted(converted.first)} as {converted.value}"
                if converted.read == 1:
                    parts.append(f"a string read as {one}: {first}")
                else:
                    parts.append(f"{converted.read} strings read as {several}, the first {first}")
            token = _quoted(converted.token)
            if converted.tokens == 1:
                parts.append(f"{token} read as missing (a null token of the contract)")
            elif converted.tokens:
                parts.append(
                    f"{converted.tokens} null tokens of the contract read as missing, "
                    f"the first {token}"
                )
            if converted.blank == 1:
                parts.append("a blank string read as missing")
            elif converted.blank:
                parts.append(f"{converted.blank} blank strings read as missing")
            converted.warning["detail"] = "; ".join(parts)


@dataclasses.dataclass
class _Row:
    """Where a value sits: the instance's index, and the request's errors, warnings
    and values read from strings."""

    position: int
    errors: _Errors
    warnings: list[dict[str, Any]]
    notes: _Notes


# name, kind, nullable, category codes, the contract's range (lowest, highest), and
# whether the categories are numeric codes (2, 2.0 and "2" name the same one).
# name, kind, nullable, category codes, lowest, highest, numeric codes, and the
# contract's null tokens other than the blank one (trimmed).
_Spec = tuple[str, int, bool, Mapping[str, float], float, float, bool, frozenset[str]]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class RequestDecoder:
    """Compiled once per loaded model; decodes request bodies for it."""

    def __init__(self, schema: FeatureSchema, *, max_instances: int) -> None:
        self.schema = schema
        self.max_instances = max_instances
        self.names = schema.names
        self.width = len(self.names)
        self.index = {name: position for position, name in enumerate(self.names)}
        self.passthrough = frozenset(schema.passthrough)
        self._all_columns = range(self.width)
        self._nan_row = [_NAN] * self.width
        tokens = frozenset(token.strip() for token in schema.null_tokens) - {""}
        self._plan: list[_Spec] = [
            (
                feature.name,
                KINDS[feature.type],
                feature.nullable,
                {category: float(code) for category, code in feature.code_of().items()},
                -math.inf if feature.min is None else feature.min,
                math.inf if feature.max is None else feature.max,
                feature.numeric_codes,
                tokens,
            )
            for feature in schema.features
        ]
        self._typed = _typed_decoder(schema)
        self._native: Callable[[bytes, int], np.ndarray | None] | None = None
        self._categories = [
            (position, {**codes, None: _NAN} if nullable else dict(codes))
            for position, (_, kind, nullable, codes, *_) in enumerate(self._plan)
            if kind == _CATEGORY
        ]

    # -- entry points -------------------------------------------------------------
    def decode(self, body: bytes) -> Batch:
        if self._native is not None:
            matrix = self._native(body, self.max_instances)
            if matrix is not None:
                return Batch(matrix, [])
        return self._decode_python(body)

    def use_native(self, read: Callable[[bytes, int], np.ndarray | None]) -> None:
        """Read bodies with ``read`` (a verified reader: the matrix of a body of at most
        so many instances, or None to leave the body to this module) first."""
        self._native = read

    @property
    def reader(self) -> str:
        """What reads the common body: ``native`` (a verified reader) or ``python``."""
        return "python" if self._native is None else "native"

    def plain_matrix(self, body: bytes) -> np.ndarray | None:
        """The body's matrix where this module answers it without a warning, else None:
        what a native reader must give, or decline."""
        try:
            batch = self._decode_python(body)
        except Problem:
            return None
        return None if batch.warnings else batch.matrix

    def _decode_python(self, body: bytes) -> Batch:
        matrix = self._decode_typed(body)
        if matrix is not None:
            return Batch(matrix, [])
        return self._decode_reporting(body)

    def _decode_typed(self, body: bytes) -> np.ndarray | None:
        """The batch as a matrix if it is the common, valid kind; otherwise None."""
        if self._typed is None:
            return None
        try:
            instances = self._typed.decode(body).instances
        except (msgspec.DecodeError, ValueError):
            # Declined (a ValidationError is a DecodeError; invalid UTF-8 in a string
            # raises UnicodeDecodeError, a ValueError): the reporting path decides.
            return None
        if not 0 < len(instances) <= self.max_instances:
            return None
        # numpy converts integers as float() does, booleans to 0/1 and null to NaN.
        if len(instances) <= _FEW_ROWS:
            # Row by row into one flat list: for a few rows numpy's conversion of nested
            # sequences costs more than the rows themselves.
            flat: list[Any] = []
            for values in map(_astuple, instances):
                row = list(values)
                for position, codes in self._categories:  # known categories only, or null
                    row[position] = codes[row[position]]
                flat += row
            return np.array(flat, dtype=np.float64).reshape(len(instances), self.width)
        columns: list[Sequence[Any]] = list(zip(*map(_astuple, instances), strict=True))
        for position, codes in self._categories:
            columns[position] = list(map(codes.__getitem__, columns[position]))
        return np.array(columns, dtype=np.float64).T.copy()

    def _decode_reporting(self, body: bytes) -> Batch:
        """Any body: its matrix and warnings, or a Problem naming every mistake."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem("malformed-json", f"invalid JSON: {exc}") from None
        return self.decode_document(document)

    def decode_document(self, document: Any) -> Batch:
        """A body already parsed (as orjson parses JSON), checked value by value: what
        another protocol's request becomes once its shape is one of these
        (``modelrail.serving.protocols``)."""
        if type(document) is not dict:
            raise Problem(
                "invalid-request",
                "the body must be a JSON object with one of " + ", ".join(_BODY_KEYS),
            )
        if len(document) == 1 and "instances" in document:
            key = "instances"  # the common case: skip the member checks
        else:
            key = self._check_members(document)
            if key == "dataframe_split":
                return self._decode_split(document[key])
        rows = document[key]
        if type(rows) is not list:
            raise Problem("invalid-request", f"{key} must be an array")
        self._check_count(len(rows), key)
        errors = _Errors()
        warnings: list[dict[str, Any]] = []
        notes = _Notes()
        encoded: list[float] = []
        append = encoded.extend
        for position, row in enumerate(rows):
            if type(row) is dict:
                append(self._encode_object(row, key, position, errors, warnings, notes))
            elif type(row) is list and key == "instances":
                append(
                    self._encode_array(
                        row,
                        self._all_columns,
                        f"/{key}/{position}",
                        _Row(position, errors, warnings, notes),
                    )
                )
            else:
                expected = "an object or an array" if key == "instances" else "an object"
                errors.add(
                    f"/{key}/{position}",
                    f"expected {expected}, got {_describe(row)}",
                    position,
                    None,
                )
                append(self._nan_row)
        errors.raise_if_any()
        notes.finish()
        matrix = np.array(encoded, dtype=np.float64).reshape(len(rows), self.width)
        return Batch(matrix, warnings, notes.unseen())

    def _check_members(self, document: dict[str, Any]) -> str:
        present = [key for key in _BODY_KEYS if key in document]
        unknown = sorted(k for k in document if k not in _BODY_KEYS and k not in _IGNORED_KEYS)
        if len(present) != 1 or unknown:
            detail = (
                f"unknown member(s) {unknown}"
                if unknown
                else "exactly one of " + ", ".join(_BODY_KEYS) + " is required"
            )
            raise Problem("invalid-request", detail)
        for ignored in _IGNORED_KEYS & document.keys():
            if not isinstance(document[ignored], dict):
                raise Problem("invalid-request", f"{ignored} must be an object")
        return present[0]

    def _check_count(self, count: int, key: str) -> None:
        if count == 0:
            raise Problem("invalid-request", f"{key} is empty")
        if count > self.max_instances:
            raise Problem(
                "too-many-instances",
                f"{count} instances; at most {self.max_instances} per request",
                limit=self.max_instances,
            )

    # -- shapes ---------------------------------------------------------------------
    def _encode_object(
        self,
        row: dict[str, Any],
        key: str,
        position: int,
        errors: _Errors,
        warnings: list[dict[str, Any]],
        notes: _Notes,
    ) -> list[float]:
        # The hot loop: valid numbers and known categories are handled inline; anything
        # else (nulls, errors, unseen categories) goes through _encode_value.
        out: list[float] = []
        append = out.append
        where: _Row | None = None
        for spec in self._plan:
            name, kind, _, codes, lowest, highest, _, _ = spec
            value = row.get(name, _MISSING)
            value_type = type(value)
            if kind == _NUMBER and value_type is float and lowest <= value <= highest:
                append(value)
                continue
            if kind == _CATEGORY and value_type is str:
                code = codes.get(value)
                if code is not None:
                    append(code)
                    continue
            if where is None:
                where = _Row(position, errors, warnings, notes)
            pointer = f"/{key}/{position}/{_escape(name)}"
            if value is _MISSING:
                errors.add(pointer, "missing feature", position, name)
                append(_NAN)
                continue
            append(_encode_value(value, spec, pointer, where))
        if len(row) != self.width:
            for name, value in row.items():
                if name in self.passthrough:
                    pointer = f"/{key}/{position}/{_escape(name)}"
                    if type(value) in (list, dict):  # ignored, but still a value
                        errors.add(pointer, _not_a_value(value), position, name)
                    else:
                        notes.warn(warnings, _ignored(pointer, name, position))
                elif name not in self.index:
                    errors.add(
                        f"/{key}/{position}/{_escape(name)}", "unknown feature", position, name
                    )
        return out

    def _encode_array(
        self, row: Sequence[Any], columns: Sequence[int | None], pointer: str, where: _Row
    ) -> list[float]:
        """``row``'s values, the one at offset i into feature ``columns[i]`` (None: a
        column the model ignores)."""
        out = [_NAN] * self.width
        if len(row) != len(columns):
            order = f" {self.names}" if len(columns) == self.width else ""
            where.errors.add(
                pointer,
                f"expected {len(columns)} values in the model's feature order{order}, "
                f"got {len(row)}",
                where.position,
                None,
            )
            return out
        plan = self._plan
        for offset, (column, value) in enumerate(zip(columns, row, strict=True)):
            if column is None:  # a column the model ignores: still a value
                if type(value) in (list, dict):
                    where.errors.add(
                        f"{pointer}/{offset}", _not_a_value(value), where.position, None
                    )
                continue
            spec = plan[column]
            kind, value_type = spec[1], type(value)
            if kind == _NUMBER and value_type is float and spec[4] <= value <= spec[5]:
                out[column] = value
            elif kind == _CATEGORY and value_type is str and value in spec[3]:
                out[column] = spec[3][value]
            else:
                out[column] = _encode_value(value, spec, f"{pointer}/{offset}", where)
        return out

    def _decode_split(self, split: Any) -> Batch:
        if not isinstance(split, dict):
            raise Problem("invalid-request", "dataframe_split must be an object")
        unknown = sorted(k for k in split if k not in ("columns", "data", "index"))
        if unknown:
            raise Problem("invalid-request", f"dataframe_split has unknown member(s) {unknown}")
        columns, data = split.get("columns"), split.get("data")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise Problem("invalid-request", "dataframe_split.columns must be an array of strings")
        if not isinstance(data, list):
            raise Problem("invalid-request", "dataframe_split.data must be an array of arrays")
        errors = _Errors()
        warnings: list[dict[str, Any]] = []
        notes = _Notes()
        order: list[int | None] = []
        for offset, name in enumerate(columns):
            if name in self.passthrough:
                warnings.append(_ignored(f"/dataframe_split/columns/{offset}", name, None))
                order.append(None)
            elif name not in self.index:
                errors.add(f"/dataframe_split/columns/{offset}", "unknown feature", None, name)
            elif self.index[name] in order:
                errors.add(f"/dataframe_split/columns/{offset}", "duplicate column", None, name)
            else:
                order.append(self.index[name])
        for name in self.names:
            if name not in columns:
                errors.add("/dataframe_split/columns", f"missing feature {name!r}", None, name)
        errors.raise_if_any()
        self._check_count(len(data), "dataframe_split.data")
        encoded: list[list[float]] = []
        for position, row in enumerate(data):
            pointer = f"/dataframe_split/data/{position}"
            if type(row) is list:
                encoded.append(
                    self._encode_array(row, order, pointer, _Row(position, errors, warnings, notes))
                )
            else:
                errors.add(pointer, f"expected an array, got {_describe(row)}", position, None)
        errors.raise_if_any()
        notes.finish()
        return Batch(np.array(encoded, dtype=np.float64), warnings, notes.unseen())


def _typed_decoder(schema: FeatureSchema) -> msgspec.json.Decoder[Any] | None:
    """A msgspec decoder for ``{"instances": [{feature: value}, ...]}`` and nothing else:
    every feature required, no other member, each value of its kind (or null where
    the feature is nullable). None when msgspec cannot take a feature name as a field
    name (it refuses ``"``, ``\\`` and control characters): every body then takes the
    reporting path."""
    fields = []
    for position, feature in enumerate(schema.features):
        kind = KINDS[feature.type]
        # A category must be one of the contract's (which lists at least one):
        # msgspec answers with the very string objects of the Literal, no new one per
        # value, and an unseen category is left to the reporting path, which warns.
        typed = _typed_value(kind, feature)
        fields.append((f"f{position}", typed | None if feature.nullable else typed))
    try:
        instance = msgspec.defstruct(
            "Instance",
            fields,
            rename={f"f{position}": name for position, name in enumerate(schema.names)},
            forbid_unknown_fields=True,
            gc=False,  # floats, strings and None only: no reference cycles to collect
        )
    except ValueError:
        return None
    request = msgspec.defstruct(
        "Instances",
        [("instances", list[instance])],  # type: ignore[valid-type]  # built at run time
        forbid_unknown_fields=True,
        gc=False,
    )
    return msgspec.json.Decoder(request)


def _typed_value(kind: int, feature: Feature) -> Any:
    """The typed decoder's type for one feature's values. It accepts only what the
    reporting path takes without a word: values outside the contract's range are
    declined, so the reporting path answers them with their warning. msgspec's
    ``float`` also takes JSON integers (as float() converts them), never booleans. Its
    ``int`` takes integers of any size, which float() may not convert, so it is held to
    64 signed bits too."""
    if kind == _CATEGORY:
        return Literal[feature.categories]
    if kind == _BOOLEAN:
        return bool
    if kind == _NUMBER:
        if feature.min is None and feature.max is None:
            return float
        return Annotated[float, msgspec.Meta(ge=feature.min, le=feature.max)]
    lowest, highest = integer_bounds(feature)
    return Annotated[int, msgspec.Meta(ge=lowest, le=highest)]


def integer_bounds(feature: Feature) -> tuple[int, int]:
    """The integers an ``integer`` feature's common body may hold: the contract's
    range, within 64 signed bits (the typed decoder's and the body reader's bound)."""
    lowest = _INT64[0] if feature.min is None else max(_INT64[0], math.ceil(feature.min))
    highest = _INT64[1] if feature.max is None else min(_INT64[1], math.floor(feature.max))
    return lowest, highest


def _encode_value(value: Any, spec: _Spec, pointer: str, where: _Row) -> float:
    """One JSON value as its float encoding, or NaN with an error or a warning."""
    name, kind, nullable, codes, _, _, numeric_codes, _ = spec
    value_type = type(value)
    if value is None:
        if not nullable:
            where.errors.add(
                pointer, "null is not allowed: the feature is not nullable", where.position, name
            )
        return _NAN
    if kind == _NUMBER:
        # orjson never yields NaN/inf: those tokens and overflowing numbers are 400s.
        if value_type is float or value_type is int:
            return _in_range(float(value), spec, pointer, where)
        if value_type is str:
            return _from_string(value, spec, pointer, where)
        expected = "a number"
    elif kind == _CATEGORY:
        if numeric_codes and value_type is not bool:
            value = _code_spelling(value)
            value_type = type(value)
        if value_type is str:
            code = codes.get(value)
            if code is None and value.strip() in spec[7]:
                return _missing(value, spec, pointer, where)
            if code is None:
                where.notes.warn(
                    where.warnings,
                    {
                        "pointer": pointer,
                        "instance": where.position,
                        "feature": name,
                        "detail": _UNSEEN,
                    },
                )
                return _NAN
            return code
        expected = "a string category"
    elif kind == _INTEGER:
        if value_type is int or (value_type is float and value.is_integer()):
            return _in_range(float(value), spec, pointer, where)
        if value_type is str:
            return _from_string(value, spec, pointer, where)
        expected = "an integer"
    else:  # _BOOLEAN
        if value_type is bool:
            return 1.0 if value else 0.0
        if value_type is str:
            return _from_string(value, spec, pointer, where)
        expected = "a boolean"
    where.errors.add(pointer, f"expected {expected}, got {_describe(value)}", where.position, name)
    return _NAN


def _from_string(text: str, spec: _Spec, pointer: str, where: _Row) -> float:
    """A number, integer or boolean written in a string, read as validation reads a
    CSV cell: spaces trimmed, a blank one missing. Reported once per feature (see
    ``_Notes``); NaN with an error naming the value if it is none."""
    name, kind = spec[0], spec[1]
    trimmed = text.strip()
    if not trimmed or trimmed in spec[7]:
        return _missing(text, spec, pointer, where)
    if kind == _BOOLEAN:
        truth = _BOOLEAN_WORDS.get(trimmed.lower())
        if truth is not None:
            where.notes.note(text, "true" if truth else "false", spec, pointer, where)
            return truth
        expected = "a boolean"
    else:
        number = _number(trimmed)
        if number is not None and (kind == _NUMBER or number.is_integer()):
            where.notes.note(text, canonical_code(number), spec, pointer, where)
            return _in_range(number, spec, pointer, where)
        expected = "a number" if kind == _NUMBER else "an integer"
    where.errors.add(
        pointer, f"expected {expected}, got the string {_quoted(text)}", where.position, name
    )
    return _NAN


def _missing(text: str, spec: _Spec, pointer: str, where: _Row) -> float:
    """A blank string, or one of the contract's null tokens: missing, as validation
    reads such a cell, where the feature may be missing; else an error naming it."""
    if spec[2]:
        where.notes.note(text, None, spec, pointer, where)
    else:
        what = "a blank string" if not text.strip() else f"the string {_quoted(text)}"
        where.errors.add(
            pointer,
            f"{what} is a missing value, and the feature is not nullable",
            where.position,
            spec[0],
        )
    return _NAN


def _number(text: str) -> float | None:
    """``text`` (trimmed) as a finite number, or None. An integer written without a
    fraction or exponent is read as JSON's integers are (``-0`` is 0.0)."""
    if _number_text.fullmatch(text) is None:
        return None
    number = float(text)
    if not math.isfinite(number):
        return None  # too large for a double, as validation refuses it in a CSV
    if number == 0.0 and text.lstrip("+-").isdigit():
        return 0.0
    return number


def _quoted(text: str) -> str:
    """``text`` as a JSON string, cut to ``_QUOTED`` characters (then with its length)."""
    if len(text) <= _QUOTED:
        return orjson.dumps(text).decode()
    return f'{orjson.dumps(text[:_QUOTED]).decode()[:-1]}…" ({len(text):,} characters)'


def _in_range(number: float, spec: _Spec, pointer: str, where: _Row) -> float:
    """``number``, with a warning if it lies outside the contract's range: the model
    answers, but it never saw such a value (as with an unseen category)."""
    name, lowest, highest = spec[0], spec[4], spec[5]
    if not lowest <= number <= highest:
        where.notes.warn(
            where.warnings,
            {
                "pointer": pointer,
                "instance": where.position,
                "feature": name,
                "detail": f"outside the contract's range [{lowest:g}, {highest:g}]",
            },
        )
    return number


def _code_spelling(value: Any) -> Any:
    """A numeric category code in its canonical spelling (``2.0`` and ``"2"`` are
    ``"2"``); anything else as it is."""
    if type(value) is int or type(value) is float:
        return canonical_code(float(value))
    if type(value) is str:
        return parse_code(value) or value
    return value


def _not_a_value(value: Any) -> str:
    return f"expected a number, a string, a boolean or null, got {_describe(value)}"


def _ignored(pointer: str, name: str, instance: int | None) -> dict[str, Any]:
    warning: dict[str, Any] = {
        "pointer": pointer,
        "feature": name,
        "detail": "not a model feature (the contract's target or an ignored column): ignored",
    }
    if instance is not None:
        warning["instance"] = instance
    return warning


def _escape(name: str) -> str:
    """A feature name as a JSON Pointer (RFC 6901) reference token."""
    return name.replace("~", "~0").replace("/", "~1")
