"""What an application pays per batch: `vggdeploy bench --end-to-end DIR`.

trtexec (and the compute-only cases of `bench`) time the model on a ready tensor. An
application first reads and decodes image files, applies the model's preprocessing, copies the
batch to the device, runs the model and turns the logits into classes. NVIDIA/TensorRT issues
1476 and 3493 ("my app is much slower than trtexec") are this gap. Here each call of a case
does all of it, for `batch` files taken in turn from DIR's images, and every stage is timed:

- decode: `preprocess.load_image` per file (read, decode, EXIF orientation, to RGB; a JPEG is
  decoded in draft mode at the bundle's resize), as `vggdeploy predict` does;
- preprocess: `preprocess.preprocess_image` per image (the bundle's resize, centre crop and
  normalisation), stacked and cast to the input's dtype;
- copy: only for runtimes with the `StagedRuntime` hooks (TensorRT): NumPy -> pinned -> device,
  waited for. CPU runtimes have no copy; ONNX Runtime's CUDA provider and PyTorch on CUDA copy
  inside their own call, so it is part of `infer` there (the result says which);
- infer: the model (staged runtimes: compute, D2H and pinned -> NumPy);
- topk: softmax (float64) and a stable argsort per row, with labels, as `vggdeploy predict`.

One clock read after each stage, and a call's total runs from its start to the next call's
start: the stages of a call add up to its total exactly, and the totals to the loop's wall
time. `benchmarks/stage_sum.py` checks that the stage medians add up to the total median and what
the harness costs against a bare loop doing the same work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.bench.timing import (
    Clock,
    StagedRuntime,
    coefficient_of_variation,
    images_per_second,
    summarize,
)
from vggdeploy.errors import InputError

if TYPE_CHECKING:
    from vggdeploy.bench.options import BenchOptions
    from vggdeploy.bundle import Bundle
    from vggdeploy.runtimes.base import Runtime

#: The stages, in order ("copy" only for runtimes with a host -> device hook).
STAGES = ("decode", "preprocess", "copy", "infer", "topk")
#: What each stage covers (recorded in the result's method).
STAGE_NOTES = {
    "decode": "read and decode each file to 8-bit RGB (preprocess.load_image: EXIF orientation, "
    "JPEG draft mode at the bundle's resize), batch files per call, cycling through DIR",
    "preprocess": "the bundle's resize, centre crop and normalisation per image "
    "(preprocess.preprocess_image), stacked into one batch and cast to the input dtype",
    "copy": "runtimes with StagedRuntime hooks only: NumPy -> pinned host buffer -> device, "
    "waited for (stage_inputs + enqueue_h2d + synchronize)",
    "infer": "the model: Runtime.infer_unchecked; for staged runtimes compute + D2H + "
    "pinned -> NumPy",
    "topk": "softmax in float64 and a stable argsort per row, with labels (as predict)",
    "total": "from a call's start to the next call's start: the stages add up to it exactly",
}
#: At most this many of DIR's images (sorted) are cycled through; each is decoded once up
#: front, outside timing, so a file that cannot be read is refused before anything runs.
MAX_IMAGES = 256


def image_set(directory: str | os.PathLike[str], resize: int) -> list[Path]:
    """DIR's images (at most `MAX_IMAGES`, sorted), each checked to decode; one-line errors."""
    from vggdeploy.preprocess import find_images, load_image

    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"--end-to-end {root}: not a folder: give a folder of JPEG/PNG images")
    paths = find_images(root)[:MAX_IMAGES]
    for p in paths:
        load_image(p, resize)  # raises InputError naming the file
    return paths


def time_stages(
    stages: Sequence[tuple[str, Callable[[Any], Any]]],
    *,
    iterations: int | None = None,
    seconds: float | None = None,
    min_iterations: int = 1,
    clock: Clock,
) -> dict[str, list[int]]:
    """Run calls of `stages` (each on the previous stage's result; the first gets the call's
    index) and return each stage's durations and the calls' totals, in clock units (ns).

    Stopping follows `timing.time_calls`: exactly `iterations` calls, or until `seconds` have
    passed and at least `min_iterations` (and `iterations`) calls were made.
    """
    ends: list[list[int]] = [[] for _ in stages]
    marks = [(fn, out.append) for (_, fn), out in zip(stages, ends)]
    last = ends[-1]
    start = clock()
    if seconds is None:
        for n in range(int(iterations or 0)):
            x: Any = n
            for fn, mark in marks:
                x = fn(x)
                mark(clock())
    else:
        least = max(int(iterations or 0), int(min_iterations), 1)
        stop = start + int(seconds * 1e9)
        n = 0
        while True:
            x = n
            for fn, mark in marks:
                x = fn(x)
                mark(clock())
            n += 1
            if last[-1] >= stop and n >= least:
                break
    begins = [start, *last[:-1]]
    out: dict[str, list[int]] = {}
    previous = begins
    for (name, _), stamps in zip(stages, ends):
        out[name] = [b - a for a, b in zip(previous, stamps)]
        previous = stamps
    out["total"] = [b - a for a, b in zip(begins, last)]
    return out


def softmax_top_k(logits: np.ndarray, k: int, labels: Sequence[str]) -> list[list[Any]]:
    """Per row: the `k` most probable (index, label, probability), as `predict` reports them."""
    from vggdeploy.metrics import softmax, top_k

    return [top_k(row, k, labels) for row in softmax(np.asarray(logits))]


def copy_note(runtime: Runtime, described: dict[str, Any]) -> str | None:
    """None when the copy is timed on its own; else why there is no copy stage."""
    if isinstance(runtime, StagedRuntime):
        return None
    device = str(described.get("device") or "cpu")
    if device.startswith("cpu"):
        return "none: the runtime runs on the CPU, there is no host-to-device copy"
    return (
        f"inside infer: {runtime.name} on {device} copies to the device within its own call "
        "(no StagedRuntime hook to time it apart)"
    )


def pipeline_stages(
    bundle: Bundle, runtime: Runtime, batch: int, paths: Sequence[Path], top_k: int
) -> list[tuple[str, Callable[[Any], Any]]]:
    """The stages of one call for `runtime` at `batch`, cycling through `paths`."""
    from vggdeploy.preprocess import load_image, preprocess_image

    pre = bundle.preprocessing
    spec, out_name = runtime.inputs[0], runtime.outputs[0].name
    dtype = np.dtype(spec.dtype)
    n = len(paths)
    groups = [
        [paths[(g * batch + j) % n] for j in range(batch)] for g in range(n // math.gcd(n, batch))
    ]
    count = len(groups)
    num_classes = bundle.model.num_classes
    known = bundle.labels() or []
    labels = [known[i] if i < len(known) and known[i] else f"class {i}" for i in range(num_classes)]
    k = min(top_k, num_classes)
    resize = pre.resize

    def decode(i: int) -> list[Any]:
        return [load_image(p, resize) for p in groups[i % count]]

    def preprocess(images: list[Any]) -> dict[str, np.ndarray]:
        x = np.stack([preprocess_image(img, pre) for img in images])
        return {spec.name: x.astype(dtype, copy=False)}

    def topk(logits: np.ndarray) -> list[list[Any]]:
        return softmax_top_k(logits, k, labels)

    if isinstance(runtime, StagedRuntime):
        staged = runtime

        def copy(feed: dict[str, np.ndarray]) -> None:
            staged.stage_inputs(feed)
            staged.enqueue_h2d()
            staged.synchronize()

        def infer_staged(_: None) -> np.ndarray:
            staged.enqueue_compute()
            staged.enqueue_d2h()
            return staged.fetch_outputs()[out_name]

        return [
            ("decode", decode),
            ("preprocess", preprocess),
            ("copy", copy),
            ("infer", infer_staged),
            ("topk", topk),
        ]
    run = runtime.infer_unchecked

    def infer(feed: dict[str, np.ndarray]) -> np.ndarray:
        return run(feed)[out_name]

    return [("decode", decode), ("preprocess", preprocess), ("infer", infer), ("topk", topk)]


def run_end_to_end(
    bundle: Bundle,
    runtime: Runtime,
    described: dict[str, Any],
    batch: int,
    paths: Sequence[Path],
    options: BenchOptions,
    clock: Clock,
    compute_median_ms: float,
) -> dict[str, Any]:
    """Warm up and time the end-to-end calls of one case; returns the case's `stages` (the
    statistics of `timing.summarize`, ms, per stage and total) and `end_to_end` (the rest)."""
    stages = pipeline_stages(bundle, runtime, batch, paths, options.top_k)
    # one call outside timing with the checks, as the compute-only case checks its feed once
    feed = stages[1][1](stages[0][1](0))
    runtime.check_feed(feed)
    warm = time_stages(stages, **options.warmup_calls(), clock=clock)
    timed = time_stages(stages, **options.timed_calls(), clock=clock)
    ms = {name: [t / 1e6 for t in values] for name, values in timed.items()}
    stats = {name: summarize(values) for name, values in ms.items()}
    total = stats["total"]
    info: dict[str, Any] = {
        "images_dir": options.end_to_end,
        "images": len(paths),
        "warmup_iterations": len(warm["total"]),
        "iterations": len(ms["total"]),
        "measured_s": sum(timed["total"]) / 1e9,
        "throughput_ips": images_per_second(batch, total),
        "cv": coefficient_of_variation(total),
        "top_k": min(options.top_k, bundle.model.num_classes),
        "copy": copy_note(runtime, described) or "timed: host -> device (StagedRuntime hooks)",
        "compute_median_ms": compute_median_ms,
        "total_over_compute": total["median"] / compute_median_ms if compute_median_ms else None,
        "stage_median_sum_ms": sum(s["median"] for n, s in stats.items() if n != "total"),
    }
    if options.keep_samples:
        info["samples_ms"] = {n: [round(x, 6) for x in v] for n, v in ms.items()}
    return {"stages": stats, "end_to_end": info}
