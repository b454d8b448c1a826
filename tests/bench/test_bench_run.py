"""`vggdeploy bench`: timing, statistics, staged (GPU) split, outputs and comparison.

The harness is driven with a fake runtime (registered in the runtime registry as `fake`) and a
fake clock, so latencies are exact and known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vggdeploy.bench.run as bench_run
from vggdeploy import bench
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import CheckFailedError
from vggdeploy.report import bench as view
from vggdeploy.runtimes import registry
from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec
from vggdeploy.runtimes.registry import RuntimeSpec

# -- fakes --------------------------------------------------------------------------------------


class FakeClock:
    """A nanosecond clock that only moves when a fake runtime runs."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += round(ms * 1e6)


class Script:
    """Latencies (ms) a fake runtime takes, per batch size, cycled."""

    def __init__(self, clock: FakeClock, per_batch: dict[int, list[float]]) -> None:
        self.clock = clock
        self.per_batch = per_batch
        self.calls: dict[int, int] = {}

    def run(self, batch: int) -> None:
        seq = self.per_batch[batch]
        n = self.calls.get(batch, 0)
        self.calls[batch] = n + 1
        self.clock.advance_ms(seq[n % len(seq)])


def make_fake_runtime(script: Script) -> type[Runtime]:
    class FakeRuntime(Runtime):
        name = "fake"
        PRECISIONS = ("fp32",)
        checks = 0

        def __init__(self, bundle: Bundle, *, precision: str = "fp32") -> None:
            super().__init__()
            self.precision = precision

        def describe(self) -> RuntimeDescription:
            return RuntimeDescription("fake", self.label, self.precision, "cpu", {"threads": 1})

        @property
        def label(self) -> str:
            return f"fake {self.precision}"

        def check_feed(self, feed: dict[str, np.ndarray]) -> None:
            type(self).checks += 1
            super().check_feed(feed)

        def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
            return (
                [TensorSpec("input", ("batch", 3, 32, 32), "float32")],
                [TensorSpec("logits", ("batch", 10), "float32")],
            )

        def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            batch = feed["input"].shape[0]
            script.run(batch)
            return {"logits": np.zeros((batch, 10), np.float32)}

    return FakeRuntime


FAKE = RuntimeSpec("fake", (), "fp32")


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch):
    """Register a `fake` runtime; returns a function installing its latency script."""
    real = registry.runtime_class

    def install(per_batch: dict[int, list[float]]) -> tuple[FakeClock, type[Runtime]]:
        clock = FakeClock()
        cls = make_fake_runtime(Script(clock, per_batch))
        monkeypatch.setitem(registry.RUNTIMES, "fake", "tests:FakeRuntime")
        monkeypatch.setattr(
            registry, "runtime_class", lambda name: cls if name == "fake" else real(name)
        )
        return clock, cls

    return install


def fake_result(
    bundle_root: Path,
    install,
    per_batch: dict[int, list[float]],
    iterations: int = 20,
    **options: Any,
) -> dict[str, Any]:
    clock, _ = install(per_batch)
    bundle = Bundle.load(bundle_root)
    plans = [bench.Plan(FAKE, tuple(per_batch))]
    opts = bench.BenchOptions(iterations=iterations, seconds=None, warmup_iterations=2, **options)
    return bench.run_benchmark(bundle, plans, opts, clock=clock)


# -- statistics ---------------------------------------------------------------------------------


def test_summarize_known_values() -> None:
    stats = bench.summarize([float(x) for x in range(1, 101)])
    assert stats["min"] == 1 and stats["max"] == 100
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["median"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p95"] == pytest.approx(95.05)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))


def test_time_calls_iterations_and_duration() -> None:
    clock = FakeClock()
    lat = iter([2.0, 4.0, 6.0, 8.0] * 100)
    times = bench.time_calls(lambda _: clock.advance_ms(next(lat)), None, iterations=3, clock=clock)
    assert times == [2_000_000, 4_000_000, 6_000_000]
    # by time: stops once 20 ms have passed, but not before min_iterations calls
    times = bench.time_calls(
        lambda _: clock.advance_ms(5.0), None, seconds=0.02, min_iterations=2, clock=clock
    )
    assert len(times) == 4 and sum(times) == 20_000_000
    times = bench.time_calls(
        lambda _: clock.advance_ms(50.0), None, seconds=0.02, min_iterations=3, clock=clock
    )
    assert len(times) == 3


def test_case_figures_from_known_latencies(tiny_bundle_ro: Path, fake_backend) -> None:
    latencies = [float(x) for x in range(1, 21)]  # 1..20 ms per call
    result = fake_result(tiny_bundle_ro, fake_backend, {1: latencies, 4: [8.0]}, iterations=20)
    by_batch = {c["batch"]: c for c in result["cases"]}
    c1 = by_batch[1]
    # two warm-up calls consume 1 and 2 ms; the timed 20 calls then see 3..20, 1, 2
    assert c1["warmup_iterations"] == 2 and c1["iterations"] == 20
    assert c1["latency_ms"]["min"] == pytest.approx(1.0)
    assert c1["latency_ms"]["max"] == pytest.approx(20.0)
    assert c1["latency_ms"]["mean"] == pytest.approx(10.5)
    assert c1["latency_ms"]["median"] == pytest.approx(10.5)
    assert c1["latency_ms"]["p90"] == pytest.approx(np.percentile(latencies, 90))
    assert c1["throughput_ips"] == pytest.approx(1000 / 10.5)
    flops = Bundle.load(tiny_bundle_ro).manifest.model.flops_per_image
    assert flops and c1["gflops_per_s"] == pytest.approx(flops * 1000 / 10.5 / 1e9)
    assert result["bundle"]["flops_per_image"] == flops
    c4 = by_batch[4]
    assert c4["latency_ms"]["median"] == pytest.approx(8.0) and c4["latency_ms"]["std"] == 0
    assert c4["throughput_ips"] == pytest.approx(4 * 1000 / 8.0)
    assert c4["input_shapes"] == {"input": [4, 3, 32, 32]}
    assert c4["peak_rss_mb"] > 0
    assert "end-to-end" in c4["timing"] and c4["split_ms"] is None
    m = result["method"]
    assert m["host"]["cpu"] and m["host"]["logical_cores"] >= 1
    assert isinstance(m["host"]["cpu_features"], list)
    assert m["options"]["iterations"] == 20 and m["options"]["warmup_iterations"] == 2
    assert m["versions"]["vggdeploy"] and m["timestamp"]
    # the runtime's typed description, flattened (its details beside the common fields)
    assert c4["describe"] == {
        "runtime": "fake",
        "label": "fake fp32",
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
    }


def test_feed_checked_once_not_per_call(tiny_bundle_ro: Path, fake_backend) -> None:
    clock, cls = fake_backend({1: [1.0]})
    bundle = Bundle.load(tiny_bundle_ro)
    bench.run_benchmark(
        bundle,
        [bench.Plan(FAKE, (1,))],
        bench.BenchOptions(iterations=50, seconds=None, warmup_iterations=5),
        clock=clock,
    )
    assert cls.checks == 1


def test_cv_warning_on_noisy_data(tiny_bundle_ro: Path, fake_backend) -> None:
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0, 3.0], 2: [2.0, 2.04]})
    noisy = {c["batch"]: c for c in result["cases"]}
    assert noisy[1]["noisy"] and noisy[1]["cv"] == pytest.approx(0.5, rel=0.05)
    assert not noisy[2]["noisy"]
    warnings = bench.noisy_warnings(result)
    assert len(warnings) == 1 and "b1" in warnings[0] and "51.3%" in warnings[0]
    assert "warning:" in view.render_markdown(result)
    assert "warning:" in view.render_text(result)


def test_reporter_sees_every_case_and_nothing_prints(
    tiny_bundle_ro: Path, fake_backend, capsys
) -> None:
    events: list[tuple] = []

    class Recorder(bench.Reporter):
        def start(self, total_cases: int) -> None:
            events.append(("start", total_cases))

        def case(self, label: str, phase: str) -> None:
            events.append((phase, label))

        def advance(self) -> None:
            events.append(("advance",))

        def stop(self) -> None:
            events.append(("stop",))

    clock, _ = fake_backend({1: [1.0], 2: [2.0]})
    bench.run_benchmark(
        Bundle.load(tiny_bundle_ro),
        [bench.Plan(FAKE, (1, 2))],
        bench.BenchOptions(iterations=3, seconds=None, warmup_iterations=1),
        reporter=Recorder(),
        clock=clock,
    )
    assert events[0] == ("start", 2) and events[-1] == ("stop",)
    assert ("measuring", "fake fp32 b2") in events and events.count(("advance",)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- staged (GPU) timing ------------------------------------------------------------------------


class FakeStaged(Runtime):
    """A runtime exposing the StagedRuntime hooks; 'events' are fake-clock timestamps."""

    name = "fake"

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.staged: list[dict] = []
        self.fetched = 0

    def _load(self):
        return [TensorSpec("input", ("batch", 3, 32, 32), "float32")], [
            TensorSpec("logits", ("batch", 10), "float32")
        ]

    def _infer(self, feed):
        raise AssertionError("staged runtimes are timed through their stages")

    def stage_inputs(self, feed) -> None:
        self.staged.append(feed)
        self.clock.advance_ms(7.0)  # the NumPy -> pinned copy: must be outside every timing

    def enqueue_h2d(self) -> None:
        assert self.staged, "stage_inputs(feed) must come first"
        self.clock.advance_ms(0.5)

    def enqueue_compute(self) -> None:
        self.clock.advance_ms(3.0)

    def enqueue_d2h(self) -> None:
        self.clock.advance_ms(0.25)

    def record_event(self) -> int:
        return self.clock()

    def synchronize(self) -> None:
        self.clock.advance_ms(0.05)  # host-side wait after the last event

    def event_ms(self, start: int, end: int) -> float:
        return (end - start) / 1e6

    def fetch_outputs(self):
        self.fetched += 1
        self.clock.advance_ms(11.0)
        return {"logits": np.zeros((len(self.staged[-1]["input"]), 10), np.float32)}


def test_staged_runtime_reports_trtexec_split(tiny_bundle_ro: Path, monkeypatch) -> None:
    clock = FakeClock()
    runtime = FakeStaged(clock).load()
    assert isinstance(runtime, bench.StagedRuntime)
    monkeypatch.setattr(bench_run, "_new_runtime", lambda bundle, plan, options: runtime)
    plans = [bench.Plan(RuntimeSpec("tensorrt", (), "fp16"), (1,))]
    result = bench.run_benchmark(
        Bundle.load(tiny_bundle_ro),
        plans,
        bench.BenchOptions(iterations=10, seconds=None, warmup_iterations=1),
        clock=clock,
    )
    case = result["cases"][0]
    split = case["split_ms"]
    assert split["h2d"]["mean"] == pytest.approx(0.5)
    assert split["compute"]["median"] == pytest.approx(3.0)
    assert split["d2h"]["p99"] == pytest.approx(0.25)
    assert split["gpu_total"]["mean"] == pytest.approx(3.75)
    assert case["latency_ms"]["mean"] == pytest.approx(3.8)  # host end to end
    assert case["latency_ms"]["max"] == pytest.approx(3.8)
    # the input went into pinned memory once, before the warm-up, with the case's feed; the
    # pinned -> NumPy copy is never made inside the loop (bench does not need the outputs)
    assert len(runtime.staged) == 1 and runtime.staged[0]["input"].shape == (1, 3, 32, 32)
    assert runtime.fetched == 0
    assert "CUDA events" in case["timing"] and "pinned" in case["timing"]
    assert result["method"]["gpu_split"] == bench.STAGED_SPLIT
    md = view.render_markdown(result)
    assert "GPU split" in md and "| 0.500 | 3.000 | 0.250 | 3.750 | 3.800 |" in md


def test_throughput_is_from_the_median_beside_it(tiny_bundle_ro: Path, fake_backend) -> None:
    """A slow outlier moves the mean, not the median: images/s follows the median latency it
    is printed beside, and the table and the method say so."""
    latencies = [2.0] * 9 + [30.0]  # median 2 ms, mean 4.8 ms
    result = fake_result(tiny_bundle_ro, fake_backend, {4: latencies}, iterations=10)
    (case,) = result["cases"]
    assert case["latency_ms"]["median"] == pytest.approx(2.0)
    assert case["latency_ms"]["mean"] == pytest.approx(4.8)
    assert case["throughput_ips"] == pytest.approx(4 * 1000 / 2.0)
    assert result["method"]["throughput"].startswith("batch / median latency")
    text = view.render_text(result)
    assert "img/s (median)" in text and "2000.0" in text


# -- outputs ------------------------------------------------------------------------------------


def test_json_csv_markdown_plot_written(tiny_bundle_ro: Path, tmp_path: Path, fake_backend):
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0, 1.1], 8: [6.0, 6.5]})
    bench.write_json(result, tmp_path / "r.json")
    bench.write_csv(result, tmp_path / "r.csv")
    view.write_plot(result, tmp_path / "r.png")
    loaded = bench.load_result(tmp_path / "r.json")
    assert loaded["schema"] == bench.RESULT_SCHEMA and len(loaded["cases"]) == 2
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["batch"] for r in rows] == ["1", "8"]
    assert set(bench.CSV_COLUMNS) == set(rows[0])
    assert float(rows[1]["latency_median_ms"]) == pytest.approx(6.25)
    assert float(rows[1]["throughput_ips"]) == pytest.approx(8000 / 6.25, rel=1e-5)
    assert bench.csv_text(result) == (tmp_path / "r.csv").read_text()
    png = (tmp_path / "r.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    md = view.render_markdown(result)
    assert md.count("| fake | fp32 |") == 2 and "median ms" in md
    text = view.render_text(result)
    assert text.count("fake") >= 2 and "median ms" in text and "MiB" in text


def test_outputs_are_atomic(tiny_bundle_ro: Path, tmp_path: Path, fake_backend) -> None:
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0]})
    dest = tmp_path / "r.json"
    dest.write_text("old")
    broken = {**result, "cases": [{**result["cases"][0], "oops": object()}]}
    with pytest.raises(TypeError):
        bench.write_json(broken, dest)
    assert dest.read_text() == "old"
    with pytest.raises(KeyError):
        bench.write_csv({"cases": [{"runtime": "x"}]}, tmp_path / "r.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no .partial left


# -- comparing ----------------------------------------------------------------------------------


def test_compare_flags_regression_and_exit_code(
    tiny_bundle_ro: Path, tmp_path: Path, fake_backend, capsys
) -> None:
    old = fake_result(tiny_bundle_ro, fake_backend, {1: [10.0], 8: [40.0]})
    new = fake_result(tiny_bundle_ro, fake_backend, {1: [10.3], 8: [48.0]})
    cmp = bench.compare_results(old, new, 0.05)
    status = {r["batch"]: r["status"] for r in cmp["rows"]}
    assert status == {1: "same", 8: "regression"} and cmp["regressions"] == 1
    ratio = {r["batch"]: r["latency_ratio"] for r in cmp["rows"]}
    assert ratio[8] == pytest.approx(1.2)
    with pytest.raises(CheckFailedError):
        bench.check_regressions(cmp)

    bench.write_json(old, tmp_path / "old.json")
    bench.write_json(new, tmp_path / "new.json")
    files = [str(tmp_path / "old.json"), str(tmp_path / "new.json")]
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--compare", *files])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "1.200" in captured.out
    assert captured.err.startswith("error: 1 case(s) slower by more than 5.0%")
    # a looser threshold passes; the comparison goes to JSON on stdout and to Markdown
    md = tmp_path / "cmp.md"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "bench",
                "--compare",
                *files,
                "--threshold",
                "25%",
                "--json",
                "-",
                "--markdown",
                str(md),
            ]
        )
    assert exc.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == bench.COMPARE_SCHEMA and data["regressions"] == 0
    assert "| fake | fp32 | 8 |" in md.read_text()
    # a file that is not a bench result is a one-line error
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--compare", str(tmp_path / "x.json"), files[1]])
    assert exc.value.code == 1


@pytest.mark.parametrize("warmup", [0, 1, 2, 5])
def test_the_checked_call_is_the_first_warm_up_iteration(
    tiny_bundle_ro: Path, fake_backend, warmup: int
) -> None:
    """`--warmup N` iterations: the model runs N times untimed before the timed calls (the
    checked `infer` of the feed being the first), and the case says N; with N = 0 the check
    still runs once and the case says 0."""
    clock, cls = fake_backend({1: [1.0]})
    calls: list[str] = []
    original_infer = cls._infer

    def counted(self, feed):
        calls.append("call")
        return original_infer(self, feed)

    cls._infer = counted
    result = bench.run_benchmark(
        Bundle.load(tiny_bundle_ro),
        [bench.Plan(FAKE, (1,))],
        bench.BenchOptions(iterations=7, seconds=None, warmup_iterations=warmup),
        clock=clock,
    )
    (case,) = result["cases"]
    assert case["warmup_iterations"] == warmup
    assert case["iterations"] == 7
    assert len(calls) == max(warmup, 1) + 7
    assert cls.checks == 1
