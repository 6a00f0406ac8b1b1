"""The compiled predictor where it serves (the staging service, which never compiles).

``load`` takes the first of a version's builds whose CPU features this machine has,
whose bytes match the sha256 its manifest records and whose answers on the probe rows
(``probes``) are LightGBM's, bit for bit, and whose body reader, if it has one, reads
the probe bodies as the service's decoder does. Anything else keeps LightGBM's own
predictor, with the reasons: the compiled predictor can only make serving faster,
never different. ``verify`` and ``verify_reader`` are the same checks the training
job makes before it keeps an object (``builder``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import ModelrailError
from modelrail.native import probes, trees

_MIXED_PROBES_LOAD = 256


class CompileError(ModelrailError):
    """A compiled predictor could not be built or loaded, or differs from LightGBM."""


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


def verify(candidate: Any, reference: Any, rows: Sequence[Sequence[float]]) -> None:
    """Raise ``CompileError`` unless both give the very same doubles on ``rows``,
    predicted as one batch (the vector code) and a few rows at a time (the row code,
    which batches smaller than ``trees.LANES_FROM`` take)."""
    matrix = np.array(rows, dtype=np.float64)
    theirs = reference.predict(matrix)
    small = trees.LANES_FROM - 1
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
    for number, body in enumerate(probes.probe_bodies(reading.schema, reading.examples)):
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
    model = trees.parse(model_text.decode())
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
                rows = probes.probe_rows(model, examples, _MIXED_PROBES_LOAD)
            verify(candidate, reference, rows)
            if reading is not None and candidate.has_reader:
                verify_reader(candidate, reading)
        except Exception as exc:  # any refusal keeps LightGBM; the reason is reported
            refused.append(f"{entry['file']}: {exc}")
            continue
        return candidate, entry["build"], refused
    raise CompileError("; ".join(refused))
