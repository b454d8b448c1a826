"""Running the cases of `vggdeploy bench`.

For each plan (runtime spec at one precision) the runtime is opened and loaded once; for each
batch size an input feed is built once (seeded, with the runtime's dtype and shape), checked
once with `Runtime.check_feed`, warmed up, then timed call by call around
`Runtime.infer_unchecked` (the contract's fast path: the checks ran once, outside the loop).
For a runtime that is not staged the check is a full `Runtime.infer` of the feed, untimed: it
counts as the first of `--warmup N` iterations (a seconds warm-up comes after it in full).

GPU runtimes that implement `StagedRuntime` are timed trtexec-style: CUDA events around the
host-to-device copy, the compute and the device-to-host copy, plus end-to-end host wall time. As
in trtexec, the input is put into the runtime's pinned host buffers once per case, before the
warm-up, so H2D and D2H time the transfers between pinned memory and the device only. Runtimes
that do not (ONNX Runtime, PyTorch, every CPU runtime) report end-to-end time only, and the
result says so.

With `reference_bare_ort`, every ONNX Runtime case is also timed as a bare
`InferenceSession.run` loop, alternating with the harness (`bench.reference`). With
`end_to_end`, each case is also timed from image files to top-k (`bench.endtoend`); with
`streams`, as N concurrent request streams over one loaded model (`bench.streams`). Nothing
here prints: progress goes through a `Reporter`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.bench import endtoend, streams
from vggdeploy.bench.environment import host_info, torch_threads, versions
from vggdeploy.bench.options import BenchOptions
from vggdeploy.bench.plan import Plan, Skipped
from vggdeploy.bench.reference import bare_ort_session, ort_model_path, with_bare_reference
from vggdeploy.bench.results import make_result
from vggdeploy.bench.timing import (
    Clock,
    PeakRss,
    StagedRuntime,
    coefficient_of_variation,
    images_per_second,
    summarize,
    time_calls,
    time_staged,
)
from vggdeploy.errors import CheckFailedError, InputError, VggDeployError
from vggdeploy.runtimes.base import RuntimeFailedError
from vggdeploy.runtimes.registry import open_runtime

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle
    from vggdeploy.records import ModelRecord
    from vggdeploy.runtimes.base import Runtime, TensorSpec


class Reporter:
    """Progress callbacks; the default does nothing. Never called inside a timed loop."""

    def start(self, total_cases: int) -> None: ...
    def case(self, label: str, phase: str) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


# -- inputs and model facts ---------------------------------------------------------------------


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
            array = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            array = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            array = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise InputError(f"input {spec.name!r} has dtype {dtype}, which bench cannot generate")
        feed[spec.name] = np.ascontiguousarray(array)
    return feed


def flops_per_image(model: ModelRecord, image_size: int) -> int | None:
    """FLOPs of one image at `image_size` (2 per multiply-accumulate), from the manifest."""
    if image_size == model.image_size:
        return model.flops_per_image
    from vggdeploy.models import POOL_GRID, ModelSpec, count_flops

    spec = ModelSpec.from_dict(model.to_json_dict())
    if not model.dense:
        return count_flops(spec, image_size)
    # Dense form: the FCs are convolutions over the (size/32 - 6)^2 positions of the last map.
    fc_macs = (
        spec.last_width * POOL_GRID * POOL_GRID * spec.hidden
        + spec.hidden * spec.hidden
        + spec.hidden * spec.num_classes
    )
    positions = (image_size // 32 - POOL_GRID + 1) ** 2
    return count_flops(spec, image_size) - 2 * fc_macs + 2 * fc_macs * positions


def resolve_image_size(model: ModelRecord, requested: int | None) -> int:
    """The input size to time: the bundle's own, or `requested` for a dense bundle."""
    recorded = model.image_size
    if requested is None or requested == recorded:
        return recorded
    if not model.dense:
        raise InputError(
            f"--image-size {requested}: this bundle was exported at {recorded}x{recorded} "
            "with a fixed input size; only a dense bundle (export --dense) runs other sizes"
        )
    from vggdeploy.models import check_image_size

    check_image_size(requested, dense=True)
    return requested


# -- the host -----------------------------------------------------------------------------------


# -- runtimes -----------------------------------------------------------------------------------


def _new_runtime(
    bundle: Bundle, plan: Plan, options: BenchOptions, streams: int | None = None
) -> Runtime:
    """Construct (not load) the plan's runtime, exactly as its spec says (CUDA graphs are the
    spec variant `tensorrt:cuda-graphs`, so a case's runtime column names what ran).
    `streams`: concurrent streams for runtimes that run their own (OpenVINO); None is one
    caller at a time."""
    return open_runtime(bundle, plan.spec, threads=options.threads, streams=streams)


def _describe(runtime: Runtime) -> dict[str, Any]:
    try:
        described: Any = runtime.describe()
        data = described.to_dict() if hasattr(described, "to_dict") else dict(described)
        return json.loads(json.dumps(data, default=str))
    except Exception as exc:  # describe is informative only; never lose a run over it
        return {"runtime": runtime.name, "describe_error": str(exc)}


# -- running ------------------------------------------------------------------------------------


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
    """Run every plan at each of its batch sizes; return the result document (see `--json`).

    A plan whose runtime cannot load, or a batch it cannot run (too large for a static-batch
    artifact, refused by the runtime), becomes a skipped entry with the reason. A batch that
    started and whose backend then failed (`RuntimeFailedError`: an allocation failure, a kernel
    error) or gave NaN or infinite outputs (`CheckFailedError`) becomes a failed entry: the
    reason names the runtime, its precision and the artifact. Nothing is printed.
    """
    reporter = reporter or Reporter()
    skipped = list(skipped)
    failed: list[Skipped] = []
    cases: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    rss = PeakRss()
    model = bundle.manifest.model
    image_size = resolve_image_size(model, options.image_size)
    flops = flops_per_image(model, image_size)
    paths = _end_to_end_images(bundle, options, image_size)
    started = datetime.now(timezone.utc)
    reporter.start(sum(len(p.batches) for p in plans))
    try:
        for plan in plans:
            label = f"{plan.runtime} {plan.precision}"
            reporter.case(label, "loading")
            rss.start()
            t0 = time.perf_counter()
            try:
                runtime = _new_runtime(bundle, plan, options)
                runtime.load()
            except VggDeployError as exc:
                skipped.append(Skipped(plan.runtime, plan.precision, str(exc)))
                for _ in plan.batches:
                    reporter.advance()
                continue
            load = {
                "runtime": plan.runtime,
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
                            bundle, plan, runtime, described, batch, image_size, flops,
                            options, rss, clock,
                        )  # fmt: skip
                        if paths:
                            case.update(
                                endtoend.run_end_to_end(
                                    bundle, runtime, described, batch, paths, options, clock,
                                    case["latency_ms"]["median"],
                                )
                            )  # fmt: skip
                        if options.streams:
                            case["streams"], refused = _stream_sweep(
                                bundle, plan, runtime, batch, image_size, options, clock
                            )
                            skipped += [
                                Skipped(plan.runtime, plan.precision, r, batch) for r in refused
                            ]
                    except (RuntimeFailedError, CheckFailedError) as exc:
                        failed.append(Skipped(plan.runtime, plan.precision, str(exc), batch))
                        reporter.advance()
                        continue
                    except VggDeployError as exc:
                        skipped.append(Skipped(plan.runtime, plan.precision, str(exc), batch))
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
    return make_result(
        bundle={
            "path": str(bundle.root),
            "model": model.name,
            "image_size": image_size,
            "flops_per_image": flops,
            "artifacts": {
                k: {"sha256": v.sha256, "precision": v.precision}
                for k, v in bundle.artifacts.items()
            },
        },
        method={
            "timestamp": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": host_info(),
            "versions": versions(),
            "torch_threads": torch_threads(),
            "options": options.to_dict(),
            "argv": list(argv) if argv is not None else None,
            "peak_rss": rss.description,
            **({"end_to_end_stages": dict(endtoend.STAGE_NOTES)} if paths else {}),
            **({"streams": STREAMS_NOTE} if options.streams else {}),
        },
        cases=cases,
        skipped=[s.to_dict() for s in skipped],
        failed=[f.to_dict() for f in failed],
        loads=loads,
    )


STREAMS_NOTE = (
    "N threads, each with its own seeded input, call one loaded model back to back after a "
    "shared warm-up and barrier; latency per call, images/s = all images / (first start to last "
    "end); intra-op threads per N recorded with their rule"
)


def _end_to_end_images(bundle: Bundle, options: BenchOptions, image_size: int) -> list[Path]:
    """DIR's images for `--end-to-end` (each decoded once here), or [] without it."""
    if not options.end_to_end:
        return []
    crop = bundle.preprocessing.crop
    if image_size != crop:
        raise InputError(
            f"--end-to-end runs the bundle's preprocessing, which crops {crop}x{crop}: drop "
            f"--image-size {image_size}"
        )
    return endtoend.image_set(options.end_to_end, bundle.preprocessing.resize)


def _stream_sweep(
    bundle: Bundle,
    plan: Plan,
    runtime: Runtime,
    batch: int,
    image_size: int,
    options: BenchOptions,
    clock: Clock,
) -> tuple[list[dict[str, Any]], list[str]]:
    def reopen(threads: int | None, n: int | None = None) -> Runtime:
        again = _new_runtime(bundle, plan, dataclasses.replace(options, threads=threads), n)
        return again.load()

    def feed(rt: Runtime, k: int) -> dict[str, np.ndarray]:
        return make_feed(rt.inputs, batch, image_size, (options.seed + k) % (2**32))

    return streams.run_sweep(runtime, reopen, batch, feed, options, options.stream_threads, clock)


def _run_case(
    bundle: Bundle,
    plan: Plan,
    runtime: Runtime,
    described: dict[str, Any],
    batch: int,
    image_size: int,
    flops: int | None,
    options: BenchOptions,
    rss: PeakRss,
    clock: Clock,
) -> dict[str, Any]:
    feed = make_feed(runtime.inputs, batch, image_size, options.seed)
    staged = isinstance(runtime, StagedRuntime)
    # Once, checked: the feed does not change inside the loop; a backend failure or a non-finite
    # output is one error line before any timing (staged runtimes run through their own steps).
    runtime.check_feed(feed) if staged else runtime.infer(feed)
    split: dict[str, list[float]] | None = None
    reference: dict[str, Any] | None = None

    if staged:
        # Into pinned memory once, as trtexec fills its host buffers once: every warm-up and
        # timed iteration copies the same pinned input to the device.
        runtime.stage_inputs(feed)

        def step(_: Any) -> Any:
            return time_staged(runtime, iterations=1, clock=clock)  # warm-up only
    else:
        step = runtime.infer_unchecked  # the contract's checks ran above

    use_reference = options.reference_bare_ort and plan.spec.name == "onnxruntime"
    if use_reference:  # created before the memory window opens
        ref_path = ort_model_path(bundle, described, plan.precision)
        ref_session = bare_ort_session(ref_path, plan.spec.device or "cpu", options.threads)
    warm = options.warmup_calls()
    checked = 0
    if not staged and warm.get("iterations"):
        # The checked call above ran the model on this very feed, untimed, as a warm-up call
        # does: it is the first of the warm-up iterations asked for, not one more.
        checked, warm = 1, {"iterations": warm["iterations"] - 1}
    rss.start()
    warmup_done = checked + len(time_calls(step, feed, **warm, clock=clock))
    wall0 = clock()
    if staged:
        host_ns, split = time_staged(runtime, **options.timed_calls(), clock=clock)
    elif use_reference:
        host_ns, reference = with_bare_reference(
            ref_session, ref_path, runtime, feed, options, clock
        )
    else:
        host_ns = time_calls(step, feed, **options.timed_calls(), clock=clock)
    wall_s = (clock() - wall0) / 1e9
    peak = rss.stop()

    latencies = [t / 1e6 for t in host_ns]
    stats = summarize(latencies)
    cv = coefficient_of_variation(stats)
    throughput = images_per_second(batch, stats)
    case: dict[str, Any] = {
        "runtime": plan.runtime,
        "runtime_name": plan.spec.name,
        "variants": list(plan.spec.variants),
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
        "split_ms": {k: summarize(v) for k, v in split.items()} if split else None,
        "reference": reference,
    }
    if reference is not None:
        case["peak_rss_note"] = "includes the bare reference session's working memory"
    if options.keep_samples:
        case["samples_ms"] = [round(x, 6) for x in latencies]
    return case
