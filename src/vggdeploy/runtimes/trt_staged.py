"""The benchmark's staged hooks of `TrtRuntime`: trtexec's H2D / compute / D2H split.

`vggdeploy bench` times these with CUDA events recorded between them, as trtexec does:
`stage_inputs` (once per case, outside the timed stages) binds the shapes and fills pinned
host buffers from the caller's NumPy arrays; then each timed iteration enqueues only the
pinned->device copy (H2D), the engine (compute) and the device->pinned copy (D2H). The
pinned->NumPy copy happens in `fetch_outputs`, when a caller wants the results. The feed is
checked once by the caller (`check_feed`), as `_infer` relies on `infer`.

A mixin: it uses the runtime's stream, buffers and binding (`_bind`, `_execute`, `_capture`),
no TensorRT names of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class StagedHooks:
    """`stage_inputs`, `enqueue_h2d`, `enqueue_compute`, `enqueue_d2h`, `fetch_outputs`,
    `record_event`, `synchronize`, `event_ms` over a loaded `TrtRuntime`."""

    _inputs: list[Any]
    _stream: Any
    _cuda: Any
    _buffers: dict[str, Any]
    _out_buffers: dict[str, Any]
    _host: dict[str, Any]
    _bound_key: tuple[Any, ...] | None
    _staged_shapes: tuple[Any, ...] | None
    _graph: Any
    _graph_key: tuple[Any, ...] | None
    cuda_graphs: bool

    # provided by TrtRuntime / Runtime
    _require_loaded: Any
    _shape_key: Any
    _bind: Any
    _execute: Any
    _capture: Any

    def stage_inputs(self, feed: dict[str, np.ndarray]) -> None:
        """Bind `feed`'s shapes and copy its arrays into the pinned input buffers that every
        following `enqueue_h2d` sends to the device; allocates the pinned outputs too. Waits
        for the stream first: a copy in flight may still be reading the pinned memory."""
        self._require_loaded()
        self._staged_shapes = None  # until the new inputs are in place
        key = self._shape_key(feed)
        self._stream.synchronize()
        if key != self._bound_key:
            self._bind(feed, key)
        for spec in self._inputs:
            array = feed[spec.name]
            host = self._host_buffer(spec.name, tuple(array.shape), np.dtype(spec.dtype))
            host.fill(array)
        for name, buffer in self._out_buffers.items():
            self._host_buffer(name, buffer.shape, buffer.dtype)
        self._staged_shapes = key

    def enqueue_h2d(self) -> None:
        """Enqueue the copy of the staged pinned inputs to the device (the transfer only).

        Rebinds the staged shapes first if `infer` ran other shapes since `stage_inputs`."""
        self._require_loaded()
        if self._staged_shapes is None:
            raise RuntimeError("stage_inputs(feed) must come first: no inputs are staged")
        if self._staged_shapes != self._bound_key:
            self._bind(
                {s.name: self._host[s.name].array for s in self._inputs}, self._staged_shapes
            )
        stream = self._stream
        for spec in self._inputs:
            self._buffers[spec.name].copy_from_host_async(self._host[spec.name], stream)

    def enqueue_compute(self) -> None:
        """Enqueue the engine (with CUDA graphs: replay the graph of these shapes, capturing
        it after one ordinary run the first time)."""
        key = self._staged_key()
        if self.cuda_graphs and key == self._graph_key:
            self._graph.replay(self._stream)
            return
        self._execute()
        if self.cuda_graphs:
            self._capture(key)

    def enqueue_d2h(self) -> None:
        """Enqueue the copy of every output into its pinned host buffer (the transfer only;
        `fetch_outputs` makes the NumPy copies)."""
        self._staged_key()
        for name, buffer in self._out_buffers.items():
            host = self._host_buffer(name, buffer.shape, buffer.dtype)
            buffer.copy_to_host_async(host, self._stream)

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        """NumPy copies of the outputs of the last `enqueue_d2h` (waits for the stream first)."""
        self._staged_key()
        self._stream.synchronize()
        return {name: self._host[name].read() for name in self._out_buffers}

    def record_event(self) -> Any:
        """A timing event recorded now on the runtime's stream."""
        self._require_loaded()
        event = self._cuda.Event()
        event.record(self._stream)
        return event

    def synchronize(self) -> None:
        self._require_loaded()
        self._stream.synchronize()

    def event_ms(self, start: Any, end: Any) -> float:
        """Device milliseconds between two recorded events (after they completed)."""
        return float(start.elapsed_ms(end))

    def _staged_key(self) -> tuple[Any, ...]:
        self._require_loaded()
        if self._bound_key is None:
            raise RuntimeError(
                "stage_inputs(feed) and enqueue_h2d() must come first: no input shapes are bound"
            )
        return self._bound_key

    def _host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        host = self._host.get(name)
        if host is None or host.shape != shape or host.dtype != np.dtype(dtype):
            host = self._cuda.allocate_host(shape, np.dtype(dtype))
            self._host[name] = host
        return host
