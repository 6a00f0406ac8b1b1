"""When the data legitimately changes, from the command line: a refused upload names
its new values and points at ``contract diff``; ``contract accept`` makes the change a
new contract version and retrains; ``bless`` serves a candidate the gate rejected, on
the record. On vega-datasets' iris (150 flowers; the first upload has no virginica,
whose petals and sepals are longer than the other species' ever are)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from modelrail.entry import cli
from tests.conftest import settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("contract-evolution")]


def _run_id(output: str) -> str:
    found = re.search(r"^run (run-[0-9a-f]{20}): ", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def test_a_changed_upload_is_accepted_as_a_new_contract_and_a_rejected_one_blessed(
    tmp_path: Path,
) -> None:
    iris = pd.read_json(resources.files("vega_datasets") / "_data" / "iris.json")
    iris[iris.species != "virginica"].to_csv(tmp_path / "old.csv", index=False)
    iris.to_csv(tmp_path / "all.csv", index=False)
    env = settings_env(tmp_path / "home", MODELRAIL_ACTOR="ci-bot")
    runner = CliRunner()

    def modelrail(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli.main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.stdout

    config = tmp_path / "m" / "pipeline.toml"
    try:
        modelrail("init", str(tmp_path / "old.csv"), "--target", "petalWidth", "--name", "iris",
                  "--out", str(tmp_path / "m"))  # fmt: skip
        modelrail("upload", str(tmp_path / "old.csv"))

        refused = modelrail("upload", str(tmp_path / "all.csv"), code=1)
        run_id = _run_id(refused)
        diff = modelrail("contract", "diff", run_id)
        accepted = modelrail("contract", "accept", run_id, "--reason", "virginica joined")
        first = modelrail("contract", "show", "--version", "1")
        current = modelrail("contract", "show")
        retrained = modelrail("runs", _run_id(accepted))
        again = runner.invoke(cli.main, ["contract", "accept", run_id, "--reason", "x"], env=env)
        none = runner.invoke(cli.main, ["contract", "diff", _run_id(accepted)], env=env)

        # The contract the installation holds now, written back to the file; then a gate
        # no candidate passes, and a person who serves the rejected one anyway.
        (tmp_path / "m" / "iris.contract.json").write_text(current)
        config.write_text(config.read_text().replace("min = 0.0", "min = 0.999"))
        modelrail("add", str(config))
        rejected = modelrail("upload", str(tmp_path / "all.csv"), "--name", "again.csv", code=1)
        rejected_id = _run_id(rejected)
        blessed = modelrail("bless", rejected_id, "--reason", "r2 is noisy on 30 rows")
        shown = modelrail("runs", rejected_id)
        listed = modelrail("runs")
    finally:  # the uploads started the model's staging server: stop it
        runner.invoke(cli.main, ["down"], env=env)

    # The refusal names the new value and where to look next.
    _says(refused, "'virginica'", f"modelrail contract diff {run_id}")
    _says(
        diff,
        "column 'species': add category 'virginica' (50 row(s))",
        "column 'petalLength': max ",
        f"modelrail contract accept {run_id}",
    )
    _says(
        accepted,
        "contract version 2 written",
        ": deployed",
        # The species' drift past the fail limit is what the person accepted.
        "reported, not refused: ci-bot accepted contract version 2 on this upload",
    )
    assert "virginica" not in first
    assert json.loads(current)["version"] == 2
    assert "virginica" in json.loads(current)["columns"][-1]["categories"]
    _says(retrained, "  contract  iris version 2")
    # Refusals reach ``modelrail``'s entry point (``cli.run``), which prints them.
    assert (again.exit_code, none.exit_code) == (1, 1)
    _says(str(again.exception), "changed since the change was proposed")
    _says(str(none.exception), "has no proposed contract change: it was not refused (deployed)")

    _says(rejected, ": rejected")
    _says(
        blessed, f"run {rejected_id}: blessed by ci-bot", ": deployed", "blessed by hand by ci-bot"
    )
    _says(shown, "  blessed   by hand by ci-bot at ", "r2 is noisy on 30 rows")
    _says(listed, "    blessed by hand by ci-bot: r2 is noisy on 30 rows")


def _says(output: str, *parts: str) -> None:
    for part in parts:
        assert part in output, output
