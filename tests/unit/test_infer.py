"""modelrail init's inference: each rule on a small CSV, the files it writes, and the
validation of what it wrote against the file it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks
from modelrail.entry import init
from modelrail.kernel.errors import ConfigError

ROWS = 40


def _csv(tmp_path: Path, target_values: list[str] | None = None) -> Path:
    labels = target_values or ["yes" if i % 3 else "no" for i in range(ROWS)]
    lines = ["id,name,joined,grade,plan_code,score,city,member,constant,notes,label"]
    for i in range(ROWS):
        lines.append(
            f"{i + 1},person {i},2024-{i % 12 + 1:02d}-0{i % 9 + 1},{i % 6 + 1}.0,"
            f"{['1.0', '2', '3.0', '1', '2.0', '3'][i % 6]},"
            f"{10 + i * 0.5},{['Oslo', 'Lima', 'Pune'][i % 3]},{'true' if i % 2 else 'false'},"
            f"x,,{labels[i]}"
        )
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _entries(inference: init.Inference) -> dict[str, dict[str, object]]:
    return {d.entry["name"]: d.entry for d in inference.decisions}


def test_each_column_gets_its_type_role_and_limits(tmp_path: Path) -> None:
    inference = init.infer(_csv(tmp_path), "label")

    entries = _entries(inference)
    assert inference.objective == "binary"
    assert entries["id"] == {"name": "id", "type": "integer", "role": "ignore", "nullable": True}
    assert entries["name"]["type"] == "text"
    assert entries["name"]["role"] == "ignore"
    assert (entries["joined"]["type"], entries["joined"]["role"]) == ("datetime", "ignore")
    # Written 1.0 ... 6.0: whole numbers on a scale, not codes; 1 ... 6 widened by 10 %
    # of the span on each side, never below 0.
    assert entries["grade"] == {
        "name": "grade",
        "type": "integer",
        "nullable": False,
        "min": 0,
        "max": 7,
    }
    assert entries["plan_code"]["categories"] == ["1", "2", "3"]  # 1, 1.0, 2, 2.0, ...
    # Observed 10 ... 29.5, widened by 10 % of the span on each side, never below 0.
    assert (entries["score"]["min"], entries["score"]["max"]) == (8.05, 31.5)
    assert entries["city"]["categories"] == ["Lima", "Oslo", "Pune"]
    assert entries["member"]["type"] == "boolean"
    assert (entries["constant"]["role"], entries["notes"]["role"]) == ("ignore", "ignore")
    assert entries["label"]["categories"] == ["no", "yes"]
    assert inference.decisions[0].entry["name"] == "id"  # the file's order
    whys = {d.entry["name"]: d.why for d in inference.decisions}
    assert "identifier" in whys["id"]
    assert "no information" in whys["constant"]
    assert "every value is missing" in whys["notes"]
    assert "a count or a scale, not codes" in whys["grade"]
    assert "named as codes (ends in 'code')" in whys["plan_code"]
    rules = {d.entry["name"]: d.rule for d in inference.decisions}
    assert rules == {
        "id": "identifier-evenly-spaced",
        "name": "text-unique",
        "joined": "date",
        "grade": "count-or-scale",
        "plan_code": "code-name",
        "score": "quantity",
        "city": "text-category",
        "member": "boolean",
        "constant": "one-value",
        "notes": "no-values",
        "label": "target-binary",
    }


@pytest.mark.parametrize(
    ("labels", "objective"),
    [
        (["a", "b"], "binary"),
        (["1", "2", "3"], "multiclass"),  # a few whole-number labels are classes
        (["red", "green", "blue", "red"], "multiclass"),
        ([str(i * 1.5) for i in range(ROWS)], "regression"),
        ([str(i) for i in range(ROWS)], "regression"),  # many whole numbers: a quantity
    ],
)
def test_the_objective_follows_the_targets_values(
    tmp_path: Path, labels: list[str], objective: str
) -> None:
    values = [labels[i % len(labels)] for i in range(ROWS)]

    assert init.infer(_csv(tmp_path, values), "label").objective == objective


@pytest.mark.parametrize(
    ("labels", "objective", "message"),
    [
        (["a", "b", "c"], "binary", "has 3 distinct values; binary needs exactly 2"),
        (["a", "b"], "multiclass", "multiclass takes 3 to 100"),
        (["a", "b"], "regression", r"holds text \(e\.g\. 'a'\): regression needs numbers"),
    ],
)
def test_an_objective_the_target_cannot_have_is_refused(
    tmp_path: Path, labels: list[str], objective: str, message: str
) -> None:
    values = [labels[i % len(labels)] for i in range(ROWS)]

    with pytest.raises(ConfigError, match=message):
        init.infer(_csv(tmp_path, values), "label", objective=objective)


def test_an_unknown_target_lists_the_columns(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--target 'species' is not a column .*'city'"):
        init.infer(_csv(tmp_path), "species")


def test_repeated_column_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    path.write_text("a,b,a\n1,2,3\n")

    with pytest.raises(ConfigError, match=r"repeats column names \['a'\]"):
        init.infer(path, "b")


def test_written_files_load_and_the_file_they_came_from_passes(tmp_path: Path) -> None:
    labels = ["yes" if i % 3 else "no" for i in range(ROWS)]
    labels[5] = labels[17] = ""  # two rows without a target
    csv_path = _csv(tmp_path, labels)
    inference = init.infer(csv_path, "label", name="people")

    config_path, contract_path = init.write(inference, tmp_path / "out")

    config = PipelineConfig.load(config_path)
    assert config.objective == "binary"
    assert [g.name for g in config.gate] == ["auc", "binary_logloss"]
    assert json.loads(contract_path.read_text())["max_missing_target_fraction"] == 0.1
    report, parsed = checks.validate(csv_path.read_bytes(), config.contract)
    assert report.passed, report.problems
    assert (report.rows, report.dropped_missing_target, parsed.rows) == (ROWS - 2, 2, ROWS - 2)
    with pytest.raises(ConfigError, match="already exist: pass --force"):
        init.write(inference, tmp_path / "out")
    init.write(inference, tmp_path / "out", force=True)


def test_the_summary_says_what_was_decided_and_what_to_check(tmp_path: Path) -> None:
    labels = ["yes" if i % 3 else "no" for i in range(ROWS)]
    labels[3] = "NA"
    text = init.summary(init.infer(_csv(tmp_path, labels), "label"))

    assert text.startswith("people: binary, 40 rows")
    assert "  grade      feature  integer [0, 7]\n" in text
    assert "  plan_code  feature  category {1, 2, 3}\n" in text
    assert "1 of 40 rows have no target" in text
    assert "ignored columns ['id', 'name', 'joined', 'constant', 'notes']" in text


def test_a_large_file_is_sampled_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(init, "SAMPLE_ROWS", 30)

    inference = init.infer(_csv(tmp_path), "label")

    assert inference.sampled
    assert inference.rows == 30
    assert any("more than 30 rows" in note for note in inference.notes)


def _column(tmp_path: Path, name: str, values: list[str]) -> init.Decision:
    """The decision about one column ``name`` holding ``values`` (cycled over 60 rows),
    beside another feature and a target."""
    lines = [f"{name},other,label"]
    lines += [f"{values[i % len(values)]},{i % 5 * 0.5},{i % 2}" for i in range(60)]
    path = tmp_path / "one.csv"
    path.write_text("\n".join(lines) + "\n")
    [decision] = [d for d in init.infer(path, "label").decisions if d.entry["name"] == name]
    return decision


@pytest.mark.parametrize(
    ("values", "entry", "rule"),
    [
        # A gap 96 times the others: 99 is a code ("not asked"), not the top of a scale.
        (["1", "2", "3", "99"], {"type": "category"}, "code-gaps"),
        (["-9", "1", "2", "3", "4"], {"type": "category"}, "code-gaps"),
        # Bedrooms, months, income bands: ordered quantities, whatever their count.
        (["1", "2", "3", "4", "5", "6"], {"type": "integer", "min": 0, "max": 7}, "count-or-scale"),
        ([str(m) for m in range(1, 13)], {"type": "integer", "max": 14}, "count-or-scale"),
        (["3", "4", "5", "6", "8"], {"type": "integer"}, "count-or-scale"),
        (["0", "1"], {"type": "integer"}, "count-or-scale"),
        # Written with leading zeros: codes kept as text, zeros and all.
        (
            ["02134", "10001", "02134", "60601"],
            {"categories": ["02134", "10001", "60601"]},
            "code-leading-zeros",
        ),
    ],
)
def test_whole_numbers_are_codes_only_on_evidence(
    tmp_path: Path, values: list[str], entry: dict[str, object], rule: str
) -> None:
    decision = _column(tmp_path, "answer", values)

    assert {k: decision.entry.get(k) for k in entry} == entry
    assert decision.rule == rule


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("zip_code", "code-name"),
        ("storeId", "code-name"),
        ("customer_type", "code-name"),
        ("class", "code-name"),
        ("class_size", "count-or-scale"),  # the last word names what it is
        ("PID", "count-or-scale"),
    ],
)
def test_a_name_ending_in_a_code_word_makes_whole_numbers_codes(
    tmp_path: Path, name: str, rule: str
) -> None:
    decision = _column(tmp_path, name, ["1", "2", "3", "4"])

    assert decision.rule == rule
    assert decision.entry["type"] == ("category" if rule == "code-name" else "integer")


def test_an_identifier_is_evenly_spaced_or_named_so(tmp_path: Path) -> None:
    rows = [str(1000 + 7 * i) for i in range(60)]  # an auto-increment id, step 7
    growing = [str(1000 + i * i) for i in range(60)]  # unique, growing, unevenly

    counter = _column(tmp_path, "ticket", rows)
    measurement = _column(tmp_path, "visitors", growing)
    named = _column(tmp_path, "order_id", growing)

    assert (counter.entry["role"], counter.rule) == ("ignore", "identifier-evenly-spaced")
    assert counter.evidence["steps"] == "constant 7"
    assert (measurement.entry["type"], measurement.rule) == ("integer", "measurement-uneven")
    assert measurement.evidence["steps"] == "1 to 117"
    assert (named.entry["role"], named.rule) == ("ignore", "identifier-name")


def test_the_summary_explains_each_decision_with_its_evidence(tmp_path: Path) -> None:
    text = init.summary(init.infer(_csv(tmp_path), "label"), explain=True)

    assert (
        "  grade\n"
        "    decided   integer, feature, not nullable (no value missing), range [0, 7] "
        "(observed 1 to 6, widened by 10% of the span on each side, not below 0: never "
        "negative)\n"
        "    rule      count-or-scale: 6 whole-number values 1 to 6 (none missing between): a "
        "count or a scale, not codes; make it a category if they are codes\n"
        "    evidence  rows 40, missing 0, distinct 6, whole numbers yes, unique no, order "
        "unordered, steps constant 1, name no code word, observed 1 to 6, never negative "
        "yes, none missing between yes, largest gap 1, median gap 1, rows per value 6.7\n"
    ) in text
    assert "  id\n    decided   integer, ignore, nullable (never given to the model)\n" in text
    assert (
        "evidence  rows 40, missing 0, distinct 40, whole numbers yes, unique yes, order " in text
    )
    assert "    rule      target-binary: target: 2 classes (no 35%, yes 65%)\n" in text
    assert "categories {1, 2, 3}" in text


def test_a_files_name_is_made_a_model_name_and_a_name_given_must_be_one(
    tmp_path: Path,
) -> None:
    source = _csv(tmp_path).read_text()
    for stem, made in (("House_Prices", "house-prices"), ("2024 sales", "data-2024-sales")):
        path = tmp_path / f"{stem}.csv"
        path.write_text(source)
        assert init.infer(path, "label").name == made

    with pytest.raises(ConfigError, match="model name 'House_Prices' must be"):
        init.infer(tmp_path / "House_Prices.csv", "label", name="House_Prices")
