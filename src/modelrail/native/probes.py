"""The inputs a compiled object must answer exactly as its reference does, where it is
built and again where it is loaded: probe rows for the predictor (LightGBM's answers),
probe bodies for the body reader (the service's decoder's matrices).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from modelrail.domain.features import Feature, FeatureSchema
from modelrail.native.trees import CATEGORICAL_MASK, TreeModel


def probe_rows(
    model: TreeModel, examples: Sequence[Sequence[float]], mixed: int
) -> list[list[float]]:
    """The rows a compiled predictor must answer as LightGBM does: the examples, then
    every probe value of every feature (on the first example) and ``mixed`` rows of a
    seeded mix."""
    base = examples[0] if examples else [0.0] * model.num_features
    return [*map(list, examples), *_moved_rows(model, base, mixed)]


def probe_values(model: TreeModel) -> list[list[float]]:
    """Per feature, the values where a generated branch could part from LightGBM's:
    every threshold and its neighbouring doubles, zero and kZeroThreshold's edges,
    NaN, every category a bitset names and its neighbours, negative and fractional
    categories."""
    zero_threshold = 1.0000000180025095e-35  # (double)1e-35f
    values: list[set[float]] = [
        {0.0, -0.0, zero_threshold, -zero_threshold, 2e-35, -2e-35, 1.0, -1.0, -0.5, 0.5}
        for _ in range(model.num_features)
    ]
    for tree in model.trees:
        for node, feature in enumerate(tree.split_feature):
            pool = values[feature]
            if tree.decision_type[node] & CATEGORICAL_MASK:
                cat = int(tree.threshold[node])
                words = tree.cat_threshold[tree.cat_boundaries[cat] : tree.cat_boundaries[cat + 1]]
                for word_index, word in enumerate(words):
                    for bit in range(32):
                        if word >> bit & 1:
                            category = float(word_index * 32 + bit)
                            pool.update((category, category + 0.5, category + 1.0))
                pool.update((len(words) * 32.0, 2.0**31, -(2.0**31) - 1.0))
            else:
                threshold = tree.threshold[node]
                pool.update(
                    (
                        threshold,
                        math.nextafter(threshold, math.inf),
                        math.nextafter(threshold, -math.inf),
                    )
                )
    return [[*sorted(pool), math.nan] for pool in values]


def _moved_rows(model: TreeModel, base: Sequence[float], extra: int) -> list[list[float]]:
    """Rows that move one feature of ``base`` through its probe values, then
    ``extra`` rows mixing probe values of every feature (a fixed, seeded walk)."""
    pools = probe_values(model)
    rows: list[list[float]] = []
    for feature, pool in enumerate(pools):
        for value in pool:
            row = list(base)
            row[feature] = value
            rows.append(row)
    walk = random.Random(0)
    rows.extend([walk.choice(pool) for pool in pools] for _ in range(extra))
    return rows


# -- probe bodies ------------------------------------------------------------------------
# Spellings of numbers that take each of the reader's ways to a double: integer literals
# (-0 among them), the exact fast path, strtod beyond it, exponents of both signs.
_NUMBER_SPELLINGS = (
    "0", "-0", "-0.0", "0.0", "1", "-1", "7.5", "0.1", "0.30000000000000004", "1e2", "1E-2",
    "2.5e+3", "-3.25e-5", "123456789012345678", "1234567890123456789012", "0.000001234",
    "9007199254740993", "1.7976931348623157e308", "2.2250738585072014e-308", "1e22",
    "1e23", "123456.789e-20", "4.35", "1e-7",
)  # fmt: skip


def probe_bodies(schema: FeatureSchema, examples: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Bodies a reader must read as the Python decoder does, or decline: the examples
    in one body (compact, indented, members reversed), then each feature's every kind
    of value and spelling on the first example, one per body, and seeded mixes of
    those, four instances per body."""
    names = schema.names
    records = [{name: example.get(name) for name in names} for example in examples]
    if not records:
        records = [{feature.name: _a_value(feature) for feature in schema.features}]
    spelled = [{name: orjson.dumps(value).decode() for name, value in r.items()} for r in records]
    variants = [
        {**spelled[0], feature.name: spelling}
        for feature in schema.features
        for spelling in _spellings(feature)
    ]
    rng = random.Random(0)
    pool = spelled + variants
    mixes = [
        [{name: rng.choice(pool)[name] for name in names} for _ in range(4)] for _ in range(32)
    ]
    return [
        _body(spelled),
        _body(spelled, pretty=True),
        _body([dict(reversed(instance.items())) for instance in spelled]),
        *(_body([variant]) for variant in variants),
        *(_body(mix) for mix in mixes),
    ]


def _a_value(feature: Feature) -> Any:
    if feature.is_categorical:
        return feature.categories[0]
    if feature.type == "boolean":
        return True
    return feature.min if feature.min is not None else 0


def _spellings(feature: Feature) -> Iterator[str]:
    """JSON texts for one feature's value: valid ones, and ones out of range or of
    another kind."""
    if feature.nullable:
        yield "null"
    yield from ("true", "false", '"text"', "[]", "{}")
    if feature.is_categorical:
        for category in feature.categories:
            yield orjson.dumps(category).decode()
            yield orjson.dumps(category + "x").decode()
        return
    yield from _NUMBER_SPELLINGS
    for bound in (feature.min, feature.max):
        if bound is not None:
            yield repr(float(bound))
            yield repr(math.nextafter(float(bound), -math.inf))
            yield repr(math.nextafter(float(bound), math.inf))
            if float(bound).is_integer():
                yield str(int(bound))


def _body(instances: Sequence[Mapping[str, str]], *, pretty: bool = False) -> bytes:
    separator, colon = (",\n  ", ": ") if pretty else (",", ":")
    rows = [
        "{" + separator.join(f"{orjson.dumps(k).decode()}{colon}{v}" for k, v in row.items()) + "}"
        for row in instances
    ]
    return ('{"instances"' + colon + "[" + separator.join(rows) + "]}").encode()
