"""The GPU acceptance run: what nothing on a CPU-only machine can check, in one command.

For a small VGG (the tests' tiny spec) and a full VGG-16 it runs the pipeline (export, fp16
conversion, INT8 calibration on the shipped photographs, fp32/fp16/int8 TensorRT engines built
through Polygraphy, validation of each against PyTorch, bench beside ONNX Runtime's CUDA
provider and torch on CUDA), inspects every engine, and writes one JSON report.
`benchmarks/gpu_acceptance.py` is its command line; the `gpu`/`tensorrt` tests call `run_acceptance`.
Not run here: written without a GPU, it has never been executed on one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.errors import CheckFailedError, RuntimeUnavailableError

#: (label, model, pipeline options) of each run
MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "small-vgg11",
        "vgg11",
        {"width_divisor": 16, "hidden": 64, "num_classes": 10, "image_size": 32},
    ),
    ("vgg16", "vgg16", {}),
)
BENCH_RUNTIMES = ("tensorrt", "onnxruntime:cuda", "torch:cuda")
PRECISIONS = P.ENGINE_NAMES


def check_gpu_host() -> dict[str, Any]:
    """The GPU and TensorRT this run will use; one-line `RuntimeUnavailableError` if either is
    missing (TensorRT, Polygraphy or a CUDA GPU)."""
    from vggdeploy.exporter.engine import import_polygraphy
    from vggdeploy.runtimes._trt import cuda_glue, import_tensorrt

    trt = import_tensorrt()
    import_polygraphy()
    device = cuda_glue().device_info(0)
    return {
        "tensorrt": trt.__version__,
        "gpu": device.name,
        "compute_capability": device.compute_capability,
    }


def run_acceptance(
    out: str | os.PathLike[str],
    models: tuple[tuple[str, str, dict[str, Any]], ...] = MODELS,
    bench_iterations: int = 20,
) -> dict[str, Any]:
    """Run every model in `models` into `out/<label>` and write `out/acceptance.json`.

    Returns the report; `report["passed"]` is False when any pipeline check failed (each
    failure is in the report with its message). Raises `RuntimeUnavailableError` when this
    host has no GPU or TensorRT.
    """
    from vggdeploy.inspection import inspect_bundle
    from vggdeploy.pipeline.options import PipelineOptions
    from vggdeploy.pipeline.run import run_pipeline

    host = check_gpu_host()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"host": host, "runs": {}, "passed": True}
    for label, model, extra in models:
        options = PipelineOptions(
            precisions=PRECISIONS,
            bench_runtimes=BENCH_RUNTIMES,
            bench_iterations=bench_iterations,
            force=True,
            **extra,
        )
        started = time.perf_counter()
        run: dict[str, Any] = {"model": model, "options": extra}
        try:
            run["pipeline"] = run_pipeline(model, root / label, options)
            run["passed"] = True
        except CheckFailedError as exc:
            run["passed"], run["failure"] = False, str(exc)
        run["inspect"] = inspect_bundle(root / label)
        run["seconds"] = round(time.perf_counter() - started, 1)
        report["passed"] = report["passed"] and run["passed"]
        report["runs"][label] = run
    path = root / "acceptance.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["path"] = str(path)
    return report


__all__ = [
    "BENCH_RUNTIMES",
    "MODELS",
    "RuntimeUnavailableError",
    "check_gpu_host",
    "run_acceptance",
]
