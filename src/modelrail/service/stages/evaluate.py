"""evaluate: score the candidate and the champion, and apply the gate.

Twice: on this run's hold-out, and on the champion's reference set (the hold-out the
champion was judged on, kept with its version). Data under suspicion cannot be its
own referee: a candidate trained on corrupted labels scores like the champion on a
hold-out carrying the same corruption, but much worse on the champion's reference.
The change thresholds apply on both; the value thresholds on this run's hold-out.

Blessed is not champion. The change thresholds let a candidate be a little worse than
the champion and still be registered (and deployed to staging, unless ``[gate]
staging`` says "champion"); the champion moves to it only if it is at least as good on
every gated metric, on this hold-out and on the champion's reference set
(``evaluation.compare``). The verdict carries that decision (``promote``) and every
comparison, for register, the record and the card.

The champion is read as the staging service reads a version: its manifest's signature
is verified before any sha256 in it is trusted, then every file it reads (the model,
the reference set) against that sha256. A champion whose files or manifest were
rewritten in the bucket ends the run as an ``IntegrityError``, never steering the gate.

The rows are the ones train held out, by the split plan it recorded with the candidate
(``training.SplitPlan``: by inputs, or by occurrence), never a plan made again here.
A candidate of small data was judged by cross-validation in train
(``training.CrossValidation``): its value thresholds apply to its out-of-fold
predictions of every sample of this run, and its change thresholds to those of the
samples the champion is scored on (``_unseen``): those new to a champion itself judged
by cross-validation (it trained on every row of its reference set and nothing else),
else every sample, some of which the champion may have trained on where no out-of-fold
prediction did, which can only favour the champion; either way it never gets worse.
The champion's reference set is not compared, because the candidate trained on every
row of this run and no set is unseen by it; this run's samples are kept as the
reference set as any hold-out is. Nor does it gate a drift policy's retrain whose
monitoring report validate read (``dataset.seen_live``): live traffic has left the
reference set, and the candidate is judged on data like what it will be asked
(``_on_reference``); its metrics there are still reported. The verdict says how the
candidate was judged (``judged_by``, and ``notes``), and warns when its metrics come
from few rows.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from modelrail.domain import evaluation, explanation, training
from modelrail.domain.config import MetricGate, PipelineConfig
from modelrail.domain.dataset import snapshot
from modelrail.domain.dataset.checks import ParsedDataset
from modelrail.domain.dataset.table import TableColumns
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import CHAMPION, REFERENCE_FILE, LoadedVersion, Registry
from modelrail.domain.runs import RunLog
from modelrail.kernel.errors import DataUnavailable, GateRejected, IntegrityError
from modelrail.kernel.events import ModelEvaluated, ModelTrained
from modelrail.service.stages import Outcome


def handle(
    event: ModelTrained,
    *,
    config: PipelineConfig,
    runs: RunLog,
    registry: Registry,
) -> Outcome:
    store = runs.store
    model_text, candidate_meta = runs.candidate(event.run_id, event.model_sha256)
    schema = FeatureSchema.from_dict(candidate_meta.features)
    how = training.SplitPlan.from_json(candidate_meta.split)
    cross_validation = (
        training.CrossValidation.from_json(candidate_meta.cross_validation)
        if candidate_meta.cross_validation is not None
        else None
    )
    candidate = _Scores(lgb.Booster(model_str=model_text.decode()), schema, config)
    loaded = _champion_version(config, registry)
    champion_scores, champion = _champion(loaded, config)
    # The hold-out alone, a part at a time: each part is scored and kept for the
    # reference set as it is read, so memory holds one part and the predictions. Data
    # judged by cross-validation is small: its every sample, at once.
    parts = snapshot.parts(store, event.dataset["snapshot"])
    uri = event.dataset["snapshot"]["uri"]
    judged = snapshot.Encoder()
    held: Iterable[pa.Table]
    if cross_validation is None:
        held = training.holdout_parts(
            (snapshot.read_part(store, part, uri) for part in parts), config.contract, config, how
        )
    else:
        every = _samples(snapshot.read(store, parts, uri, config.contract), config, how)
        held = [every]
    for batch in held:
        candidate.add(batch, None if cross_validation is None else cross_validation.predictions)
        if champion_scores is not None:
            champion_scores.add(batch)
        judged.add(batch)
    metrics = candidate.metrics()
    notes: list[str] = []
    if cross_validation is None:
        judged_by = f"the hold-out: {candidate.rows} rows, split by {how.by}"
        if champion is not None and champion_scores is not None:
            champion = {**champion, "metrics": champion_scores.metrics()}
        verdict = evaluation.judge(config.gate, metrics, champion["metrics"] if champion else None)
        compared = metrics
        reference = _reference(config, registry, loaded, champion, candidate.booster, schema)
    else:
        judged_by, reference = cross_validation.why, None
        verdict, champion, compared, notes = _cross_validated(
            config, registry, loaded, champion, (candidate, champion_scores), every
        )
    reasons: list[str] = verdict.to_dict()["reasons"]
    champion, gating, blessed = _on_reference(
        champion, reference, event.dataset.get("seen_live"), verdict.blessed, reasons, notes
    )
    overall = {
        **verdict.to_dict(),
        "blessed": blessed,
        "reasons": reasons,
        "judged_by": judged_by,
        **(
            {"cross_validation": {"folds": cross_validation.folds, "rows": cross_validation.rows}}
            if cross_validation is not None
            else {}
        ),
        **_promotion(config, champion, compared, gating, cross_validation is not None),
    }
    if candidate.rows < training.FEW_ROWS:
        overall["warnings"] = [
            f"the metrics come from {candidate.rows} rows only: one row moves accuracy by "
            f"{100 / candidate.rows:.1f} points; read them as rough"
        ]
    if notes:
        overall["notes"] = notes
    report = {
        "run_id": event.run_id,
        "judged_by": judged_by,
        "split": how.to_json(),
        "holdout_rows": candidate.rows,
        "metrics": metrics,
        "champion": champion,
        "reference": reference,
        "verdict": overall,
        # For the model card: per class and the confusion matrix, or predicted vs actual,
        # and the features' contributions on the hold-out.
        "diagnostics": {
            **evaluation.diagnostics(schema.objective, *candidate.scored(), schema.classes),
            "explanation": candidate.explanation(),
        },
    }
    report_uri = runs.save_report(event.run_id, "evaluation", report)
    # The rows it was judged on, for register to keep as the version's reference set.
    store.write(
        runs.snapshot_key(event.run_id, REFERENCE_FILE),
        judged.finish(),
        content_type="application/vnd.apache.parquet",
    )
    if not blessed:
        raise GateRejected(
            "the gate rejected the candidate: " + "; ".join(reasons),
            {"report_uri": report_uri, **report},
        )
    evaluated = ModelEvaluated(
        run_id=event.run_id,
        causation_id=event.event_id,
        lineage={**event.lineage, "champion": champion and {"version": champion["version"]}},
        dataset=event.dataset,
        candidate_uri=event.candidate_uri,
        model_sha256=event.model_sha256,
        metrics=metrics,
        champion=champion,
        verdict=overall,
        report_uri=report_uri,
    )
    return Outcome(evaluated, {"metrics": metrics, "blessed": True})


class _Scores:
    """One model's predictions, batch by batch, kept with the true targets: the exact
    metrics (an AUC ranks every row) need them all, and they are a few numbers a row
    where the rows' columns are many."""

    def __init__(self, booster: lgb.Booster, schema: FeatureSchema, config: PipelineConfig):
        self.booster, self.schema, self.contract = booster, schema, config.contract
        self._truth: list[np.ndarray] = []
        self._predicted: list[np.ndarray] = []
        # The rows the card's explanation is computed on (a uniform sample).
        self._sample = explanation.Sample(config.seed)

    def add(self, batch: pa.Table, predicted: list[Any] | None = None) -> None:
        """The rows of ``batch``, with the model's predictions of them, or the
        ``predicted`` ones recorded for them (a cross-validated candidate's)."""
        if batch.num_rows == 0:
            return
        columns = TableColumns(batch, self.contract)
        self._truth.append(self.schema.encode_target(columns[self.schema.target]))
        matrix = self.schema.encode_columns(columns)
        self._sample.add(matrix)
        if predicted is None:
            self._predicted.append(np.asarray(self.booster.predict(matrix)))
        elif len(predicted) != batch.num_rows:
            raise IntegrityError(
                f"the candidate's {len(predicted)} out-of-fold predictions are not one per "
                f"row of the {batch.num_rows} it was judged on"
            )
        else:
            self._predicted.append(np.asarray(predicted, dtype=np.float64))

    @property
    def rows(self) -> int:
        return sum(len(truth) for truth in self._truth)

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """The true targets and the predictions of every row added, in order."""
        if not self._truth:
            raise DataUnavailable("the hold-out is empty: there is nothing to judge on")
        return np.concatenate(self._truth), np.concatenate(self._predicted)

    def explanation(self) -> dict[str, Any] | None:
        """The features' contributions (TreeSHAP) on a sample of the rows added."""
        return explanation.summarise(
            self.schema,
            self._sample.rows(),
            lambda rows: np.asarray(self.booster.predict(rows, pred_contrib=True)),
            self.rows,
        )

    def metrics(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """The metrics of every row added, or of ``rows`` of them (their positions)."""
        truth, predicted = self.scored()
        if rows is not None:
            truth, predicted = truth[rows], predicted[rows]
        return evaluation.metrics(self.schema.objective, truth, predicted)


def _cross_validated(
    config: PipelineConfig,
    registry: Registry,
    loaded: LoadedVersion | None,
    champion: dict[str, Any] | None,
    scores: tuple[_Scores, _Scores | None],
    samples: pa.Table,
) -> tuple[evaluation.Verdict, dict[str, Any] | None, dict[str, float], list[str]]:
    """The verdict on a cross-validated candidate: its out-of-fold metrics against the
    value thresholds, and against the champion's on the samples ``_unseen`` chooses by
    the change thresholds; the champion so described, the candidate's metrics it was
    compared on, and notes saying how."""
    candidate, champion_scores = scores
    metrics = candidate.metrics()
    verdict = evaluation.judge(config.gate, metrics, None)
    if loaded is None or champion is None or champion_scores is None:
        return verdict, champion, metrics, []
    rows, why = _unseen(config, registry, loaded, samples)
    compared = candidate.metrics(rows) if len(rows) else metrics
    champion = {**champion, "compared_on": {"rows": len(rows), "why": why}, "metrics": None}
    if len(rows):
        champion["metrics"] = champion_scores.metrics(rows)
        changes = evaluation.judge(_changes_only(config), compared, champion["metrics"])
        verdict = evaluation.Verdict(
            verdict.blessed and changes.blessed, verdict.checks + changes.checks
        )
    notes = [
        why,
        f"not compared on v{champion['version']}'s reference set: the candidate trained "
        "on every row of this run, so no set is unseen by it",
    ]
    return verdict, champion, compared, notes


def _changes_only(config: PipelineConfig) -> list[MetricGate]:
    """The gate's change thresholds alone: what compares two models on one set."""
    return [dataclasses.replace(g, min=None, max=None) for g in config.gate]


def _unseen(
    config: PipelineConfig, registry: Registry, loaded: LoadedVersion, samples: pa.Table
) -> tuple[np.ndarray, str]:
    """Which of this run's ``samples`` (their positions) the cross-validated candidate
    is compared with the champion on, and why. A champion judged by cross-validation
    trained on every row of its reference set and on nothing else: the samples not in
    it are new to both, and the comparison is fair (none: nothing to compare). Of any
    other champion the rows it trained on are not kept: every sample, where it may have
    trained on some, which can only favour it."""
    version = loaded.version
    kept = (
        registry.file(loaded.manifest, REFERENCE_FILE)
        if loaded.manifest.verdict.get("cross_validation")
        else None
    )
    if kept is not None:
        reference = pq.read_table(io.BytesIO(kept))
        if all(c.name in reference.column_names for c in config.contract.columns):
            names = [c.name for c in config.contract.columns]
            seen = training.sample_keys(TableColumns(reference.select(names), config.contract))
            new = ~np.isin(training.sample_keys(TableColumns(samples, config.contract)), seen)
            rows = np.flatnonzero(new)
            return rows, (
                f"compared with v{version} on the {len(rows)} of this run's "
                f"{samples.num_rows} rows it did not train on (it trained on every row of "
                "its reference set), beside the candidate's out-of-fold predictions of them"
                if len(rows)
                else f"every row of this run is one v{version} trained on, so there is "
                "nothing new to compare it on"
            )
    return np.arange(samples.num_rows), (
        f"v{version} is scored on this run's {samples.num_rows} rows, some of which it may "
        "have trained on, against the candidate's out-of-fold predictions, made by models "
        "that never saw the row: this can only favour the champion"
    )


def _samples(dataset: ParsedDataset, config: PipelineConfig, how: training.SplitPlan) -> pa.Table:
    """Every sample of ``dataset`` by the split plan ``how``, in the order train
    cross-validated them (``training.Split.samples``)."""
    samples = training.split(dataset, config, how).samples
    return snapshot.arrow(dataset, config.contract).take(samples)


def _on_reference(
    champion: dict[str, Any] | None,
    reference: dict[str, Any] | None,
    live: dict[str, Any] | None,
    blessed: bool,
    reasons: list[str],
    notes: list[str],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """The champion with its metrics on its reference set kept (for the version and
    its card), the reference set the gate and the promotion judge on, and whether the
    candidate stays blessed; its reasons and notes are added to ``reasons`` and
    ``notes``. A drift policy's retrain whose monitoring report validate read
    (``live``) is not judged on the reference set: what the served version is asked
    has left it."""
    if champion is None or reference is None:
        return champion, None, blessed
    kept = {k: reference[k] for k in ("rows", "metrics", "champion_metrics")}
    champion = {**champion, "reference": kept}
    if live is not None:
        notes.append(
            f"not judged on v{reference['version']}'s reference set: what the served "
            f"version is asked drifted from it in {', '.join(live['drifted'])} "
            f"({live['monitoring_report']}), the change this retrain answers; its "
            "metrics there are reported"
        )
        return champion, None, blessed
    reasons += [
        f"on v{reference['version']}'s reference set ({reference['rows']} rows): {reason}"
        for reason in reference["verdict"]["reasons"]
    ]
    return champion, reference, blessed and reference["verdict"]["blessed"]


def _promotion(
    config: PipelineConfig,
    champion: dict[str, Any] | None,
    metrics: dict[str, float],
    reference: dict[str, Any] | None,
    cross_validated: bool,
) -> dict[str, Any]:
    """Whether the candidate becomes the champion (``promote``), why, and every
    comparison with the champion it was decided on."""
    if champion is None:
        return {"promote": True, "promotion": "the first model: it becomes the champion"}
    if not champion["comparable"]:
        return {
            "promote": True,
            "promotion": f"v{champion['version']} cannot score this data "
            f"({champion['why']}): the candidate becomes the champion",
        }
    if champion["metrics"] is None:
        return {
            "promote": False,
            "promotion": f"v{champion['version']} stays the champion: "
            + champion["compared_on"]["why"],
        }
    own = "cross-validation" if cross_validated else "holdout"
    sets = {own: evaluation.compare(config.gate, metrics, champion["metrics"])}
    if reference is not None:
        sets[f"v{reference['version']} reference set"] = evaluation.compare(
            config.gate, reference["metrics"], reference["champion_metrics"]
        )
    worse = [
        f"on the {name}: {c.text}"
        for name, cs in sets.items()
        for c in cs
        if not c.at_least_as_good
    ]
    promote = not worse
    return {
        "promote": promote,
        "promotion": (
            f"at least as good as v{champion['version']} on every gated metric: "
            "it becomes the champion"
            if promote
            else f"v{champion['version']} stays the champion: " + "; ".join(worse)
        ),
        "comparisons": {
            name: [{**dataclasses.asdict(c), "text": c.text} for c in cs]
            for name, cs in sets.items()
        },
    }


def _champion_version(config: PipelineConfig, registry: Registry) -> LoadedVersion | None:
    """The champion, its signed manifest verified and its model checked against it."""
    alias = registry.alias(config.model_name, CHAMPION)
    if alias is None:
        return None
    return registry.load(config.model_name, alias.version)


def _champion(
    loaded: LoadedVersion | None, config: PipelineConfig
) -> tuple[_Scores | None, dict[str, Any] | None]:
    """What scores the champion on this hold-out, and how it is described; neither for
    the first model, no scores for a champion that cannot read this data."""
    if loaded is None:
        return None, None
    schema = FeatureSchema.from_dict(loaded.manifest.features)
    names = {column.name for column in config.contract.columns}
    missing = [name for name in schema.names if name not in names]
    if missing or schema.objective != config.objective:
        # The contract changed under the champion: it cannot score this data.
        return None, {
            "version": loaded.version,
            "metrics": None,
            "comparable": False,
            "why": f"champion needs columns {missing} / objective {schema.objective}",
        }
    booster = lgb.Booster(model_str=loaded.model_text.decode())
    return _Scores(booster, schema, config), {"version": loaded.version, "comparable": True}


def _reference(
    config: PipelineConfig,
    registry: Registry,
    loaded: LoadedVersion | None,
    champion: dict[str, Any] | None,
    candidate: lgb.Booster,
    schema: FeatureSchema,
) -> dict[str, Any] | None:
    """Candidate and champion on the champion's reference set, judged by the change
    thresholds, a row group at a time; None for the first model or a champion without
    a comparable set."""
    if loaded is None or champion is None or not champion["comparable"]:
        return None
    data = registry.file(loaded.manifest, REFERENCE_FILE)  # against the verified manifest
    if data is None:
        return None
    reference = pq.ParquetFile(io.BytesIO(data))
    if any(c.name not in reference.schema_arrow.names for c in config.contract.columns):
        return None  # kept under another contract: its columns are not this data's
    champion_booster = lgb.Booster(model_str=loaded.model_text.decode())
    scores = (
        _Scores(candidate, schema, config),
        _Scores(champion_booster, FeatureSchema.from_dict(loaded.manifest.features), config),
    )
    for group in range(reference.num_row_groups):
        batch = reference.read_row_group(group)
        for score in scores:
            score.add(batch)
    candidate_metrics, champion_metrics = (score.metrics() for score in scores)
    verdict = evaluation.judge(_changes_only(config), candidate_metrics, champion_metrics)
    return {
        "version": loaded.version,
        "rows": reference.metadata.num_rows,
        "metrics": candidate_metrics,
        "champion_metrics": champion_metrics,
        "verdict": verdict.to_dict(),
    }
