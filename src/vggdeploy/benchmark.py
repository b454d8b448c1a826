"""Latency and throughput across runtimes, precisions and batch sizes: `vggdeploy bench`.

A *case* is one runtime choice (`torch`, `torch:channels-last`, `onnxruntime:cuda`, ...) at one
precision and one batch size. For each runtime choice and precision the runtime is loaded once;
for each batch size an input feed is built once (seeded, with the runtime's dtype and shape),
checked once with `Runtime.check_feed`, warmed up, then timed call by call with
`time.perf_counter_ns` around the backend step (`Runtime._infer`). Nothing else runs inside the
timed loop: no progress refresh, no memory sampling thread (peak RSS comes from the kernel's
high-water mark, reset per case), so the harness adds well under 2% to a bare loop
(`bench/harness_overhead.py` measures it).

GPU runtimes that implement `StagedRuntime` are timed trtexec-style: CUDA events around the
host-to-device copy, the compute and the device-to-host copy, plus end-to-end host wall time. As
in trtexec, the input is put into the runtime's pinned host buffers once per case, before the
warm-up, so H2D and D2H time the transfers between pinned memory and the device only.
Runtimes that do not (ONNX Runtime, PyTorch, every CPU runtime) report end-to-end time only, and
the result says so.

Results carry the method (host, threads, providers, versions, flags, counts) so a result file
explains itself; `compare_results` compares two result files case by case.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import io
import json
import logging
import math
import os
import platform
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vggdeploy.bundle import Bundle, atomic_path, atomic_write_json, atomic_write_text
from vggdeploy.errors import CheckFailedError, InputError, VggDeployError
from vggdeploy.runtimes import get_runtime
from vggdeploy.runtimes.base import Runtime, TensorSpec, host_cpu

log = logging.getLogger(__name__)

RESULT_SCHEMA = "vggdeploy.bench/1"
DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_CV_THRESHOLD = 0.10  # trtexec warns above 10% coefficient of variation
# The harness agrees with a bare loop when their medians differ by less than this, or by less
# than twice the round-to-round spread of the ratio when that is larger.
REFERENCE_MIN_TOLERANCE = 0.05
STAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max", "std")
PRECISIONS = ("fp32", "fp16", "int8", "int8-u8")


# -- runtime choices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """How `bench` drives one registered runtime: its variants and where its precisions live.

    `variants` maps a variant name (the part after `:` in `--runtime torch:channels-last`) to
    constructor keyword arguments; variants in one `group` exclude each other (a device or a
    provider), the others are flags. `artifact_prefix` names the bundle artifacts whose
    precision suffixes this runtime runs (`onnx.int8` -> int8); None means the runtime builds
    its model from the bundle's spec and weights and runs `native_precisions`.
    """

    name: str
    variants: dict[str, dict[str, Any]]
    group: tuple[str, ...] = ()
    default_variant: str | None = None
    artifact_prefix: str | None = None
    native_precisions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    module: str = ""
    install_hint: str = ""


BACKENDS: dict[str, Backend] = {
    "torch": Backend(
        name="torch",
        variants={
            "cpu": {"device": "cpu"},
            "cuda": {"device": "cuda"},
            "channels-last": {"channels_last": True},
        },
        group=("cpu", "cuda"),
        default_variant="cpu",
        native_precisions={"cpu": ("fp32",), "cuda": ("fp32", "fp16")},
        module="torch",
        install_hint="pip install torch",
    ),
    "onnxruntime": Backend(
        name="onnxruntime",
        variants={
            "cpu": {"provider": "cpu"},
            "cuda": {"provider": "cuda"},
            "tensorrt": {"provider": "tensorrt"},
        },
        group=("cpu", "cuda", "tensorrt"),
        default_variant="cpu",
        artifact_prefix="onnx",
        module="onnxruntime",
        install_hint="pip install 'vggdeploy[cpu]' (or [gpu])",
    ),
    "tensorrt": Backend(
        name="tensorrt",
        variants={"cuda-graphs": {"cuda_graphs": True}},
        artifact_prefix="engine",
        module="tensorrt",
        install_hint="pip install 'vggdeploy[gpu]' on a machine with an NVIDIA GPU; JetPack ships it on Jetson",
    ),
}

_ORT_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_MAKE_HINT = {
    "onnx.fp16": "vggdeploy convert BUNDLE --precision fp16",
    "onnx.int8": "vggdeploy calibrate BUNDLE --images DIR",
    "onnx.int8-u8": "vggdeploy calibrate BUNDLE --images DIR --target onnxruntime",
}


@dataclass(frozen=True)
class RuntimeChoice:
    """One `--runtime` value: a registered runtime and its variants, e.g. `torch:channels-last`."""

    name: str
    variants: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return ":".join((self.name, *self.variants))

    @property
    def backend(self) -> Backend:
        return BACKENDS[self.name]

    @property
    def device_variant(self) -> str | None:
        backend = self.backend
        chosen = [v for v in self.variants if v in backend.group]
        return chosen[0] if chosen else backend.default_variant

    def kwargs(self) -> dict[str, Any]:
        backend = self.backend
        out: dict[str, Any] = {}
        if backend.default_variant and not any(v in backend.group for v in self.variants):
            out.update(backend.variants[backend.default_variant])
        for v in self.variants:
            out.update(backend.variants[v])
        return out


def parse_runtime(text: str) -> RuntimeChoice:
    """Parse `name[:variant[:variant]]`; the default device/provider variant is left implicit."""
    parts = [p.strip() for p in text.strip().split(":")]
    name, variants = parts[0], [p for p in parts[1:] if p]
    if name not in BACKENDS:
        raise InputError(
            f"--runtime {text!r}: unknown runtime {name!r}; choose one of {', '.join(BACKENDS)} "
            "(with variants such as torch:channels-last, onnxruntime:cuda, tensorrt:cuda-graphs)"
        )
    backend = BACKENDS[name]
    for v in variants:
        if v not in backend.variants:
            raise InputError(
                f"--runtime {text!r}: {name} has no variant {v!r}; "
                f"choose from {', '.join(backend.variants)}"
            )
    grouped = [v for v in variants if v in backend.group]
    if len(grouped) > 1:
        raise InputError(f"--runtime {text!r}: choose one of {' / '.join(grouped)}, not both")
    if len(set(variants)) != len(variants):
        raise InputError(f"--runtime {text!r} repeats a variant")
    # canonical form: the default device is implicit, the device comes first
    if grouped and grouped[0] == backend.default_variant:
        variants = [v for v in variants if v != backend.default_variant]
    variants.sort(key=lambda v: (v not in backend.group, v))
    return RuntimeChoice(name, tuple(variants))


def parse_batches(text: str) -> tuple[int, ...]:
    """`"1,8,32"` -> (1, 8, 32); each a positive integer, no repeats."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"--batch {text!r} must be comma-separated positive integers, e.g. 1,8,32"
        ) from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--batch {text!r} must be comma-separated positive integers, e.g. 1,8,32")
    if len(set(values)) != len(values):
        raise InputError(f"--batch {text!r} lists a batch size twice")
    return values


def parse_amount(text: str, option: str) -> tuple[str, float]:
    """`"20"` -> ("iterations", 20); `"2s"` / `"500ms"` -> ("seconds", 2.0 / 0.5)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s)?\s*", text or "")
    if not m:
        raise InputError(
            f"{option} {text!r} must be a number of iterations (20) or a time (2s, 500ms)"
        )
    value, unit = float(m.group(1)), m.group(2)
    if unit is None:
        if value != int(value):
            raise InputError(f"{option} {text!r}: iterations must be a whole number (or add 's')")
        return "iterations", value
    return "seconds", value / 1000 if unit == "ms" else value


def parse_threshold(text: str) -> float:
    """`"5%"` or `"0.05"` -> 0.05."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(%)?\s*", text or "")
    if not m:
        raise InputError(f"--threshold {text!r} must be a percentage such as 5% (or 0.05)")
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 <= value < 10:
        raise InputError(f"--threshold {text!r} is out of range")
    return value


# -- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A case that was asked for (or would be run by default) but cannot run here, and why."""

    runtime: str
    precision: str | None
    reason: str
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "batch": self.batch,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        what = " ".join(x for x in (self.runtime, self.precision) if x)
        if self.batch is not None:
            what += f" b{self.batch}"
        return f"{what}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """One runtime choice at one precision, to be run at `batches`."""

    choice: RuntimeChoice
    precision: str
    batches: tuple[int, ...]


def _module_missing(backend: Backend) -> str | None:
    if backend.module and importlib.util.find_spec(backend.module) is None:
        return f"the {backend.module} package is not installed ({backend.install_hint})"
    return None


def choice_unavailable(choice: RuntimeChoice) -> str | None:
    """Why this host cannot run `choice` at all, or None if it may."""
    missing = _module_missing(choice.backend)
    if missing:
        return missing
    device = choice.device_variant
    if choice.name == "torch" and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device visible to PyTorch (torch.cuda.is_available() is False)"
    if choice.name == "onnxruntime" and device in _ORT_PROVIDERS:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if _ORT_PROVIDERS[device] not in have:
            return (
                f"{_ORT_PROVIDERS[device]} is not in this onnxruntime build "
                f"(it has {', '.join(have)}; install onnxruntime-gpu instead of onnxruntime)"
            )
    return None


def bundle_precisions(bundle: Bundle, prefix: str) -> list[str]:
    """Precisions of the bundle's artifacts with this key prefix (`onnx.int8` -> int8)."""
    found = []
    for key in bundle.artifacts:
        kind, _, precision = key.partition(".")
        if kind == prefix and precision:
            found.append(precision)
    order = {p: i for i, p in enumerate(PRECISIONS)}
    return sorted(found, key=lambda p: (order.get(p, len(order)), p))


def precision_unavailable(bundle: Bundle, choice: RuntimeChoice, precision: str) -> str | None:
    """Why `choice` cannot run `precision` from this bundle, or None if it may."""
    backend = choice.backend
    if backend.artifact_prefix is None:
        allowed = backend.native_precisions.get(choice.device_variant or "", ())
        if precision not in allowed:
            return (
                f"{choice.spec} runs the PyTorch model in {' or '.join(allowed)} only; "
                f"{precision} is an ONNX/engine artifact (use onnxruntime or tensorrt)"
            )
        return None
    key = f"{backend.artifact_prefix}.{precision}"
    if not bundle.has_artifact(key):
        if backend.artifact_prefix == "engine":
            hint = f"vggdeploy build BUNDLE --precision {precision} (on the target GPU)"
        else:
            hint = _MAKE_HINT.get(key, "re-run the stage that makes it")
        return f"the bundle has no {key} artifact: create it with `{hint}`"
    return None


def default_choices() -> list[RuntimeChoice]:
    """Every runtime choice `bench` tries by default (those the host lacks are skipped)."""
    return [
        RuntimeChoice("torch"),
        RuntimeChoice("torch", ("cuda",)),
        RuntimeChoice("onnxruntime"),
        RuntimeChoice("onnxruntime", ("cuda",)),
        RuntimeChoice("onnxruntime", ("tensorrt",)),
        RuntimeChoice("tensorrt"),
    ]


def plan_cases(
    bundle: Bundle,
    runtimes: Sequence[RuntimeChoice] | None,
    precisions: Sequence[str] | None,
    batches: Sequence[int],
) -> tuple[list[Plan], list[Skipped]]:
    """Expand runtime x precision into plans, listing what cannot run here with the reason.

    With no `precisions`, a runtime runs every precision it has: PyTorch its native ones, ONNX
    Runtime every `onnx.*` artifact, TensorRT every `engine.*` artifact.
    """
    choices = list(runtimes) if runtimes else default_choices()
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    seen: set[tuple[str, str]] = set()
    for choice in choices:
        reason = choice_unavailable(choice)
        if reason:
            skipped.append(Skipped(choice.spec, None, reason))
            continue
        if precisions:
            wanted = list(precisions)
        elif choice.backend.artifact_prefix is None:
            wanted = list(choice.backend.native_precisions.get(choice.device_variant or "", ()))
        else:
            wanted = bundle_precisions(bundle, choice.backend.artifact_prefix)
            if not wanted:
                skipped.append(
                    Skipped(
                        choice.spec,
                        None,
                        f"the bundle has no {choice.backend.artifact_prefix}.* artifacts"
                        + (
                            " (build one with `vggdeploy build`)"
                            if choice.name == "tensorrt"
                            else ""
                        ),
                    )
                )
                continue
        for precision in wanted:
            if (choice.spec, precision) in seen:
                continue
            seen.add((choice.spec, precision))
            reason = precision_unavailable(bundle, choice, precision)
            if reason:
                skipped.append(Skipped(choice.spec, precision, reason))
            else:
                plans.append(Plan(choice, precision, tuple(batches)))
    return plans, skipped


# -- measuring ----------------------------------------------------------------------------------


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


@dataclass
class BenchOptions:
    """How each case is measured. `iterations`/`seconds` follow trtexec (see `time_calls`)."""

    iterations: int | None = None
    seconds: float | None = 3.0
    min_iterations: int = 10
    warmup_iterations: int | None = None
    warmup_seconds: float | None = 0.5
    cv_threshold: float = DEFAULT_CV_THRESHOLD
    seed: int = 0
    image_size: int | None = None
    threads: int | None = None
    cuda_graphs: bool = False
    reference_bare_ort: bool = False
    reference_rounds: int = 4
    keep_samples: bool = False

    def __post_init__(self) -> None:
        if self.iterations is None and self.seconds is None:
            raise InputError("give --iterations or --duration (or both)")
        if self.iterations is not None and self.iterations < 1:
            raise InputError(f"--iterations {self.iterations} must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            raise InputError(f"--duration {self.seconds} must be positive")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads} must be at least 1")
        if not 0 < self.cv_threshold < 10:
            raise InputError(f"--cv-threshold {self.cv_threshold} is out of range")

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "duration_s": self.seconds,
            "min_iterations": self.min_iterations if self.seconds is not None else None,
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": self.warmup_seconds,
            "cv_threshold": self.cv_threshold,
            "seed": self.seed,
            "image_size": self.image_size,
            "threads": self.threads,
            "cuda_graphs": self.cuda_graphs,
            "reference_bare_ort": self.reference_bare_ort,
        }


class Reporter:
    """Progress callbacks; the default does nothing. Never called inside a timed loop."""

    def start(self, total_cases: int) -> None: ...
    def case(self, label: str, phase: str) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


def resolve_shape(spec: TensorSpec, batch: int, image_size: int) -> tuple[int, ...]:
    """Concrete shape for a spec: the batch axis, then height/width for a dense model."""
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim >= 0:
            if axis == 0 and dim != batch:
                raise InputError(
                    f"input {spec.name!r} has a fixed batch of {dim}; batch {batch} cannot run "
                    f"(re-export with --batch dynamic)"
                )
            shape.append(dim)
        elif axis == 0:
            shape.append(batch)
        else:
            shape.append(image_size)
    return tuple(shape)


def make_feed(
    inputs: Sequence[TensorSpec], batch: int, image_size: int, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random inputs of each spec's dtype and shape (built once, outside timing)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in inputs:
        shape = resolve_shape(spec, batch, image_size)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            feed[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise InputError(f"input {spec.name!r} has dtype {dtype}, which bench cannot generate")
        feed[spec.name] = np.ascontiguousarray(feed[spec.name])
    return feed


def flops_per_image(bundle: Bundle, image_size: int) -> int | None:
    """FLOPs of one image at `image_size` (2 per multiply-accumulate), from the manifest."""
    model = bundle.model
    recorded = model.get("flops_per_image")
    if image_size == model.get("image_size"):
        return recorded
    from vggdeploy.models import POOL_GRID, ModelSpec, count_flops

    spec = ModelSpec.from_dict(model)
    if not model.get("dense"):
        return count_flops(spec, image_size)
    # Dense form: the FCs are convolutions over the (size/32 - 6)^2 positions of the last map.
    fc_macs = (
        spec.last_width * POOL_GRID * POOL_GRID * spec.hidden
        + spec.hidden * spec.hidden
        + spec.hidden * spec.num_classes
    )
    positions = (image_size // 32 - POOL_GRID + 1) ** 2
    return count_flops(spec, image_size) - 2 * fc_macs + 2 * fc_macs * positions


def host_info() -> dict[str, Any]:
    """CPU model, cores, GPU, OS and Python: what a result depends on."""
    cpu, have = host_cpu()
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in have]
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hostname": platform.node(),
        "gpu": None,
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    return info


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _new_runtime(bundle: Bundle, plan: Plan, options: BenchOptions) -> Runtime:
    cls = get_runtime(plan.choice.name)
    kwargs = {**plan.choice.kwargs(), "precision": plan.precision}
    if options.threads is not None:
        kwargs["threads"] = options.threads
    if options.cuda_graphs and plan.choice.name == "tensorrt":
        kwargs["cuda_graphs"] = True
    params = inspect.signature(cls).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "threads" in kwargs and "threads" not in params and not accepts_any:
        if plan.choice.name == "torch":
            import torch

            torch.set_num_threads(kwargs.pop("threads"))
        else:
            raise InputError(f"{plan.choice.spec} does not take a thread count: drop --threads")
    unknown = [k for k in kwargs if k not in params and not accepts_any]
    if unknown:
        raise InputError(
            f"{cls.__name__} does not support {', '.join(unknown)} (asked by {plan.choice.spec})"
        )
    return cls(bundle, **kwargs)


def _describe(runtime: Runtime) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(runtime.describe(), default=str))
    except Exception as exc:  # describe is informative only; never lose a run over it
        return {"runtime": runtime.name, "describe_error": str(exc)}


def _ort_model_path(bundle: Bundle, runtime: Runtime, precision: str) -> Path:
    """The ONNX file the runtime loaded (its `describe()["artifact"]`), else the bundle's."""
    value = _describe(runtime).get("artifact")
    if isinstance(value, str) and Path(value).is_file():
        return Path(value)
    return bundle.artifact_path(f"onnx.{precision}")


def bare_ort_session(path: Path, provider: str, threads: int | None) -> Any:
    """A plain `onnxruntime.InferenceSession` with default options: the reference loop."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
    providers = [_ORT_PROVIDERS.get(provider, "CPUExecutionProvider")]
    if providers[0] != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    return ort.InferenceSession(str(path), so, providers=providers)


def run_benchmark(
    bundle: Bundle,
    plans: Sequence[Plan],
    options: BenchOptions,
    *,
    skipped: Sequence[Skipped] = (),
    reporter: Reporter | None = None,
    clock: Clock = time.perf_counter_ns,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every plan at each of its batch sizes; return the result document (see `--json`)."""
    reporter = reporter or Reporter()
    skipped = list(skipped)
    cases: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    rss = PeakRss()
    image_size = _image_size(bundle, options)
    flops = flops_per_image(bundle, image_size)
    started = datetime.now(timezone.utc)
    reporter.start(sum(len(p.batches) for p in plans))
    try:
        for plan in plans:
            label = f"{plan.choice.spec} {plan.precision}"
            reporter.case(label, "loading")
            rss.start()
            t0 = time.perf_counter()
            try:
                runtime = _new_runtime(bundle, plan, options)
                runtime.load()
            except VggDeployError as exc:
                skipped.append(Skipped(plan.choice.spec, plan.precision, str(exc)))
                for _ in plan.batches:
                    reporter.advance()
                continue
            load = {
                "runtime": plan.choice.spec,
                "precision": plan.precision,
                "load_s": time.perf_counter() - t0,
                "load_peak_rss_mb": rss.stop(),
            }
            loads.append(load)
            try:
                described = _describe(runtime)
                for batch in plan.batches:
                    reporter.case(f"{label} b{batch}", "measuring")
                    try:
                        case = _run_case(
                            bundle, plan, runtime, batch, image_size, flops, options, rss, clock
                        )
                    except VggDeployError as exc:
                        skipped.append(Skipped(plan.choice.spec, plan.precision, str(exc), batch))
                        reporter.advance()
                        continue
                    case["describe"] = described
                    case["load_s"] = load["load_s"]
                    cases.append(case)
                    reporter.advance()
            finally:
                runtime.close()
    finally:
        reporter.stop()
    return {
        "schema": RESULT_SCHEMA,
        "bundle": {
            "path": str(bundle.root),
            "model": bundle.model.get("name"),
            "image_size": image_size,
            "flops_per_image": flops,
            "artifacts": {
                k: {"sha256": v.get("sha256"), "precision": v.get("precision")}
                for k, v in bundle.artifacts.items()
            },
        },
        "method": {
            "timestamp": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": host_info(),
            "versions": _versions(),
            "torch_threads": _torch_threads(),
            "options": options.to_dict(),
            "argv": list(argv) if argv is not None else None,
            "timer": (
                "time.perf_counter_ns read once per call: a call lasts from its start to the "
                "next call's start; feed built and checked once, outside the loop"
            ),
            "latency": "per call (one batch), milliseconds; percentiles interpolate linearly",
            "throughput": "batch / mean latency (serial calls, one stream)",
            "gflops": "flops_per_image x images/s; FLOPs count a multiply-accumulate as 2",
            "gpu_split": dict(STAGED_SPLIT),
            "peak_rss": rss.description,
        },
        "cases": cases,
        "skipped": [s.to_dict() for s in skipped],
        "loads": loads,
    }


def _image_size(bundle: Bundle, options: BenchOptions) -> int:
    recorded = bundle.model.get("image_size", 224)
    if options.image_size is None or options.image_size == recorded:
        return recorded
    if not bundle.model.get("dense"):
        raise InputError(
            f"--image-size {options.image_size}: this bundle was exported at {recorded}x{recorded} "
            "with a fixed input size; only a dense bundle (export --dense) runs other sizes"
        )
    from vggdeploy.models import check_image_size

    check_image_size(options.image_size, dense=True)
    return options.image_size


def _versions() -> dict[str, str]:
    from vggdeploy.bundle import library_versions

    return library_versions("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "onnx")


def _measure(
    step: Callable[[Any], Any],
    feed: Any,
    iterations: int | None,
    seconds: float | None,
    options: BenchOptions,
    clock: Clock,
) -> list[int]:
    return time_calls(
        step,
        feed,
        iterations=iterations,
        seconds=seconds,
        min_iterations=options.min_iterations if seconds is not None else 1,
        clock=clock,
    )


def _warm_up(step: Callable[[Any], Any], feed: Any, options: BenchOptions, clock: Clock) -> int:
    if options.warmup_iterations is not None:
        done = time_calls(step, feed, iterations=options.warmup_iterations, clock=clock)
    else:
        done = time_calls(step, feed, seconds=options.warmup_seconds or 0.0, clock=clock)
    return len(done)


def _run_case(
    bundle: Bundle,
    plan: Plan,
    runtime: Runtime,
    batch: int,
    image_size: int,
    flops: int | None,
    options: BenchOptions,
    rss: PeakRss,
    clock: Clock,
) -> dict[str, Any]:
    feed = make_feed(runtime.inputs, batch, image_size, options.seed)
    runtime.check_feed(feed)  # once: the feed does not change inside the loop
    staged = isinstance(runtime, StagedRuntime)
    split_ns: dict[str, list[float]] | None = None
    reference: dict[str, Any] | None = None

    if staged:
        # Into pinned memory once, as trtexec fills its host buffers once: every warm-up and
        # timed iteration copies the same pinned input to the device.
        runtime.stage_inputs(feed)

        def step(_: Any) -> Any:
            return time_staged(runtime, iterations=1, clock=clock)  # warm-up only
    else:
        step = runtime._infer  # the backend call itself; the contract's checks ran above

    use_reference = options.reference_bare_ort and plan.choice.name == "onnxruntime"
    if use_reference:  # created before the memory window opens
        ref_path = _ort_model_path(bundle, runtime, plan.precision)
        ref_session = bare_ort_session(
            ref_path, plan.choice.device_variant or "cpu", options.threads
        )
    rss.start()
    warmup_done = _warm_up(step, feed, options, clock)
    wall0 = clock()
    if staged:
        host_ns, split_ns = time_staged(
            runtime,
            iterations=options.iterations,
            seconds=options.seconds,
            min_iterations=options.min_iterations if options.seconds is not None else 1,
            clock=clock,
        )
    elif use_reference:
        host_ns, reference = _with_bare_reference(
            ref_session, ref_path, runtime, feed, options, clock
        )
    else:
        host_ns = _measure(step, feed, options.iterations, options.seconds, options, clock)
    wall_s = (clock() - wall0) / 1e9
    peak = rss.stop()

    latencies = [t / 1e6 for t in host_ns]
    stats = summarize(latencies)
    cv = coefficient_of_variation(stats)
    throughput = batch * 1000.0 / stats["mean"] if stats["mean"] > 0 else 0.0
    case: dict[str, Any] = {
        "runtime": plan.choice.spec,
        "runtime_name": plan.choice.name,
        "variants": list(plan.choice.variants),
        "precision": plan.precision,
        "batch": batch,
        "label": runtime.label,
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "input_dtypes": {k: str(v.dtype) for k, v in feed.items()},
        "warmup_iterations": warmup_done,
        "iterations": len(latencies),
        "measured_s": wall_s,
        "latency_ms": stats,
        "cv": cv,
        "noisy": cv > options.cv_threshold,
        "throughput_ips": throughput,
        "flops_per_image": flops,
        "gflops_per_s": flops * throughput / 1e9 if flops else None,
        "peak_rss_mb": peak,
        "timing": (
            "CUDA events per stage (H2D, compute, D2H: transfers between pinned host buffers "
            "and the device; input staged into pinned memory once, untimed) + host end-to-end"
            if staged
            else "host end-to-end wall clock (this runtime exposes no H2D/compute/D2H split)"
        ),
        "split_ms": {k: summarize(v) for k, v in split_ns.items()} if split_ns else None,
        "reference": reference,
    }
    if reference is not None:
        case["peak_rss_note"] = "includes the bare reference session's working memory"
    if options.keep_samples:
        case["samples_ms"] = [round(x, 6) for x in latencies]
    return case


def _with_bare_reference(
    session: Any,
    path: Path,
    runtime: Runtime,
    feed: dict[str, np.ndarray],
    options: BenchOptions,
    clock: Clock,
) -> tuple[list[int], dict[str, Any]]:
    """Time the harness loop and a bare `session.run` loop in alternating rounds (drift cancels)."""
    run = session.run

    def bare(f: dict[str, np.ndarray]) -> Any:
        return run(None, f)

    _warm_up(bare, feed, options, clock)
    rounds = max(1, options.reference_rounds)
    if options.iterations is not None:
        rounds = min(rounds, options.iterations)
        # exactly `iterations` calls each, spread over the rounds (10 in 4: 3, 3, 2, 2)
        base, extra = divmod(options.iterations, rounds)
        per_round = [base + (r < extra) for r in range(rounds)]
    per_s = None if options.seconds is None else options.seconds / rounds
    per_min = max(1, math.ceil(options.min_iterations / rounds))
    harness_ns: list[int] = []
    bare_ns: list[int] = []
    round_ratios: list[float] = []
    for r in range(rounds):
        h_start, b_start = len(harness_ns), len(bare_ns)
        order = ((runtime._infer, harness_ns), (bare, bare_ns))
        for fn, into in order if r % 2 == 0 else order[::-1]:
            into += time_calls(
                fn,
                feed,
                iterations=per_round[r] if options.iterations is not None else None,
                seconds=per_s,
                min_iterations=per_min if per_s is not None else 1,
                clock=clock,
            )
        round_ratios.append(
            float(np.median(harness_ns[h_start:])) / float(np.median(bare_ns[b_start:]))
        )
    ref_stats = summarize([t / 1e6 for t in bare_ns])
    h_stats = summarize([t / 1e6 for t in harness_ns])
    ratio = h_stats["median"] / ref_stats["median"]
    # Noise: how much the ratio moves from round to round (rounds alternate, so drift cancels).
    spread = float(np.std(round_ratios, ddof=1)) if len(round_ratios) > 1 else 0.0
    tolerance = max(REFERENCE_MIN_TOLERANCE, 2 * spread)
    return harness_ns, {
        "what": f"bare onnxruntime.InferenceSession.run on {path.name}, default session options"
        + (f", {options.threads} threads" if options.threads else ""),
        "providers": session.get_providers(),
        "rounds": rounds,
        "iterations": len(bare_ns),
        "latency_ms": ref_stats,
        "cv": coefficient_of_variation(ref_stats),
        "median_ratio": ratio,
        "round_ratios": round_ratios,
        "tolerance": tolerance,
        "agrees": abs(ratio - 1) <= tolerance,
    }


def noisy_warnings(result: dict[str, Any]) -> list[str]:
    """trtexec-style warnings for cases whose coefficient of variation is over the threshold."""
    threshold = result["method"]["options"]["cv_threshold"]
    out = []
    for c in result["cases"]:
        if c["noisy"]:
            out.append(
                f"{c['runtime']} {c['precision']} b{c['batch']}: latency varies by "
                f"{c['cv']:.1%} (coefficient of variation > {threshold:.0%}); the figures are "
                "noisy - close other work, pin threads, or measure longer (--duration)"
            )
        ref = c.get("reference")
        if ref and not ref["agrees"]:
            out.append(
                f"{c['runtime']} {c['precision']} b{c['batch']}: median {ref['median_ratio']:.3f}x "
                f"the bare onnxruntime loop (beyond {ref['tolerance']:.0%} noise)"
            )
    return out


# -- outputs ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    ["runtime", "precision", "batch", "label", "iterations", "warmup_iterations", "measured_s"]
    + [f"latency_{k}_ms" for k in STAT_KEYS]
    + ["cv", "noisy", "throughput_ips", "gflops_per_s", "flops_per_image", "peak_rss_mb", "load_s"]
    + [
        f"{s}_{k}_ms"
        for s in ("h2d", "compute", "d2h", "gpu_total")
        for k in ("mean", "median", "p99")
    ]
    + ["ref_median_ms", "ref_mean_ms", "ref_p99_ms", "ref_median_ratio", "ref_agrees", "timing"]
)


def case_row(case: dict[str, Any]) -> dict[str, Any]:
    """One case flattened to the CSV columns."""
    row: dict[str, Any] = {k: case.get(k) for k in CSV_COLUMNS if k in case}
    for k in STAT_KEYS:
        row[f"latency_{k}_ms"] = case["latency_ms"][k]
    for stage in ("h2d", "compute", "d2h", "gpu_total"):
        split = (case.get("split_ms") or {}).get(stage)
        for k in ("mean", "median", "p99"):
            row[f"{stage}_{k}_ms"] = split[k] if split else None
    ref = case.get("reference")
    row["ref_median_ms"] = ref["latency_ms"]["median"] if ref else None
    row["ref_mean_ms"] = ref["latency_ms"]["mean"] if ref else None
    row["ref_p99_ms"] = ref["latency_ms"]["p99"] if ref else None
    row["ref_median_ratio"] = ref["median_ratio"] if ref else None
    row["ref_agrees"] = ref["agrees"] if ref else None
    return row


def write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, result)


def write_csv(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in result["cases"]:
        writer.writerow({k: _csv_value(v) for k, v in case_row(case).items()})
    atomic_write_text(path, buf.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


TABLE_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "median ms",
    "p90 ms",
    "p99 ms",
    "mean ms",
    "std ms",
    "CV",
    "img/s",
    "GFLOP/s",
    "peak RSS MiB",
]


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table (strings), shared by the terminal and Markdown views."""
    rows = []
    for c in result["cases"]:
        lat = c["latency_ms"]
        gf = c.get("gflops_per_s")
        rows.append(
            [
                c["runtime"],
                c["precision"],
                str(c["batch"]),
                f"{lat['median']:.3f}",
                f"{lat['p90']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['mean']:.3f}",
                f"{lat['std']:.3f}",
                f"{c['cv']:.1%}" + (" !" if c["noisy"] else ""),
                f"{c['throughput_ips']:.1f}",
                f"{gf:.1f}" if gf is not None else "-",
                f"{c['peak_rss_mb']:.0f}",
            ]
        )
    return rows


def split_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in result["cases"]:
        s = c.get("split_ms")
        if s:
            rows.append(
                [c["runtime"], c["precision"], str(c["batch"])]
                + [f"{s[k]['mean']:.3f}" for k in ("h2d", "compute", "d2h", "gpu_total")]
                + [f"{c['latency_ms']['mean']:.3f}"]
            )
    return rows


SPLIT_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "H2D ms",
    "compute ms",
    "D2H ms",
    "GPU total ms",
    "host e2e ms",
]
REF_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "harness median ms",
    "bare ORT median ms",
    "ratio",
    "within noise",
]


def reference_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in result["cases"]:
        ref = c.get("reference")
        if ref:
            rows.append(
                [
                    c["runtime"],
                    c["precision"],
                    str(c["batch"]),
                    f"{c['latency_ms']['median']:.3f}",
                    f"{ref['latency_ms']['median']:.3f}",
                    f"{ref['median_ratio']:.3f}",
                    ("yes" if ref["agrees"] else "NO") + f" (±{ref['tolerance']:.0%})",
                ]
            )
    return rows


def method_line(result: dict[str, Any]) -> str:
    m = result["method"]
    o = m["options"]
    host = m["host"]
    if o["iterations"] is not None and o["duration_s"] is None:
        run = f"{o['iterations']} iterations"
    elif o["iterations"] is None:
        least = o["min_iterations"] or 1
        run = f"{o['duration_s']:g} s" + (f" (at least {least} iterations)" if least > 1 else "")
    else:
        run = f"at least {o['iterations']} iterations and {o['duration_s']:g} s"
    warm = (
        f"{o['warmup_iterations']} iterations"
        if o["warmup_iterations"] is not None
        else f"{o['warmup_s']:g} s"
    )
    gpu = f", GPU {host['gpu']}" if host.get("gpu") else ", no GPU"
    return (
        f"{result['bundle']['model']} at {result['bundle']['image_size']}px on {host['cpu']} "
        f"({host['usable_cores']} cores){gpu}; warm-up {warm}, then {run} per case; "
        f"{m['timestamp']}"
    )


def render_markdown(result: dict[str, Any]) -> str:
    """The results as GitHub Markdown tables, with the method and skipped cases."""

    def table(headers: list[str], rows: list[list[str]], right_from: int) -> list[str]:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append(
            "|" + "|".join("---:" if i >= right_from else "---" for i in range(len(headers))) + "|"
        )
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return lines

    lines = [f"**vggdeploy bench** - {method_line(result)}", ""]
    lines += table(TABLE_HEADERS, table_rows(result), 2)
    if split_rows(result):
        lines += ["", "GPU split (mean, CUDA events):", ""]
        lines += table(SPLIT_HEADERS, split_rows(result), 3)
    if reference_rows(result):
        lines += ["", "Same-run reference, bare `onnxruntime` loop:", ""]
        lines += table(REF_HEADERS, reference_rows(result), 3)
    notes = _notes(result)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _notes(result: dict[str, Any]) -> list[str]:
    notes = [
        f"skipped {s['runtime']}"
        + (f" {s['precision']}" if s["precision"] else "")
        + (f" b{s['batch']}" if s.get("batch") else "")
        + f": {s['reason']}"
        for s in result["skipped"]
    ]
    if not any(c.get("split_ms") for c in result["cases"]):
        notes.append(
            "end-to-end host timing only: no runtime here exposes the H2D/compute/D2H split"
        )
    notes += [f"warning: {w}" for w in noisy_warnings(result)]
    return notes


def print_rich(result: dict[str, Any], console: Any) -> None:
    """The summary table (and split/reference tables) on a rich console."""
    from rich.table import Table

    def make(
        title: str | None, headers: list[str], rows: list[list[str]], right_from: int
    ) -> Table:
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i >= right_from else "left", no_wrap=True)
        for r in rows:
            t.add_row(*r)
        return t

    console.print(make(method_line(result), TABLE_HEADERS, table_rows(result), 2))
    if split_rows(result):
        console.print(make("GPU split (mean, CUDA events)", SPLIT_HEADERS, split_rows(result), 3))
    if reference_rows(result):
        console.print(
            make(
                "Same-run reference: bare onnxruntime loop", REF_HEADERS, reference_rows(result), 3
            )
        )
    for note in _notes(result):
        style = "yellow" if note.startswith("warning") else None
        console.print(note, style=style, highlight=False, markup=False)


def write_plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Latency (median, whisker p90-p99) and throughput against batch size, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for c in result["cases"]:
        series.setdefault(f"{c['runtime']} {c['precision']}", []).append(c)
    if not series:
        raise InputError("nothing to plot: no case ran")
    batches = sorted({c["batch"] for c in result["cases"]})
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(12, 5.2), constrained_layout=True)
    n = len(series)
    spread = 0.06  # offset the series on the log axis so whiskers do not overlap
    for i, (name, cs) in enumerate(sorted(series.items())):
        cs = sorted(cs, key=lambda c: c["batch"])
        shift = 2 ** ((i - (n - 1) / 2) * spread)
        xs = [c["batch"] * shift for c in cs]
        med = [c["latency_ms"]["median"] for c in cs]
        (line,) = ax_lat.plot(xs, med, marker="o", label=name)
        p90 = [c["latency_ms"]["p90"] for c in cs]
        p99 = [c["latency_ms"]["p99"] for c in cs]
        ax_lat.vlines(xs, med, p90, color=line.get_color(), linewidth=1, alpha=0.6)
        ax_lat.vlines(xs, p90, p99, color=line.get_color(), linewidth=4, alpha=0.6)
        ax_lat.plot(xs, p99, linestyle="none", marker="_", markersize=10, color=line.get_color())
        for x, c in zip(xs, cs):
            if c["noisy"]:
                ax_lat.annotate(
                    "noisy",
                    (x, c["latency_ms"]["p99"]),
                    fontsize=7,
                    color=line.get_color(),
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax_tp.plot(
            xs, [c["throughput_ips"] for c in cs], marker="o", label=name, color=line.get_color()
        )
    for ax in (ax_lat, ax_tp):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per batch, ms (log)")
    ax_lat.set_title("Latency per batch: dot = median, thick bar = p90 to p99")
    ax_tp.set_ylabel("throughput, images/s")
    ax_tp.set_title("Throughput (serial calls)")
    ax_tp.set_ylim(bottom=0)
    ax_lat.legend(fontsize=8)
    ax_tp.legend(fontsize=8)
    host = result["method"]["host"]
    fig.suptitle(
        f"{result['bundle']['model']} {result['bundle']['image_size']}px - {host['cpu']}, "
        f"{host['usable_cores']} cores"
        + (f", {host['gpu']}" if host.get("gpu") else "")
        + f" - {result['method']['timestamp']}",
        fontsize=10,
    )
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)


# -- comparing ----------------------------------------------------------------------------------


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist: give a file written by `vggdeploy bench --json`")
    try:
        data = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        raise InputError(f"{p} is not a vggdeploy bench result (schema {RESULT_SCHEMA} expected)")
    return data


def case_key(case: dict[str, Any]) -> tuple[str, str, int]:
    return (case["runtime"], case["precision"], int(case["batch"]))


def compare_results(old: dict[str, Any], new: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Per-case ratios new/old of median latency and throughput; regressions beyond `threshold`.

    A case regresses when its median latency grew by more than `threshold` (0.05 = 5%).
    """
    old_cases = {case_key(c): c for c in old["cases"]}
    new_cases = {case_key(c): c for c in new["cases"]}
    rows = []
    for key in [k for k in new_cases if k in old_cases]:
        o, n = old_cases[key], new_cases[key]
        ratio = n["latency_ms"]["median"] / o["latency_ms"]["median"]
        status = (
            "regression"
            if ratio > 1 + threshold
            else ("faster" if ratio < 1 - threshold else "same")
        )
        rows.append(
            {
                "runtime": key[0],
                "precision": key[1],
                "batch": key[2],
                "old_median_ms": o["latency_ms"]["median"],
                "new_median_ms": n["latency_ms"]["median"],
                "latency_ratio": ratio,
                "p99_ratio": n["latency_ms"]["p99"] / o["latency_ms"]["p99"],
                "throughput_ratio": n["throughput_ips"] / o["throughput_ips"],
                "status": status,
                "noisy": bool(o.get("noisy") or n.get("noisy")),
            }
        )
    differences = {}
    for part in ("host", "versions"):
        a, b = old["method"].get(part, {}), new["method"].get(part, {})
        for k in sorted(set(a) | set(b)):
            if k in ("hostname",):
                continue
            if a.get(k) != b.get(k):
                differences[f"{part}.{k}"] = [a.get(k), b.get(k)]
    return {
        "threshold": threshold,
        "rows": rows,
        "only_old": [list(k) for k in old_cases if k not in new_cases],
        "only_new": [list(k) for k in new_cases if k not in old_cases],
        "regressions": sum(r["status"] == "regression" for r in rows),
        "method_differences": differences,
    }


def render_comparison(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and notes for the comparison table."""
    headers = [
        "runtime",
        "precision",
        "batch",
        "old median ms",
        "new median ms",
        "latency x",
        "p99 x",
        "throughput x",
        "verdict",
    ]
    rows = [
        [
            r["runtime"],
            r["precision"],
            str(r["batch"]),
            f"{r['old_median_ms']:.3f}",
            f"{r['new_median_ms']:.3f}",
            f"{r['latency_ratio']:.3f}",
            f"{r['p99_ratio']:.3f}",
            f"{r['throughput_ratio']:.3f}",
            r["status"].upper()
            if r["status"] == "regression"
            else r["status"] + (" (noisy)" if r["noisy"] else ""),
        ]
        for r in cmp["rows"]
    ]
    notes = []
    for k in cmp["only_old"]:
        notes.append(f"only in OLD: {k[0]} {k[1]} b{k[2]}")
    for k in cmp["only_new"]:
        notes.append(f"only in NEW: {k[0]} {k[1]} b{k[2]}")
    for k, (a, b) in cmp["method_differences"].items():
        notes.append(f"method differs: {k}: {a} -> {b}")
    notes.append(
        f"{cmp['regressions']} regression(s) beyond {cmp['threshold']:.1%} in median latency"
    )
    return headers, rows, notes


def check_regressions(cmp: dict[str, Any]) -> None:
    """Raise `CheckFailedError` (exit 2) if any case regressed."""
    if cmp["regressions"]:
        worst = max(cmp["rows"], key=lambda r: r["latency_ratio"])
        raise CheckFailedError(
            f"{cmp['regressions']} case(s) slower by more than {cmp['threshold']:.1%}; worst "
            f"{worst['runtime']} {worst['precision']} b{worst['batch']} at "
            f"{worst['latency_ratio']:.3f}x the old median"
        )


def iter_skipped_lines(result: dict[str, Any]) -> Iterable[str]:
    for s in result["skipped"]:
        yield str(Skipped(s["runtime"], s["precision"], s["reason"], s.get("batch")))
