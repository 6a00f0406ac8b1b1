"""The compiled predictor: the model as C, built and verified where it is trained,
loaded and verified again where it serves.

In the training job (``build``, called by the train stage; its image has the C
compiler): ``predictor_c`` turns the model text into C, refusing models it cannot
reproduce exactly; the compiler builds it once per entry of ``BUILDS`` (a portable
object, and a vector one with ``-mavx2`` that only a CPU with AVX2 may run); each
object is kept only if its answers on the probe rows (``probe_rows``: the examples,
every threshold and its neighbouring doubles, NaN, zero, every category) are
LightGBM's, bit for bit. Whatever cannot be built or verified is left out with its
reason: a run never fails for it. register copies the objects into the version, and
its manifest records them (``compiled``: file, sha256, build, flags, CPU features).

Given the feature schema (``Reading``), the same object also carries a body reader
(``reader_c``: C that reads the common /predict body straight into the feature
matrix), kept only if it reads the probe bodies exactly as the service's decoder does
(``verify_reader``), here and again where the object is loaded.

In the staging service (``load``), which never compiles: the first build, in
``BUILDS``' order, whose CPU features this machine has, whose bytes match the sha256
the manifest records and whose answers on the probe rows are LightGBM's, bit for bit,
is loaded, before the service binds its port. Anything else keeps LightGBM's own
predictor, with the reasons: the compiled predictor can only make serving faster,
never different.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import ModelrailError
from modelrail.native import predictor_c, reader_c

# -ffp-contract=off: no fused multiply-adds (which would round differently from
# LightGBM's build); no -ffast-math for the same reason.
FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off")
_COMPILE_TIMEOUT_S = 900
# Rows mixing every feature's probe values, after the rows that move one feature at a
# time: many where the object is built, fewer where a cold start waits for the check
# (4096 of them cost ~0.2 s of a 300-tree model's load; 256, ~0.02 s).
_MIXED_PROBES_BUILD = 4096
_MIXED_PROBES_LOAD = 256


class CompileError(ModelrailError):
    """A compiled predictor could not be built or loaded, or differs from LightGBM."""


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


def cpu_features() -> frozenset[str]:
    """This machine's CPU feature flags (empty where ``/proc/cpuinfo`` is unreadable)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def c_rows(matrix: np.ndarray, num_features: int) -> np.ndarray:
    """``matrix`` as the row-major float64 array the C predictors read (copied only
    if it is not one); ``ValueError`` if its width is not the model's."""
    if matrix.shape[1] != num_features:
        raise ValueError(f"the model takes {num_features} features, not {matrix.shape[1]}")
    if not matrix.flags.c_contiguous or matrix.dtype != np.float64:
        return np.ascontiguousarray(matrix, dtype=np.float64)
    return matrix


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a body reader (``reader_c``) is built from and held to: the schema, the
    example records (feature -> JSON value), and ``reference``, the service's own
    matrix for a body (None where it would not answer it without a word)."""

    schema: FeatureSchema
    examples: Sequence[Mapping[str, Any]]
    reference: Callable[[bytes], np.ndarray | None]


def finite(array: np.ndarray) -> bool:
    """Whether every value of ``array`` is a finite double."""
    return bool(np.isfinite(array).all())


def address(array: np.ndarray) -> int:
    """Where the data of ``array`` (C-contiguous) starts, for a C function: through the
    buffer protocol where the array is writable, a third of the cost of
    ``array.ctypes.data`` (~3 us, three times per request)."""
    try:
        # numpy's stubs do not declare ndarray a Buffer; it is one.
        return ctypes.addressof(ctypes.c_char.from_buffer(array))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # read-only, or empty
        return int(array.ctypes.data)


class CompiledBooster:
    """A generated predictor library; ``predict`` has ``NativeBooster.predict``'s shape.
    ``read`` is its body reader, where it has one and it has been verified."""

    kind = "compiled"

    def __init__(self, library: Path, num_features: int, width: int) -> None:
        self._lib = ctypes.CDLL(str(library))
        self._predict = self._lib.modelrail_predict
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        self._predict.restype = ctypes.c_int
        self.num_features = num_features
        self._width = width
        # Objects built before the C checked its answers are checked here.
        self._checks_finite = hasattr(self._lib, "modelrail_checks_finite")
        self.read: Callable[[bytes, int], np.ndarray | None] | None = None
        try:
            self._read = self._lib.modelrail_read
        except AttributeError:  # built before readers, or for a schema without one
            self.has_reader = False
            return
        self.has_reader = True
        self._read.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
        self._read.restype = ctypes.c_int64
        self._instance_bytes = ctypes.c_int64.in_dll(self._lib, "modelrail_instance_bytes").value

    def read_body(self, body: bytes, max_rows: int) -> np.ndarray | None:
        """The matrix of a body of at most ``max_rows`` instances, or None where the
        reader declines it (see ``reader_c``)."""
        # No valid instance is shorter than the reader's least: this many rows at most.
        capacity = min(max_rows, len(body) // self._instance_bytes)
        if capacity <= 0:
            return None
        out = np.empty((capacity, self.num_features), dtype=np.float64)
        rows = self._read(body, len(body), address(out), capacity)
        return out[:rows] if rows > 0 else None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        matrix = c_rows(matrix, self.num_features)
        rows = len(matrix)
        out = np.empty((rows, self._width) if self._width > 1 else rows, dtype=np.float64)
        status = self._predict(address(matrix), rows, address(out))
        if status == -3 or (status == 0 and not self._checks_finite and not finite(out)):
            raise ArithmeticError("the model produced a non-finite prediction")
        if status == -2:
            raise CompileError("the compiled predictor was built for AVX2; this CPU has none")
        if status != 0:
            raise MemoryError("the compiled predictor could not allocate its rows")
        return out


def probe_rows(
    model: predictor_c.TreeModel, examples: Sequence[Sequence[float]], mixed: int
) -> list[list[float]]:
    """The rows a compiled predictor must answer as LightGBM does: the examples, then
    every probe value of every feature (on the first example) and ``mixed`` rows of a
    seeded mix."""
    base = examples[0] if examples else [0.0] * model.num_features
    return [*map(list, examples), *predictor_c.probe_rows(model, base, mixed)]


def verify(candidate: Any, reference: Any, rows: Sequence[Sequence[float]]) -> None:
    """Raise ``CompileError`` unless both give the very same doubles on ``rows``,
    predicted as one batch (the vector code) and a few rows at a time (the row code,
    which batches smaller than ``predictor_c.LANES_FROM`` take)."""
    matrix = np.array(rows, dtype=np.float64)
    theirs = reference.predict(matrix)
    small = predictor_c.LANES_FROM - 1
    for code, ours in (
        ("vector", candidate.predict(matrix)),
        (
            "row",
            np.concatenate(
                [
                    candidate.predict(matrix[start : start + small])
                    for start in range(0, len(matrix), small)
                ]
            ),
        ),
    ):
        if ours.shape != theirs.shape:
            raise CompileError(f"output shape {ours.shape}, LightGBM's {theirs.shape}")
        differing = ours.view(np.uint64) != theirs.view(np.uint64)
        if differing.any():
            count = int(differing.reshape(len(matrix), -1).any(axis=1).sum())
            raise CompileError(
                f"{count} of {len(matrix)} probe rows differ from LightGBM ({code} code)"
            )


def verify_reader(candidate: CompiledBooster, reading: Reading) -> None:
    """Raise ``CompileError`` unless every probe body (``reader_c.probe_bodies``) the
    reader accepts gives the very doubles ``reading.reference`` gives, and it accepts
    one at least; then ``candidate.read`` is the reader."""
    accepted = 0
    for number, body in enumerate(reader_c.probe_bodies(reading.schema, reading.examples)):
        ours = candidate.read_body(body, len(body))
        if ours is None:
            continue
        theirs = reading.reference(body)
        if (
            theirs is None
            or theirs.shape != ours.shape
            or (np.ascontiguousarray(theirs).view(np.uint64) != ours.view(np.uint64)).any()
        ):
            raise CompileError(f"its body reader reads probe body {number} unlike the service")
        accepted += 1
    if not accepted:
        raise CompileError("its body reader declined every probe body")
    candidate.read = candidate.read_body


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
        model = predictor_c.parse(model_text.decode())
    except predictor_c.Unsupported as exc:
        return Built((), (f"not compiled: {exc}",))
    rows = probe_rows(model, examples, _MIXED_PROBES_BUILD)
    features = cpu_features()
    predictors, not_built = [], []
    code = predictor_c.generate(model, num_iteration)
    reader = "not built: no schema was given"
    if reading is not None:
        try:
            code += reader_c.generate(reading.schema)
            reader = "built"
        except predictor_c.Unsupported as exc:
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


# -- serving: load and verify --------------------------------------------------------------
def load(
    record: Mapping[str, Any] | None,
    read: Callable[[str], bytes | None],
    reference: Any,
    model_text: bytes,
    examples: Sequence[Sequence[float]],
    reading: Reading | None = None,
) -> tuple[CompiledBooster, str, list[str]]:
    """The first of the version's compiled predictors (``record``: its manifest's
    ``compiled``) that this CPU can run, whose bytes (``read(file)``) match their
    sha256, whose answers on the probe rows are ``reference``'s and (given
    ``reading``) whose body reader, if it has one, reads the probe bodies as the
    service does, with its build's name and the reasons the builds before it were
    refused (``read`` gives None for a file the version does not have).
    ``CompileError`` with every reason when none is. The predictor's ``read`` is its
    reader only where that was verified."""
    if not record or not record.get("builds"):
        why = "; ".join((record or {}).get("not_built") or ["the version has none"])
        raise CompileError(f"no compiled predictor was built ({why})")
    model = predictor_c.parse(model_text.decode())
    features = cpu_features()
    refused: list[str] = []
    rows: list[list[float]] | None = None
    for entry in record["builds"]:
        missing = [feature for feature in entry["requires"] if feature not in features]
        try:
            if missing:
                raise CompileError(f"this CPU lacks {', '.join(missing)}")
            library = read(entry["file"])
            if library is None:
                raise CompileError("is not one of the version's files")
            if hashlib.sha256(library).hexdigest() != entry["sha256"]:
                raise CompileError("does not match the sha256 in its manifest")
            with tempfile.NamedTemporaryFile(prefix="modelrail-", suffix=".so") as copy:
                # The bytes just checked, in a file of this process's own (0600): a
                # loaded library stays mapped after its file is gone.
                copy.write(library)
                copy.flush()
                candidate = CompiledBooster(
                    Path(copy.name), model.num_features, model.trees_per_iteration
                )
            if rows is None:
                rows = probe_rows(model, examples, _MIXED_PROBES_LOAD)
            verify(candidate, reference, rows)
            if reading is not None and candidate.has_reader:
                verify_reader(candidate, reading)
        except Exception as exc:  # any refusal keeps LightGBM; the reason is reported
            refused.append(f"{entry['file']}: {exc}")
            continue
        return candidate, entry["build"], refused
    raise CompileError("; ".join(refused))
