"""One interface over PyTorch, ONNX Runtime and TensorRT.

`registry` maps runtime names to classes (imported only when chosen) and parses the one spec
grammar, `NAME[:VARIANT...][@PRECISION]`; `base` holds the `Runtime` contract.
"""

from __future__ import annotations

from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec
from vggdeploy.runtimes.registry import RUNTIMES, RuntimeSpec, parse_spec, runtime_class

__all__ = [
    "RUNTIMES",
    "Runtime",
    "RuntimeDescription",
    "RuntimeSpec",
    "TensorSpec",
    "parse_spec",
    "runtime_class",
]
