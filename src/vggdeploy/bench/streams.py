"""Concurrent request streams over one loaded model: `vggdeploy bench --streams 1,2,4`.

As trtexec `--streams N` and Triton perf_analyzer's `--concurrency-range`: N threads, each with
its own input (seeded `seed + stream`), call the same loaded runtime back to back; every call's
latency is kept, and throughput is all images over the wall time from the first stream's start
to the last one's end. The threads warm up together, then start timing at one barrier. With
`--iterations`, each stream makes that many calls; with `--duration`, each runs that long.

Which runtimes can: ONNX Runtime's `InferenceSession.run` is thread-safe and releases the GIL;
PyTorch releases the GIL inside its kernels (the model is only read, under inference_mode).
TensorRT needs one execution context and CUDA stream per concurrent stream; `TrtRuntime`
holds one of each, so TensorRT runs `--streams 1` only and larger counts are refused with the
reason (use `trtexec --streams N`).

Intra-op threads. One ONNX Runtime session has one intra-op pool, shared by concurrent `run`
calls, each of which also computes on its calling thread; PyTorch's pool is process-wide. N
streams with the pool at every core oversubscribe the CPU, so by default (`auto`) the model is
loaded per stream count with `max(1, usable cores // N)` threads: the cores are split
between the streams rather than every stream asking for all of them (ONNX Runtime's default,
per its "Thread management" page, is one intra-op thread per physical core). A number
(`--stream-threads 1`) fixes it for every N instead. Each result records the count and rule.

Runtimes with streams of their own (OpenVINO: `NUM_STREAMS`, declared as the `streams` option)
are loaded per stream count with N streams, and they split the cores between them; their
intra-op threads stay their own unless `--stream-threads` fixes the total.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vggdeploy.bench.timing import (
    Clock,
    coefficient_of_variation,
    summarize,
    time_calls,
)
from vggdeploy.errors import InputError

if TYPE_CHECKING:
    from vggdeploy.bench.options import BenchOptions
    from vggdeploy.runtimes.base import Runtime

#: Runtimes whose one loaded instance cannot take concurrent calls, and why.
SERIAL_ONLY = {
    "tensorrt": (
        "TensorRT needs one execution context and CUDA stream per concurrent stream and "
        "TrtRuntime holds one: run --streams 1 (or trtexec --streams N)"
    ),
}
THREADS_AUTO = "auto"


def parse_stream_threads(text: str) -> int | None:
    """`auto` -> None (usable cores // N); `"2"` -> 2 intra-op threads for every N."""
    if text.strip().lower() == THREADS_AUTO:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise InputError(f"--stream-threads {text!r} must be 'auto' or 1 to 1024 threads")
    return value


def refusal(runtime_name: str, streams: int) -> str | None:
    """Why `streams` concurrent streams cannot run on one loaded `runtime_name`, or None."""
    if streams > 1 and runtime_name in SERIAL_ONLY:
        return f"--streams {streams}: {SERIAL_ONLY[runtime_name]}"
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_for(
    streams: int, fixed: int | None, takes_threads: bool, own_streams: bool = False
) -> tuple[int | None, str]:
    """Intra-op threads for `streams` streams and the rule that chose them."""
    if own_streams:
        if fixed is not None:
            return fixed, f"fixed (--stream-threads), shared by the runtime's own {streams} streams"
        return None, f"the runtime's own: {streams} stream(s) of its own share the cores"
    if not takes_threads:
        return None, "n/a: the runtime has no intra-op thread setting"
    if fixed is not None:
        return fixed, "fixed (--stream-threads)"
    return max(1, usable_cores() // streams), f"auto: usable cores ({usable_cores()}) // N"


def time_streams(
    step: Callable[[Any], Any],
    feeds: Sequence[Any],
    options: BenchOptions,
    clock: Clock,
) -> dict[str, Any]:
    """Run `step(feeds[k])` on len(feeds) threads at once; per-call latencies and throughput.

    Returns `latency_ns` (every call of every stream), `calls_per_stream`, `thread_ids` (one
    per stream: distinct threads really ran) and `wall_ns` (first start to last end)."""
    n = len(feeds)
    barrier = threading.Barrier(n)
    got: list[tuple[int, int, list[int]] | None] = [None] * n
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        feed = feeds[k]
        try:
            time_calls(step, feed, **options.warmup_calls(), clock=clock)
            barrier.wait()
            start = clock()
            times = time_calls(step, feed, **options.timed_calls(), clock=clock)
            got[k] = (threading.get_ident(), start, times)
        except threading.BrokenBarrierError:
            pass  # another stream failed: its error is reported
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=worker, args=(k,), name=f"vggdeploy-stream-{k}", daemon=True)
        for k in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    done = [g for g in got if g is not None]
    # time_calls reads the clock right after `start`; its durations are consecutive stamps
    first = min(start for _, start, _ in done)
    last = max(start + sum(times) for _, start, times in done)
    return {
        "latency_ns": [t for _, _, times in done for t in times],
        "calls_per_stream": [len(times) for _, _, times in done],
        "thread_ids": [ident for ident, _, _ in done],
        "wall_ns": last - first,
    }


def run_sweep(
    runtime: Runtime,
    reopen: Callable[..., Runtime],
    batch: int,
    make_feed: Callable[[Runtime, int], dict[str, Any]],
    options: BenchOptions,
    fixed_threads: int | None,
    clock: Clock,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every stream count of `options.streams` for one case: the results, and the reasons for
    counts that cannot run. `reopen(threads)` constructs and loads the model with that many
    intra-op threads (closed here), `reopen(threads, n)` with n streams of its own for runtimes
    that declare the `streams` option; `make_feed(runtime, k)` is stream k's input."""
    results: list[dict[str, Any]] = []
    refused: list[str] = []
    takes_threads = "threads" in type(runtime).OPTIONS
    own_streams = "streams" in type(runtime).OPTIONS
    torch_before = _torch_threads()
    try:
        for n in options.streams:
            reason = refusal(runtime.name, n)
            if reason:
                refused.append(reason)
                continue
            threads, rule = threads_for(n, fixed_threads, takes_threads, own_streams)
            if own_streams:
                own = reopen(threads, n)
            else:
                own = reopen(threads) if takes_threads else None
            model = own or runtime
            if own_streams and own is not None:
                # what the runtime chose for its N streams, read back from it
                threads = own.describe().details.get("inference_num_threads", threads)
            try:
                feeds = [make_feed(model, k) for k in range(n)]
                for feed in feeds:
                    model.check_feed(feed)
                got = time_streams(model.infer_unchecked, feeds, options, clock)
            finally:
                if own is not None:
                    own.close()
            latencies = [t / 1e6 for t in got["latency_ns"]]
            stats = summarize(latencies)
            calls = len(latencies)
            wall_s = got["wall_ns"] / 1e9
            results.append(
                {
                    "streams": n,
                    "intra_op_threads": threads,
                    "threads_rule": rule,
                    "iterations": calls,
                    "calls_per_stream": got["calls_per_stream"],
                    "distinct_threads": len(set(got["thread_ids"])),
                    "measured_s": wall_s,
                    "throughput_ips": calls * batch / wall_s if wall_s > 0 else 0.0,
                    "latency_ms": stats,
                    "cv": coefficient_of_variation(stats),
                }
            )
    finally:
        _restore_torch_threads(torch_before)
    if results:
        base = results[0]["throughput_ips"]
        for r in results:
            r["throughput_vs_first"] = r["throughput_ips"] / base if base else None
    return results, refused


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _restore_torch_threads(before: int | None) -> None:
    # torch.set_num_threads is process-wide: give later cases the count they had
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
