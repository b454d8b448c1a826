"""The little CUDA the TensorRT code needs, through PyTorch (already a dependency).

Everything TensorRT touches on the device goes through this module: which GPU is there, a
stream, device buffers with a raw pointer, pinned host buffers, copies to and from the host,
timing events and CUDA graphs. Keeping it this small
lets the test double replace it whole (`tests/trt_double/fake_cuda.py`), so the TensorRT
runtime and builder logic run in CI without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.errors import RuntimeUnavailableError

JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine depends on: the GPU model, its compute capability, the CUDA version."""

    index: int
    name: str
    compute_capability: str  # "8.6"
    cuda_version: str | None  # the CUDA runtime PyTorch was built with, e.g. "12.8"
    total_memory: int
    jetson: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "compute_capability": self.compute_capability,
            "cuda_version": self.cuda_version,
            "total_memory": self.total_memory,
            "jetson": self.jetson,
        }


def _torch() -> Any:
    import torch

    return torch


def device_info(device_id: int = 0) -> DeviceInfo:
    """Describe GPU `device_id`; a clear error when there is no usable CUDA GPU."""
    torch = _torch()
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = (
            "this PyTorch is a CPU-only build (install a CUDA build of torch)"
            if build is None
            else f"PyTorch (CUDA {build}) sees no GPU: check the NVIDIA driver and "
            "CUDA_VISIBLE_DEVICES"
        )
        raise RuntimeUnavailableError(f"TensorRT needs an NVIDIA GPU and none is usable: {why}")
    count = torch.cuda.device_count()
    if not 0 <= device_id < count:
        raise RuntimeUnavailableError(
            f"GPU {device_id} does not exist: this host has {count} (use --device 0..{count - 1})"
        )
    props = torch.cuda.get_device_properties(device_id)
    major, minor = torch.cuda.get_device_capability(device_id)
    return DeviceInfo(
        index=device_id,
        name=torch.cuda.get_device_name(device_id),
        compute_capability=f"{major}.{minor}",
        cuda_version=torch.version.cuda,
        total_memory=int(props.total_memory),
        jetson=is_jetson(),
    )


def use_device(device_id: int) -> None:
    """Make `device_id` current: TensorRT builds and runs on the current CUDA device."""
    _torch().cuda.set_device(device_id)


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T / JetPack) board."""
    return JETSON_RELEASE_FILE.exists() or os.path.exists("/sys/module/tegra_fuse")


class Stream:
    """A CUDA stream on one device; `handle` is the `cudaStream_t` TensorRT takes."""

    def __init__(self, device_id: int) -> None:
        torch = _torch()
        self._stream = torch.cuda.Stream(device=device_id)

    @property
    def handle(self) -> int:
        return int(self._stream.cuda_stream)

    def synchronize(self) -> None:
        self._stream.synchronize()


class DeviceBuffer:
    """Device memory for one tensor (a torch CUDA tensor); `ptr` is its address."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device_id: int) -> None:
        torch = _torch()
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._tensor = torch.empty(
            self.shape, dtype=_torch_dtype(self.dtype), device=f"cuda:{device_id}"
        )

    @property
    def ptr(self) -> int:
        return int(self._tensor.data_ptr())

    def copy_from_host(self, array: np.ndarray, stream: Stream) -> None:
        torch = _torch()
        src = torch.from_numpy(np.ascontiguousarray(array))
        # Issued on `stream`, so TensorRT's work on the same stream runs after it; from pageable
        # memory the call returns once the host side is copied, so `array` may be reused.
        with torch.cuda.stream(stream._stream):
            self._tensor.copy_(src)

    def copy_to_host(self, stream: Stream) -> np.ndarray:
        """Copy back after the stream's work; waits for it."""
        torch = _torch()
        with torch.cuda.stream(stream._stream):
            host = self._tensor.to("cpu", non_blocking=True)
        stream.synchronize()
        return host.numpy()

    def copy_from_host_async(self, host: HostBuffer, stream: Stream) -> None:
        """Enqueue the copy from pinned `host` on `stream` and return at once; `host` must not
        change until the stream has done it."""
        torch = _torch()
        with torch.cuda.stream(stream._stream):
            self._tensor.copy_(host._tensor, non_blocking=True)

    def copy_to_host_async(self, host: HostBuffer, stream: Stream) -> None:
        """Enqueue the copy into pinned `host` on `stream` and return at once; read `host`
        after synchronizing the stream."""
        torch = _torch()
        with torch.cuda.stream(stream._stream):
            host._tensor.copy_(self._tensor, non_blocking=True)


class HostBuffer:
    """Page-locked (pinned) host memory for one tensor, so copies to and from the device run
    asynchronously on a stream; `array` is a NumPy view of it."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        torch = _torch()
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._tensor = torch.empty(self.shape, dtype=_torch_dtype(self.dtype), pin_memory=True)
        self.array: np.ndarray = self._tensor.numpy()

    def fill(self, array: np.ndarray) -> None:
        """Copy `array` (same shape, same dtype: no cast, no broadcast) into the pinned memory.
        A host memcpy: call it only while no copy on a stream reads this buffer."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"cannot fill a pinned {self.shape} buffer from {array.shape}")
        np.copyto(self.array, array, casting="no")

    def read(self) -> np.ndarray:
        """A NumPy copy of the pinned memory (after the stream that wrote it was synchronized)."""
        return self.array.copy()


class Event:
    """A CUDA event with timing: `record` stamps a point on a stream; once both have happened,
    `start.elapsed_ms(end)` is the device time between them in milliseconds."""

    def __init__(self) -> None:
        torch = _torch()
        self._event = torch.cuda.Event(enable_timing=True)

    def record(self, stream: Stream) -> None:
        self._event.record(stream._stream)

    def synchronize(self) -> None:
        """Wait until the event has happened (returns at once if it was never recorded)."""
        self._event.synchronize()

    def elapsed_ms(self, end: Event) -> float:
        return float(self._event.elapsed_time(end._event))


class Graph:
    """A CUDA graph of the work `fn` issues on a stream (TensorRT's enqueue), replayed as one
    launch. Capture after one ordinary run: TensorRT finishes its deferred setup there."""

    def __init__(self, device_id: int) -> None:
        torch = _torch()
        self._graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Any, stream: Stream) -> Any:
        """Record what `fn()` enqueues on `stream` (nothing runs yet); return what fn returned."""
        torch = _torch()
        with torch.cuda.graph(
            self._graph, stream=stream._stream, capture_error_mode="thread_local"
        ):
            result = fn()
        return result

    def replay(self, stream: Stream) -> None:
        torch = _torch()
        with torch.cuda.stream(stream._stream):
            self._graph.replay()


def allocate(shape: tuple[int, ...], dtype: np.dtype, device_id: int = 0) -> DeviceBuffer:
    return DeviceBuffer(shape, dtype, device_id)


def allocate_host(shape: tuple[int, ...], dtype: np.dtype) -> HostBuffer:
    return HostBuffer(shape, dtype)


def _torch_dtype(dtype: np.dtype) -> Any:
    torch = _torch()
    table = {
        "float32": torch.float32,
        "float16": torch.float16,
        "int8": torch.int8,
        "uint8": torch.uint8,
        "int32": torch.int32,
        "int64": torch.int64,
        "bool": torch.bool,
    }
    if dtype.name not in table:
        raise RuntimeUnavailableError(f"no device buffer type for {dtype.name}")
    return table[dtype.name]
