"""The compiled predictor where it is trained (the training job, whose image has the C
compiler).

``build`` turns the model text into C (``predictor_c``, refusing models it cannot
reproduce exactly) and, given the feature schema, a body reader beside it
(``reader_c``: C that reads the common /predict body straight into the feature
matrix); the compiler builds the code once per entry of ``BUILDS`` (a portable object,
and a vector one with ``-mavx2`` that only a CPU with AVX2 may run); each object is
kept only if it answers the probe rows exactly as LightGBM and reads the probe bodies
exactly as the service (``loader.verify``, ``loader.verify_reader``). Whatever cannot be
built or verified is left out with its reason: a run never fails for it. register
copies the objects into the version, and its manifest records them (``compiled``:
file, sha256, build, flags, CPU features).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelrail.native import predictor_c, probes, reader_c, trees
from modelrail.native.loader import (
    CompiledBooster,
    CompileError,
    Reading,
    cpu_features,
    verify,
    verify_reader,
)

# -ffp-contract=off: no fused multiply-adds (which would round differently from
# LightGBM's build); no -ffast-math for the same reason.
FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off")

_COMPILE_TIMEOUT_S = 900

# Rows mixing every feature's probe values, after the rows that move one feature at a
# time: many where the object is built, fewer where a cold start waits for the check
# (4096 of them cost ~0.2 s of a 300-tree model's load; 256, ~0.02 s).
_MIXED_PROBES_BUILD = 4096


@dataclasses.dataclass(frozen=True)
class Build:
    """One way to compile the generated C: its flags and the CPU features the object
    needs to run (``/proc/cpuinfo`` names)."""

    name: str
    flags: tuple[str, ...]
    requires: tuple[str, ...]

    @property
    def file(self) -> str:
        return f"predictor-{self.name}.so"


# In the order the service prefers them. The vector code runs four rows per AVX2
# instruction with -mavx2 (100-row batches in ~0.55 of the row code's time); built
# without it, the same code is lowered to SSE2, exact too and slower. An AVX2 object
# also refuses to run (status -2) rather than crash on a CPU without it.
BUILDS = (
    Build("avx2", (*FLAGS, "-mavx2"), ("avx2",)),
    Build("portable", FLAGS, ()),
)


# -- training: build and verify ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BuiltPredictor:
    """A verified shared object, as the candidate and the version store it."""

    build: Build
    library: bytes

    def record(self) -> dict[str, Any]:
        return {
            "file": self.build.file,
            "sha256": hashlib.sha256(self.library).hexdigest(),
            "build": self.build.name,
            "flags": list(self.build.flags),
            "requires": list(self.build.requires),
        }


@dataclasses.dataclass(frozen=True)
class Built:
    """What ``build`` made, and why it made no more (one reason per build left out;
    ``reader``: "built", or "not built" and why the objects have no body reader)."""

    predictors: tuple[BuiltPredictor, ...]
    not_built: tuple[str, ...]
    reader: str = "not built"

    def record(self) -> dict[str, Any]:
        """The ``compiled`` member of the candidate and of the version's manifest."""
        return {
            "builds": [predictor.record() for predictor in self.predictors],
            "not_built": list(self.not_built),
            "reader": self.reader,
        }


def build(
    model_text: bytes,
    num_iteration: int | None,
    reference: Any,
    examples: Sequence[Sequence[float]],
    compiler: str,
    reading: Reading | None = None,
) -> Built:
    """Every build of ``BUILDS`` that compiles and answers the probe rows exactly as
    ``reference`` (LightGBM's ``Booster``) does and, given ``reading``, whose body
    reader reads the probe bodies exactly as the service does. Never raises for a
    model, a compiler or a machine that cannot give one: the reasons are in
    ``not_built``."""
    command = shlex.split(compiler)
    if not command or shutil.which(command[0]) is None:
        return Built((), (f"no C compiler: {compiler!r} was not found",))
    try:
        model = trees.parse(model_text.decode())
    except trees.Unsupported as exc:
        return Built((), (f"not compiled: {exc}",))
    rows = probes.probe_rows(model, examples, _MIXED_PROBES_BUILD)
    features = cpu_features()
    predictors, not_built = [], []
    code = predictor_c.generate(model, num_iteration)
    reader = "not built: no schema was given"
    if reading is not None:
        try:
            code += reader_c.generate(reading.schema)
            reader = "built"
        except trees.Unsupported as exc:
            reader = f"not built: {exc}"
    with tempfile.TemporaryDirectory(prefix="modelrail-compile-") as work:
        source = Path(work) / "model.c"
        source.write_text(code)
        try:
            # Both builds at once: the compiler is single-threaded, and each takes
            # seconds to minutes for hundreds of trees.
            running = {
                one: _start_compiler([*command, *one.flags], source, Path(work) / one.file)
                for one in BUILDS
            }
        except OSError as exc:
            return Built((), (f"{command[0]} could not start: {exc}",), reader)
        for one, process in running.items():
            library = Path(work) / one.file
            try:
                _finish_compiler(process, command[0])
                missing = [feature for feature in one.requires if feature not in features]
                if missing:
                    raise CompileError(f"not verified: this CPU lacks {', '.join(missing)}")
                candidate = CompiledBooster(library, model.num_features, model.trees_per_iteration)
                verify(candidate, reference, rows)
                if reading is not None and candidate.has_reader:
                    verify_reader(candidate, reading)
            except Exception as exc:
                not_built.append(f"{one.name}: {exc or type(exc).__name__}")
                continue
            predictors.append(BuiltPredictor(one, library.read_bytes()))
    return Built(tuple(predictors), tuple(not_built), reader)


def _start_compiler(command: list[str], source: Path, output: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command, "-o", str(output), str(source), "-lm"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_compiler(process: subprocess.Popen[str], name: str) -> None:
    try:
        _, errors = process.communicate(timeout=_COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise CompileError(f"{name} took over {_COMPILE_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise CompileError(f"{name} failed: {errors.strip()[-2000:]}")
