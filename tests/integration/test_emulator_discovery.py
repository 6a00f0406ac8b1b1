"""Finding the emulators, and what a user is told when one is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelrail.entry import stack as stack_cli
from modelrail.localcloud import emulators


def test_a_missing_pubsub_emulator_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(emulators, "sdk_roots", lambda: [tmp_path / "google-cloud-sdk"])

    with pytest.raises(emulators.EmulatorMissing) as missing:
        emulators.find_pubsub_emulator()

    message = str(missing.value)
    assert "apt-get install google-cloud-cli-pubsub-emulator" in message
    assert "gcloud components install pubsub-emulator" in message
    assert str(tmp_path / "google-cloud-sdk") in message


def test_the_emulator_is_found_under_an_sdk_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "sdk" / emulators.PUBSUB_EMULATOR_SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(emulators, "sdk_roots", lambda: [tmp_path / "nothing", tmp_path / "sdk"])
    monkeypatch.setattr(emulators, "_java_available", lambda: True)

    assert emulators.find_pubsub_emulator() == script


def test_an_emulator_without_java_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "sdk" / emulators.PUBSUB_EMULATOR_SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(emulators, "sdk_roots", lambda: [tmp_path / "sdk"])
    monkeypatch.setattr(emulators, "_java_available", lambda: False)

    with pytest.raises(emulators.EmulatorMissing, match="no Java runtime"):
        emulators.find_pubsub_emulator()


def test_up_refuses_to_start_without_the_emulators(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stack_cli, "missing_emulators", lambda: "the emulator is not installed")
    monkeypatch.setenv("MODELRAIL_HOME", str(tmp_path))

    result = CliRunner().invoke(stack_cli.up, ["--emulators"])

    assert result.exit_code == 3
    assert "the emulator is not installed" in result.output
    assert not (tmp_path / "stack").exists()


def test_up_without_emulators_is_a_usage_error() -> None:
    result = CliRunner().invoke(stack_cli.up, [])

    assert result.exit_code == 2
    assert "--emulators" in result.output


def test_the_fake_gcs_server_binary_ships_in_the_wheel() -> None:
    binary = emulators.find_fake_gcs_server()

    assert binary.is_file()
    assert binary.stat().st_mode & 0o111
