"""The same-run reference of `bench --reference-bare-ort`: a bare ONNX Runtime loop.

Every ONNX Runtime case is also timed as a bare `InferenceSession.run` loop, alternating with
the harness in rounds (drift cancels), so a result shows what the harness costs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.bench.timing import (
    Clock,
    coefficient_of_variation,
    summarize,
    time_calls,
)

if TYPE_CHECKING:
    from vggdeploy.bench.options import BenchOptions
    from vggdeploy.bundle import Bundle
    from vggdeploy.runtimes.base import Runtime

# The harness agrees with a bare loop when their medians differ by less than this, or by less
# than twice the round-to-round spread of the ratio when that is larger.
REFERENCE_MIN_TOLERANCE = 0.05


def ort_model_path(bundle: Bundle, described: dict[str, Any], precision: str) -> Path:
    """The ONNX file the runtime loaded (its description's `artifact`), else the bundle's."""
    value = described.get("artifact")
    if isinstance(value, str) and Path(value).is_file():
        return Path(value)
    from vggdeploy import precision as P

    return bundle.artifact_path(P.onnx_key(precision))


def bare_ort_session(path: Path, device: str, threads: int | None) -> Any:
    """A plain ONNX Runtime session with default options on the harness's provider: the
    reference loop.

    On the CPU this is `ortsession.cpu_session`, the toolchain's one CPU constructor. For the
    CUDA and TensorRT providers it is built here: `cpu_session` is CPU-only by design, and a
    reference for a GPU case must run on the same provider as the case to mean anything.
    """
    from vggdeploy.ortsession import cpu_session, import_ort

    if device in (None, "cpu"):
        return cpu_session(path, threads=threads)
    from vggdeploy.runtimes.onnxrt import PROVIDERS

    ort = import_ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=list(PROVIDERS[device]))


def with_bare_reference(
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

    time_calls(bare, feed, **options.warmup_calls(), clock=clock)
    rounds = max(1, options.reference_rounds)
    per_round: list[int] = []
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
        order = ((runtime.infer_unchecked, harness_ns), (bare, bare_ns))
        for fn, into in order if r % 2 == 0 else order[::-1]:
            into += time_calls(
                fn,
                feed,
                iterations=per_round[r] if per_round else None,
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
