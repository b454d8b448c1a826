"""TensorRT plumbing shared by the runtime and the engine builder: importing TensorRT and the
CUDA glue, the logger that forwards TensorRT's messages to `logging`, data types, and the check
that an engine can run on this host (the rules themselves live in `vggdeploy.host`).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import numpy as np

from vggdeploy.errors import RuntimeUnavailableError
from vggdeploy.host import (
    gpu_incompatibility,
    install_hint,
    version_incompatibility,
    version_tuple,
)
from vggdeploy.records import EngineRecord

log = logging.getLogger("vggdeploy.runtimes.trt")

#: Every `tensorrt` name this module touches; tests/runtimes/test_trt_api_names.py checks them.
TENSORRT_API = (
    "__version__",
    "ILogger",
    "Severity",
    "INTERNAL_ERROR",
    "ERROR",
    "WARNING",
    "INFO",
    "VERBOSE",
    "log",
    "DataType",
    "FLOAT",
    "HALF",
    "INT8",
    "INT32",
    "INT64",
    "BOOL",
    "UINT8",
    "Runtime",
    "num_DLA_cores",
    "DLA_core",
)

INSTALL_HINT = install_hint("tensorrt")


# -- importing TensorRT and the CUDA glue -------------------------------------------------------


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a one-line error saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        reason = "" if exc.name == "tensorrt" else f" ({str(exc).splitlines()[0][:200]})"
        raise RuntimeUnavailableError(
            f"TensorRT is not installed or cannot load{reason}: {INSTALL_HINT}"
        ) from None
    except OSError as exc:  # a wheel whose libnvinfer cannot be found or loaded
        raise RuntimeUnavailableError(
            f"TensorRT's libraries cannot load ({exc}): {INSTALL_HINT}"
        ) from None
    return trt


def cuda_glue() -> Any:
    """`vggdeploy.runtimes._cuda`, resolved through sys.modules (the test double replaces it)."""
    return importlib.import_module("vggdeploy.runtimes._cuda")


def major_version(trt: Any) -> int:
    return version_tuple(trt.__version__)[0]


# -- logging ------------------------------------------------------------------------------------


def trt_severity_for(verbosity: int) -> str:
    """CLI verbosity (-v count) -> the lowest TensorRT severity that is logged."""
    return "WARNING" if verbosity <= 0 else ("INFO" if verbosity == 1 else "VERBOSE")


def make_logger(trt: Any, verbosity: int = 0, name: str = "vggdeploy.tensorrt") -> Any:
    """A `trt.ILogger` that forwards TensorRT's messages to Python `logging`.

    Messages below the severity chosen by `verbosity` are dropped (TensorRT's INFO and VERBOSE
    output is long). Errors are also kept in `.errors` so a failure can be explained in one line.
    """
    severity = trt.ILogger.Severity
    order = [
        severity.INTERNAL_ERROR,
        severity.ERROR,
        severity.WARNING,
        severity.INFO,
        severity.VERBOSE,
    ]
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    pylog = logging.getLogger(name)

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.set_verbosity(verbosity)

        def set_verbosity(self, level: int) -> None:
            self.threshold = order.index(getattr(severity, trt_severity_for(level)))

        def log(self, sev: Any, msg: str) -> None:
            rank = order.index(sev) if sev in order else len(order)
            if rank <= 1:
                self.errors.append(msg)
            elif rank == 2:
                self.warnings.append(msg)
            if rank <= self.threshold:
                pylog.log(levels.get(sev, logging.DEBUG), "TensorRT: %s", msg)

        def mark(self) -> int:
            return len(self.errors)

        def errors_since(self, mark: int) -> list[str]:
            return self.errors[mark:]

    return _Logger()


_LOGGER: list[Any] = []  # [(tensorrt module, its logger)]: at most one


def trt_logger(trt: Any, verbosity: int = 0) -> Any:
    """The process's one TensorRT logger (`make_logger`'s), made on first use; later calls
    change its verbosity only. TensorRT treats the logger as a singleton: "although a logger
    is passed on creation to each instance of a IBuilder or IRuntime interfaces, the logger is
    internally considered a singleton, and thus multiple instances of IRuntime and/or IBuilder
    must all use the same logger" (TensorRT 8.0 C++ API, nvinfer1::ILogger; 10.x: "The logger
    used to create an instance of IBuilder, IRuntime or IRefitter is used for all objects
    created through that interface"). Polygraphy keeps one the same way
    (polygraphy/backend/trt/util.py, get_trt_logger), and is handed this one
    (`exporter.engine`). A new `tensorrt` module (the tests' double) gets a new logger."""
    if _LOGGER and _LOGGER[0][0] is trt:
        logger = _LOGGER[0][1]
        logger.set_verbosity(verbosity)
        return logger
    logger = make_logger(trt, verbosity)
    _LOGGER[:] = [(trt, logger)]
    return logger


def summarize_errors(errors: list[str], limit: int = 2) -> str:
    """The last TensorRT errors, shortened for a one-line message."""
    if not errors:
        return "TensorRT logged no error"
    lines = [" ".join(e.split())[:240] for e in errors[-limit:]]
    return "; ".join(lines)


# -- data types ---------------------------------------------------------------------------------


def numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    """TensorRT DataType -> NumPy dtype (TensorRT's own `nptype` helper is pure Python and
    missing from some builds, so the table is here)."""
    table = {
        trt.DataType.FLOAT: np.float32,
        trt.DataType.HALF: np.float16,
        trt.DataType.INT8: np.int8,
        trt.DataType.INT32: np.int32,
        trt.DataType.INT64: np.int64,
        trt.DataType.BOOL: np.bool_,
        trt.DataType.UINT8: np.uint8,
    }
    if dtype not in table:
        raise RuntimeUnavailableError(
            f"engine tensor type {dtype} has no NumPy equivalent: export with float32 inputs"
        )
    return np.dtype(table[dtype])


# -- compatibility --------------------------------------------------------------------------------


def rebuild_hint(bundle_root: str | os.PathLike[str] | None, precision: str) -> str:
    where = str(bundle_root) if bundle_root is not None else "BUNDLE"
    return f"rebuild it on this machine with `vggdeploy build {where} --precision {precision}`"


def check_compatibility(
    record: EngineRecord,
    host_trt_version: str,
    device: Any,
    *,
    bundle_root: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
) -> None:
    """Refuse an engine that cannot run here, saying what differs and where to rebuild.

    `record` is the engine's manifest entry; `device` is a `_cuda.DeviceInfo` for the GPU it
    would run on. The rules are `vggdeploy.host`'s; this adds the rebuild hint.
    """
    hint = rebuild_hint(bundle_root, precision)
    name = record.path
    reason = version_incompatibility(record, host_trt_version)
    if reason is None:
        reason = gpu_incompatibility(
            record,
            str(device.compute_capability),
            f"GPU {device.index} is {device.name}",
            jetson=bool(getattr(device, "jetson", False)),
        )
    if reason is not None:
        raise RuntimeUnavailableError(f"{name} {reason}: {hint}")
    built_gpu = record.gpu.name
    if record.hardware_compat == "none" and built_gpu and built_gpu != device.name:
        log.warning(
            "%s was built on %s and runs on %s (same compute capability %s): it loads, but its "
            "kernels were tuned for the other GPU; rebuild here for best speed",
            name,
            built_gpu,
            device.name,
            device.compute_capability,
        )


# -- DLA ------------------------------------------------------------------------------------------


def dla_core_of(record: EngineRecord | None) -> int | None:
    """The DLA core an engine was built for (its manifest's `dla` entry), or None (GPU only)."""
    dla = getattr(record, "dla", None) if record is not None else None
    core = dla.get("core") if isinstance(dla, dict) else None
    return core if isinstance(core, int) else None


def dla_unavailable(runtime: Any, record: EngineRecord | None) -> str | None:
    """Why this host cannot run a DLA engine (`runtime` is a `trt.Runtime`), or None."""
    core = dla_core_of(record)
    if core is None:
        return None
    count = int(runtime.num_DLA_cores)
    if core < count:
        return None
    have = "no DLA" if count == 0 else f"only {count} DLA core{'s' if count != 1 else ''}"
    return (
        f"{record.path} was built for DLA core {core} and this device has {have} (DLA exists "
        "on Jetson AGX/NX Orin; Thor has none): run it on that Orin, or rebuild here without "
        "--dla-core"
    )


def use_dla(runtime: Any, record: EngineRecord | None) -> None:
    """Refuse a DLA engine this host cannot run; else set `runtime.DLA_core` to the engine's
    core before deserializing, as TensorRT requires."""
    why = dla_unavailable(runtime, record)
    if why is not None:
        raise RuntimeUnavailableError(why)
    core = dla_core_of(record)
    if core is not None:
        runtime.DLA_core = core


def dla_host_reason(record: EngineRecord | None) -> str | None:
    """`dla_unavailable` with TensorRT imported here (for registry availability checks)."""
    if dla_core_of(record) is None:
        return None
    trt = import_tensorrt()
    return dla_unavailable(trt.Runtime(trt_logger(trt)), record)
