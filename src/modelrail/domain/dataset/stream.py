"""Validation that streams: an upload of any size, checked batch by batch.

The object is read through the store's ``open`` in blocks (``[limits] batch_mb``);
memory holds one batch, never the file. Per format:

- CSV (``.csv``) and gzip-compressed CSV (``.csv.gz``, decompressed by
  ``pa.input_stream(..., compression="gzip")``): blocks are cut at record boundaries
  (the last line break outside quotes), the header put in front of each batch, and
  each batch is read exactly as a whole file is (``typed.read_batch``, and where it
  declines the reporting path, ``checks.check_text``) with its row numbers moved by the
  rows before it. Arrow's streaming CSV reader (``open_csv``) is not used: it stops at
  the first value that does not convert and cannot hand back the batch's text, which
  the report's examples and the reporting path need.
- Parquet (``.parquet``): ``ParquetFile.iter_batches``; the file's schema must hold the
  contract's columns in types that convert (refused before any row is read), and each
  batch is checked as its text would be.

What needs the whole file is added up from per-batch summaries: the problems (counts,
first row numbers, first examples), the rows without a target, the duplicate rows
(each batch's row hashes, from its Arrow columns, sorted, spilled to the store and
merged), the profile's counts, and the deciles of each numeric column, found exactly:
the order statistics ``numpy.quantile`` interpolates come from the column's distinct
values and their counts while it has at most ``_DISTINCT_LIMIT`` of them (no pass
over the parts), else from a histogram of each value's leading bits per batch and as
many passes over the written parts as it takes to pin each one down.
The report and ``profile.json`` are those of ``checks.validate`` and
``profile.profile`` on the whole file (tested on the same files).

The upload's sha256 is computed from the bytes as they are read (for Parquet, which is
read out of order, by one sequential pass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from modelrail.domain.dataset import checks, duplicates, evolution, profile, snapshot, table, typed
from modelrail.domain.dataset.checks import Problem, ValidationReport
from modelrail.domain.dataset.contract import Column, DatasetContract
from modelrail.kernel.errors import NotFound

FORMATS = {".csv.gz": "csv.gz", ".csv": "csv", ".parquet": "parquet"}
_READ_BYTES = 8 * 2**20
_HIST_BITS = 16
_SPILL_READ = 2**17  # row hashes per read of each spilled run, while merging
# A key prefix holding at most this many values has them collected and sorted rather
# than narrowed by another pass (8 MiB of values).
_COLLECT_LIMIT = 2**20
# A numeric column keeps each distinct value's count while it has at most this many
# (16 MiB of values and counts): its deciles and bins then need no pass over the parts.
# Tabular data rarely has more (measurements to a few digits, counts, codes); a column
# that does falls back to a histogram of its values' leading bits and the passes.
_DISTINCT_LIMIT = 2**20


def upload_format(key: str) -> str | None:
    """``csv``, ``csv.gz`` or ``parquet`` by the object's suffix; None for others."""
    return next((fmt for suffix, fmt in FORMATS.items() if key.endswith(suffix)), None)


@dataclasses.dataclass(frozen=True)
class Limits:
    batch_bytes: int
    max_line_bytes: int | None = None
    max_columns: int | None = None
    max_header_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    """What a streamed validation found: the report as ``checks.validate`` gives it,
    the upload's sha256 and size, (when it passed) the profile, the duplicate rows,
    the drift summaries and the snapshot's parts, and (when its rows broke the
    contract) what they showed of a change of it."""

    report: ValidationReport
    sha256: str
    size: int
    profile: dict[str, Any] | None = None
    duplicate_rows: int = 0
    drift_current: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    parts: tuple[snapshot.Part, ...] = ()
    # When refused: the values outside the contract's categories and ranges it held.
    observed: evolution.Observed | None = None


class _Hashing(io.RawIOBase):
    """Reads ``file`` and hashes every byte read, in order."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if isinstance(self._file, io.RawIOBase | io.BufferedIOBase):  # no copy: straight in
            read = self._file.readinto(buffer) or 0
            with memoryview(buffer) as view:
                self.digest.update(view[:read])
        else:
            data = self._file.read(len(buffer))
            read = len(data)
            buffer[:read] = data
            self.digest.update(data)
        self.size += read
        return read


class Refused(Exception):
    """The file cannot be read on: the report says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


# -- CSV batches -------------------------------------------------------------------


def _csv_batches(blocks: Iterator[bytes], limits: Limits) -> Iterator[tuple[bytes, bytes, int]]:
    """(header line with its break, the batch: that header then its records, lines
    before the records) per batch: records cut at the last line break outside quotes,
    copied once. Raises ``Refused`` for a line longer than
    the limit (the longest one, as ``checks.long_line`` names it) or a header too
    wide."""
    scanner = _LineScanner()
    buffer = bytearray()
    header = b""
    lines_before = 1
    consumed = 0  # line breaks in what was cut from the buffer
    exhausted = False
    ceiling = limits.batch_bytes + (limits.max_line_bytes or limits.batch_bytes)

    def more() -> bool:
        nonlocal exhausted
        block = next(blocks, b"")
        if not block:
            exhausted = True
            return False
        scanner.feed(block)
        buffer.extend(block)
        return True

    while not header:
        if not more() or _first_break(buffer) is not None:
            cut = _first_break(buffer)
            end = len(buffer) if cut is None else cut
            header = _take(buffer, end, b"")
            consumed = header.count(scanner.newline or b"\n")
            break
        if limits.max_line_bytes is not None and len(buffer) > limits.max_line_bytes + 2:
            _refuse_long(scanner, blocks, limits.max_line_bytes)
    if (problem := checks.wide_header(header, limits.max_columns, limits.max_header_bytes)) and (
        limits.max_line_bytes is None or len(header.rstrip(b"\r\n")) <= limits.max_line_bytes
    ):
        raise Refused(problem)
    ended = header if header.endswith((b"\n", b"\r")) else header + b"\n"
    yielded = False
    while True:
        while not exhausted and len(buffer) < limits.batch_bytes:
            more()
        cut = len(buffer) if exhausted else _record_end(buffer, scanner.newline)
        if cut is None:
            if len(buffer) > ceiling:
                if limits.max_line_bytes is not None and scanner.reached > limits.max_line_bytes:
                    _refuse_long(scanner, blocks, limits.max_line_bytes)
                raise Refused(
                    Problem(
                        "malformed_csv",
                        "the file is not a readable CSV: no record ends within "
                        f"{ceiling:,} bytes after line {lines_before:,} (a quote left open?)",
                    )
                )
            more()
            continue
        breaks, lines = _breaks(buffer, cut, scanner, consumed)
        consumed += breaks
        if cut or not yielded:  # the batch is not held here while the next is read
            yield header, _take(buffer, cut, ended), lines_before
            yielded = True
        lines_before += lines
        if exhausted and not buffer:
            break
    if limits.max_line_bytes is not None and scanner.longest > limits.max_line_bytes:
        _refuse_long(scanner, blocks, limits.max_line_bytes)


def _breaks(buffer: bytearray, end: int, scanner: _LineScanner, consumed: int) -> tuple[int, int]:
    """The line breaks in the buffer's first ``end`` bytes, and the lines they end as
    the parser numbers them (a break inside quotes ends none). The breaks are those
    the scanner saw, less those before (``consumed``) and past ``end`` (a part of a
    line, usually): no count over the whole batch, nor any look at a batch without
    quotes."""
    newline = scanner.newline or b"\n"
    breaks = scanner.breaks - consumed - buffer.count(newline, end)
    if buffer.find(b'"', 0, end) < 0:
        return breaks, breaks
    with memoryview(buffer) as view:
        raw = np.frombuffer(view, np.uint8, count=end)
        quotes = np.flatnonzero(raw == ord('"'))
        positions = np.flatnonzero(raw == newline[0])
        del raw
    quoted = int((np.searchsorted(quotes, positions) % 2).sum())  # odd quotes before
    return breaks, breaks - quoted


def _take(buffer: bytearray, end: int, front: bytes) -> bytes:
    """``front`` then the buffer's first ``end`` bytes, copied once, and cut from it."""
    with memoryview(buffer) as view:
        taken = b"".join((front, view[:end]))
    del buffer[:end]
    return taken


def _first_break(buffer: bytearray) -> int | None:
    match = re.search(rb"\r\n|\r|\n", buffer)
    return None if match is None else match.end()


def _record_end(buffer: bytearray, newline: bytes | None) -> int | None:
    """Just past the last line break outside quotes in ``buffer`` (an even number of
    quote characters before it), or None."""
    if newline is None:
        return None
    end = buffer.rfind(newline)
    # find (memchr) first: most files have no quote, and count is a slower byte loop
    quotes = buffer.count(b'"', 0, end) if end >= 0 and buffer.find(b'"', 0, end) >= 0 else 0
    while end >= 0 and quotes % 2:
        previous = buffer.rfind(newline, 0, end)
        quotes -= buffer.count(b'"', max(previous, 0), end)
        end = previous
    return None if end < 0 else end + 1


class _LineScanner:
    """The longest line seen so far, in bytes and by number, block by block, as
    ``checks.long_line`` measures it (breaks are LF, or CR in a file without LF;
    a CR before an LF is not counted)."""

    def __init__(self) -> None:
        self.newline: bytes | None = None
        self.longest = -1
        self.longest_line = 0
        self._current = 0  # bytes of the unfinished line
        self._line = 1
        self._after_cr = False

    def feed(self, block: bytes) -> None:
        if self.newline is None:
            self.newline = b"\n" if b"\n" in block else b"\r" if b"\r" in block else None
        raw = np.frombuffer(block, np.uint8)
        if self.newline is None:
            self._current += len(block)
            self._note(self._current + 0, self._line)  # no break yet: one growing line
            return
        breaks = np.flatnonzero(raw == self.newline[0])
        if breaks.size == 0:
            self._current += len(block)
            self._after_cr = bool(raw[-1] == 13) if raw.size else self._after_cr
            return
        bounds = np.concatenate(([-1], breaks))
        lengths = np.diff(bounds) - 1
        if self.newline == b"\n":
            before = np.where(breaks > 0, raw[np.maximum(breaks - 1, 0)] == 13, self._after_cr)
            lengths = lengths - before
        lengths[0] += self._current
        longest = int(lengths.argmax())
        self._note(int(lengths[longest]), self._line + longest)
        self._line += int(breaks.size)
        self._current = len(block) - int(breaks[-1]) - 1
        self._after_cr = bool(raw[-1] == 13)

    @property
    def breaks(self) -> int:
        """The line breaks seen so far."""
        return self._line - 1

    @property
    def reached(self) -> int:
        """The longest line so far, the unfinished one included."""
        return max(self.longest, self._current)

    def _note(self, length: int, line: int) -> None:
        if length > self.longest:
            self.longest, self.longest_line = length, line

    def finish(self) -> None:
        tail = self._current - (1 if self._after_cr and self.newline == b"\n" else 0)
        if self.newline == b"\n" and self._after_cr:
            tail = self._current  # a CR at the very end is part of the line
        self._note(tail, self._line)


def _refuse_long(scanner: _LineScanner, blocks: Iterator[bytes], max_bytes: int) -> None:
    """Read on to find the longest line, then refuse the file naming it."""
    for block in blocks:
        scanner.feed(block)
    scanner.finish()
    raise Refused(
        Problem(
            "line_length",
            f"line {scanner.longest_line:,} is {scanner.longest:,} bytes long, more than the "
            f"{max_bytes:,} validate reads ([limits] max_line_kb in pipeline.toml)",
        )
    )


def read_blocks(file: Any, size: int) -> Iterator[bytes]:
    while block := file.read(size):
        yield block


# -- the checks, added up ----------------------------------------------------------


class _Findings:
    """Each failing check's count, first row numbers and first examples, over every
    batch, as ``checks._problem`` would give them over the whole file."""

    def __init__(self, contract: DatasetContract) -> None:
        self._order = {column.name: index for index, column in enumerate(contract.columns)}
        self._found: dict[tuple[int, int, str, str], tuple[Column, list[Any]]] = {}
        # Every value outside a category or a range: what a contract change would need.
        self.observed = evolution.Observed()

    def add(
        self, column: Column, slot: int, check: str, what: str, mask: np.ndarray,
        text: pd.Series | None, offset: int,
    ) -> None:  # fmt: skip
        indices = np.flatnonzero(mask)
        if indices.size == 0:
            return
        key = (
            _TARGET_KEY
            if check == "missing_target"
            else (self._order[column.name], slot, check, what)
        )
        if text is not None and check in ("category", "range"):
            self.observed.add(column, check, text.to_numpy()[indices])
        entry = self._found.setdefault(key, (column, [0, [], []]))[1]
        entry[0] += int(indices.size)
        rows, examples = entry[1], entry[2]
        if len(rows) < checks.MAX_ROWS_LISTED:
            rows.extend(int(i) + offset + 1 for i in indices[: checks.MAX_ROWS_LISTED - len(rows)])
        if len(examples) < 200 and text is not None:
            values = text.to_numpy()[indices[: 200 - len(examples)]]
            examples.extend(checks._shorten(str(value)) for value in values)

    def problem(self, key: tuple[int, int, str, str]) -> Problem | None:
        found = self._found.get(key)
        if found is None:
            return None
        column, (count, rows, examples) = found
        shown = tuple(dict.fromkeys(examples))[: checks.MAX_EXAMPLES]
        return Problem(
            check=key[2],
            message=checks.problem_message(column.name, key[2], count, key[3], shown),
            column=column.name,
            count=count,
            rows=tuple(rows),
            examples=shown,
        )

    def problems(self) -> list[Problem]:
        """Every column's problems in the report's order (the missing target apart)."""
        keys = sorted(key for key in self._found if key != _TARGET_KEY)
        return [p for key in keys if (p := self.problem(key)) is not None]

    def beyond_target(self) -> bool:
        """Whether any check but the missing target failed (the file is refused then)."""
        return any(key != _TARGET_KEY for key in self._found)

    def target_examples(self) -> int:
        found = self._found.get(_TARGET_KEY)
        return 0 if found is None else len(found[1][2])


_TARGET_KEY = (-1, 0, "missing_target", "")


class _Summary:
    """The checked rows' profile counts, drift counts and row hashes, batch by batch."""

    def __init__(self, contract: DatasetContract, baseline: Mapping[str, Any] | None) -> None:
        self.contract = contract
        self.profiled = (*contract.features, contract.target_column)
        self.rows = 0
        self.numeric = [c.name for c in self.profiled if c.type in ("number", "integer")]
        self.present = dict.fromkeys(self.numeric, 0)
        # Per numeric column: its distinct values' counts, or once they are too many,
        # the histogram of its values' leading bits.
        self.tally = {name: _Tally() for name in self.numeric}
        self.hist: dict[str, np.ndarray] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.compared = profile.compared(baseline, contract) if baseline else {}
        self.rebinned = {
            name: np.zeros(len(before["edges"]) + 1, np.int64)
            for name, before in self.compared.items()
            if before["kind"] == "numeric"
        }

    def add(self, checked: pa.Table) -> None:
        self.rows += checked.num_rows
        for column in self.profiled:
            array = checked.column(column.name)
            if column.name in self.present:
                values = np.asarray(array.to_numpy(), dtype=np.float64)
                present = values[~np.isnan(values)]
                self.present[column.name] += int(present.size)
                tally = self.tally.get(column.name)
                if tally is not None:
                    tally.add(present)
                    if tally.values.size > _DISTINCT_LIMIT:
                        self.hist[column.name] = tally.histogram()
                        del self.tally[column.name]
                else:
                    self.hist[column.name] += _histogram(_keys(present))
                if column.name in self.rebinned:
                    edges = np.asarray(self.compared[column.name]["edges"], dtype=np.float64)
                    self.rebinned[column.name] += profile.bin_counts(edges, present)
            else:
                named = profile.value_counts(array)
                total = self.counts.setdefault(column.name, dict.fromkeys(named, 0))
                for name, count in named.items():
                    total[name] = total.get(name, 0) + count

    def drift_current(self) -> dict[str, dict[str, Any]]:
        current = {}
        for name, before in self.compared.items():
            if before["kind"] == "numeric":
                counts = self.rebinned[name].tolist()
                current[name] = profile.rebinned(before, self.rows, self.present[name], counts)
            else:
                current[name] = profile.categorical(self.rows, self.counts[name])
        return current

    def profile(
        self, read_numeric: Callable[[list[str]], Iterator[pa.RecordBatch]]
    ) -> dict[str, Any]:
        edges = _deciles(self, read_numeric)
        bins = {name: np.zeros(len(edges[name]) + 1, np.int64) for name in self.hist}
        for name, tally in self.tally.items():
            edges[name], bins[name] = tally.profile()
        if self.hist:
            for batch in read_numeric(list(self.hist)):
                for name in self.hist:
                    values = np.asarray(
                        batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64
                    )
                    present = values[~np.isnan(values)]
                    bins[name] += profile.bin_counts(np.asarray(edges[name]), present)
        columns = {}
        for column in self.profiled:
            if column.name in self.present:
                columns[column.name] = profile.numeric(
                    self.rows, self.present[column.name], edges[column.name],
                    bins[column.name].tolist(),
                )  # fmt: skip
            else:
                columns[column.name] = profile.categorical(self.rows, self.counts[column.name])
        return {"rows": self.rows, "columns": columns}


class _Tally:
    """A numeric column's distinct values, sorted, and how many times each occurs."""

    def __init__(self) -> None:
        self.values = np.empty(0, np.float64)
        self.counts = np.empty(0, np.int64)

    def add(self, present: np.ndarray) -> None:
        values, counts = _counted(np.concatenate([self.values, present + 0.0]))  # -0.0 as 0.0
        if self.values.size:  # the values held before were counted once each above
            at = np.searchsorted(values, self.values)
            counts[at] += self.counts - 1
        self.values, self.counts = values, counts

    def histogram(self) -> np.ndarray:
        """The histogram of the values' leading bits, as a batch adds it."""
        hist = np.zeros(2**_HIST_BITS, np.int64)
        np.add.at(hist, (_keys(self.values) >> np.uint64(64 - _HIST_BITS)).astype(np.int64),
                  self.counts)  # fmt: skip
        return hist

    def profile(self) -> tuple[list[float], np.ndarray]:
        """The decile edges ``np.unique(np.quantile(values, ...))`` gives over every
        value counted, and the counts in the bins they cut."""
        total = int(self.counts.sum())
        if not total:
            return [], np.zeros(1, np.int64)
        ends = np.cumsum(self.counts)  # rank (0-based) r is values[first end > r]
        lower, upper = _positions(total)
        below = self.values[np.searchsorted(ends, lower, side="right")]
        above = self.values[np.searchsorted(ends, upper, side="right")]
        gamma = (total - 1) * profile.QUANTILES - lower
        edges = np.unique(_lerp(below, above, gamma))
        bins = np.zeros(edges.size + 1, np.int64)
        np.add.at(bins, np.searchsorted(edges, self.values, side="right"), self.counts)
        return edges.tolist(), bins


def _counted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and their counts (a sort: no hash table)."""
    ordered = np.sort(values)
    if not ordered.size:
        return ordered, np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, ordered.size)).astype(np.int64)


def _histogram(keys: np.ndarray) -> np.ndarray:
    return np.bincount((keys >> np.uint64(64 - _HIST_BITS)).astype(np.int64),
                       minlength=2**_HIST_BITS)  # fmt: skip


def _keys(values: np.ndarray) -> np.ndarray:
    """float64 -> uint64 keys in the same order (negative values' bits flipped)."""
    bits = (values + 0.0).view(np.uint64)  # -0.0 as 0.0, as comparisons see it
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def _from_keys(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64)
    positive = (keys >> np.uint64(63)).astype(bool)
    bits = np.where(positive, keys & np.uint64((1 << 63) - 1), ~keys)
    return bits.view(np.float64)


def _deciles(
    summary: _Summary, read_numeric: Callable[[list[str]], Iterator[pa.RecordBatch]]
) -> dict[str, list[float]]:
    """The decile edges of each column with too many distinct values to count (those
    in ``summary.hist``), as ``np.unique(np.quantile(present, ...))`` gives them over
    all its values: the two order statistics around each position,
    found by narrowing a key prefix 16 bits per pass over the written rows (values are
    collected instead once a prefix holds few enough), then interpolated as numpy
    does."""
    wanted: dict[str, dict[int, int | None]] = {}  # rank -> key
    for name in summary.hist:
        n = summary.present[name]
        if n:
            lower, upper = _positions(n)
            wanted[name] = dict.fromkeys(sorted({*lower.tolist(), *upper.tolist()}))
    # Per column and rank: (prefix, bits known, rank within the prefix, values in it).
    state: dict[str, dict[int, tuple[int, int, int, int]]] = {}
    for name, ranks in wanted.items():
        hist = summary.hist[name]
        state[name] = {}
        for rank in ranks:
            bucket, within = _locate(hist, rank)
            state[name][rank] = (bucket, _HIST_BITS, within, int(hist[bucket]))
    while any(state.values()):
        # One pass: for each open prefix, its values if few, else a histogram of the
        # next 16 bits.
        groups: dict[str, dict[tuple[int, int], int]] = {}
        for name, open_ranks in state.items():
            for prefix, known, _, size in open_ranks.values():
                groups.setdefault(name, {})[(prefix, known)] = size
        found: dict[tuple[str, tuple[int, int]], Any] = {}
        for batch in read_numeric([name for name in groups if groups[name]]):
            for name, prefixes in groups.items():
                values = np.asarray(
                    batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64
                )
                keys = _keys(values[~np.isnan(values)])
                for (prefix, known), size in prefixes.items():
                    chosen = keys[(keys >> np.uint64(64 - known)) == np.uint64(prefix)]
                    slot = (name, (prefix, known))
                    if size <= _COLLECT_LIMIT or known + _HIST_BITS >= 64:
                        found.setdefault(slot, []).append(chosen)
                    else:
                        shift = np.uint64(64 - known - _HIST_BITS)
                        next_bits = (chosen >> shift) & np.uint64(2**_HIST_BITS - 1)
                        counts = np.bincount(next_bits.astype(np.int64), minlength=2**_HIST_BITS)
                        found[slot] = found.get(slot, 0) + counts
        for name, open_ranks in state.items():
            for rank, (prefix, known, inside, _) in list(open_ranks.items()):
                result = found[(name, (prefix, known))]
                if isinstance(result, list):
                    ordered = np.sort(np.concatenate(result))
                    wanted[name][rank] = int(ordered[inside])
                    del open_ranks[rank]
                else:
                    bucket, within = _locate(result, inside)
                    narrowed = (prefix << _HIST_BITS) | bucket
                    open_ranks[rank] = (narrowed, known + _HIST_BITS, within, int(result[bucket]))
    edges: dict[str, list[float]] = {name: [] for name in summary.hist}
    for name, keyed in wanted.items():
        lower, upper = _positions(summary.present[name])
        value = {rank: float(_from_keys(np.array([key]))[0]) for rank, key in keyed.items()}
        below = np.array([value[r] for r in lower.tolist()], dtype=np.float64)
        above = np.array([value[r] for r in upper.tolist()], dtype=np.float64)
        gamma = (summary.present[name] - 1) * profile.QUANTILES - lower
        edges[name] = np.unique(_lerp(below, above, gamma)).tolist()
    return edges


def _locate(hist: np.ndarray, rank: int) -> tuple[int, int]:
    """The bucket holding the ``rank``-th value (0-based) and its rank inside it."""
    cumulative = np.cumsum(hist)
    bucket = int(np.searchsorted(cumulative, rank, side="right"))
    before = int(cumulative[bucket - 1]) if bucket else 0
    return bucket, rank - before


def _positions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The order statistics numpy's linear quantile interpolates between, for n values."""
    virtual = (n - 1) * profile.QUANTILES
    lower = np.floor(virtual)
    upper = np.minimum(lower + 1, n - 1)
    return lower.astype(np.int64), upper.astype(np.int64)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own interpolation (``numpy.lib._function_base_impl._lerp``), so the
    edges are the bits ``np.quantile`` gives."""
    diff = b - a
    result = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=result, where=t >= 0.5)
    return np.asarray(result, dtype=np.float64)


# -- the stream --------------------------------------------------------------------


def validate(
    source: BinaryIO,
    fmt: str,
    contract: DatasetContract,
    limits: Limits,
    parts: snapshot.PartWriter,
    *,
    baseline: Mapping[str, Any] | None = None,
) -> Result:
    """Check the upload in ``source`` (``fmt`` as ``upload_format`` names it) against
    ``contract`` batch by batch, writing the checked rows as snapshot parts through
    ``parts`` while no problem is found. Never raises for bad data: a refused file's
    report names its problems (the caller deletes the parts)."""
    hashing = _Hashing(source)
    reader: Any = io.BufferedReader(hashing, buffer_size=_READ_BYTES)
    if fmt == "parquet":
        # Read out of order (its footer first): hashed by one sequential pass before.
        _drain(reader)
        source.seek(0)
        reader = source
    findings = _Findings(contract)
    summary = _Summary(contract, baseline)
    spill = _RowHashes(parts)
    header: tuple[str, ...] = ()
    state: dict[str, Any] = {"file_rows": 0, "missing": 0}
    malformed: Problem | None = None
    try:
        if fmt == "parquet":
            batches: Iterator[tuple[Any, tuple[str, ...] | None]] = _parquet_batches(
                reader, contract, limits
            )
        else:
            text: Any = reader
            if fmt == "csv.gz":
                text = pa.input_stream(pa.PythonFile(reader, mode="r"), compression="gzip")
            batches = csv_texts(read_blocks(text, min(limits.batch_bytes, _READ_BYTES)), limits)
        for data, header_or_none in batches:
            if header_or_none is not None:
                header = header_or_none
            if malformed is None:
                malformed = _check_batch(
                    data, header, contract, state, findings, summary, spill, parts
                )
            # After a malformed batch the rest is only scanned: a line over the limit
            # anywhere is the refusal that names the file, as it is read whole.
            del data  # not held while the next batch is read: one batch in memory
        if malformed is not None:
            return _finish_refused(contract, malformed, hashing, reader)
    except _SchemaRefused as refused:
        report = ValidationReport(contract.name, 0, refused.header, tuple(refused.problems))
        return Result(report, *_finish(hashing, reader))
    except Refused as refused:
        return _finish_refused(contract, refused.problem, hashing, reader)
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        if isinstance(exc, NotFound):
            raise
        problem = Problem("unreadable", f"the file cannot be read to its end: {_reason(exc)}")
        return _finish_refused(contract, problem, hashing, reader)
    _drain(reader)
    report = _file_report(header, state["file_rows"], state["missing"], findings, contract)
    rows, problems = report.rows, report.problems
    sha256, size = hashing.digest.hexdigest(), hashing.size
    if problems:
        return Result(report, sha256, size, observed=findings.observed)
    if (one_class := _single_class(summary, contract, rows)) is not None:
        return Result(dataclasses.replace(report, problems=(one_class,)), sha256, size)
    duplicate_rows = rows - spill.distinct()
    written = parts.finish()
    return Result(
        report,
        sha256,
        size,
        profile=summary.profile(lambda names: snapshot.iter_parts(parts.store, written, names)),
        duplicate_rows=duplicate_rows,
        drift_current=summary.drift_current(),
        parts=written,
    )


def _file_report(
    header: tuple[str, ...],
    file_rows: int,
    missing: int,
    findings: _Findings,
    contract: DatasetContract,
) -> ValidationReport:
    """The whole file's report from what its batches found."""
    problems = checks.header_problems(header, contract) + findings.problems()
    rows = file_rows - missing
    if missing and missing / file_rows > contract.max_missing_target_fraction:
        target = findings.problem(_TARGET_KEY)
        assert target is not None
        what = checks.missing_target_what(missing / file_rows, contract)
        problems.append(
            dataclasses.replace(
                target, message=f"column {contract.target!r}: {target.count} row(s) with {what}"
            )
        )
        rows = file_rows
    if (too_few := checks.min_rows_problem(rows, contract)) is not None:
        problems.append(too_few)
    report = ValidationReport(contract.name, rows, header, tuple(problems), file_rows - rows)
    return report


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def _drain(reader: BinaryIO) -> None:
    """Read what the parser left (a gzip trailer, bytes after a refusal), so the
    sha256 covers every byte."""
    while reader.read(_READ_BYTES):
        pass


def _finish(hashing: _Hashing, reader: BinaryIO) -> tuple[str, int]:
    with contextlib.suppress(OSError, ValueError):
        _drain(reader)
    return hashing.digest.hexdigest(), hashing.size


def _finish_refused(
    contract: DatasetContract, problem: Problem, hashing: _Hashing, reader: BinaryIO
) -> Result:
    return Result(checks.refused(contract, problem), *_finish(hashing, reader))


def csv_texts(
    blocks: Iterator[bytes], limits: Limits
) -> Iterator[tuple[tuple[bytes, int, int], tuple[str, ...] | None]]:
    first = True
    for header_line, batch, lines_before in _csv_batches(blocks, limits):
        header = checks.header_of(header_line) if first else None
        first = False
        yield (batch, lines_before, 0), header
        del batch


def _check_batch(
    data: Any,
    header: tuple[str, ...],
    contract: DatasetContract,
    state: dict[str, Any],
    findings: _Findings,
    summary: _Summary,
    spill: _RowHashes,
    parts: snapshot.PartWriter,
) -> Problem | None:
    """Check one batch; a ``malformed_csv`` problem ends the file."""
    offset = state["file_rows"]
    text_of: Callable[[], checks.TextCheck | Problem]
    if isinstance(data, tuple):  # CSV text
        raw, lines_before, _ = data
        typed_read = typed.read_batch(raw, header, contract)

        def text_of() -> checks.TextCheck | Problem:
            return checks.check_text(raw, contract)
    else:  # a Parquet batch, converted
        raw, lines_before = None, 0
        typed_read = typed_parquet(data, contract)

        def text_of() -> checks.TextCheck | Problem:
            return parquet_text(data, contract)

    checked: pa.Table | None
    if typed_read is not None:
        checked, batch_rows = typed_read
        missing = batch_rows - checked.num_rows
        if missing and findings.target_examples() < 200:
            text = text_of()
            assert not isinstance(text, Problem)
            findings.add(contract.target_column, *_TARGET_KEY[1:3], "", text.no_target,
                         text.target_text, offset)  # fmt: skip
        elif missing:
            findings.add(contract.target_column, *_TARGET_KEY[1:3], "",
                         np.ones(missing, bool), pd.Series([""] * missing), offset)  # fmt: skip
    else:
        text = text_of()
        if isinstance(text, Problem):
            return _moved(text, lines_before)
        batch_rows = text.rows
        for column, failure in text.failures:
            findings.add(column, failure.slot, failure.check, failure.what, failure.mask,
                         failure.text, offset)  # fmt: skip
        missing = int(text.no_target.sum())
        if missing:
            findings.add(contract.target_column, *_TARGET_KEY[1:3], "", text.no_target,
                         text.target_text, offset)  # fmt: skip
        checked = None
        if not text.failures and len(text.columns) == len(contract.columns):
            kept = ~text.no_target
            checked = table.from_numpy(
                {name: values[kept] for name, values in text.columns.items()}, contract
            )
    state["file_rows"] += batch_rows
    state["missing"] += missing
    if checked is not None and not findings.beyond_target():
        summary.add(checked)
        spill.add(checked)
        parts.add(checked)
    return None


def _moved(problem: Problem, lines_before: int) -> Problem:
    """A parser's message about a batch, its line numbers made the file's."""
    message = re.sub(
        r"line (\d+)", lambda m: f"line {int(m.group(1)) + lines_before - 1}", problem.message
    )
    return dataclasses.replace(problem, message=message)


def _single_class(summary: _Summary, contract: DatasetContract, rows: int) -> Problem | None:
    target = contract.target_column
    if target.type not in ("category", "boolean"):
        return None
    present = [name for name, count in summary.counts[target.name].items() if count]
    if len(present) >= 2:
        return None
    if target.type == "boolean":
        present = [str({"true": 1.0, "false": 0.0}[name]) for name in present]
    seen = ", ".join(present) or "none"
    return Problem(
        "classes",
        f"the target {target.name!r} holds one class ({seen}): a classifier needs at least "
        "two in its training data",
        target.name,
        count=rows,
    )


# -- duplicates --------------------------------------------------------------------


class _RowHashes:
    """Each batch's distinct row hashes, sorted, spilled to the store beside the parts;
    merged at the end to count the distinct rows of the whole file."""

    def __init__(self, parts: snapshot.PartWriter) -> None:
        self.parts = parts
        self.keys: list[str] = []

    def add(self, checked: pa.Table) -> None:
        hashes = duplicates.distinct_sorted(duplicates.row_hashes(checked))
        self.keys.append(self.parts.scratch(hashes.astype("<u8", copy=False).tobytes()))

    def distinct(self) -> int:
        """Distinct hashes over every run: a k-way merge reading each run in pieces."""
        streams = [self.parts.store.open(key) for key in self.keys]
        try:
            pending = [np.empty(0, np.uint64) for _ in streams]
            done = [False] * len(streams)
            count, last = 0, None
            while True:
                for index, stream in enumerate(streams):
                    if not pending[index].size and not done[index]:
                        chunk = stream.file.read(_SPILL_READ * 8)
                        done[index] = len(chunk) < _SPILL_READ * 8
                        pending[index] = np.frombuffer(chunk, "<u8").astype(np.uint64)
                live = [i for i in range(len(streams)) if pending[i].size]
                if not live:
                    return count
                # Safe to merge every value up to the smallest last value of a run with
                # more to come: nothing later in any run can be smaller.
                bounds = [pending[i][-1] for i in live if not done[i]]
                limit = min(bounds) if bounds else max(pending[i][-1] for i in live)
                merged = []
                for i in live:
                    cut = int(np.searchsorted(pending[i], limit, side="right"))
                    merged.append(pending[i][:cut])
                    pending[i] = pending[i][cut:]
                values = duplicates.distinct_sorted(np.concatenate(merged))
                if last is not None and values.size and values[0] == last:
                    values = values[1:]
                count += int(values.size)
                if values.size:
                    last = values[-1]
        finally:
            for stream in streams:
                stream.close()


# -- Parquet -----------------------------------------------------------------------


def _parquet_batches(
    reader: BinaryIO, contract: DatasetContract, limits: Limits
) -> Iterator[tuple[pa.RecordBatch, tuple[str, ...] | None]]:
    try:
        file = table.parquet_file(reader)
    except (pa.ArrowInvalid, OSError) as exc:
        raise Refused(
            Problem("malformed_parquet", f"the file is not a readable Parquet file: {_reason(exc)}")
        ) from None
    schema = file.schema_arrow
    header = tuple(name.strip() for name in schema.names)
    if limits.max_columns is not None and len(header) > limits.max_columns:
        raise Refused(
            Problem(
                "column_count",
                f"the file names {len(header):,} columns, more than the {limits.max_columns:,} "
                "validate reads ([limits] max_columns in pipeline.toml)",
                count=len(header),
            )
        )
    problems = checks.header_problems(header, contract)
    for column in contract.columns:
        if column.name in header:
            field = schema.field(header.index(column.name))
            if not convertible(field.type, column):
                problems.append(
                    Problem(
                        "parquet_schema",
                        f"column {column.name!r} is {field.type} in the file; the contract's "
                        f"{column.type} column cannot be read from it",
                        column.name,
                    )
                )
    if problems:
        raise _SchemaRefused(problems, header)
    width = sum(max(file.metadata.row_group(i).total_byte_size, 1) for i in range(
        file.metadata.num_row_groups)) / max(file.metadata.num_rows, 1)  # fmt: skip
    batch_rows = max(1, int(limits.batch_bytes / max(width, 1.0)))
    first = True
    for batch in file.iter_batches(batch_size=batch_rows, use_threads=False):
        yield batch.rename_columns(list(header)), (header if first else None)
        first = False
    if first:  # no rows: the checks still run (and min_rows refuses it)
        empty = pa.RecordBatch.from_pylist([], schema=schema)
        yield empty.rename_columns(list(header)), header


class _SchemaRefused(Refused):
    def __init__(self, problems: list[Problem], header: tuple[str, ...]) -> None:
        super().__init__(problems[0])
        self.problems = problems
        self.header = header


def convertible(arrow_type: pa.DataType, column: Column) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    numeric = bool(pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type))
    text = bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
    if column.type in ("number", "integer"):
        return numeric or bool(pa.types.is_decimal(arrow_type))
    if column.type == "boolean":
        return bool(pa.types.is_boolean(arrow_type) or pa.types.is_integer(arrow_type)) or text
    if column.type == "category":
        return text or (column.numeric_codes and numeric)
    if column.type == "datetime":
        return bool(pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)) or text
    return text


def parquet_text(batch: pa.RecordBatch, contract: DatasetContract) -> checks.TextCheck:
    """A Parquet batch as the reporting path reads text: each value in its shortest
    spelling, a missing one as the contract's first null token."""
    null = contract.null_tokens[0] if contract.null_tokens else ""
    frame = {}
    for name in batch.schema.names:
        array = batch.column(name)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_floating(array.type):
            spelled = [null if v is None else _spell_float(v) for v in array.to_pylist()]
        elif pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
            spelled = [
                null if v is None else pd.Timestamp(v).isoformat() for v in array.to_pylist()
            ]
        elif pa.types.is_boolean(array.type):
            spelled = [null if v is None else ("true" if v else "false") for v in array.to_pylist()]
        else:
            spelled = [null if v is None else str(v) for v in array.to_pylist()]
        frame[name] = spelled
    buffer = io.StringIO()
    pd.DataFrame(frame, dtype=str).to_csv(buffer, index=False)
    result = checks.check_text(buffer.getvalue().encode(), contract)
    assert not isinstance(result, Problem)
    return result


def _spell_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def typed_parquet(batch: pa.RecordBatch, contract: DatasetContract) -> tuple[pa.Table, int] | None:
    """The checked table of a Parquet batch whose every value meets the contract (the
    typed reader's rules), else None: the reporting path names the problems."""
    arrays = {}
    target_null = np.zeros(batch.num_rows, bool)
    for column in contract.columns:
        array = batch.column(column.name)
        if column.name == contract.target:
            target_null = np.asarray(array.is_null())
        if array.null_count and not column.nullable and column.name != contract.target:
            return None
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if column.type in ("number", "integer"):
            numbers = np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False),
                                 dtype=np.float64)  # fmt: skip
            present = numbers[~np.asarray(array.is_null())]
            if not np.isfinite(present).all():
                return None
            if column.type == "integer" and not (present == np.round(present)).all():
                return None
            if column.min is not None and (present < column.min).any():
                return None
            if column.max is not None and (present > column.max).any():
                return None
            arrays[column.name] = pa.array(numbers, type=pa.float64(),
                                           mask=np.asarray(array.is_null()))  # fmt: skip
        elif column.type == "boolean":
            if not pa.types.is_boolean(array.type):
                return None
            arrays[column.name] = pc.cast(array, pa.float64())
        elif column.type == "category":
            if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
                return None
            if pc.any(pc.not_equal(pc.utf8_trim_whitespace(array), array)).as_py():
                return None
            encoded = pc.dictionary_encode(array)
            converted = typed.contract_categories(encoded, column)
            if converted is None:
                return None
            arrays[column.name] = converted
        elif column.type == "datetime":
            if not pa.types.is_timestamp(array.type):
                return None
            arrays[column.name] = pc.cast(
                array if array.type.tz else pc.assume_timezone(array, "UTC"),
                table.arrow_type(column),
            )
        else:
            if not pa.types.is_string(array.type):
                return None
            if pc.any(pc.not_equal(pc.utf8_trim_whitespace(array), array)).as_py():
                return None
            arrays[column.name] = array
    checked = pa.table(arrays)
    kept = ~target_null
    return (checked if kept.all() else checked.filter(pa.array(kept))), batch.num_rows
