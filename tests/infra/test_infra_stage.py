"""`make stage`: self-contained Cloud Functions source folders, byte-for-byte
reproducible, with hash-checked requirements (tests/installed runs one from its folder
alone)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.infra_checks import REPO_ROOT, load_topology

pytestmark = pytest.mark.infra

JOB_REQUIREMENTS = REPO_ROOT / "services" / "train-job" / "requirements.txt"
FUNCTION_REQUIREMENTS = REPO_ROOT / "functions" / "requirements.txt"
FUNCTION_LOCK = REPO_ROOT / "functions" / "requirements.lock"
SERVED_STAGE = "validate"


def load_stage_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stage_functions", REPO_ROOT / "scripts" / "stage_functions.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stage_script() -> ModuleType:
    return load_stage_script()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, stage_script: ModuleType) -> Path:
    out = tmp_path_factory.mktemp("stage")
    assert stage_script.main(["--out", str(out)]) == 0
    return out


def consumers() -> list[str]:
    return sorted({s["consumer"] for s in load_topology()["subscriptions"] if s.get("consumer")})


@pytest.mark.parametrize("stage", consumers())
def test_each_function_folder_is_self_contained(staged: Path, stage: str) -> None:
    folder = staged / stage
    for name in ("main.py", "requirements.txt", "topology.yaml"):
        assert (folder / name).is_file(), name
    assert (folder / "modelrail" / "__init__.py").is_file()
    assert (folder / "modelrail" / "schemas" / "events" / "retrain-requested.json").is_file()
    # No model's definition: every function reads each model's from the artifact bucket.
    assert not (folder / "pipeline.toml").exists()
    assert not (folder / "schemas").exists()
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    assert not list(folder.rglob("__pycache__"))
    assert (folder / "requirements.txt").read_bytes() == FUNCTION_LOCK.read_bytes()
    names = set(requirement_entries((folder / "requirements.txt").read_text()))
    assert {"functions-framework", "lightgbm", "pandas", "google-cloud-pubsub"} <= names
    assert "scikit-learn" not in names
    assert "pytest" not in names


def requirement_entries(text: str) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, sha256 hashes)} of a requirements file, one entry per
    requirement with its continuation lines."""
    entries = {}
    for entry in re.split(r"\n(?=\S)", text):
        if not entry.strip() or entry.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        assert match, f"not an exact pin: {entry!r}"
        entries[match[1]] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return entries


def test_staged_requirements_are_hash_pinned_as_constraints_txt_pins(
    staged: Path, stage_script: ModuleType
) -> None:
    """Every requirement carries its hashes, so the buildpack's pip installs in
    hash-checking mode; the versions are constraints.txt's, the closure the functions'
    extras need."""
    entries = requirement_entries((staged / SERVED_STAGE / "requirements.txt").read_text())
    constraints = stage_script.read_constraints(REPO_ROOT / "constraints.txt")
    closure = requirement_entries(stage_script.requirements_text(stage_script.FUNCTION_EXTRAS))

    assert [name for name, (_, hashes) in entries.items() if not hashes] == []
    pins = {name: version for name, (version, _) in entries.items()}
    assert {name: constraints.get(name) for name in pins} == pins
    wanted = {name: version for name, (version, _) in closure.items()}
    assert pins == wanted, stage_script.REGENERATE_LOCK


def test_the_functions_lock_source_is_current(stage_script: ModuleType) -> None:
    expected = stage_script.requirements_text(stage_script.FUNCTION_EXTRAS)
    assert FUNCTION_REQUIREMENTS.read_text() == expected, stage_script.REGENERATE_LOCK


@pytest.mark.parametrize("mutation", ["stale", "unhashed"])
def test_staging_refuses_a_stale_or_unhashed_lock(
    stage_script: ModuleType, tmp_path: Path, mutation: str
) -> None:
    text = FUNCTION_LOCK.read_text()
    name, (version, _) = next(iter(requirement_entries(text).items()))
    pin = f"{name}=={version}"
    if mutation == "stale":  # another version than constraints.txt's
        broken = text.replace(f"{pin} \\\n", f"{pin}.post1 \\\n", 1)
        problem = f"differ on {pin}, {pin}.post1"
    else:  # the pin without its hashes
        hashed = rf"^{re.escape(pin)} \\\n(?:\s+--hash=\S+ \\\n)*\s+--hash=\S+\n"
        broken = re.sub(hashed, f"{pin}\n", text, count=1, flags=re.M)
        problem = f"no hash for {name}"
    assert broken != text
    lock = tmp_path / "requirements.lock"
    lock.write_text(broken)

    with pytest.raises(SystemExit, match=re.escape(problem)):
        stage_script.locked_requirements(lock, stage_script.FUNCTION_EXTRAS)


def test_staging_is_reproducible(staged: Path, stage_script: ModuleType, tmp_path: Path) -> None:
    assert stage_script.main(["--out", str(tmp_path), "--only", SERVED_STAGE]) == 0
    again = stage_script.tree_digest(tmp_path / SERVED_STAGE)
    assert again == stage_script.tree_digest(staged / SERVED_STAGE)
    mtimes = {p.stat().st_mtime for p in (tmp_path / SERVED_STAGE).rglob("*")}
    assert mtimes == {stage_script.FIXED_MTIME}


def test_training_image_requirements_are_current(stage_script: ModuleType) -> None:
    expected = stage_script.requirements_text(stage_script.JOB_EXTRAS)
    assert JOB_REQUIREMENTS.read_text() == expected, (
        "regenerate: .venv/bin/python scripts/stage_functions.py --only validate "
        "--job-requirements services/train-job/requirements.txt"
    )
    names = {line.split("==")[0] for line in expected.splitlines() if "==" in line}
    # scikit-learn is there for lightgbm.dask's estimators (training on Dask) alone;
    # the functions' closure still has none (above).
    assert "scikit-learn" in names
    assert not names & {"functions-framework", "flask", "gunicorn", "pytest"}
