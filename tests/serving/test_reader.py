"""The body reader (``reader_c``): C that reads the common /predict body straight into
the feature matrix, compiled into the predictor's object where the model is trained.

It must give the very doubles the service's Python decoder gives, or decline the body:
checked here on generated bodies (every feature kind, ranges, nulls, numbers spelled
every way JSON allows, whitespace and member order), on mutated bytes, and on the
common body, which it must not decline. A reader that disagrees is refused where the
object is built and where it is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrail.domain.decoding import RequestDecoder
from modelrail.domain.features import Feature, FeatureSchema
from modelrail.kernel.problems import Problem
from modelrail.native import builder, loader, reader_c, trees

from .test_compiled import need_cc

SCHEMA = FeatureSchema(
    objective="regression",
    features=(
        Feature("length", "number", nullable=True, min=0.0, max=1000.0),
        Feature("delta", "number", nullable=False),
        Feature("count", "integer", nullable=False, min=-5, max=10**12),
        Feature("flag", "boolean", nullable=True),
        Feature("colour", "category", nullable=True, categories=("red", "green", "blue", "größe")),
        Feature("grade", "category", nullable=False, categories=("1", "2", "10")),
        Feature("größe_cm", "number", nullable=False),
    ),
    target="y",
    classes=(),
)
MAX_ROWS = 64
COMMON_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclasses.dataclass(frozen=True)
class Reader:
    booster: loader.CompiledBooster
    decoder: RequestDecoder

    def check(self, body: bytes) -> np.ndarray | None:
        """The reader's matrix, held to the decoder's: the same doubles, or declined."""
        ours = self.booster.read_body(body, MAX_ROWS)
        if ours is not None:
            theirs = self.decoder.plain_matrix(body)
            assert theirs is not None, body
            assert ours.shape == theirs.shape
            assert ours.view(np.uint64).tolist() == theirs.view(np.uint64).tolist(), body
        return ours


def common_record(rng: random.Random) -> dict[str, Any]:
    return {
        "length": round(rng.uniform(0, 1000), rng.randint(0, 3)),
        "delta": round(rng.gauss(0, 50), 2),
        "count": rng.randint(-5, 5000),
        "flag": rng.random() < 0.5,
        "colour": rng.choice(SCHEMA.features[4].categories),
        "grade": rng.choice(SCHEMA.features[5].categories),
        "größe_cm": round(rng.uniform(100, 200), 1),
    }


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Reader:
    """A small model on SCHEMA's features, built as the training job builds it."""
    need_cc()
    rng = random.Random(1)
    records = [common_record(rng) for _ in range(300)]
    matrix = SCHEMA.encode_records(records)
    target = matrix[:, 0] / 100 + matrix[:, 2] / 1000 + matrix[:, 4]
    booster = lightgbm.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lightgbm.Dataset(matrix, target, categorical_feature=[4, 5]),
        num_boost_round=3,
    )
    decoder = RequestDecoder(SCHEMA, max_instances=MAX_ROWS)
    text = booster.model_to_string().encode()
    reading = loader.Reading(SCHEMA, records[:3], decoder.plain_matrix)
    built = builder.build(text, None, booster, matrix[:3].tolist(), "cc", reading)
    assert built.reader == "built", built
    assert built.predictors, built.not_built
    path = tmp_path_factory.mktemp("reader") / "predictor.so"
    path.write_bytes(built.predictors[-1].library)  # the portable build: any CPU runs it
    model = trees.parse(text.decode())
    booster_so = loader.CompiledBooster(path, model.num_features, model.trees_per_iteration)
    assert booster_so.has_reader
    return Reader(booster_so, decoder)


def body(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"instances": records})


def test_the_common_body_is_read_not_declined(reader: Reader) -> None:
    rng = random.Random(2)
    for rows in (1, 2, 3, 4, 5, 17, MAX_ROWS):
        records = [common_record(rng) for _ in range(rows)]
        matrix = reader.check(body(records))
        assert matrix is not None
        assert matrix.shape == (rows, len(SCHEMA.features))
    # Members in another order, whitespace everywhere JSON allows it, nulls.
    records = [common_record(rng) for _ in range(5)]
    records[1] = {**records[1], "length": None, "flag": None, "colour": None}
    shuffled = [dict(sorted(r.items(), reverse=True)) for r in records]
    pretty = json.dumps({"instances": shuffled}, indent="\t", ensure_ascii=False).encode()
    assert reader.check(b" \r\n" + pretty + b"\n ") is not None


def test_what_the_python_decoder_warns_about_or_refuses_is_declined(reader: Reader) -> None:
    record = common_record(random.Random(3))
    declined = [
        {**record, "colour": "purple"},  # unseen category: a warning
        {**record, "length": 1000.5},  # outside the contract's range: a warning
        {**record, "count": -6},
        {**record, "count": 3.0},  # an integer feature takes integers
        {**record, "grade": 2},  # a numeric category is a string in the common body
        {**record, "delta": None},  # not nullable
        {**record, "extra": 1},
        {k: v for k, v in record.items() if k != "flag"},
        {**record, "flag": 1},
    ]
    for instance in declined:
        assert reader.booster.read_body(body([record, instance]), MAX_ROWS) is None, instance
    text = body([{**record, "colour": "red", "flag": True}]).decode()
    for changed in (
        text.replace('"red"', '"r\\u0065d"'),  # an escape: the decoder reads it
        text.replace("[{", '[{"flag":true,', 1),  # a repeated member
        text.replace('"flag":true', '"count":1'),  # one repeated, one missing
        text + " x",
        text[:-1],
        text.replace('{"instances"', '{"instances":[],"instances"'),
        '{"instances":[]}',
    ):
        assert reader.check(changed.encode()) is None, changed
    assert reader.decoder.plain_matrix(text.replace('"red"', '"r\\u0065d"').encode()) is not None


def test_more_instances_than_allowed_are_left_to_the_decoder(reader: Reader) -> None:
    rng = random.Random(4)
    records = [common_record(rng) for _ in range(MAX_ROWS + 1)]
    assert reader.booster.read_body(body(records), MAX_ROWS) is None
    assert reader.booster.read_body(body(records), MAX_ROWS + 1) is not None


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17g}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:e}"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)


@COMMON_SETTINGS
@given(text=NUMBER_TEXT, feature=st.sampled_from(["delta", "length", "count", "größe_cm"]))
def test_numbers_are_the_nearest_double_as_python_reads_them(
    reader: Reader, text: str, feature: str
) -> None:
    record = common_record(random.Random(5))
    spelled = (
        body([record])
        .decode()
        .replace(f'"{feature}":{orjson.dumps(record[feature]).decode()}', f'"{feature}":{text}')
    )
    matrix = reader.check(spelled.encode())
    plain = text.lstrip("-")
    short = len(plain.replace(".", "").lstrip("0")) <= 15 and "e" not in plain.lower()
    if feature == "delta" and short and "." in text:
        assert matrix is not None, text  # the fast path reads every short decimal
    if matrix is not None:
        column = [f.name for f in SCHEMA.features].index(feature)
        value = matrix[0, column]
        assert value == float(text) or (value == 0.0 and float(text) == 0.0)


# Cells as a CSV holds them: the decoder reads numbers and booleans written so, with a
# warning; the reader declines them.
CSV_TEXT = st.sampled_from(
    ["yes", " No ", "TRUE", "false", "1", "0", " 7 ", "3.5", "42", "-0", "1e3", " ", "2.0"]
)
WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["red", "green", "blue", "größe", "1", "2", "10", "purple", ""]),
    st.text(max_size=3),
    CSV_TEXT,
)


def plausible(feature: Feature) -> st.SearchStrategy[Any]:
    """Mostly what the feature takes, sometimes anything."""
    if feature.is_categorical:
        valid: st.SearchStrategy[Any] = st.sampled_from(feature.categories)
    elif feature.type == "boolean":
        valid = st.booleans()
    elif feature.type == "integer":
        valid = st.integers(min_value=int(feature.min or -(2**63)), max_value=int(feature.max or 0))
    else:
        valid = st.floats(
            min_value=feature.min, max_value=feature.max, allow_nan=False, allow_infinity=False
        )
    if feature.nullable:
        valid = st.one_of(valid, st.none())
    return st.one_of(valid, valid, valid, WILD)


INSTANCE = st.one_of(
    st.fixed_dictionaries({feature.name: plausible(feature) for feature in SCHEMA.features}),
    st.fixed_dictionaries(
        {}, optional={**{feature.name: WILD for feature in SCHEMA.features}, "other": WILD}
    ),
)


@COMMON_SETTINGS
@given(
    instances=st.lists(INSTANCE, max_size=4),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_any_body_is_read_as_the_decoder_reads_it_or_declined(
    reader: Reader, instances: list[dict[str, Any]], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps({"instances": instances}, indent=indent, ensure_ascii=ascii_only)
    reader.check(text.encode())


@COMMON_SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.binary(max_size=3)),
        min_size=1,
        max_size=4,
    ),
    drop=st.integers(min_value=0, max_value=3),
)
def test_mutated_bytes_are_read_as_the_decoder_reads_them_or_declined(
    reader: Reader, edits: list[tuple[int, bytes]], drop: int
) -> None:
    data = bytearray(body([common_record(random.Random(6)) for _ in range(2)]))
    for position, inserted in edits:
        at = position % (len(data) + 1)
        data[at : at + drop] = inserted
    reader.check(bytes(data))


def as_text(value: Any) -> Any:
    """``value`` as a CSV cell holds it (JSON's spelling of it), null as a blank cell."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def answer(decoder: RequestDecoder, body: bytes) -> tuple[Any, ...]:
    """What the service answers ``body`` with: the matrix's bits and the warnings, or
    the problem."""
    try:
        batch = decoder.decode(body)
    except Problem as problem:
        return ("problem", problem.slug, problem.detail, problem.extensions)
    return ("batch", batch.matrix.view(np.uint64).tolist(), batch.warnings)


@COMMON_SETTINGS
@given(
    instances=st.lists(INSTANCE, min_size=1, max_size=4),
    written=st.lists(
        st.sets(st.sampled_from([f.name for f in SCHEMA.features])), min_size=4, max_size=4
    ),
    padding=st.sampled_from(["", " ", "\t"]),
)
def test_mixed_string_and_number_bodies_are_answered_alike_with_or_without_the_reader(
    reader: Reader, instances: list[dict[str, Any]], written: list[set[str]], padding: str
) -> None:
    """The service with the reader (which declines every string where a number or a
    boolean belongs) answers as the service without it: the same doubles, warnings,
    or problem."""
    native = RequestDecoder(SCHEMA, max_instances=MAX_ROWS)
    native.use_native(reader.booster.read_body)
    for instance, names in zip(instances, written, strict=False):
        for name in names & instance.keys():
            instance[name] = padding + as_text(instance[name]) + padding
    data = json.dumps({"instances": instances}).encode()  # integers past 64 bits too
    assert answer(native, data) == answer(reader.decoder, data)


def test_a_row_of_strings_is_declined_by_the_reader_and_read_by_the_decoder(
    reader: Reader,
) -> None:
    record = common_record(random.Random(8))
    copied = {name: as_text(value) for name, value in record.items()}
    copied["flag"] = "Yes" if record["flag"] else "No"
    data = body([record, copied])
    assert reader.booster.read_body(data, MAX_ROWS) is None
    native = RequestDecoder(SCHEMA, max_instances=MAX_ROWS)
    native.use_native(reader.booster.read_body)
    batch = native.decode(data)
    assert batch.matrix[1].view(np.uint64).tolist() == batch.matrix[0].view(np.uint64).tolist()
    converted = {w["feature"] for w in batch.warnings}
    assert converted == {"length", "delta", "count", "flag", "größe_cm"}


def test_a_reader_that_disagrees_with_the_decoder_is_refused(reader: Reader) -> None:
    def off_by_one_ulp(body: bytes) -> np.ndarray | None:
        matrix = reader.decoder.plain_matrix(body)
        return None if matrix is None else np.nextafter(matrix, math.inf)

    refused = loader.Reading(SCHEMA, [common_record(random.Random(7))], off_by_one_ulp)
    with pytest.raises(loader.CompileError, match="reads probe body 0 unlike the service"):
        loader.verify_reader(reader.booster, refused)


def test_a_schema_it_cannot_spell_gets_no_reader(tmp_path: Path) -> None:
    quoted = dataclasses.replace(
        SCHEMA, features=(dataclasses.replace(SCHEMA.features[0], name='say "hi"'),)
    )
    with pytest.raises(trees.Unsupported, match="holds a quote"):
        reader_c.generate(quoted)
    control = dataclasses.replace(
        SCHEMA,
        features=(dataclasses.replace(SCHEMA.features[4], categories=("a\nb",)),),
    )
    with pytest.raises(trees.Unsupported, match="the category"):
        reader_c.generate(control)
