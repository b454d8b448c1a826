"""One interface over PyTorch, ONNX Runtime and TensorRT.

`RUNTIMES` maps a runtime name to the import path of its class; nothing heavy is imported
until `get_runtime` is called with that name.
"""

from __future__ import annotations

import importlib

from vggdeploy.errors import InputError
from vggdeploy.runtimes.base import Runtime, TensorSpec

RUNTIMES: dict[str, str] = {
    "torch": "vggdeploy.runtimes.pytorch:TorchRuntime",
    "onnxruntime": "vggdeploy.runtimes.onnxrt:OrtRuntime",
    "tensorrt": "vggdeploy.runtimes.trt:TrtRuntime",
}


def get_runtime(name: str) -> type[Runtime]:
    """The runtime class registered under `name`, imported now."""
    if name not in RUNTIMES:
        raise InputError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")
    module_name, class_name = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["RUNTIMES", "Runtime", "TensorSpec", "get_runtime"]
