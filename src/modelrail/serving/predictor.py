"""Predict with LightGBM's own C library, called through ctypes.

The ``lightgbm`` Python package is a thin ctypes wrapper over ``lib_lightgbm.so``, but
importing it costs most of a second (it imports scipy, narwhals and, where installed,
pandas and scikit-learn) and each ``Booster.predict`` call spends tens of
microseconds in Python checks. The service calls the same C functions the wrapper
calls for a numpy matrix (``LGBM_BoosterLoadModelFromString``,
``LGBM_BoosterPredictForMat`` with the same arguments), so the numbers are the very
same; ``tests/serving`` checks them against ``lightgbm.Booster.predict``.

The library is found next to the installed ``lightgbm`` package without importing it.
ctypes releases the GIL during each call, and LightGBM's predict is thread-safe.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import operator
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from modelrail.kernel.errors import ModelrailError
from modelrail.native import loader

if TYPE_CHECKING:
    from modelrail.domain.registry import Manifest

log = logging.getLogger("modelrail.serving")

_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL
_PREDICT_CONTRIB = 3  # C_API_PREDICT_CONTRIB: TreeSHAP, as pred_contrib=True
_ROW_MAJOR = 1
# One thread per call: requests are small, and OpenMP threads would fight the server's
# workers for the same cores (and make forking after a load unsafe).
_PARAMETERS = b"num_threads=1"

_lib_cache: dict[str, ctypes.CDLL] = {}
_lib_lock = threading.Lock()


class ModelLoadError(ModelrailError):
    """LightGBM refused the model text, or it does not fit the manifest."""


def library_path() -> Path:
    """``lib_lightgbm.so`` of the installed lightgbm package, found without importing it."""
    # PathFinder directly: finds the package without importing it, and past the
    # import guard, which blocks importing the lightgbm Python package here.
    spec = importlib.machinery.PathFinder.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the lightgbm package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    for name in ("lib_lightgbm.so", "lib_lightgbm.dylib", "lib_lightgbm.dll"):
        for candidate in (package / "lib" / name, package / name):
            if candidate.is_file():
                return candidate
    raise ModelLoadError(f"lib_lightgbm was not found in {package}")


def _library() -> ctypes.CDLL:
    with _lib_lock:
        if "lib" not in _lib_cache:
            lib = ctypes.CDLL(str(library_path()))
            lib.LGBM_GetLastError.restype = ctypes.c_char_p
            lib.LGBM_BoosterPredictForMat.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_int32,
                ctypes.c_int32,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.POINTER(ctypes.c_int64),
                ctypes.c_void_p,
            ]
            _lib_cache["lib"] = lib
        return _lib_cache["lib"]


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        message = lib.LGBM_GetLastError()
        raise ModelLoadError(message.decode("utf-8", "replace") if message else "LightGBM error")


class NativeBooster:
    """A LightGBM model loaded from its text format, predicting float64 row-major matrices."""

    kind = "lightgbm"
    # No body reader: only a compiled predictor carries one (``loader.CompiledBooster``).
    read: Callable[[bytes, int], np.ndarray | None] | None = None

    def __init__(self, model_text: bytes, *, num_iteration: int | None) -> None:
        lib = _library()
        self._lib = lib
        handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        _check(
            lib,
            lib.LGBM_BoosterLoadModelFromString(
                ctypes.c_char_p(model_text), ctypes.byref(iterations), ctypes.byref(handle)
            ),
        )
        self._handle = handle
        classes, features = ctypes.c_int(), ctypes.c_int()
        _check(lib, lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(classes)))
        _check(lib, lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(features)))
        self.num_classes = classes.value
        self.num_features = features.value
        self.iterations = iterations.value
        # lightgbm.Booster.predict's rule: a positive best iteration, else every tree.
        self.num_iteration = num_iteration if num_iteration and num_iteration > 0 else -1
        self._width = self.num_classes if self.num_classes > 2 else 1
        # LightGBM's single-row API skips most per-call set-up (a 1-row request costs
        # less than half); its config handle is used by one thread at a time.
        self._local = threading.local()
        self._fast_configs: list[ctypes.c_void_p] = []
        self._fast_lock = threading.Lock()

    def _fast_config(self) -> ctypes.c_void_p:
        config: ctypes.c_void_p | None = getattr(self._local, "config", None)
        if config is None:
            config = ctypes.c_void_p()
            _check(
                self._lib,
                self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self._handle,
                    _PREDICT_NORMAL,
                    0,
                    self.num_iteration,
                    _DTYPE_FLOAT64,
                    self.num_features,
                    _PARAMETERS,
                    ctypes.byref(config),
                ),
            )
            with self._fast_lock:
                self._fast_configs.append(config)
            self._local.config = config
        return config

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """LightGBM's exact TreeSHAP values (``pred_contrib=True``): rows x outputs x
        (features + 1), the last column each output's base value; each output's row
        sums to its raw score."""
        matrix = loader.c_rows(matrix, self.num_features)
        rows, columns = matrix.shape
        outputs = self._width
        out = np.empty(rows * outputs * (columns + 1), dtype=np.float64)
        written = self._for_mat(matrix, _PREDICT_CONTRIB, out)
        if written.value != out.size:
            raise ValueError(f"LightGBM wrote {written.value} contributions, expected {out.size}")
        if not loader.finite(out):
            raise ArithmeticError("the model produced a non-finite contribution")
        return out.reshape(rows, outputs, columns + 1)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities (nrow x classes, or nrow for binary) or regression values."""
        matrix = loader.c_rows(matrix, self.num_features)
        rows = matrix.shape[0]
        width = self._width
        out = np.empty(rows * width, dtype=np.float64)
        written = ctypes.c_int64()
        if rows == 1:
            _check(
                self._lib,
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._fast_config(),
                    ctypes.c_void_p(loader.address(matrix)),
                    ctypes.byref(written),
                    ctypes.c_void_p(loader.address(out)),
                ),
            )
        else:
            written = self._for_mat(matrix, _PREDICT_NORMAL, out)
        if written.value != out.size:
            raise ValueError(f"LightGBM wrote {written.value} predictions, expected {out.size}")
        if not loader.finite(out):
            raise ArithmeticError("the model produced a non-finite prediction")
        return out.reshape(rows, width) if width > 1 else out

    def _for_mat(self, matrix: np.ndarray, kind: int, out: np.ndarray) -> ctypes.c_int64:
        """``LGBM_BoosterPredictForMat`` of the C-ordered ``matrix`` into ``out``: how
        many values it wrote."""
        rows, columns = matrix.shape
        written = ctypes.c_int64()
        _check(
            self._lib,
            self._lib.LGBM_BoosterPredictForMat(
                self._handle,
                loader.address(matrix),
                _DTYPE_FLOAT64,
                rows,
                columns,
                _ROW_MAJOR,
                kind,
                0,
                self.num_iteration,
                _PARAMETERS,
                ctypes.byref(written),
                loader.address(out),
            ),
        )
        return written

    def __del__(self) -> None:
        for config in getattr(self, "_fast_configs", ()):
            self._lib.LGBM_FastConfigFree(config)
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_BoosterFree(handle)


class Predictor:
    """A verified model version: encodes LightGBM's output as the API's predictions."""

    def __init__(self, model: str, version: int, manifest: Manifest, model_text: bytes) -> None:
        from modelrail.domain.features import FeatureSchema

        self.model = model
        self.version = version
        self.manifest = manifest
        self.schema = FeatureSchema.from_dict(manifest.features)
        self.objective = self.schema.objective
        self.classes: Sequence[str] = self.schema.classes
        self.model_text = model_text
        self.num_iteration: int | None = manifest.best_iteration
        # LightGBM's predictor, or its compiled twin once ``use_compiled`` has
        # checked that both give the same doubles.
        self.booster: NativeBooster | loader.CompiledBooster
        try:
            self.lightgbm = NativeBooster(model_text, num_iteration=self.num_iteration)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{model} v{version}: LightGBM cannot load it: {exc}") from exc
        self.booster = self.lightgbm
        if self.booster.num_features != len(self.schema.features):
            raise ModelLoadError(
                f"{model} v{version}: the model takes {self.booster.num_features} features "
                f"but its manifest lists {len(self.schema.features)}"
            )
        expected_classes = len(self.classes) if self.objective == "multiclass" else 1
        if self.booster.num_classes != expected_classes:
            raise ModelLoadError(
                f"{model} v{version}: the model has {self.booster.num_classes} outputs, "
                f"the {self.objective} manifest expects {expected_classes}"
            )
        self._answers = _answers(self.objective, self.classes)

    def example_rows(self) -> list[list[float]]:
        """The manifest's example instances, encoded as the model sees them."""
        examples = self.manifest.examples
        return self.schema.encode_records(examples).tolist() if examples else []

    def use_compiled(
        self, read: Callable[[str], bytes | None], reading: loader.Reading | None = None
    ) -> bool:
        """Switch to the version's compiled predictor (``loader.load``: the training
        job built it; ``read`` gives a file of the version, its sha256 checked, or
        None), or log why LightGBM's stays. Given ``reading``, the predictor's body
        reader is verified against it too (``booster.read`` is then the reader)."""
        started = time.perf_counter()
        fields = {"model": self.model, "version": self.version}
        try:
            booster, build, refused = loader.load(
                self.manifest.compiled,
                read,
                self.booster,
                self.model_text,
                self.example_rows(),
                reading,
            )
        except Exception as exc:
            log.warning(
                f"{self.model} v{self.version} keeps LightGBM's predictor: {exc}",
                extra={"fields": {"event": "predictor_not_compiled", **fields}},
            )
            return False
        self.booster = booster
        skipped = f"; refused {'; '.join(refused)}" if refused else ""
        reader = "with" if booster.read is not None else "without"
        log.info(
            f"{self.model} v{self.version} uses the compiled predictor ({build}, "
            f"identical to LightGBM on the probes, {reader} its body reader, "
            f"{time.perf_counter() - started:.3f} s{skipped})",
            extra={
                "fields": {
                    "event": "predictor_compiled",
                    "build": build,
                    "reader": booster.read is not None,
                    **fields,
                }
            },
        )
        return True

    def outputs(self, matrix: np.ndarray) -> np.ndarray:
        """The model's output as numbers (``NativeBooster.predict``'s shape);
        ``ArithmeticError`` (from either predictor) rather than a number that is not
        finite."""
        return self.booster.predict(matrix)

    def answers(self, outputs: np.ndarray) -> list[Any]:
        """One answer per row of ``outputs``, ready for ``msgspec.json.encode``."""
        return self._answers(outputs)

    def labels(self, outputs: np.ndarray) -> list[str]:
        """The label of each row of a classifier's ``outputs``."""
        return list(map(tuple(self.classes).__getitem__, _label_index(outputs).tolist()))

    # The compiled predictor computes predictions only: contributions always come from
    # LightGBM's C library, which is what they are held to.
    explainer = "lightgbm"
    explainer_reason = (
        "the compiled predictor computes predictions only; LightGBM's C library "
        "computes contributions (TreeSHAP, pred_contrib)"
    )

    def explain(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        """Each row's feature contributions and base value, in raw-score units (log-odds
        of ``classes[1]`` for binary models, per class for multiclass ones): LightGBM's
        ``pred_contrib``, whose values plus the base value sum to the raw score."""
        values = self.lightgbm.contributions(matrix)
        names = self.schema.names

        def one(output: list[float]) -> dict[str, Any]:
            return {
                "base_value": output[-1],
                "contributions": dict(zip(names, output, strict=False)),
            }

        if self.objective != "multiclass":
            return [one(row) for row in values[:, 0, :].tolist()]
        classes = self.classes
        return [
            {"classes": dict(zip(classes, map(one, row), strict=True))} for row in values.tolist()
        ]


def _answers(objective: str, labels: Sequence[str]) -> Callable[[np.ndarray], list[Any]]:
    """The API's answer for every row of the model's output.

    Classifiers answer ``{"label", "probabilities": {class: p}}`` (binary ones also
    ``"probability"``, the positive class's). The answers are msgspec structs whose
    fields are renamed to the class labels, built by ``map`` over numpy columns: no
    Python code runs per row, and msgspec writes them as those objects (in about 60%
    of the time of dicts through orjson, for 100 rows of 3 classes). Regression
    answers the values."""
    width = len(labels)
    if objective not in ("multiclass", "binary"):
        return operator.methodcaller("tolist")
    label_of = tuple(labels).__getitem__
    try:
        probabilities: Callable[..., Any] = msgspec.defstruct(
            "Probabilities",
            [(f"p{i}", float) for i in range(width)],
            rename={f"p{i}": label for i, label in enumerate(labels)},
            gc=False,
        )
    except ValueError:
        # msgspec refuses '"', '\\' and control characters in field names: such
        # labels get plain dicts (the same JSON, slower).
        def probabilities(*values: float) -> dict[str, float]:
            return dict(zip(labels, values, strict=True))

    if objective == "binary":
        binary = msgspec.defstruct(
            "Answer",
            [("label", str), ("probability", float), ("probabilities", Any)],
            gc=False,
        )

        def binary_answers(raw: np.ndarray) -> list[Any]:
            positive = raw.tolist()
            by_class = map(probabilities, (1.0 - raw).tolist(), positive)
            return list(map(binary, map(label_of, _label_index(raw).tolist()), positive, by_class))

        return binary_answers
    multiclass = msgspec.defstruct("Answer", [("label", str), ("probabilities", Any)], gc=False)

    def multiclass_answers(raw: np.ndarray) -> list[Any]:
        best = map(label_of, _label_index(raw).tolist())
        return list(map(multiclass, best, map(probabilities, *raw.T.tolist())))

    return multiclass_answers


def _label_index(raw: np.ndarray) -> np.ndarray:
    """Each row's class index: a binary model's positive class from 0.5 on, else the
    most probable class."""
    return raw >= 0.5 if raw.ndim == 1 else raw.argmax(axis=1)
