"""The compiled predictor: the model as C, built once per model, checked bit for bit.

With ``MODELRAIL_PREDICTOR=compiled`` each serving process starts on LightGBM's own
predictor (``predictor.NativeBooster``), so readiness and cold start do not wait for
a compiler, and upgrades in the background:

1. a child process at low priority (``python -m modelrail.serving.compiled``, under
   ``nice``) turns the verified model text into C with ``codegen`` (refusing models
   it cannot reproduce exactly) and has the C compiler (``CC``, default ``cc``)
   build it into ``MODELRAIL_COMPILE_CACHE`` under the sha256 of the source and
   flags (``-mavx2`` where this CPU has AVX2, ``default_flags``); a file lock makes
   the workers of one server build it once, and the file
   appears by rename, whole or not at all. The serving process only waits: no code
   generation holds its GIL while it answers its first requests;
2. the library's answers on probe rows (every threshold and its neighbouring doubles,
   NaN, zero, every category and the manifest's examples), as one batch and a few
   rows at a time, are compared with LightGBM's, bit for bit; only if all are
   identical does the predictor switch.

Any failure (no compiler, unsupported model, a single differing bit) is logged and
the process keeps LightGBM's predictor: the setting can only make serving faster,
never different.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelrail.errors import ModelrailError
from modelrail.serving import codegen
from modelrail.serving.predictor import c_rows

if TYPE_CHECKING:
    from modelrail.serving.predictor import Predictor

log = logging.getLogger("modelrail.serving")

# -ffp-contract=off: no fused multiply-adds (which would round differently from
# LightGBM's build); no -ffast-math for the same reason.
_FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off")
_COMPILE_TIMEOUT_S = 600
_NICE = ("nice", "-n", "10") if shutil.which("nice") else ()
_RANDOM_PROBES = 4096


class CompileError(ModelrailError):
    """The compiled predictor could not be built, or differs from LightGBM."""


def default_flags() -> tuple[str, ...]:
    """The compiler flags for this machine: with ``-mavx2`` where the CPU has AVX2
    (the generated code then evaluates four rows per instruction; the library is
    built where it runs, and refuses to run on a CPU without it)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return _FLAGS
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return (*_FLAGS, "-mavx2") if "avx2" in flags.split() else _FLAGS


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / f"modelrail-predictors-{os.getuid()}"


def _private_dir(cache: Path) -> None:
    """Create ``cache`` for this user alone, or refuse one others could write into:
    whatever library it holds is loaded into the service."""
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = cache.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise CompileError(f"{cache} must belong to this user and be writable by no one else")


class CompiledBooster:
    """A generated predictor library; ``predict`` has ``NativeBooster.predict``'s shape."""

    kind = "compiled"

    def __init__(self, library: Path, num_features: int, width: int) -> None:
        self._lib = ctypes.CDLL(str(library))
        self._predict = self._lib.modelrail_predict
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        self._predict.restype = ctypes.c_int
        self.num_features = num_features
        self._width = width

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        matrix = c_rows(matrix, self.num_features)
        rows = len(matrix)
        out = np.empty(rows * self._width, dtype=np.float64)
        status = self._predict(matrix.ctypes.data, rows, out.ctypes.data)
        if status == -2:
            raise CompileError("the compiled predictor was built for AVX2; this CPU has none")
        if status != 0:
            raise MemoryError("the compiled predictor could not allocate its rows")
        return out.reshape(rows, self._width) if self._width > 1 else out


def build(source: str, cache: Path, compiler: str, flags: Sequence[str] | None = None) -> Path:
    """The shared library of ``source``, compiled once into ``cache`` (with
    ``default_flags()`` unless told otherwise)."""
    command = [*shlex.split(compiler), *(default_flags() if flags is None else flags)]
    digest = hashlib.sha256("\0".join([*command, source]).encode()).hexdigest()
    if not command or shutil.which(command[0]) is None:
        raise CompileError(f"no C compiler: {compiler!r} was not found (set CC)")
    _private_dir(cache)
    library = cache / f"{digest}.so"
    if library.is_file():
        return library
    with open(cache / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it
        if library.is_file():
            return library
        with tempfile.TemporaryDirectory(dir=cache) as work:
            source_path, output = Path(work) / "model.c", Path(work) / "model.so"
            source_path.write_text(source)
            try:
                subprocess.run(
                    [*command, "-o", str(output), str(source_path), "-lm"],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=_COMPILE_TIMEOUT_S,
                )
            except subprocess.CalledProcessError as exc:
                raise CompileError(f"{command[0]} failed: {exc.stderr.strip()[-2000:]}") from None
            except subprocess.TimeoutExpired:
                raise CompileError(f"{command[0]} took over {_COMPILE_TIMEOUT_S} s") from None
            os.replace(output, library)
    return library


def build_model(model_text: str, num_iteration: int | None, cache: Path, compiler: str) -> Path:
    """The shared library of a LightGBM text model (what the child process does)."""
    try:
        model = codegen.parse(model_text)
    except codegen.Unsupported as exc:
        raise CompileError(f"not compiled: {exc}") from None
    return build(codegen.generate(model, num_iteration), cache, compiler)


def build_in_child(
    model_text: bytes, num_iteration: int | None, cache: Path, compiler: str
) -> Path:
    """``build_model`` in a child process at low priority; the model text on stdin."""
    command = [*_NICE, sys.executable, "-m", __name__, "--cache", str(cache), "--cc", compiler]
    if num_iteration:
        command += ["--num-iteration", str(num_iteration)]
    try:
        done = subprocess.run(
            command,
            input=model_text,
            check=False,
            capture_output=True,
            timeout=_COMPILE_TIMEOUT_S + 60,
        )
    except subprocess.TimeoutExpired:
        raise CompileError(f"the build took over {_COMPILE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()[-2000:]
        raise CompileError(reason or f"the build exited with status {done.returncode}")
    return Path(done.stdout.decode().strip())


def verify(candidate: Any, reference: Any, rows: Sequence[Sequence[float]]) -> None:
    """Raise ``CompileError`` unless both give the very same doubles on ``rows``,
    predicted as one batch (the vector code) and a few rows at a time (the row code,
    which batches smaller than ``codegen.LANES_FROM`` take)."""
    matrix = np.array(rows, dtype=np.float64)
    theirs = reference.predict(matrix)
    small = codegen.LANES_FROM - 1
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


def compile_predictor(predictor: Predictor, cache: Path, compiler: str) -> CompiledBooster:
    """Build (in a child process) and verify the compiled twin of ``predictor``'s booster."""
    library = build_in_child(predictor.model_text, predictor.num_iteration, cache, compiler)
    model = codegen.parse(predictor.model_text.decode())
    candidate = CompiledBooster(library, model.num_features, model.trees_per_iteration)
    examples = predictor.example_rows()
    base = examples[0] if examples else [0.0] * model.num_features
    verify(
        candidate,
        predictor.booster,
        [*examples, *codegen.probe_rows(model, base, _RANDOM_PROBES)],
    )
    return candidate


def upgrade(predictor: Predictor, cache: Path, compiler: str) -> bool:
    """Switch ``predictor`` to its compiled twin; log why not when it cannot."""
    started = time.perf_counter()
    fields = {"model": predictor.model, "version": predictor.version}
    try:
        compiled = compile_predictor(predictor, cache, compiler)
    except Exception as exc:
        log.warning(
            f"{predictor.model} v{predictor.version} keeps LightGBM's predictor: {exc}",
            extra={"fields": {"event": "predictor_not_compiled", **fields}},
        )
        return False
    predictor.booster = compiled
    log.info(
        f"{predictor.model} v{predictor.version} switched to the compiled predictor "
        f"({time.perf_counter() - started:.2f} s; identical to LightGBM on the probes)",
        extra={"fields": {"event": "predictor_compiled", **fields}},
    )
    return True


def start_upgrade(predictor: Predictor, cache: Path, compiler: str) -> threading.Thread:
    thread = threading.Thread(
        target=upgrade, args=(predictor, cache, compiler), name="compile-predictor", daemon=True
    )
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelrail.serving.compiled --cache DIR --cc CC [--num-iteration N]``:
    builds the model text read from stdin and prints the library's path."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--cc", default="cc")
    parser.add_argument("--num-iteration", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        library = build_model(sys.stdin.read(), args.num_iteration, args.cache, args.cc)
    except CompileError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
