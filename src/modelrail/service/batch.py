"""Batch prediction: score files with a registered version, as staging would answer.

``predict`` scores the parts of an input (CSV, gzip CSV or Parquet objects) with one
version of the model, read as the staging service reads it (``Registry.load``: the
manifest's signature verified, then the model's sha256; the compiled predictor where
the version has one and it answers as LightGBM does), and writes under an output
prefix, in any BlobStore (a Cloud Storage bucket, or a local directory)::

    part-<input part>-<piece>.parquet   the scored rows: row, identifiers, prediction,
                                        probabilities (and contributions, asked)
    _refused/part-<input part>.parquet  the rows the contract refused, with their problems
    _tasks/<task>.json                  each task's parts, counts and drift tallies
    _drift.json                         the scored data against the training profile
    _manifest.json                      written last, create-only: the parts, the counts

Each part is read a batch at a time (``[limits] batch_mb``), checked row by row
(``domain.batch``), scored on ``threads`` threads and written in pieces of at most
``ROWS_PER_OBJECT`` rows: memory follows the batch and the piece, never the file.
Every object is written whole (the store's writes are atomic), and the output exists
once ``_manifest.json`` does: a reader that finds no manifest finds no output, and
names beginning with ``_`` are skipped by Parquet readers of the folder (pyarrow,
pandas, Spark, BigQuery's external tables with a ``part-*`` pattern).

Parallel tasks (Cloud Run's ``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``) each
score the parts whose index is theirs modulo the count, and record what they did under
``_tasks/``; whichever task finds every task's record after writing its own writes the
drift report and the manifest (create-only: two that finish together write the same).
A task that fails is retried and writes the same names again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from modelrail.domain import batch, monitoring
from modelrail.domain.dataset import stream
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import PROFILE_FILE, LoadedVersion
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import NotFound, PreconditionFailed, Refused
from modelrail.kernel.events import BatchRequested, utcnow
from modelrail.kernel.ports import BlobStore, BlobStream, Message
from modelrail.service.container import Container
from modelrail.service.reconcile import STAGING

# The consumer of batch-requested (topology.yaml's listeners): it starts the batch job.
LISTENER = "launch_batch"
MANIFEST = "_manifest.json"
DRIFT = "_drift.json"
TASKS = "_tasks/"
REFUSED = "_refused/"
# Scored rows per output object: a piece is encoded in memory before it is written,
# so this bounds the output's share of the memory (about 10 MB for a classifier of
# three classes; a few times that with contributions).
ROWS_PER_OBJECT = 250_000


class Scorer(Protocol):
    """A version's predictor (``serving.predictor``'s LightGBM or compiled one): the
    model's output for a float64 matrix, one thread per call."""

    kind: str

    def predict(self, matrix: np.ndarray) -> np.ndarray: ...


# Builds the scorer of a loaded version, given a reader of its other files (sha256 checked).
ScorerFactory = Callable[[LoadedVersion, Callable[[str], bytes | None]], Scorer]


@dataclasses.dataclass(frozen=True)
class Part:
    """One input object: its URI, its format (``stream.upload_format``) and how to open it."""

    uri: str
    fmt: str
    open: Callable[[], BlobStream]


@dataclasses.dataclass(frozen=True)
class Output:
    """Where the output goes: a prefix (``""`` or ending in ``/``) in a store, which
    people know as ``location`` (a folder's path, a ``gs://`` prefix)."""

    store: BlobStore
    prefix: str
    location: str

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def uri(self, name: str = "") -> str:
        return f"{self.location.rstrip('/')}/{name}"


@dataclasses.dataclass(frozen=True)
class Task:
    """Which share of the parts this process scores (Cloud Run's task index and count)."""

    index: int = 0
    count: int = 1


def parts_of(store: BlobStore, key: str) -> list[tuple[str, str]]:
    """The objects an input names in ``store``: ``key`` itself, else every object under
    it (a folder) whose name says its format; (key, format) each, sorted."""
    fmt = stream.upload_format(key)
    listed = store.list(key)
    if fmt is not None and any(info.key == key for info in listed):
        return [(key, fmt)]
    prefix = key if not key or key.endswith("/") else f"{key}/"
    found = [
        (info.key, form)
        for info in store.list(prefix)
        if (form := stream.upload_format(info.key)) is not None
        and not info.key[len(prefix) :].startswith("_")
    ]
    return sorted(found)


def launch(container: Container, message: Message) -> str:
    """Start the batch job for a ``batch-requested`` message (the ``launch_batch``
    listener): one execution, the request in its environment; the execution's name.
    A message that is not a batch request raises (``SchemaError``): Pub/Sub retries it
    into the dead-letter topic, where a person sees it."""
    request = BatchRequested.from_body(orjson.loads(message.data))
    return container.launcher.launch(container.settings.batch_job, orjson.dumps(request.to_body()))


def version_to_score(container: Container, version: int | None, alias: str | None) -> int:
    """The version asked for, else the one ``alias`` (default ``staging``) names."""
    if version is not None:
        return version
    name = alias or STAGING
    found = container.registry.alias(container.model, name)
    if found is None:
        raise Refused(f"model {container.model!r} has no version in {name}: name one (--version)")
    return found.version


def predict(
    container: Container,
    parts: Sequence[Part],
    output: Output,
    *,
    version: int,
    scorer_of: ScorerFactory,
    explain: bool = False,
    threads: int = 1,
    task: Task = Task(),
    source: str = "",
) -> dict[str, Any]:
    """Score this task's share of ``parts`` with ``version`` into ``output``; the
    manifest (with the drift report's URI) once every task has finished, else this
    task's record. ``Refused`` (nothing written) for an output that already exists, a
    version that cannot be loaded, or an input without the features."""
    model, registry = container.model, container.registry
    if not parts:
        raise Refused(f"{source or 'the input'} holds no .csv, .csv.gz or .parquet file")
    try:
        output.store.read(output.key(MANIFEST))
    except NotFound:
        pass
    else:
        raise Refused(f"{output.uri()} already holds a batch prediction ({MANIFEST})")
    # What a run that did not finish left (pieces, task records) would be mixed into
    # this one's: a single task scores into an empty place. Parallel tasks share theirs.
    if task.count == 1 and (left := output.store.list(output.prefix)):
        raise Refused(
            f"{output.uri()} already holds {len(left)} object(s), such as "
            f"{output.uri(left[0].key.removeprefix(output.prefix))} (left by a run that "
            "did not finish?): score into an empty place, or remove them"
        )
    try:
        loaded = registry.load(model, version)
    except NotFound:
        raise Refused(f"model {model!r} has no version {version}") from None
    schema = FeatureSchema.from_dict(loaded.manifest.features)
    scorer = scorer_of(loaded, lambda name: registry.file(loaded.manifest, name))
    baseline = registry.file(loaded.manifest, PROFILE_FILE)
    tally = monitoring.Tally(schema, orjson.loads(baseline)) if baseline is not None else None
    explainer = (
        batch.Explainer(loaded.model_text, loaded.manifest.best_iteration, threads)
        if explain
        else None
    )
    scoring = batch.Scoring.of(schema, container.config.contract)
    batch_bytes = container.config.limits.batch_bytes
    started = time.perf_counter()
    done = []
    with concurrent.futures.ThreadPoolExecutor(max(threads, 1)) as pool:
        for number, part in enumerate(parts):
            if number % task.count != task.index:
                continue
            done.append(
                _score_part(
                    part, number, output, scoring, scorer, explainer, tally, pool, threads,
                    batch_bytes,
                )
            )  # fmt: skip
    record = {
        "model": model,
        "version": version,
        "task": task.index,
        "tasks": task.count,
        "predictor": scorer.kind,
        "parts": done,
        "seconds": round(time.perf_counter() - started, 3),
        "tally": tally.state() if tally is not None else None,
    }
    output.store.write(output.key(f"{TASKS}{task.index:05d}.json"), canonical_json(record))
    return _finish(container, output, record, source, explain) or record


def _score_part(
    part: Part,
    number: int,
    output: Output,
    scoring: batch.Scoring,
    scorer: Scorer,
    explainer: batch.Explainer | None,
    tally: monitoring.Tally | None,
    pool: concurrent.futures.Executor,
    threads: int,
    batch_bytes: int,
) -> dict[str, Any]:
    """Score one input part into its pieces and its refused rows."""
    scored = _Pieces(output, f"part-{number:05d}", ROWS_PER_OBJECT)
    refused = _Pieces(output, f"{REFUSED}part-{number:05d}", ROWS_PER_OBJECT)
    rows = 0
    with part.open() as opened:
        header: list[str] = []
        checking = scoring
        for item in batch.read(opened.file, part.fmt, batch_bytes, part.uri):
            if not header:
                names = item.schema.names if isinstance(item, pa.RecordBatch) else item[1]
                header = list(names)
                checking = scoring.for_header(header, part.uri)
            checked = batch.check(item, header, checking, rows)
            rows += len(checked.rows) + checked.refused.num_rows
            if checked.refused.num_rows:
                refused.add(checked.refused)
            if not len(checked.rows):
                continue
            raw = _predict(scorer, checked.matrix, pool, threads)
            contributions = (
                explainer.contributions(checked.matrix) if explainer is not None else None
            )
            columns = {
                batch.ROW: pa.array(checked.rows),
                **{name: checked.ids.column(name) for name in checking.ids},
                **batch.answers(raw, scoring.schema, contributions),
            }
            scored.add(pa.table(columns))
            if tally is not None:
                index = batch.labels(raw, scoring.schema)
                tally.add_scored(checked.matrix, raw if index is None else index)
    return {
        "part": number,
        "input": part.uri,
        "rows": rows,
        "scored": scored.rows,
        "refused": refused.rows,
        "objects": scored.finish(),
        "refused_objects": refused.finish(),
    }


def _predict(
    scorer: Scorer, matrix: np.ndarray, pool: concurrent.futures.Executor, threads: int
) -> np.ndarray:
    """The scorer's output, ``threads`` slices of the matrix at once (ctypes releases
    the GIL around each call; the slices' answers are the whole's)."""
    if threads <= 1 or len(matrix) < 2 * threads:
        return scorer.predict(matrix)
    slices = np.array_split(matrix, threads)
    return np.concatenate(list(pool.map(scorer.predict, slices)))


class _Pieces:
    """A stream of tables written as Parquet objects of at most ``limit`` rows, named
    ``<name>-<piece>.parquet``, each encoded in memory and written whole."""

    def __init__(self, output: Output, name: str, limit: int) -> None:
        self.output, self.name, self.limit = output, name, limit
        self.rows = 0
        self._objects: list[dict[str, Any]] = []
        self._sink: pa.BufferOutputStream | None = None
        self._writer: pq.ParquetWriter | None = None
        self._held = 0

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            room = self.limit - self._held
            head, table = table.slice(0, room), table.slice(room)
            if self._writer is None:
                self._sink = pa.BufferOutputStream()
                self._writer = pq.ParquetWriter(self._sink, head.schema, compression="zstd")
            self._writer.write_table(head)
            self._held += head.num_rows
            self.rows += head.num_rows
            if self._held >= self.limit:
                self._flush()

    def _flush(self) -> None:
        assert self._writer is not None
        assert self._sink is not None
        self._writer.close()
        key = self.output.key(f"{self.name}-{len(self._objects):03d}.parquet")
        self.output.store.write(key, self._sink.getvalue().to_pybytes())
        self._objects.append({"key": key, "rows": self._held})
        self._writer = self._sink = None
        self._held = 0

    def finish(self) -> list[dict[str, Any]]:
        if self._writer is not None:
            self._flush()
        return self._objects


def _finish(
    container: Container, output: Output, record: dict[str, Any], source: str, explain: bool
) -> dict[str, Any] | None:
    """The manifest, if every task has recorded its share (else None: another task
    finishes): the drift report of all of them, then the manifest, create-only."""
    records = [
        orjson.loads(output.store.read(info.key).data)
        for info in output.store.list(output.key(TASKS))
    ]
    mine = [r for r in records if r["tasks"] == record["tasks"]]
    if len({r["task"] for r in mine}) < record["tasks"]:
        return None
    mine.sort(key=lambda r: r["task"])
    parts = sorted((p for r in mine for p in r["parts"]), key=lambda p: int(p["part"]))
    drift = _drift(container, record, mine, source)
    drift_uri = None
    if drift is not None:
        output.store.write(output.key(DRIFT), canonical_json(drift))
        drift_uri = output.uri(DRIFT)
    manifest = {
        "model": record["model"],
        "version": record["version"],
        "predictor": record["predictor"],
        "input": source,
        "output": output.uri(),
        "explain": explain,
        "created_at": utcnow(),
        "tasks": record["tasks"],
        "rows": sum(p["rows"] for p in parts),
        "scored": sum(p["scored"] for p in parts),
        "refused": sum(p["refused"] for p in parts),
        "parts": parts,
        "drift_uri": drift_uri,
        "drifted": drift["drifted"] if drift is not None else [],
    }
    try:
        output.store.write(output.key(MANIFEST), canonical_json(manifest), if_generation_match=0)
    except PreconditionFailed:
        return dict(orjson.loads(output.store.read(output.key(MANIFEST)).data))
    return manifest


def _drift(
    container: Container,
    record: dict[str, Any],
    records: list[dict[str, Any]],
    source: str,
) -> dict[str, Any] | None:
    """The scored rows against the version's training profile: ``domain.monitoring``'s
    report (validate's PSI, bins and ``[drift]`` limits) over every task's tally."""
    if record["tally"] is None:
        return None
    registry, model, version = container.registry, record["model"], record["version"]
    manifest = registry.manifest(model, version)
    baseline = registry.file(manifest, PROFILE_FILE)
    assert baseline is not None
    tally = monitoring.Tally(FeatureSchema.from_dict(manifest.features), orjson.loads(baseline))
    for each in records:
        tally.absorb(each["tally"])
    config = container.config
    return monitoring.report(
        tally, config.drift_columns, config.drift, model=model, version=version,
        window={"input": source},
    )  # fmt: skip


def lines(manifest: dict[str, Any]) -> Iterator[str]:
    """A finished batch prediction in a few lines, for people."""
    yield (
        f"{manifest['model']} v{manifest['version']} ({manifest['predictor']} predictor): "
        f"{manifest['scored']:,} row(s) scored, {manifest['refused']:,} refused, "
        f"of {manifest['rows']:,}"
    )
    yield f"output: {manifest['output']}{MANIFEST}"
    if manifest["refused"]:
        yield f"refused rows and their problems: {manifest['output']}{REFUSED}"
    if manifest["drift_uri"]:
        drifted = ", ".join(manifest["drifted"]) or "none"
        yield f"drift against the training data: {manifest['drift_uri']} (drifted: {drifted})"
