"""A fake of `vggdeploy.runtimes._cuda`: the same public names and call shapes, host memory.

"Device" buffers are NumPy arrays kept in `MEMORY` under a fake address, which the fake
TensorRT reads and writes in `execute_async_v3` exactly as the real one would through the
pointers given to `set_tensor_address`. `GPU` describes the one fake GPU; tests change it to
simulate another architecture, a Jetson, little memory or no GPU at all.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from vggdeploy.errors import RuntimeUnavailableError
from vggdeploy.runtimes._cuda import DeviceInfo

DEFAULT_GPU: dict[str, Any] = {
    "available": True,
    "count": 1,
    "name": "NVIDIA A100-SXM4-80GB",
    "compute_capability": "8.0",
    "cuda_version": "12.8",
    "total_memory": 80 * 2**30,
    "jetson": False,
}
GPU: dict[str, Any] = dict(DEFAULT_GPU)
MEMORY: dict[int, np.ndarray] = {}
_addresses = itertools.count(0x7F0000000000, 0x100000)
_streams = itertools.count(0x5500)
CURRENT = {"device": 0}


def reset() -> None:
    GPU.clear()
    GPU.update(DEFAULT_GPU)
    MEMORY.clear()
    GRAPHS.clear()
    CURRENT["device"] = 0


def device_info(device_id: int = 0) -> DeviceInfo:
    if not GPU["available"]:
        raise RuntimeUnavailableError(
            "TensorRT needs an NVIDIA GPU and none is usable: this PyTorch is a CPU-only build "
            "(install a CUDA build of torch)"
        )
    if not 0 <= device_id < GPU["count"]:
        raise RuntimeUnavailableError(
            f"GPU {device_id} does not exist: this host has {GPU['count']} "
            f"(use --device 0..{GPU['count'] - 1})"
        )
    return DeviceInfo(
        index=device_id,
        name=GPU["name"],
        compute_capability=GPU["compute_capability"],
        cuda_version=GPU["cuda_version"],
        total_memory=GPU["total_memory"],
        jetson=GPU["jetson"],
    )


def use_device(device_id: int) -> None:
    device_info(device_id)
    CURRENT["device"] = device_id


def is_jetson() -> bool:
    return bool(GPU["jetson"])


class Stream:
    def __init__(self, device_id: int) -> None:
        self._handle = next(_streams)

    @property
    def handle(self) -> int:
        return self._handle

    def synchronize(self) -> None:
        return None


class DeviceBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device_id: int) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._ptr = next(_addresses)
        MEMORY[self._ptr] = np.zeros(self.shape, self.dtype)

    @property
    def ptr(self) -> int:
        return self._ptr

    def copy_from_host(self, array: np.ndarray, stream: Stream) -> None:
        MEMORY[self._ptr][...] = array

    def copy_to_host(self, stream: Stream) -> np.ndarray:
        return MEMORY[self._ptr].copy()


class Graph:
    """Records the function instead of its kernels; replay calls it again, so the engine reads
    the buffers' contents at replay time, as a replayed CUDA graph does."""

    def __init__(self, device_id: int) -> None:
        self._fn: Any = None
        GRAPHS.append(self)
        self._replays = 0

    def capture(self, fn: Any, stream: Stream) -> Any:
        self._fn = fn
        return True  # what TensorRT's enqueue returns while capturing

    def replay(self, stream: Stream) -> None:
        self._replays += 1
        if not self._fn():
            raise RuntimeError("a replayed graph failed")


GRAPHS: list[Graph] = []


def allocate(shape: tuple[int, ...], dtype: np.dtype, device_id: int = 0) -> DeviceBuffer:
    return DeviceBuffer(shape, dtype, device_id)
