"""The request decoder's two paths agree: whatever the typed (msgspec) path accepts,
the reporting (orjson, value by value) path accepts too, with the same doubles.

Values written in strings, as a row copied from a CSV holds them, are the reporting
path's alone: it reads them as validation reads the cells, with one warning per
feature; the typed path declines them.

The schema has every feature kind, nullable and not, and names that are not Python
identifiers. Bodies are written with the standard library's ``json`` so that integers
beyond 64 bits, which orjson cannot write, are part of the draw.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrail.domain.decoding import _FEW_ROWS, RequestDecoder
from modelrail.domain.features import FeatureSchema
from modelrail.kernel.problems import Problem


def regression_schema(*features: tuple[str, str, bool, list[str]]) -> FeatureSchema:
    """A regression model's schema with these (name, type, nullable, categories)."""
    return FeatureSchema.from_dict(
        {
            "objective": "regression",
            "target": "y",
            "classes": [],
            "features": [
                {"name": name, "type": kind, "nullable": nullable, "categories": categories}
                for name, kind, nullable, categories in features
            ],
        }
    )


SCHEMA = regression_schema(
    ("x/mm", "number", True, []),
    ("count", "integer", False, []),
    ("colour name", "category", True, ["red", "green", "Ünïcode ✓"]),
    ("flag", "boolean", True, []),
    ("weight", "number", False, []),
)
MAX_INSTANCES = 4
DECODER = RequestDecoder(SCHEMA, max_instances=MAX_INSTANCES)

_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_VALID = {
    "number": _numbers,
    "integer": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "category": st.sampled_from(SCHEMA.features[2].categories),
    "boolean": st.booleans(),
}
# Cells as a CSV holds them: the reporting path reads them with a warning; the typed
# path must decline them.
_CSV_TEXT = st.sampled_from(
    ["yes", " No ", "TRUE", "false", "1", "0", " 7 ", "3.5", "42", "-0", "1e3", "", " ", "NA"]
)
_any_json = st.recursive(
    st.none() | st.booleans() | _numbers | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)


def _valid_instance() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            f.name: (_VALID[f.type] | st.none()) if f.nullable else _VALID[f.type]
            for f in SCHEMA.features
        }
    )


@st.composite
def _any_instance(draw: st.DrawFn) -> Any:
    """Mostly near-valid objects: a feature dropped, a value of another kind, a
    category nobody trained on, an extra member; sometimes not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_any_json)
    instance = dict(draw(_valid_instance()))
    for feature in SCHEMA.features:
        change = draw(st.integers(0, 5))
        if change == 0:
            del instance[feature.name]
        elif change == 1:
            instance[feature.name] = draw(_any_json | st.text(max_size=8) | _CSV_TEXT)
    if draw(st.integers(0, 5)) == 0:
        instance[draw(st.text(max_size=6))] = draw(_any_json)
    return instance


def _reporting(body: bytes) -> np.ndarray | None:
    """The reporting path's matrix, or None if it refuses or warns."""
    try:
        batch = DECODER._decode_reporting(body)
    except Problem:
        return None
    return None if batch.warnings else batch.matrix


def _assert_agree(body: bytes) -> np.ndarray | None:
    typed = DECODER._decode_typed(body)
    if typed is not None:
        reporting = _reporting(body)
        assert reporting is not None, f"only the typed path accepts {body!r}"
        assert typed.shape == reporting.shape
        # Bit for bit: -0.0 stays -0.0 and both paths write the same NaN.
        assert typed.view(np.uint64).tolist() == reporting.view(np.uint64).tolist(), body
        assert typed.flags.c_contiguous
    return typed


@given(st.lists(_valid_instance(), min_size=1, max_size=MAX_INSTANCES))
@settings(max_examples=300, deadline=None)
def test_valid_bodies_take_the_typed_path_with_the_same_numbers(
    instances: list[dict[str, Any]],
) -> None:
    body = json.dumps({"instances": instances}).encode()
    typed = _assert_agree(body)
    assert typed is not None, body  # the fast path is taken, not just allowed
    np.testing.assert_array_equal(typed, SCHEMA.encode_records(instances))


@given(st.lists(_valid_instance(), min_size=_FEW_ROWS - 1, max_size=_FEW_ROWS + 3))
@settings(max_examples=60, deadline=None)
def test_batches_around_the_row_and_column_builds_give_the_same_numbers(
    instances: list[dict[str, Any]],
) -> None:
    """The typed path builds a few rows row by row and more column by column: the same
    matrix either way."""
    wide = RequestDecoder(SCHEMA, max_instances=_FEW_ROWS + 3)
    typed = wide._decode_typed(json.dumps({"instances": instances}).encode())
    assert typed is not None
    assert typed.flags.c_contiguous
    expected = SCHEMA.encode_records(instances)
    assert typed.view(np.uint64).tolist() == expected.view(np.uint64).tolist()


@given(
    st.lists(_any_instance(), max_size=MAX_INSTANCES + 1),
    st.sampled_from([None, "parameters", "dataframe_records", "other"]),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_whatever_the_typed_path_accepts_the_reporting_path_accepts_alike(
    instances: list[Any], extra: str | None
) -> None:
    document: dict[str, Any] = {"instances": instances}
    if extra is not None:
        document[extra] = {}
    _assert_agree(json.dumps(document).encode())


_ROW = '"x/mm": 1.5, "count": 3, "colour name": "red", "flag": true, "weight": 2'


@pytest.mark.parametrize(
    ("body", "typed"),
    [
        (f'{{"instances": [{{{_ROW}}}]}}', True),
        (f'  {{"instances" : [ {{{_ROW}}} ] }}\n', True),
        (f'{{"instances": [{{{_ROW}, "count": 4}}]}}', True),  # the last duplicate wins
        ('{"instances": [{' + _ROW.replace('"red"', '"r\\u0065d"') + "}]}", True),
        ('{"instances": [{' + _ROW.replace("1.5", "-0.0") + "}]}", True),
        ('{"instances": [{' + _ROW.replace("1.5", "1e-400") + "}]}", True),
        ('{"instances": [{' + _ROW.replace("1.5", "123456789012345678901234567890") + "}]}", True),
        ('{"instances": [{' + _ROW.replace(": 3,", ": 9223372036854775807,") + "}]}", True),
        ('{"instances": [{' + _ROW.replace(": 3,", ": -9223372036854775808,") + "}]}", True),
        ('{"instances": [{' + _ROW.replace(": 3,", ": 9223372036854775808,") + "}]}", False),
        ('{"instances": [{' + _ROW.replace(": 3,", ": 18446744073709551616,") + "}]}", False),
        ('{"instances": [{' + _ROW.replace(": 3,", ": 1" + "0" * 400 + ",") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "-1" + "0" * 400) + "}]}", False),
        ('{"instances": [{' + _ROW.replace(": 3,", ": 3.0,") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "1e999") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "NaN") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "Infinity") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "true") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", "01") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("true", "1") + "}]}", False),
        ('{"instances": [{' + _ROW.replace("1.5", '"1.5"') + "}]}", False),
        ('{"instances": [{' + _ROW.replace(": 3,", ': "3",') + "}]}", False),
        ('{"instances": [{' + _ROW.replace("true", '"yes"') + "}]}", False),
        ('{"instances": [{' + _ROW.replace("true", '""') + "}]}", False),
        ('{"instances": [{' + _ROW.replace('"red"', '"blue"') + "}]}", False),
        ('{"instances": [{' + _ROW.replace('"red"', '"\\ud800"') + "}]}", False),
        ('{"instances": [{' + _ROW.replace('"red"', '"re\td"') + "}]}", False),
        ('{"instances": [{' + _ROW.replace(', "weight": 2', "") + "}]}", False),
        ('{"instances": [{' + _ROW.replace('"count": 3', '"count": null') + "}]}", False),
        ('\ufeff{"instances": [{' + _ROW + "}]}", False),
        ('{"instances": [{' + _ROW + "}]} x", False),
        ('{"instances": [{' + _ROW + "}]", False),
        ('{"instances": []}', False),
        ('{"instances": [' + ",".join(["{" + _ROW + "}"] * (MAX_INSTANCES + 1)) + "]}", False),
        ('{"instances": [[1.5, 3, "red", true, 2]]}', False),
        ('{"instances": [{' + _ROW + '}], "parameters": {}}', False),
        ('{"instances": [{' + _ROW + ', "x/mm": ' + "[" * 5000 + "]" * 5000 + "}]}", False),
    ],
)
def test_hand_picked_bodies(body: str, typed: bool) -> None:
    assert (_assert_agree(body.encode()) is not None) is typed


def test_invalid_utf8_is_declined_by_the_typed_path() -> None:
    body = ('{"instances": [{' + _ROW.replace('"red"', '"\x00"') + "}]}").encode()
    assert _assert_agree(body.replace(b"\x00", b"\xff")) is None


def test_feature_names_msgspec_cannot_take_go_the_reporting_path() -> None:
    """msgspec refuses '"', '\\' and control characters in field names: such a
    schema has no typed decoder, and every body is decoded by the reporting path."""
    schema = regression_schema(
        ('width "in"', "number", False, []), ("a\\b", "category", False, ["x"])
    )
    decoder = RequestDecoder(schema, max_instances=2)
    instances = [{'width "in"': 1.5, "a\\b": "x"}]
    body = json.dumps({"instances": instances}).encode()
    assert decoder._decode_typed(body) is None
    np.testing.assert_array_equal(decoder.decode(body).matrix, schema.encode_records(instances))


# -- values written in strings, as a CSV holds them -------------------------------------------
_ROW_VALUES = {"x/mm": 1.5, "count": 3, "colour name": "red", "flag": True, "weight": 2}


def _decode(*instances: dict[str, Any]) -> Any:
    return DECODER.decode(json.dumps({"instances": list(instances)}).encode())


@pytest.mark.parametrize(
    ("feature", "text", "value"),
    [
        ("weight", "3.5", 3.5),
        ("weight", " 7 ", 7.0),
        ("weight", "42", 42.0),
        ("weight", "+5", 5.0),
        ("weight", ".5", 0.5),
        ("weight", "1e3", 1000.0),
        ("weight", "-2.5E-3", -0.0025),
        ("x/mm", "\t12.25\n", 12.25),
        ("count", "42", 42.0),
        ("count", " 7.0 ", 7.0),
        ("count", "1e2", 100.0),
        *(("flag", text, 1.0) for text in ("yes", "Yes", "YES", "true", "True", "tRuE", "1")),
        *(("flag", text, 0.0) for text in ("no", "No", "NO", "false", "False", " FALSE ", "0")),
    ],
)
def test_numbers_and_booleans_written_in_strings_are_read_with_a_warning(
    feature: str, text: str, value: float
) -> None:
    batch = _decode({**_ROW_VALUES, feature: text})
    expected = SCHEMA.encode_records([{**_ROW_VALUES, feature: value}])
    assert batch.matrix.view(np.uint64).tolist() == expected.view(np.uint64).tolist()
    [warning] = batch.warnings
    assert warning["pointer"] == f"/instances/0/{feature.replace('/', '~1')}"
    assert warning["instance"] == 0
    assert warning["feature"] == feature
    assert warning["detail"].startswith("a string read as a")
    assert json.dumps(text) in warning["detail"]


@pytest.mark.parametrize(
    ("feature", "text", "detail"),
    [
        ("count", "3.5", 'expected an integer, got the string "3.5"'),
        ("count", "three", 'expected an integer, got the string "three"'),
        ("weight", "nan", 'expected a number, got the string "nan"'),
        ("weight", "inf", 'expected a number, got the string "inf"'),
        ("weight", "1e999", 'expected a number, got the string "1e999"'),
        ("weight", "1_000", 'expected a number, got the string "1_000"'),
        ("weight", "0x1A", 'expected a number, got the string "0x1A"'),
        ("weight", "١٢", 'expected a number, got the string "١٢"'),
        ("weight", "3,5", 'expected a number, got the string "3,5"'),
        ("flag", "y", 'expected a boolean, got the string "y"'),
        ("flag", "2", 'expected a boolean, got the string "2"'),
        ("flag", "on", 'expected a boolean, got the string "on"'),
        ("weight", "", "a blank string is a missing value, and the feature is not nullable"),
        ("count", "  ", "a blank string is a missing value, and the feature is not nullable"),
    ],
)
def test_strings_that_are_not_the_features_type_are_422_naming_feature_row_and_value(
    feature: str, text: str, detail: str
) -> None:
    with pytest.raises(Problem) as raised:
        _decode(_ROW_VALUES, {**_ROW_VALUES, feature: text})
    assert raised.value.extensions["errors"] == [
        {
            "pointer": f"/instances/1/{feature}",
            "instance": 1,
            "feature": feature,
            "detail": detail,
        }
    ]


def test_a_long_string_is_quoted_cut_with_its_length() -> None:
    with pytest.raises(Problem) as raised:
        _decode({**_ROW_VALUES, "weight": "9" * 50 + "x" * 950})
    [error] = raised.value.extensions["errors"]
    assert error["detail"] == (
        'expected a number, got the string "' + "9" * 50 + "x" * 30 + '…" (1,000 characters)'
    )


def test_a_blank_string_is_missing_where_null_is_allowed() -> None:
    batch = _decode({**_ROW_VALUES, "x/mm": "", "flag": "  "})
    expected = SCHEMA.encode_records([{**_ROW_VALUES, "x/mm": None, "flag": None}])
    np.testing.assert_array_equal(batch.matrix, expected)
    assert [(w["feature"], w["detail"]) for w in batch.warnings] == [
        ("x/mm", "a blank string read as missing"),
        ("flag", "a blank string read as missing"),
    ]


# A contract whose CSV writes missing cells as "NA" or "?": the rows copied from it.
TOKENS_SCHEMA = dataclasses.replace(SCHEMA, null_tokens=("", "NA", "?"))
TOKENS_DECODER = RequestDecoder(TOKENS_SCHEMA, max_instances=MAX_INSTANCES)


def test_the_contracts_null_tokens_are_missing_where_null_is_allowed() -> None:
    rows = [
        {**_ROW_VALUES, "x/mm": "NA", "colour name": "?"},
        {**_ROW_VALUES, "x/mm": " NA ", "flag": "?"},
    ]
    batch = TOKENS_DECODER.decode(json.dumps({"instances": rows}).encode())
    expected = SCHEMA.encode_records(
        [
            {**_ROW_VALUES, "x/mm": None, "colour name": None},
            {**_ROW_VALUES, "x/mm": None, "flag": None},
        ]
    )
    np.testing.assert_array_equal(batch.matrix, expected)
    assert [(w["feature"], w["instance"], w["detail"]) for w in batch.warnings] == [
        ("x/mm", 0, '2 null tokens of the contract read as missing, the first "NA"'),
        ("colour name", 0, '"?" read as missing (a null token of the contract)'),
        ("flag", 1, '"?" read as missing (a null token of the contract)'),
    ]


def test_a_null_token_where_the_feature_may_not_be_missing_is_a_422_naming_it() -> None:
    body = json.dumps({"instances": [{**_ROW_VALUES, "weight": "NA"}]}).encode()
    with pytest.raises(Problem) as raised:
        TOKENS_DECODER.decode(body)
    assert raised.value.extensions["errors"] == [
        {
            "pointer": "/instances/0/weight",
            "instance": 0,
            "feature": "weight",
            "detail": 'the string "NA" is a missing value, and the feature is not nullable',
        }
    ]


def test_a_version_that_kept_no_null_tokens_reads_only_blank_as_missing() -> None:
    """Manifests written before the schema kept the contract's tokens."""
    older = {k: v for k, v in TOKENS_SCHEMA.to_dict().items() if k != "null_tokens"}
    assert FeatureSchema.from_dict(older).null_tokens == ("",)
    decoder = RequestDecoder(FeatureSchema.from_dict(older), max_instances=MAX_INSTANCES)
    with pytest.raises(Problem) as raised:
        decoder.decode(json.dumps({"instances": [{**_ROW_VALUES, "x/mm": "NA"}]}).encode())
    [error] = raised.value.extensions["errors"]
    assert error["detail"] == 'expected a number, got the string "NA"'


def test_strings_in_many_rows_warn_once_per_feature_at_the_first() -> None:
    rows = [
        {**_ROW_VALUES, "weight": 1.0},
        {**_ROW_VALUES, "weight": "2", "flag": "no"},
        {**_ROW_VALUES, "weight": "3.0", "flag": "Yes", "x/mm": ""},
        {**_ROW_VALUES, "weight": " 4 ", "x/mm": " "},
    ]
    batch = _decode(*rows)
    assert batch.warnings == [
        {
            "pointer": "/instances/1/flag",
            "instance": 1,
            "feature": "flag",
            "detail": '2 strings read as booleans, the first "no" as false',
        },
        {
            "pointer": "/instances/1/weight",
            "instance": 1,
            "feature": "weight",
            "detail": '3 strings read as numbers, the first "2" as 2',
        },
        {
            "pointer": "/instances/2/x~1mm",
            "instance": 2,
            "feature": "x/mm",
            "detail": "2 blank strings read as missing",
        },
    ]
    typed = [
        {**_ROW_VALUES, "weight": w, "flag": f, "x/mm": x}
        for w, f, x in [(1.0, True, 1.5), (2.0, False, 1.5), (3.0, True, None), (4.0, True, None)]
    ]
    np.testing.assert_array_equal(batch.matrix, SCHEMA.encode_records(typed))


def test_a_repeated_warning_is_said_once_per_feature_with_its_count() -> None:
    """A batch copied from the file, its target column included: one warning per
    feature and kind, at the first value, not one per row."""
    schema = dataclasses.replace(SCHEMA, passthrough=("y",))
    decoder = RequestDecoder(schema, max_instances=MAX_INSTANCES)
    rows = [
        {**_ROW_VALUES, "y": 1.0, "colour name": "blue"},
        {**_ROW_VALUES, "y": 2.0},
        {**_ROW_VALUES, "y": 3.0, "colour name": "blue"},
        {**_ROW_VALUES, "y": 4.0, "colour name": "mauve"},
    ]
    batch = decoder.decode(json.dumps({"instances": rows}).encode())
    assert [(w["pointer"], w["detail"]) for w in batch.warnings] == [
        (
            "/instances/0/colour name",
            "unseen category, treated as missing (3 values; the first is pointed at)",
        ),
        (
            "/instances/0/y",
            "not a model feature (the contract's target or an ignored column): ignored "
            "(4 values; the first is pointed at)",
        ),
    ]
    np.testing.assert_array_equal(np.isnan(batch.matrix[:, 2]), [True, False, True, True])


def test_a_string_beside_its_range_warns_of_both() -> None:
    schema = regression_schema(("w", "number", False, []))
    bounded = RequestDecoder(
        FeatureSchema(
            schema.objective,
            (dataclasses.replace(schema.features[0], min=0.0, max=10.0),),
            schema.target,
            schema.classes,
        ),
        max_instances=2,
    )
    batch = bounded.decode(b'{"instances": [{"w": "12"}]}')
    assert [w["detail"] for w in batch.warnings] == [
        'a string read as a number: "12" as 12',
        "outside the contract's range [0, 10]",
    ]


_ORDER = [f.name for f in SCHEMA.features]


@pytest.mark.parametrize("shape", ["instances", "arrays", "dataframe_records", "dataframe_split"])
def test_every_shape_reads_strings_alike(shape: str) -> None:
    rows = [
        {**_ROW_VALUES, "count": "5", "flag": "No"},
        {**_ROW_VALUES, "weight": " 2.5", "x/mm": ""},
    ]
    if shape == "arrays":
        document: dict[str, Any] = {"instances": [[r[n] for n in _ORDER] for r in rows]}
    elif shape == "dataframe_split":
        document = {
            "dataframe_split": {"columns": _ORDER, "data": [[r[n] for n in _ORDER] for r in rows]}
        }
    else:
        document = {shape: rows}
    batch = DECODER.decode(json.dumps(document).encode())
    objects = _decode(*rows)
    assert batch.matrix.view(np.uint64).tolist() == objects.matrix.view(np.uint64).tolist()
    assert [(w["instance"], w["feature"], w["detail"]) for w in batch.warnings] == [
        (w["instance"], w["feature"], w["detail"]) for w in objects.warnings
    ]
    assert len(batch.warnings) == 4


_JSON_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)
_SPACE = st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0"])


@given(
    text=_JSON_NUMBER,
    feature=st.sampled_from(["x/mm", "weight", "count"]),
    before=_SPACE,
    after=_SPACE,
)
@settings(max_examples=300, deadline=None)
def test_a_number_in_a_string_reads_as_the_json_number(
    text: str, feature: str, before: str, after: str
) -> None:
    """``"t"`` gives the very double ``t`` gives (where ``t`` is a JSON number), or both
    are refused; with one warning."""
    plain = json.dumps({"instances": [_ROW_VALUES]}).replace(
        f'"{feature}": {json.dumps(_ROW_VALUES[feature])}', f'"{feature}": {text}'
    )
    quoted = plain.replace(
        f'"{feature}": {text}', f'"{feature}": {json.dumps(before + text + after)}'
    )
    expected = _decoded(plain.encode())
    batch = _decoded(quoted.encode())
    if expected is None:
        # 1e999 is malformed JSON (400) and, in a string, not a number (422); a fraction
        # is not an integer either way.
        assert batch is None
        return
    assert batch is not None
    assert batch.matrix.view(np.uint64).tolist() == expected.matrix.view(np.uint64).tolist()
    assert [w["feature"] for w in batch.warnings] == [feature]


def _decoded(body: bytes) -> Any:
    try:
        return DECODER.decode(body)
    except Problem:
        return None


def test_an_ignored_column_still_holds_a_value_not_an_array_or_an_object() -> None:
    """The target copied along is ignored, but an array or an object in its place is
    a malformed row (422), in records and in dataframe_split alike."""
    schema = dataclasses.replace(SCHEMA, passthrough=("y",))
    decoder = RequestDecoder(schema, max_instances=MAX_INSTANCES)
    detail = "expected a number, a string, a boolean or null, got an array"
    with pytest.raises(Problem) as raised:
        decoder.decode(json.dumps({"instances": [{**_ROW_VALUES, "y": [1.0]}]}).encode())
    assert raised.value.extensions["errors"] == [
        {"pointer": "/instances/0/y", "instance": 0, "feature": "y", "detail": detail}
    ]
    columns = [*_ROW_VALUES, "y"]
    split = {"columns": columns, "data": [[*_ROW_VALUES.values(), {"a": 1}]]}
    with pytest.raises(Problem) as raised:
        decoder.decode(json.dumps({"dataframe_split": split}).encode())
    [error] = raised.value.extensions["errors"]
    assert error["pointer"] == f"/dataframe_split/data/0/{len(columns) - 1}"
    assert error["detail"].endswith("got an object")
