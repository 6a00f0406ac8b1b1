"""The CLI says why: a passing run prints its gate, the champion decision and its drift
warnings in a few lines; a contract violation prints the bad values with their rows.
On scikit-learn's breast cancer data (569 tumours), shipped in the package."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer

from modelrail.entry import cli
from tests.conftest import settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("cli-says-why")]


def test_a_passing_run_says_why_and_a_refused_one_names_its_values(tmp_path: Path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    frame.to_csv(tmp_path / "tumours.csv", index=False)
    env = settings_env(tmp_path / "home")
    runner = CliRunner()

    def modelrail(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli.main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    try:
        modelrail(
            "init",
            str(tmp_path / "tumours.csv"),
            "--target",
            "target",
            "--out",
            str(tmp_path / "m"),
        )
        config = tmp_path / "m" / "pipeline.toml"
        # Every shift in the data is worth a warning here, none refuses it.
        config.write_text(config.read_text() + "\n[drift]\nwarn = 0.0\nfail = 10.0\n")
        modelrail("add", str(config))

        first = modelrail("upload", str(tmp_path / "tumours.csv"))
        frame.sample(frac=0.9, random_state=1).to_csv(tmp_path / "later.csv", index=False)
        later = modelrail("upload", str(tmp_path / "later.csv"))
        broken = frame.copy()
        broken.loc[[4, 9], "target"] = "borderline"
        broken.to_csv(tmp_path / "broken.csv", index=False)
        refused = modelrail("upload", str(tmp_path / "broken.csv"), code=1)

    finally:  # the uploads started the model's staging server: stop it
        runner.invoke(cli.main, ["down"], env=env)

    assert "  gate: auc=" in first
    assert "  champion: the first model: it becomes the champion" in first
    assert "  judged by the hold-out: " in first  # 569 tumours: no cross-validation
    assert "  drift:" not in first  # no champion, nothing to drift from
    assert "vs champion" in later.split("  gate: ")[1].splitlines()[0]
    assert "  champion: " in later
    drift = [line for line in later.splitlines() if line.startswith("  drift: ")]
    assert drift
    assert "PSI" in drift[0]
    assert "(warn above 0.0)" in drift[0]
    assert "values 'borderline'" in refused
    assert "rows [5, 10]; values" in refused  # data rows, counted from 1
