"""Batch prediction's pure parts: which rows a version may score, and what it answers.

A file to score is checked against the contract of the version that scores it, row by
row, with validate's own checks (``dataset.typed``, ``dataset.stream``,
``dataset.checks``): the version's features as its manifest records them (type,
nullability, range, categories: what it was trained on), and the contract's ignored
columns, which are the rows' identifiers: carried into the output, never given to the
model. The target, where a file has it, is neither checked nor carried. A batch whose
every value meets the contract takes the typed (Arrow) path; any other is read by the
reporting path, and each of its rows that fails a check is *refused*, with every
problem it has, never scored with a guess, never dropped without a word.

The answers are the staging service's (``serving.predictor``): a classifier's label
is the class of the highest probability (for a binary one, the positive class from
0.5 up), with each class's probability beside it; a regressor's value. Optional
explanations are LightGBM's own SHAP values (``pred_contrib``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from modelrail.domain.dataset import checks, stream, table, typed
from modelrail.domain.dataset.contract import Column, DatasetContract
from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import Refused

ROW = "row"
PREDICTION = "prediction"
PROBABILITY = "probability"
_READ_BYTES = 8 * 2**20

# A refused row's problems: one entry per failed check.
PROBLEM_TYPE = pa.list_(
    pa.struct(
        [
            ("column", pa.string()),
            ("check", pa.string()),
            ("value", pa.string()),
            ("what", pa.string()),
        ]
    )
)


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What a version scores: its feature schema, and the contract rows are checked
    against (its features, then the identifiers: the contract's ignored columns)."""

    schema: FeatureSchema
    contract: DatasetContract
    ids: tuple[str, ...]

    @classmethod
    def of(cls, schema: FeatureSchema, contract: DatasetContract | None) -> Scoring:
        """The version's features as its manifest has them; the identifiers from the
        model's contract (``contract``, none when it is not known)."""
        features = [
            Column(f.name, f.type, f.nullable, f.min, f.max, f.categories)  # type: ignore[arg-type]
            for f in schema.features
        ]
        names = set(schema.names) | {schema.target}
        ids = tuple(
            c
            for c in (contract.columns if contract is not None else ())
            if c.role == "ignore" and c.name not in names
        )
        checked = DatasetContract(
            name=contract.name if contract is not None else schema.target,
            target=schema.target,  # not one of its columns: never read
            min_rows=0,
            columns=(*features, *ids),
            null_tokens=schema.null_tokens,
        )
        return cls(schema, checked, tuple(c.name for c in ids))

    def for_header(self, header: Sequence[str], where: str) -> Scoring:
        """This scoring for a file of ``header``: the identifiers it has; ``Refused``
        naming the features it lacks or repeats."""
        missing = [name for name in self.schema.names if name not in header]
        repeated = sorted({name for name in header if header.count(name) > 1})
        if missing or repeated:
            why = [f"lacks the feature column(s) {', '.join(missing)}"] if missing else []
            why += [f"repeats {', '.join(repeated)}"] if repeated else []
            raise Refused(f"{where} cannot be scored: it {' and '.join(why)}")
        ids = tuple(name for name in self.ids if name in header)
        kept = [c for c in self.contract.columns if c.name in self.schema.names or c.name in ids]
        return Scoring(self.schema, dataclasses.replace(self.contract, columns=tuple(kept)), ids)


@dataclasses.dataclass(frozen=True)
class Checked:
    """One batch checked: the rows that meet the contract (their numbers, the matrix
    the model reads, their identifiers) and the refused rows with their problems."""

    rows: np.ndarray  # 1-based, in the file's data rows
    matrix: np.ndarray
    ids: pa.Table
    refused: pa.Table


def read(source: BinaryIO, fmt: str, batch_bytes: int, where: str) -> Iterator[Any]:
    """The batches of a file (``fmt`` as ``stream.upload_format`` names it): a CSV
    batch is ``(text with its header in front, header)``, a Parquet one a
    ``RecordBatch``; about ``batch_bytes`` each, one in memory at a time."""
    if fmt == "parquet":
        try:
            file = table.parquet_file(source)
        except (pa.ArrowInvalid, OSError) as exc:
            raise Refused(f"{where} is not a readable Parquet file: {exc}") from None
        metadata = file.metadata
        width = sum(
            max(metadata.row_group(i).total_byte_size, 1) for i in range(metadata.num_row_groups)
        ) / max(metadata.num_rows, 1)
        names = [name.strip() for name in file.schema_arrow.names]
        for batch in file.iter_batches(batch_size=max(1, int(batch_bytes / max(width, 1.0)))):
            yield batch.rename_columns(names)
        return
    text: Any = source
    if fmt == "csv.gz":
        text = pa.input_stream(pa.PythonFile(source, mode="r"), compression="gzip")
    limits = stream.Limits(batch_bytes=batch_bytes)
    try:
        texts = stream.csv_texts(stream.read_blocks(text, min(batch_bytes, _READ_BYTES)), limits)
        for (data, _, _), header in texts:
            yield data, header
    except stream.Refused as refused:
        raise Refused(f"{where}: {refused.problem.message}") from None


def check(batch: Any, header: Sequence[str], scoring: Scoring, offset: int) -> Checked:
    """Check one batch (from ``read``; ``header``, the file's, names a CSV batch's
    columns) row by row; ``offset`` is the number of rows before it in its file."""
    contract = scoring.contract
    if isinstance(batch, pa.RecordBatch):
        for column in contract.columns:
            kind = batch.schema.field(column.name).type
            if not stream.convertible(kind, column):
                raise Refused(
                    f"column {column.name!r} is {kind} in the file; the contract's "
                    f"{column.type} column cannot be read from it"
                )
        fast = stream.typed_parquet(batch, contract)
        if fast is not None:
            return _passed(fast[0], scoring, offset)
        return _sorted(stream.parquet_text(batch, contract), scoring, offset)
    data, _ = batch
    fast_table = _typed_csv(data, header, contract)
    if fast_table is not None:
        return _passed(fast_table, scoring, offset)
    text = checks.check_text(data, contract)
    if isinstance(text, checks.Problem):
        raise Refused(text.message)
    return _sorted(text, scoring, offset)


def _typed_csv(data: bytes, header: Sequence[str], contract: DatasetContract) -> pa.Table | None:
    """The typed reader's table of a CSV batch whose every value meets ``contract``,
    else None (``typed.read_batch``'s rules, for a file that may hold other columns)."""
    names = [c.name for c in contract.columns]
    if any(name not in header for name in names):
        return None  # names written with spaces around them: the reporting path trims them
    options = pacsv.ConvertOptions(
        column_types={c.name: typed.csv_type(c) for c in contract.columns},
        include_columns=names,
        null_values=list(contract.null_tokens),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        true_values=typed.TRUE_VALUES,
        false_values=typed.FALSE_VALUES,
    )
    try:
        read_table = pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError, UnicodeDecodeError):
        return None
    arrays = {}
    for column in contract.columns:
        array = typed.typed_column(read_table.column(column.name), column, False)
        if array is None:
            return None
        arrays[column.name] = array
    return pa.table(arrays)


def _passed(checked: pa.Table, scoring: Scoring, offset: int) -> Checked:
    columns = table.TableColumns(checked, scoring.contract)
    rows = np.arange(offset + 1, offset + 1 + checked.num_rows, dtype=np.int64)
    matrix = scoring.schema.encode_columns(columns)
    return Checked(rows, matrix, _identifiers(checked, scoring), _refused_table([], scoring))


def _sorted(text: checks.TextCheck, scoring: Scoring, offset: int) -> Checked:
    """The reporting path's verdict on a batch: its good rows encoded, the others
    refused with every check each failed."""
    bad = np.zeros(text.rows, dtype=bool)
    for _, failure in text.failures:
        bad |= failure.mask
    good = ~bad
    contract = scoring.contract
    columns = {name: values[good] for name, values in text.columns.items()}
    matrix = scoring.schema.encode_columns(columns)
    ids = _identifiers(
        table.from_numpy(
            {name: text.columns[name][good] for name in scoring.ids},
            dataclasses.replace(contract, columns=tuple(contract.column(n) for n in scoring.ids)),
        ),
        scoring,
    )
    refused = []
    for index in np.flatnonzero(bad).tolist():
        problems = [
            {
                "column": column.name,
                "check": failure.check,
                "value": str(failure.text.iloc[index]),
                "what": failure.what,
            }
            for column, failure in text.failures
            if failure.mask[index]
        ]
        identifiers = {name: _text(text.columns[name][index]) for name in scoring.ids}
        refused.append({ROW: offset + 1 + index, **identifiers, "problems": problems})
    rows = offset + 1 + np.flatnonzero(good).astype(np.int64)
    return Checked(rows, matrix, ids, _refused_table(refused, scoring))


def _identifiers(checked: pa.Table, scoring: Scoring) -> pa.Table:
    """The identifier columns of checked rows, whole numbers as integers (the table
    holds every number as a double)."""
    columns = {}
    for name in scoring.ids:
        column = checked.column(name)
        if scoring.contract.column(name).type == "integer":
            column = pc.cast(column, pa.int64())
        columns[name] = column
    return pa.table(columns) if columns else checked.select([])


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _refused_table(refused: list[dict[str, Any]], scoring: Scoring) -> pa.Table:
    schema = pa.schema(
        [(ROW, pa.int64()), *((name, pa.string()) for name in scoring.ids),
         ("problems", PROBLEM_TYPE)]
    )  # fmt: skip
    return pa.Table.from_pylist(refused, schema=schema)


def refused_schema(scoring: Scoring) -> pa.Schema:
    """The schema of the refused rows' file."""
    return _refused_table([], scoring).schema


# -- answers -----------------------------------------------------------------------


def labels(raw: np.ndarray, schema: FeatureSchema) -> np.ndarray | None:
    """Each row's class index (the service's rule), or None for a regressor."""
    if schema.objective == "binary":
        return (raw >= 0.5).astype(np.int64)
    if schema.objective == "multiclass":
        return np.asarray(raw.argmax(axis=1), dtype=np.int64)
    return None


def answers(
    raw: np.ndarray, schema: FeatureSchema, contributions: np.ndarray | None = None
) -> dict[str, pa.Array]:
    """The output's columns for the model's output ``raw``: ``prediction`` (a label,
    or a value), a binary classifier's ``probability`` (the positive class's), each
    class's ``probability_<class>``, and, given, each feature's contribution
    (``contribution_<feature>`` and ``contribution_bias``; per class for a multiclass
    model: ``contribution_<class>_<feature>``)."""
    columns: dict[str, pa.Array] = {}
    classes = schema.classes
    index = labels(raw, schema)
    if index is None:
        columns[PREDICTION] = pa.array(raw, type=pa.float64())
    else:
        dictionary = pa.array(list(classes), type=pa.string())
        columns[PREDICTION] = pa.DictionaryArray.from_arrays(
            pa.array(index, type=pa.int32()), dictionary
        ).dictionary_decode()
        if schema.objective == "binary":
            columns[PROBABILITY] = pa.array(raw, type=pa.float64())
            by_class = np.column_stack([1.0 - raw, raw])
        else:
            by_class = raw
        for position, name in enumerate(classes):
            columns[f"{PROBABILITY}_{name}"] = pa.array(by_class[:, position], type=pa.float64())
    if contributions is not None:
        names = [*schema.names, "bias"]
        groups = (
            [(f"{name}_", position) for position, name in enumerate(classes)]
            if schema.objective == "multiclass"
            else [("", 0)]
        )
        width = len(names)
        for prefix, group in groups:
            for position, name in enumerate(names):
                values = contributions[:, group * width + position]
                columns[f"contribution_{prefix}{name}"] = pa.array(values, type=pa.float64())
    return columns


class Explainer:
    """LightGBM's own per-feature contributions (SHAP values, ``pred_contrib``) of a
    version's model. lightgbm is imported here, by whoever asks for explanations."""

    def __init__(self, model_text: bytes, num_iteration: int | None, threads: int) -> None:
        import lightgbm

        self._booster = lightgbm.Booster(model_str=model_text.decode())
        self._iteration = num_iteration if num_iteration and num_iteration > 0 else None
        self._threads = threads

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(
            self._booster.predict(
                matrix, num_iteration=self._iteration, pred_contrib=True, num_threads=self._threads
            )
        )
