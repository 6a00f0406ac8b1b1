"""The request decoder's two paths agree: whatever the typed (msgspec) path accepts,
the reporting (orjson, value by value) path accepts too, with the same doubles.

The schema has every feature kind, nullable and not, and names that are not Python
identifiers. Bodies are written with the standard library's ``json`` so that integers
beyond 64 bits, which orjson cannot write, are part of the draw.
"""

from __future__ import annotations

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
            instance[feature.name] = draw(_any_json | st.text(max_size=8))
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
