"""Contract checks: a CSV against its dataset contract, row by row and column by column.

The report says exactly what fails and where: each problem names its column, the
check, how many rows break it, the first row numbers (1-based data rows, as a
spreadsheet shows them below the header) and example values.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from modelrail.domain.dataset import table, typed
from modelrail.domain.dataset.contract import (
    FALSE_WORDS,
    TRUE_WORDS,
    Column,
    DatasetContract,
    canonical_code,
)
from modelrail.kernel.errors import ContractViolation

MAX_ROWS_LISTED = 20
MAX_EXAMPLES = 5
# A report lists at most this many problems and header names, and counts them all: what
# a report, a stage record and a UI page hold stays small whatever the file holds.
MAX_PROBLEMS_LISTED = 100
MAX_COLUMNS_LISTED = 200
# Reports and failure events carry examples, never whole cells: a cell may be megabytes.
MAX_EXAMPLE_CHARS = 80


def _shorten(value: str) -> str:
    if len(value) <= MAX_EXAMPLE_CHARS:
        return value
    return f"{value[:MAX_EXAMPLE_CHARS]}… ({len(value):,} characters)"


@dataclasses.dataclass(frozen=True)
class Problem:
    check: str
    message: str
    column: str | None = None
    count: int = 0
    rows: tuple[int, ...] = ()
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclasses.dataclass(frozen=True)
class ParsedDataset:
    """Typed columns of a dataset that met its contract, rows without a target dropped.

    Numbers (and booleans, as 0/1) are float64 with NaN for missing; categories are
    object arrays of str (numeric codes in their canonical spelling) with None for
    missing; datetimes are datetime64[ns, UTC] with NaT for missing. The typed reader
    and the snapshot give ``table.TableColumns``: the Arrow table, converted to these
    arrays column by column when first read.
    """

    columns: Mapping[str, np.ndarray]
    rows: int


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    contract: str
    rows: int  # the data rows kept: the file's rows less those dropped
    columns: tuple[str, ...]
    problems: tuple[Problem, ...]
    dropped_missing_target: int = 0

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as stored: at most ``MAX_PROBLEMS_LISTED`` problems and
        ``MAX_COLUMNS_LISTED`` header names, with the counts of all."""
        return {
            "contract": self.contract,
            "passed": self.passed,
            "rows": self.rows,
            "dropped": {"missing_target": self.dropped_missing_target},
            "column_count": len(self.columns),
            "columns": [_shorten(name) for name in self.columns[:MAX_COLUMNS_LISTED]],
            "problem_count": len(self.problems),
            "problems": [p.to_dict() for p in self.problems[:MAX_PROBLEMS_LISTED]],
        }


def validate(
    data: bytes,
    contract: DatasetContract,
    *,
    max_line_bytes: int | None = None,
    max_columns: int | None = None,
    max_header_bytes: int | None = None,
) -> tuple[ValidationReport, ParsedDataset]:
    """Check ``data`` (CSV bytes) against ``contract``; never raises for bad data.

    A line longer than ``max_line_bytes``, a header longer than ``max_header_bytes`` or
    naming more than ``max_columns`` columns (the validate stage's limits) is refused
    before any parsing. A file that
    meets its contract is read by the typed reader (``typed``) in one vectorised pass;
    any other, by the reporting path below, which names every problem.
    """
    if max_line_bytes is not None and (problem := long_line(data, max_line_bytes)):
        return refused(contract, problem), ParsedDataset({}, 0)
    if problem := wide_header(data, max_columns, max_header_bytes):
        return refused(contract, problem), ParsedDataset({}, 0)
    header = header_of(data)
    typed_read = typed.read(data, header, contract)
    if typed_read is None:
        report, parsed = _report_problems(data, header, contract)
    else:
        checked, file_rows = typed_read
        rows = checked.num_rows
        report = ValidationReport(contract.name, rows, header, (), file_rows - rows)
        parsed = ParsedDataset(table.TableColumns(checked, contract), rows)
    if report.passed and (problem := _single_class(parsed, contract)) is not None:
        report = dataclasses.replace(report, problems=(problem,))
    return report, parsed


def refused(contract: DatasetContract, problem: Problem) -> ValidationReport:
    """The report of a file refused unread."""
    return ValidationReport(contract.name, 0, (), (problem,))


def oversized(size: int, max_bytes: int) -> Problem | None:
    """A problem if an upload of ``size`` bytes is larger than ``max_bytes``."""
    if size <= max_bytes:
        return None
    return Problem(
        "upload_size",
        f"the file is {size:,} bytes, more than the {max_bytes:,} validate reads "
        "([limits] max_upload_mb in pipeline.toml)",
    )


def long_line(data: bytes, max_bytes: int) -> Problem | None:
    """A problem naming the longest line if it is longer than ``max_bytes`` (lines end
    in LF, CRLF or CR alone; a line here is what lies between two breaks)."""
    raw = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(raw == ord("\n"))
    if breaks.size == 0:
        breaks = np.flatnonzero(raw == ord("\r"))
    bounds = np.concatenate(([-1], breaks, [raw.size]))
    lengths = np.diff(bounds) - 1
    lengths[: breaks.size] -= (breaks > 0) & (raw[np.maximum(breaks - 1, 0)] == ord("\r"))
    longest = int(lengths.argmax())
    if lengths[longest] <= max_bytes:
        return None
    start = int(bounds[longest]) + 1
    line = 1 + max(data.count(b"\n", 0, start), data.count(b"\r", 0, start))
    return Problem(
        "line_length",
        f"line {line:,} is {int(lengths[longest]):,} bytes long, more than the "
        f"{max_bytes:,} validate reads ([limits] max_line_kb in pipeline.toml)",
    )


def _single_class(parsed: ParsedDataset, contract: DatasetContract) -> Problem | None:
    """A classification target needs two classes: a file of one class would bless a
    model that can only ever answer it (every hold-out row is that class too)."""
    target = contract.target_column
    if target.type not in ("category", "boolean"):
        return None
    values = parsed.columns[target.name]
    present = set(values.tolist()) - {None} if values.dtype == object else set(values.tolist())
    if len(present) >= 2:
        return None
    seen = ", ".join(map(str, present)) or "none"
    return Problem(
        "classes",
        f"the target {target.name!r} holds one class ({seen}): a classifier needs at least "
        "two in its training data",
        target.name,
        count=parsed.rows,
    )


@dataclasses.dataclass(frozen=True)
class TextCheck:
    """What the reporting path found in the rows of one CSV text (a file, or a batch of
    it with the header in front): the columns as parsed, every column's failures in the
    report's order, and the rows without a target (with their text)."""

    rows: int
    columns: dict[str, np.ndarray]
    failures: list[tuple[Column, Failure]]
    no_target: np.ndarray
    target_text: pd.Series | None


def check_text(data: bytes, contract: DatasetContract) -> TextCheck | Problem:
    """The reporting path over ``data``: every value as text, checked column by column;
    a ``malformed_csv`` problem if pandas cannot read it."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return Problem("malformed_csv", f"the file is not a readable CSV: {exc}")
    # Checked under the names training reads: ``species `` is the column ``species``.
    frame.columns = [str(name).strip() for name in frame.columns]
    parsed: dict[str, np.ndarray] = {}
    failures: list[tuple[Column, Failure]] = []
    for column in contract.columns:
        if column.name in frame.columns:
            values, found = _check_column(frame[column.name], column, contract)
            parsed[column.name] = values
            failures.extend((column, failure) for failure in found)
    no_target = np.zeros(len(frame), dtype=bool)
    target_text = None
    if contract.target in frame.columns:
        target_text = frame[contract.target].str.strip()
        no_target = target_text.isin(contract.null_tokens).to_numpy()
    return TextCheck(len(frame), parsed, failures, no_target, target_text)


def header_problems(header: tuple[str, ...], contract: DatasetContract) -> list[Problem]:
    """Names repeated, missing from the header, or not in the contract."""
    problems: list[Problem] = []
    expected = {c.name for c in contract.columns}
    for name, count in Counter(header).items():
        if count > 1:
            problems.append(
                Problem("duplicate_column", f"column {name!r} appears {count} times", name)
            )
    for column in contract.columns:
        if column.name not in header:
            problems.append(
                Problem(
                    "missing_column", f"required column {column.name!r} is missing", column.name
                )
            )
    for name in dict.fromkeys(header):
        if name not in expected:
            problems.append(
                Problem("unexpected_column", f"column {name!r} is not in the contract", name)
            )
    return problems


def missing_target_what(fraction: float, contract: DatasetContract) -> str:
    return (
        f"no target value ({fraction:.1%} of the rows; the contract "
        f"drops at most max_missing_target_fraction={contract.max_missing_target_fraction})"
    )


def min_rows_problem(rows: int, contract: DatasetContract) -> Problem | None:
    if rows >= contract.min_rows:
        return None
    return Problem(
        "min_rows",
        f"{rows} data rows with a target, the contract requires at least {contract.min_rows}",
        count=rows,
    )


def _report_problems(
    data: bytes, header: tuple[str, ...], contract: DatasetContract
) -> tuple[ValidationReport, ParsedDataset]:
    checked = check_text(data, contract)
    if isinstance(checked, Problem):
        return _report(contract, 0, (), [checked]), ParsedDataset({}, 0)
    problems = header_problems(header, contract)
    problems.extend(_problem(f.check, c, f.mask, f.text, f.what) for c, f in checked.failures)
    parsed = checked.columns
    kept = np.ones(checked.rows, dtype=bool)
    no_target = checked.no_target
    if no_target.any():
        assert checked.target_text is not None
        if no_target.mean() > contract.max_missing_target_fraction:
            what = missing_target_what(float(no_target.mean()), contract)
            problems.append(
                _problem(
                    "missing_target", contract.target_column, no_target, checked.target_text, what
                )
            )
        else:
            kept = ~no_target
            parsed = {name: values[kept] for name, values in parsed.items()}
    rows = int(kept.sum())
    if (too_few := min_rows_problem(rows, contract)) is not None:
        problems.append(too_few)
    report = ValidationReport(contract.name, rows, header, tuple(problems), checked.rows - rows)
    return report, ParsedDataset(parsed, rows)


def load(data: bytes, contract: DatasetContract) -> ParsedDataset:
    """The typed columns of ``data``; ``ContractViolation`` if it breaks the contract."""
    report, parsed = validate(data, contract)
    if not report.passed:
        raise ContractViolation(
            f"dataset breaks contract {contract.name!r}: {report.problems[0].message}",
            report.to_dict(),
        )
    return parsed


def wide_header(
    data: bytes, max_columns: int | None, max_header_bytes: int | None
) -> Problem | None:
    """A problem if the header line is longer than ``max_header_bytes`` or names more
    than ``max_columns`` columns; read from the first line alone, before any parsing."""
    first_line = re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0]
    if max_header_bytes is not None and len(first_line) > max_header_bytes:
        return Problem(
            "header_length",
            f"the header is {len(first_line):,} bytes long, more than the "
            f"{max_header_bytes:,} validate reads ([limits] max_header_kb in pipeline.toml)",
        )
    if max_columns is None:
        return None
    columns = len(header_of(first_line))
    if columns <= max_columns:
        return None
    return Problem(
        "column_count",
        f"the header names {columns:,} columns, more than the {max_columns:,} validate reads "
        "([limits] max_columns in pipeline.toml)",
        count=columns,
    )


def header_of(data: bytes) -> tuple[str, ...]:
    """The header as written, names trimmed (pandas renames duplicate names, hiding
    them). Lines may end in LF, CRLF or CR alone."""
    first_line = re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0].decode("utf-8-sig", "replace")
    return tuple(name.strip() for name in next(csv.reader([first_line]), []))


def _report(
    contract: DatasetContract, rows: int, header: tuple[str, ...], problems: list[Problem]
) -> ValidationReport:
    return ValidationReport(contract.name, rows, header, tuple(problems))


def _check_column(
    raw: pd.Series, column: Column, contract: DatasetContract
) -> tuple[np.ndarray, list[Failure]]:
    text = raw.str.strip()
    missing = text.isin(contract.null_tokens).to_numpy()
    problems: list[Failure] = []
    # A missing target drops its row (validate counts them against the contract's limit).
    if not column.nullable and column.name != contract.target and missing.any():
        problems.append(
            Failure(0, "null", missing, text, "missing values in a column that does not allow them")
        )

    if column.type == "category":
        if column.numeric_codes:
            text = _canonical_codes(text)
        values = text.to_numpy(dtype=object).copy()
        values[missing] = None
        unknown = ~missing & ~text.isin(column.categories).to_numpy()
        if unknown.any():
            problems.append(
                Failure(
                    1,
                    "category",
                    unknown,
                    text,
                    f"values outside the allowed categories {list(column.categories)}",
                )
            )
        return values, problems

    if column.type == "boolean":
        lowered = text.str.lower()
        truthy = lowered.isin(TRUE_WORDS).to_numpy()
        falsy = lowered.isin(FALSE_WORDS).to_numpy()
        bad = ~missing & ~truthy & ~falsy
        if bad.any():
            problems.append(Failure(1, "type", bad, text, "values that are not booleans"))
        values = np.where(truthy, 1.0, np.where(falsy, 0.0, np.nan))
        return values, problems

    if column.type == "text":
        values = text.to_numpy(dtype=object).copy()
        values[missing] = None
        return values, problems

    if column.type == "datetime":
        stamps = pd.to_datetime(text.where(~missing), format="ISO8601", utc=True, errors="coerce")
        bad = ~missing & stamps.isna().to_numpy()
        if bad.any():
            problems.append(
                Failure(1, "type", bad, text, "values that are not ISO 8601 dates or times")
            )
        return stamps.to_numpy(), problems

    numbers = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(
        dtype=np.float64, copy=True
    )
    not_numeric = ~missing & (np.isnan(numbers) | np.isinf(numbers))
    if not_numeric.any():
        problems.append(
            Failure(1, "type", not_numeric, text, f"values that are not finite {column.type}s")
        )
    if column.type == "integer":
        fractional = ~missing & ~not_numeric & (numbers != np.round(numbers))
        if fractional.any():
            problems.append(Failure(2, "type", fractional, text, "values that are not integers"))
    checked = ~missing & ~not_numeric
    if column.min is not None:
        low = checked & (numbers < column.min)
        if low.any():
            problems.append(
                Failure(3, "range", low, text, f"values below the minimum {column.min}")
            )
    if column.max is not None:
        high = checked & (numbers > column.max)
        if high.any():
            problems.append(
                Failure(4, "range", high, text, f"values above the maximum {column.max}")
            )
    numbers[missing] = np.nan
    return numbers, problems


@dataclasses.dataclass(frozen=True)
class Failure:
    """Rows of one column failing one check: ``mask`` over the rows read, ``text`` their
    cells as checked; ``slot`` orders a column's checks as its report lists them."""

    slot: int
    check: str
    mask: np.ndarray
    text: pd.Series
    what: str


def _canonical_codes(text: pd.Series) -> pd.Series:
    """Numeric category codes in their one spelling (``2.0`` and ``2`` are ``"2"``);
    values that are not numbers stay as written (and fail the category check)."""
    numbers = pd.to_numeric(text, errors="coerce")
    numeric = np.isfinite(numbers.to_numpy(dtype=np.float64))
    spelling = {value: canonical_code(float(value)) for value in pd.unique(numbers[numeric])}
    canonical = text.copy()
    canonical[numeric] = numbers[numeric].map(spelling)
    return canonical


def problem_message(
    column: str, check: str, count: int, what: str, examples: tuple[str, ...]
) -> str:
    """A failing check's sentence; a category problem names the values it found (its
    examples), which are what a person looks for first."""
    message = f"column {column!r}: {count} row(s) with {what}"
    if check == "category" and examples:
        more = ", …" if len(examples) == MAX_EXAMPLES else ""
        message += ": " + ", ".join(repr(value) for value in examples) + more
    return message


def _problem(check: str, column: Column, mask: np.ndarray, text: pd.Series, what: str) -> Problem:
    indices = np.flatnonzero(mask)
    examples = tuple(dict.fromkeys(_shorten(str(v)) for v in text.to_numpy()[indices[:200]]))[
        :MAX_EXAMPLES
    ]
    return Problem(
        check=check,
        message=problem_message(column.name, check, len(indices), what, examples),
        column=column.name,
        count=len(indices),
        rows=tuple(int(i) + 1 for i in indices[:MAX_ROWS_LISTED]),
        examples=examples,
    )
