"""Build the Cloud Functions source folders: ``make stage``.

Cloud Functions installs ``requirements.txt`` and runs ``main.py``; it never runs this
project's packaging. So each stage consumed in topology.yaml gets a self-contained
folder ``build/functions/<stage>/``:

    main.py            functions/<stage>/main.py (and any sibling modules)
    requirements.txt   functions/requirements.lock: the exact pinned closure (from
                       constraints.txt) of modelrail's core dependencies plus the extras
                       a function needs, every distribution with its sha256 hashes, so
                       the buildpack's pip installs in hash-checking mode
    modelrail/         the package (symlinks dereferenced, its event and config schemas
                       inside), found by ``import modelrail``
    topology.yaml      MODELRAIL_TOPOLOGY

No pipeline.toml: every model's definition is read from the installation's artifact
bucket (``modelrail add``), so one function serves every model.

Every file gets a fixed modification time and mode, so the same sources always zip to
the same bytes and Terraform (which names each archive by its content hash) redeploys
only the functions whose folder really changed.

The lock is compiled by ``make image-requirements`` (uv, hashes of the files PyPI
publishes) from ``functions/requirements.txt``, which ``--function-requirements PATH``
writes: the closure above, from the project's environment. Staging refuses a lock whose
pins differ from that closure. ``--job-requirements PATH`` writes the training image's
requirements (extras ``data,distributed,cloud``) the same way; services/train-job/requirements.lock
is compiled from it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_LOCK = REPO_ROOT / "functions" / "requirements.lock"
FUNCTION_EXTRAS = ("data", "functions", "cloud")
JOB_EXTRAS = ("data", "distributed", "cloud")
# 1980-01-01, the earliest time a zip entry can hold.
FIXED_MTIME = 315532800
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache")


def consumers(topology_path: Path) -> list[str]:
    """The stages topology.yaml feeds from a subscription: one function each."""
    topology = yaml.safe_load(topology_path.read_text())
    found = {sub["consumer"] for sub in topology["subscriptions"] if sub.get("consumer")}
    return sorted(found)


def read_constraints(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw_line in path.read_text().splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line)
        if match is None:
            raise SystemExit(f"{path}: not an exact pin: {line!r}")
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def project_requirements(pyproject: Path, extras: Iterable[str]) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = [Requirement(spec) for spec in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        wanted.extend(Requirement(spec) for spec in optional[extra])
    return wanted


def _applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    environment = {**default_environment(), "extra": extra}
    return requirement.marker.evaluate(environment)  # type: ignore[arg-type]


def closure(roots: Sequence[Requirement], pins: dict[str, str]) -> dict[str, str]:
    """Every distribution ``roots`` need on Linux/CPython 3.11, pinned as in ``pins``.

    The dependency metadata comes from the installed distributions (``make stage`` runs
    in the project's environment, where constraints.txt installed exactly these pins).
    """
    resolved: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()  # (distribution, extra it was asked with)
    queue: list[tuple[Requirement, str]] = [(req, "") for req in roots]
    while queue:
        requirement, via_extra = queue.pop()
        if not _applies(requirement, via_extra):
            continue
        name = canonicalize_name(requirement.name)
        if name == "modelrail":  # a self-reference: modelrail[extra] inside an extra
            continue
        if name not in pins:
            raise SystemExit(f"{requirement.name} is needed but not pinned in constraints.txt")
        if not requirement.specifier.contains(pins[name], prereleases=True):
            raise SystemExit(
                f"constraints.txt pins {name}=={pins[name]}, {requirement} wants otherwise"
            )
        resolved[name] = pins[name]
        wanted = [extra for extra in ("", *sorted(requirement.extras)) if (name, extra) not in seen]
        if not wanted:
            continue
        seen.update((name, extra) for extra in wanted)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{requirement.name} is not installed: run `make install`") from exc
        if dist.version != pins[name]:
            raise SystemExit(
                f"{name} {dist.version} is installed but constraints.txt pins {pins[name]}: "
                "run `make install`"
            )
        children = [Requirement(spec) for spec in dist.requires or []]
        for extra in wanted:
            queue.extend((child, extra) for child in children)
    return dict(sorted(resolved.items()))


def requirements_text(extras: Sequence[str], repo_root: Path = REPO_ROOT) -> str:
    pins = read_constraints(repo_root / "constraints.txt")
    resolved = closure(project_requirements(repo_root / "pyproject.toml", extras), pins)
    header = (
        f"# Generated by scripts/stage_functions.py from constraints.txt: modelrail's core\n"
        f"# dependencies plus the extras {','.join(extras)}, every transitive pin included.\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in resolved.items())


# One requirement of a uv lock: its pin, then its hashes on continuation lines.
LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:[ \t]*\\\n[ \t]+--hash=\S+)*)", re.M)
LOCK_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
REGENERATE_LOCK = (
    "regenerate: .venv/bin/python scripts/stage_functions.py --only validate "
    "--function-requirements functions/requirements.txt, then make image-requirements"
)


def locked_requirements(lock: Path, extras: Sequence[str], repo_root: Path = REPO_ROOT) -> str:
    """The text of ``lock``, checked: it pins exactly the closure ``extras`` need
    (``requirements_text``) and every pin carries its hashes."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        raise SystemExit(f"{lock} is missing: {REGENERATE_LOCK}") from None
    entries = LOCKED.findall(text)
    locked = {canonicalize_name(name): version for name, version, _ in entries}
    pins = read_constraints(repo_root / "constraints.txt")
    wanted = closure(project_requirements(repo_root / "pyproject.toml", extras), pins)
    if locked != wanted:
        differ = sorted(set(locked.items()) ^ set(wanted.items()))
        listed = ", ".join(f"{name}=={version}" for name, version in differ)
        raise SystemExit(f"{lock} and constraints.txt differ on {listed}: {REGENERATE_LOCK}")
    unhashed = sorted(name for name, _, hashes in entries if not LOCK_HASH.search(hashes))
    if unhashed:
        raise SystemExit(f"{lock} has no hash for {', '.join(unhashed)}: {REGENERATE_LOCK}")
    return text


def defines_handle(main_py: Path) -> bool:
    """Whether main.py binds a top-level ``handle`` (a def or an assignment)."""
    tree = ast.parse(main_py.read_text(), filename=str(main_py))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "handle":
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(target, ast.Name) and target.id == "handle" for target in targets):
                return True
    return False


def _normalise(tree: Path) -> None:
    for path in sorted(tree.rglob("*"), reverse=True):
        path.chmod(0o755 if path.is_dir() else 0o644)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(tree, (FIXED_MTIME, FIXED_MTIME))


def stage_function(
    stage: str,
    out_dir: Path,
    requirements: str,
    functions_dir: Path,
    repo_root: Path = REPO_ROOT,
) -> Path:
    source = functions_dir / stage
    main_py = source / "main.py"
    if not main_py.is_file():
        raise SystemExit(f"topology.yaml names consumer {stage!r} but {main_py} does not exist")
    if not defines_handle(main_py):
        raise SystemExit(f"{main_py} defines no top-level `handle` entry point")
    target = out_dir / stage
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=False, ignore=IGNORED)
    (target / "requirements.txt").write_text(requirements)
    shutil.copytree(
        repo_root / "src" / "modelrail", target / "modelrail", symlinks=False, ignore=IGNORED
    )
    shutil.copyfile(repo_root / "topology.yaml", target / "topology.yaml")
    _normalise(target)
    return target


def tree_digest(tree: Path) -> str:
    """A content hash of a staged folder (paths and bytes), for humans and tests."""
    digest = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "functions")
    parser.add_argument("--functions-dir", type=Path, default=REPO_ROOT / "functions")
    parser.add_argument("--only", action="append", default=[], help="stage to build (repeatable)")
    parser.add_argument(
        "--function-requirements",
        type=Path,
        help="first write the functions' requirements (the source of their lock) here",
    )
    parser.add_argument(
        "--job-requirements", type=Path, help="first write the training image's requirements here"
    )
    args = parser.parse_args(argv)

    stages = consumers(REPO_ROOT / "topology.yaml")
    unknown = sorted(set(args.only) - set(stages))
    if unknown:
        raise SystemExit(f"not consumers in topology.yaml: {', '.join(unknown)}")
    for path, extras in (
        (args.function_requirements, FUNCTION_EXTRAS),
        (args.job_requirements, JOB_EXTRAS),
    ):
        if path:
            path.write_text(requirements_text(extras))
            print(f"wrote {path}")
    requirements = locked_requirements(FUNCTION_LOCK, FUNCTION_EXTRAS)
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in args.only or stages:
        target = stage_function(stage, args.out, requirements, args.functions_dir)
        print(f"staged {stage:<16} {target}  sha256:{tree_digest(target)[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
