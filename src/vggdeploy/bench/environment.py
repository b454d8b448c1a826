"""What a benchmark result depends on: the host (CPU model and the instruction sets that decide
the integer kernels, cores, GPU, OS) and the library versions."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from vggdeploy import host

#: raw CPU flags recorded beside `host.cpu().features` (older results have only these)
CPU_FLAGS = tuple(host.CPU_FEATURES)


def host_info() -> dict[str, Any]:
    """CPU model, cores, GPU, OS and Python: what a result depends on."""
    cpu = host.cpu()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu.name,
        "cpu_flags": [f for f in CPU_FLAGS if f in cpu.flags],
        "cpu_features": cpu.features,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hostname": platform.node(),
        "gpu": None,
    }
    torch = sys.modules.get("torch")  # only when a case imported it: no import for a CPU run
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def versions() -> dict[str, str]:
    from vggdeploy.bundle import library_versions

    return library_versions("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "onnx")
