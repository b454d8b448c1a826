"""Timing primitives of `vggdeploy bench`: the timed loop, trtexec's staged GPU split,
statistics and peak memory.

A case is timed call by call with `time.perf_counter_ns` around the backend step; nothing else
runs inside the timed loop (no progress refresh, no memory sampling thread: peak RSS comes from
the kernel's high-water mark, reset per case), so the harness adds well under 2% to a bare loop
(`benchmarks/harness_overhead.py` measures it).
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

STAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max", "std")


@runtime_checkable
class StagedRuntime(Protocol):
    """Optional hooks for trtexec's split, implemented by GPU runtimes that own their buffers.

    `stage_inputs(feed)` binds the feed's shapes and copies its arrays into the runtime's pinned
    host input buffers; bench calls it once per case, before the warm-up and outside every timed
    stage (trtexec likewise fills its host buffers once). Then, per iteration: `enqueue_h2d()`
    copies those pinned buffers to the device, `enqueue_compute()` runs the model (with CUDA
    graphs, launches the captured graph) and `enqueue_d2h()` copies the outputs into pinned host
    buffers. Each `enqueue_*` puts work on the runtime's CUDA stream and returns without waiting,
    so H2D and D2H are the transfers only. `record_event()` records a timing event on that
    stream and returns it; after `synchronize()`, `event_ms(start, end)` is the device time
    between two events in milliseconds. `fetch_outputs()` returns NumPy copies of the outputs
    of the last `enqueue_d2h` (the pinned -> NumPy copy); bench never calls it inside a timed
    loop.
    """

    def stage_inputs(self, feed: dict[str, np.ndarray]) -> None: ...
    def enqueue_h2d(self) -> None: ...
    def enqueue_compute(self) -> None: ...
    def enqueue_d2h(self) -> None: ...
    def record_event(self) -> Any: ...
    def synchronize(self) -> None: ...
    def event_ms(self, start: Any, end: Any) -> float: ...
    def fetch_outputs(self) -> dict[str, np.ndarray]: ...


#: What each stage of the staged split covers (recorded in the result's method).
STAGED_SPLIT = {
    "h2d": "pinned host -> device copy of the inputs (filled from NumPy once per case, untimed)",
    "compute": "the model's work on the stream (a graph launch with CUDA graphs)",
    "d2h": "device -> pinned host copy of the outputs (no pinned -> NumPy copy)",
    "gpu_total": "from before H2D to after D2H on the stream",
}


Clock = Callable[[], int]


def time_calls(
    step: Callable[[Any], Any],
    feed: Any,
    *,
    iterations: int | None = None,
    seconds: float | None = None,
    min_iterations: int = 1,
    clock: Clock = time.perf_counter_ns,
) -> list[int]:
    """Call `step(feed)` back to back and return each call's duration in clock units (ns).

    With `iterations` only: exactly that many calls. With `seconds`: until that much time has
    passed and at least `min_iterations` (and `iterations`, if given) calls were made, as
    trtexec's `--duration` with `--iterations`. One clock read per call: a call's duration is
    the time from its start to the next call's start, so the durations add up to the loop's
    wall time exactly and the loop costs one clock read and one list append per call.
    """
    stamps: list[int] = []
    stamp = stamps.append
    if seconds is None:
        count = int(iterations or 0)
        if count <= 0:
            return []
        stamp(clock())
        for _ in range(count):
            step(feed)
            stamp(clock())
    else:
        least = max(int(iterations or 0), int(min_iterations), 1)
        now = clock()
        end = now + int(seconds * 1e9)
        stamp(now)
        while True:
            step(feed)
            now = clock()
            stamp(now)
            if now >= end and len(stamps) > least:
                break
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_staged(
    runtime: StagedRuntime,
    *,
    iterations: int | None = None,
    seconds: float | None = None,
    min_iterations: int = 1,
    clock: Clock = time.perf_counter_ns,
) -> tuple[list[int], dict[str, list[float]]]:
    """trtexec's split: host end-to-end ns per call, and per-stage device ms from events.

    Runs on the inputs staged by `runtime.stage_inputs(feed)`, which the caller makes first."""
    split: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "gpu_total": []}

    def step(_: None) -> None:
        e0 = runtime.record_event()
        runtime.enqueue_h2d()
        e1 = runtime.record_event()
        runtime.enqueue_compute()
        e2 = runtime.record_event()
        runtime.enqueue_d2h()
        e3 = runtime.record_event()
        runtime.synchronize()
        step.events.append((e0, e1, e2, e3))  # type: ignore[attr-defined]

    step.events = []  # type: ignore[attr-defined]
    host = time_calls(
        step,
        None,
        iterations=iterations,
        seconds=seconds,
        min_iterations=min_iterations,
        clock=clock,
    )
    # Elapsed times are read after the loop so no event query sits inside the timed calls.
    for e0, e1, e2, e3 in step.events:  # type: ignore[attr-defined]
        split["h2d"].append(runtime.event_ms(e0, e1))
        split["compute"].append(runtime.event_ms(e1, e2))
        split["d2h"].append(runtime.event_ms(e2, e3))
        split["gpu_total"].append(runtime.event_ms(e0, e3))
    return host, split


def summarize(latencies_ms: Sequence[float]) -> dict[str, float]:
    """min, mean, median, p90, p95, p99, max and sample standard deviation (ms).

    Percentiles interpolate linearly between samples (NumPy's default).
    """
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p = np.percentile(a, [50, 90, 95, 99])
    return {
        "min": float(a.min()),
        "mean": float(a.mean()),
        "median": float(p[0]),
        "p90": float(p[1]),
        "p95": float(p[2]),
        "p99": float(p[3]),
        "max": float(a.max()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
    }


#: The statistic throughput derives from, beside the median latency every table leads with:
#: images/s = batch / median latency, so the two columns of a row describe the same call.
THROUGHPUT_STAT = "median"


def images_per_second(batch: int, stats: dict[str, float]) -> float:
    """Throughput of serial calls of `batch` images: batch / `THROUGHPUT_STAT` latency (ms)."""
    ms = stats[THROUGHPUT_STAT]
    return batch * 1000.0 / ms if ms > 0 else 0.0


def coefficient_of_variation(stats: dict[str, float]) -> float:
    return stats["std"] / stats["mean"] if stats["mean"] > 0 else 0.0


class PeakRss:
    """Peak resident memory of this process over a window, without disturbing the timed loop.

    Preferred: reset the kernel's high-water mark (`/proc/self/clear_refs` = 5, Linux >= 4.0)
    and read `VmHWM` afterwards - zero cost inside the window. Fallback: a thread sampling
    `VmRSS` every 20 ms. Last resort: `ru_maxrss`, the process's peak so far.
    """

    def __init__(self) -> None:
        self.method = self._probe()
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _status_kb(field_name: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field_name + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def _probe(self) -> str:
        if self._status_kb("VmHWM") is None:
            return "ru_maxrss"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return "vmhwm-reset"
        except OSError:
            return "vmrss-sampled"

    @property
    def description(self) -> str:
        return {
            "vmhwm-reset": "VmHWM after resetting it per case (/proc/self/clear_refs)",
            "vmrss-sampled": "VmRSS sampled every 20 ms by a background thread",
            "ru_maxrss": "ru_maxrss: the process's peak so far (not per case)",
        }[self.method]

    def start(self) -> None:
        if self.method == "vmhwm-reset":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        elif self.method == "vmrss-sampled":
            self._peak_kb = self._status_kb("VmRSS") or 0
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak_kb = max(self._peak_kb, self._status_kb("VmRSS") or 0)

    def stop(self) -> float:
        """Peak RSS in MiB since `start`."""
        if self.method == "vmhwm-reset":
            kb = self._status_kb("VmHWM") or 0
        elif self.method == "vmrss-sampled":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            kb = max(self._peak_kb, self._status_kb("VmRSS") or 0)
        else:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024
