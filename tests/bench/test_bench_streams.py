"""`vggdeploy bench --streams N`: concurrent request streams over one loaded model (ONNX
Runtime on the tiny bundle, real threads and the real clock)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from vggdeploy import bench
from vggdeploy.bench import streams
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.report import bench as view
from vggdeploy.runtimes.registry import RuntimeSpec


def test_parse_streams_and_threads() -> None:
    assert bench.parse_streams("1,2,4") == (1, 2, 4)
    for bad, needle in (("0", "--streams '0'"), ("a", "--streams 'a'"), ("2,2", "twice")):
        with pytest.raises(InputError, match=needle):
            bench.parse_streams(bad)
    with pytest.raises(InputError, match="too large: at most 256"):
        bench.parse_streams("100000")
    assert streams.parse_stream_threads("auto") is None
    assert streams.parse_stream_threads("3") == 3
    with pytest.raises(InputError, match="--stream-threads 'x'"):
        streams.parse_stream_threads("x")
    assert streams.refusal("onnxruntime", 8) is None and streams.refusal("tensorrt", 1) is None
    assert "execution context" in (streams.refusal("tensorrt", 2) or "")
    assert streams.threads_for(2, None, True)[0] == max(1, streams.usable_cores() // 2)
    assert streams.threads_for(4, 3, True) == (3, "fixed (--stream-threads)")
    assert streams.threads_for(4, None, False)[0] is None


def test_time_streams_runs_concurrently_on_n_threads() -> None:
    """Each stream's step waits at a barrier with the others: it only completes if the N
    streams really run at the same time on N threads."""
    n = 3
    meet = threading.Barrier(n, timeout=10)
    seen: Counter[int] = Counter()

    def step(feed: int) -> None:
        seen[threading.get_ident()] += 1
        meet.wait()

    opts = bench.BenchOptions(iterations=5, seconds=None, warmup_iterations=1)
    got = streams.time_streams(step, list(range(n)), opts, clock=__import__("time").perf_counter_ns)
    assert got["calls_per_stream"] == [5, 5, 5] and len(got["latency_ns"]) == 15
    assert len(set(got["thread_ids"])) == n and set(seen) == set(got["thread_ids"])
    assert all(count == 6 for count in seen.values())  # warm-up 1 + timed 5 per thread
    assert got["wall_ns"] > 0


def test_time_streams_reports_a_failing_stream() -> None:
    def step(feed: int) -> None:
        if feed == 1:
            raise InputError("stream 1 broke")

    opts = bench.BenchOptions(iterations=2, seconds=None, warmup_iterations=1)
    with pytest.raises(InputError, match="stream 1 broke"):
        streams.time_streams(step, [0, 1, 2], opts, clock=__import__("time").perf_counter_ns)


def test_streams_with_onnxruntime_on_tiny_bundle(tiny_bundle_ro: Path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    from vggdeploy.runtimes.onnxrt import OrtRuntime

    calls: Counter[threading.Thread] = Counter()  # holds the threads: no identity is reused
    real = OrtRuntime._infer

    def counting(self, feed):
        calls[threading.current_thread()] += 1
        return real(self, feed)

    monkeypatch.setattr(OrtRuntime, "_infer", counting)
    opts = bench.BenchOptions(
        iterations=20, seconds=None, warmup_iterations=2, streams=(1, 2, 3), stream_threads=1
    )
    plans = [bench.Plan(RuntimeSpec("onnxruntime", ("cpu",), "fp32"), (2,))]
    result = bench.run_benchmark(Bundle.load(tiny_bundle_ro), plans, opts)
    (case,) = result["cases"]
    sweep = case["streams"]
    assert [r["streams"] for r in sweep] == [1, 2, 3]
    for r in sweep:
        n = r["streams"]
        assert r["throughput_ips"] > 0 and r["iterations"] == 20 * n
        assert r["calls_per_stream"] == [20] * n and r["distinct_threads"] == n
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"]
        assert lat["p99"] <= lat["max"]
        assert r["intra_op_threads"] == 1 and r["threads_rule"] == "fixed (--stream-threads)"
    assert sweep[0]["throughput_vs_first"] == 1.0
    # stream threads: (2 warm-up + 20 timed) calls each, on 1 + 2 + 3 distinct threads
    stream_threads = [t for t in calls if t.name.startswith("vggdeploy-stream-")]
    assert len(stream_threads) == 6 and all(calls[t] == 22 for t in stream_threads)
    assert result["method"]["options"]["streams"] == [1, 2, 3]
    assert "streams" in result["method"]
    json.loads(json.dumps(result))
    text = view.render_text(result)
    assert view.STREAM_TITLE in text and "streams, intra-op threads: fixed" in text
    assert view.STREAM_TITLE in view.render_markdown(result)


def test_tensorrt_streams_refused_in_the_sweep() -> None:
    """Only the refusal is exercised (the runtime is a stand-in named tensorrt)."""

    class Serial:
        name = "tensorrt"
        OPTIONS = ()

    opts = bench.BenchOptions(iterations=1, seconds=None, warmup_iterations=0, streams=(2, 4))
    results, refused = streams.run_sweep(
        Serial(), lambda t: None, 1, lambda rt, k: {}, opts, None, lambda: 0
    )  # type: ignore[arg-type]
    assert results == [] and len(refused) == 2 and "--streams 2: TensorRT" in refused[0]


def test_cli_streams_plot_and_refusals(tiny_bundle_ro: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    plot = tmp_path / "p.png"
    base = ["-q", "bench", str(tiny_bundle_ro), "--runtime", "onnxruntime@fp32", "--batch", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--iterations", "5", "--warmup", "1", "--streams", "1,2", "--plot", str(plot)])
    assert exc.value.code == 0
    assert "Concurrent streams" in capsys.readouterr().out and plot.stat().st_size > 1000
    old = tmp_path / "old.json"
    for args, needle in (
        (["--streams", "0"], "--streams '0'"),
        (["--streams", "1,x"], "--streams '1,x'"),
        (["--stream-threads", "2"], "--stream-threads applies to --streams"),
        (["--streams", "2", "--stream-threads", "many"], "--stream-threads 'many'"),
        (["--streams", "2", "--compare", str(old), str(old)], "--compare compares"),
        (["--runtime", "tensorrt", "--streams", "1,2"], "one execution context"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*base, *args])
        assert exc.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
