"""Bounded inputs: an upload too large, or with a line too long, is refused unread."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from modelrail.domain.config import Limits
from modelrail.domain.dataset import checks
from tests.fakes import InMemoryStore
from tests.unit.conftest import Harness

pytestmark = pytest.mark.fault


def _limit(harness: Harness, limits: Limits) -> None:
    limited = dataclasses.replace(harness.container.config, limits=limits)
    harness.container.models.config = lambda name: limited  # type: ignore[method-assign]


def test_an_upload_over_the_size_limit_is_refused_from_its_listing_unread(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _limit(harness, Limits(max_upload_bytes=1000, max_line_bytes=2**20))
    read = InMemoryStore.read
    read_keys: list[str] = []

    def recording(self: InMemoryStore, key: str, **kwargs: object) -> object:
        read_keys.append(key)
        return read(self, key, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(InMemoryStore, "read", recording)
    harness.upload(penguins_csv)

    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "contract_violation"
    [problem] = failed["error"]["details"]["problems"]
    assert problem["check"] == "upload_size"
    assert f"{len(penguins_csv):,} bytes, more than the 1,000" in problem["message"]
    assert not [key for key in read_keys if key.startswith("uploads/penguins/")]


def test_a_line_over_the_limit_is_refused_naming_it_and_no_event_carries_it(
    harness: Harness, penguins_csv: bytes
) -> None:
    _limit(harness, Limits(max_upload_bytes=2**27, max_line_bytes=1000))
    lines = penguins_csv.splitlines(keepends=True)
    runaway = lines[3].replace(b"Torgersen", b"T" * 50_000, 1)
    harness.upload(b"".join([*lines[:3], runaway, *lines[4:]]))

    harness.run()

    [failed] = harness.published("pipeline-failed")
    [problem] = failed["error"]["details"]["problems"]
    assert problem["check"] == "line_length"
    assert problem["message"].startswith("line 4 is 50,0")
    assert len(orjson.dumps(failed)) < 10_000  # the cell itself is in no event


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_the_longest_line_is_found_with_any_line_ending(newline: bytes) -> None:
    data = newline.join([b"a,b", b"1,2", b"3," + b"4" * 100, b"5,6"])

    problem = checks.long_line(data, 50)

    assert problem is not None
    assert problem.message.startswith("line 3 is 102 bytes long")
    assert checks.long_line(data, 102) is None


def test_a_file_without_line_breaks_is_one_line() -> None:
    problem = checks.long_line(b"x" * 5000, 4096)

    assert problem is not None
    assert problem.message.startswith("line 1 is 5,000 bytes long")
