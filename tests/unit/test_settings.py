"""Both settings classes read the environment through one table each: what ``to_env``
writes, a child's ``from_env`` reads back as the same settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelrail.kernel.errors import ConfigError
from modelrail.settings import environment
from modelrail.settings.process import _VARIABLES as PIPELINE_VARIABLES
from modelrail.settings.process import Settings
from modelrail.settings.service import _VARIABLES as SERVICE_VARIABLES
from modelrail.settings.service import ServiceSettings


def test_every_settings_field_but_the_derived_ones_has_a_variable() -> None:
    for cls, table, derived in (
        (Settings, PIPELINE_VARIABLES, {"storage_root", "user"}),
        (ServiceSettings, SERVICE_VARIABLES, set()),
    ):
        fields = {field.name for field in dataclasses.fields(cls)}
        assert {variable.field for variable in table} == fields - derived
        names = [variable.name for variable in table]
        assert len(names) == len(set(names)), cls


def test_pipeline_settings_survive_the_trip_to_a_child_process(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MODELRAIL_MODE": "emulator",
            "MODELRAIL_HOME": str(tmp_path / "home"),
            "MODELRAIL_CODE_VERSION": "abc123",
            "MODELRAIL_STAGING_PORT": "9000",
            "MODELRAIL_MAX_EVENT_AGE_S": "60.5",
            "MODELRAIL_SIGNING_KEY": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "MODELRAIL_COMPILER": "cc",
            "USER": "someone",
        }
    )
    child = Settings.from_env({**settings.to_env(), "USER": "someone"})
    assert child == settings
    assert (child.staging_port, child.max_event_age_s, child.storage_root) == (9000, 60.5, None)


def test_service_settings_survive_the_trip_to_a_child_process() -> None:
    service = ServiceSettings.from_env(
        {
            "MODELRAIL_MODEL_NAME": "cars",
            "MODELRAIL_MODEL_ALIAS": "staging",
            "MODELRAIL_REQUIRE_MODEL": "1",
            "MODELRAIL_REQUEST_TIMEOUT_S": "2.5",
            "PORT": "9100",
        }
    )
    assert ServiceSettings.from_env(service.to_env()) == service
    assert (service.require_model, service.bind) == (True, "0.0.0.0:9100")


def test_a_variable_that_does_not_parse_is_named() -> None:
    with pytest.raises(ConfigError, match="MODELRAIL_STAGING_PORT='eighty'"):
        Settings.from_env({"MODELRAIL_STAGING_PORT": "eighty", "MODELRAIL_CODE_VERSION": "x"})
    with pytest.raises(ConfigError, match="MODELRAIL_WORKERS='two'"):
        ServiceSettings.from_env({"MODELRAIL_MODEL_VERSION": "1", "MODELRAIL_WORKERS": "two"})


def test_an_empty_variable_is_unset() -> None:
    table = (environment.Variable("port", "PORT", int),)
    assert environment.read(table, {"PORT": ""}) == {}
