"""A fake of `vggdeploy.runtimes._cuda`: the same public names and call shapes, host memory.

"Device" buffers are NumPy arrays kept in `MEMORY` under a fake address, which the fake
TensorRT reads and writes in `execute_async_v3` exactly as the real one would through the
pointers given to `set_tensor_address`. `GPU` describes the one fake GPU; tests change it to
simulate another architecture, a Jetson, little memory or no GPU at all.

Time is a fake timeline, `CLOCK` (ns, shared by host and device): work completes when it is
enqueued and advances the timeline by a fixed cost from `COSTS` (copies by their bytes, an
engine run by its layers, launches outside a CUDA graph by layer), and a stream synchronize adds
the host's wake-up. A host memcpy into or out of a pinned buffer (`HostBuffer.fill` / `read`)
advances it too, by its bytes, and is counted in `HOST_COPIES`: the stream is idle meanwhile, so
an event pair around it measures it, as on a GPU. Events stamp the timeline, so event times and
a host clock reading `CLOCK.now` are exact and repeatable. As on a GPU, an event's time can be
read only once the event has completed (after `Stream.synchronize` or `Event.synchronize`).

Names a test uses to drive the double are listed in `TEST_CONTROLS`; every other public function
and class is the real glue's surface, with the same members and signatures (checked by
tests/test_trt_api_names.py).
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
    # DLA (Jetson Orin has 2 cores; other GPUs and Jetson Thor none), and ONNX ops this fake
    # DLA refuses / accepts on top of fake_tensorrt.DLA_OPS (a test adds e.g. "Gemm").
    "dla_cores": 0,
    "dla_refuses": [],
    "dla_accepts": [],
}
GPU: dict[str, Any] = dict(DEFAULT_GPU)
MEMORY: dict[int, np.ndarray] = {}
_addresses = itertools.count(0x7F0000000000, 0x100000)
_streams = itertools.count(0x5500)
CURRENT = {"device": 0}

#: Fixed costs on the fake timeline, in ns (integers, so every figure is exact).
COSTS: dict[str, int] = {
    "copy_latency_ns": 2_000,  # per copy
    "pinned_bytes_per_ns": 20,  # ~20 GB/s from/to pinned host memory
    "pageable_bytes_per_ns": 10,  # pageable memory is staged by the driver: half the rate
    "kernel_ns_per_layer": 15_000,
    "elements_per_ns": 100,  # input elements processed per ns, on top of the per-layer time
    "launch_ns_per_layer": 5_000,  # host launch cost per layer outside a CUDA graph
    "graph_launch_ns": 8_000,  # one graph launch replaces the per-layer launches
    "sync_ns": 3_000,  # host wake-up after a stream synchronize
    "host_bytes_per_ns": 8,  # ~8 GB/s host memcpy between NumPy and pinned memory
}
#: Host memcpys into ("fill") and out of ("read") pinned buffers since the last `reset`.
HOST_COPIES: dict[str, int] = {"fill": 0, "read": 0}

#: Module names that drive the double from tests; not part of the real glue's surface.
TEST_CONTROLS = frozenset(
    {
        "reset",
        "copy_cost_ns",
        "kernel_cost_ns",
        "host_copy_cost_ns",
        "CLOCK",
        "COSTS",
        "GPU",
        "MEMORY",
        "GRAPHS",
        "HOST_COPIES",
    }
)


class _Clock:
    """The fake timeline in ns; `now` is a drop-in for `time.perf_counter_ns`."""

    def __init__(self) -> None:
        self.ns = 0

    def now(self) -> int:
        return self.ns

    def advance(self, ns: int) -> None:
        self.ns += int(ns)


CLOCK = _Clock()
_REPLAYING = {"depth": 0}
_CAPTURING: dict[str, Any] = {"graph": None}


def _capturing() -> Any:
    """The graph being captured, if any (read by the fake TensorRT's enqueue)."""
    return _CAPTURING["graph"]


def reset() -> None:
    GPU.clear()
    GPU.update({k: list(v) if isinstance(v, list) else v for k, v in DEFAULT_GPU.items()})
    MEMORY.clear()
    GRAPHS.clear()
    CURRENT["device"] = 0
    CLOCK.ns = 0
    HOST_COPIES.update(fill=0, read=0)
    _REPLAYING["depth"] = 0
    _CAPTURING["graph"] = None


def copy_cost_ns(nbytes: int, pinned: bool) -> int:
    rate = COSTS["pinned_bytes_per_ns" if pinned else "pageable_bytes_per_ns"]
    return COSTS["copy_latency_ns"] + -(-int(nbytes) // rate)


def host_copy_cost_ns(nbytes: int) -> int:
    """A host memcpy between NumPy and pinned memory (no launch: the CPU does it)."""
    return -(-int(nbytes) // COSTS["host_bytes_per_ns"])


def kernel_cost_ns(layers: int, elements: int, in_graph: bool) -> int:
    cost = layers * COSTS["kernel_ns_per_layer"] + int(elements) // COSTS["elements_per_ns"]
    return cost if in_graph else cost + layers * COSTS["launch_ns_per_layer"]


def _run_kernels(layers: int, elements: int) -> None:
    """Called by the fake TensorRT's `execute_async_v3`: the engine's time on the timeline."""
    CLOCK.advance(kernel_cost_ns(layers, elements, in_graph=_REPLAYING["depth"] > 0))


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
        self._pending: list[Event] = []

    @property
    def handle(self) -> int:
        return self._handle

    def synchronize(self) -> None:
        CLOCK.advance(COSTS["sync_ns"])
        for event in self._pending:
            event._done = True
        self._pending.clear()


class DeviceBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device_id: int) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._ptr = next(_addresses)
        MEMORY[self._ptr] = np.zeros(self.shape, self.dtype)

    def __del__(self) -> None:  # torch frees the memory with the tensor
        MEMORY.pop(self._ptr, None)

    @property
    def ptr(self) -> int:
        return self._ptr

    def copy_from_host(self, array: np.ndarray, stream: Stream) -> None:
        MEMORY[self._ptr][...] = array
        CLOCK.advance(copy_cost_ns(np.asarray(array).nbytes, pinned=False))

    def copy_to_host(self, stream: Stream) -> np.ndarray:
        CLOCK.advance(copy_cost_ns(MEMORY[self._ptr].nbytes, pinned=False))
        stream.synchronize()
        return MEMORY[self._ptr].copy()

    def copy_from_host_async(self, host: HostBuffer, stream: Stream) -> None:
        _check_pair(self, host)
        MEMORY[self._ptr][...] = host.array
        CLOCK.advance(copy_cost_ns(host.array.nbytes, pinned=True))

    def copy_to_host_async(self, host: HostBuffer, stream: Stream) -> None:
        _check_pair(self, host)
        host.array[...] = MEMORY[self._ptr]
        CLOCK.advance(copy_cost_ns(host.array.nbytes, pinned=True))


def _check_pair(device: DeviceBuffer, host: HostBuffer) -> None:
    # torch's copy_ would broadcast or cast; a mismatch here is a bug in the caller.
    if device.shape != host.shape or device.dtype != host.dtype:
        raise RuntimeError(
            f"copy between {device.shape} {device.dtype} and {host.shape} {host.dtype}"
        )


class HostBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.array: np.ndarray = np.zeros(self.shape, self.dtype)

    def fill(self, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"cannot fill a pinned {self.shape} buffer from {array.shape}")
        np.copyto(self.array, array, casting="no")
        HOST_COPIES["fill"] += 1
        CLOCK.advance(host_copy_cost_ns(self.array.nbytes))

    def read(self) -> np.ndarray:
        HOST_COPIES["read"] += 1
        CLOCK.advance(host_copy_cost_ns(self.array.nbytes))
        return self.array.copy()


class Event:
    """Stamps the fake timeline. Its time is readable once it has completed, as with CUDA
    (reading earlier fails there with cudaErrorNotReady)."""

    def __init__(self) -> None:
        self._stamp: int | None = None
        self._done = False
        self._stream: Stream | None = None

    def record(self, stream: Stream) -> None:
        if self._stream is not None and self in self._stream._pending:
            self._stream._pending.remove(self)
        self._stamp, self._done, self._stream = CLOCK.now(), False, stream
        stream._pending.append(self)

    def synchronize(self) -> None:
        if self._stamp is not None:
            self._done = True
            if self._stream is not None and self in self._stream._pending:
                self._stream._pending.remove(self)

    def elapsed_ms(self, end: Event) -> float:
        if self._stamp is None or end._stamp is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if not (self._done and end._done):
            raise RuntimeError("CUDA error: device not ready")
        return (end._stamp - self._stamp) / 1e6


class Graph:
    """Records the engine runs enqueued during capture (not run then) with the shapes and
    addresses bound at capture; a replay runs them on the buffers' contents at replay time, as a
    replayed CUDA graph does, and fails on freed buffers. A replay costs one graph launch
    instead of the per-layer launches."""

    def __init__(self, device_id: int) -> None:
        self._work: list[Any] = []
        GRAPHS.append(self)
        self._replays = 0

    def capture(self, fn: Any, stream: Stream) -> Any:
        """Call `fn` in capture mode: the fake TensorRT's enqueue records what it would run
        (with the shapes and addresses bound at capture) instead of running it."""
        if _CAPTURING["graph"] is not None:
            raise RuntimeError("a stream capture is already in progress")
        self._work = []
        _CAPTURING["graph"] = self
        try:
            return fn()
        finally:
            _CAPTURING["graph"] = None

    def _record(self, work: Any) -> None:
        self._work.append(work)

    def replay(self, stream: Stream) -> None:
        self._replays += 1
        CLOCK.advance(COSTS["graph_launch_ns"])
        _REPLAYING["depth"] += 1
        try:
            ok = all(work() for work in self._work)
        finally:
            _REPLAYING["depth"] -= 1
        if not ok:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


GRAPHS: list[Graph] = []


def allocate(shape: tuple[int, ...], dtype: np.dtype, device_id: int = 0) -> DeviceBuffer:
    return DeviceBuffer(shape, dtype, device_id)


def allocate_host(shape: tuple[int, ...], dtype: np.dtype) -> HostBuffer:
    return HostBuffer(shape, dtype)
