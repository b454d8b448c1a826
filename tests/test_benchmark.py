"""`vggdeploy bench`: statistics, planning, outputs and comparison.

Most tests drive the harness with a fake runtime and a fake clock, so latencies are exact and
known; one test runs the real torch and onnxruntime runtimes on the tiny bundle.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vggdeploy import benchmark as bm
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.runtimes.base import Runtime, TensorSpec

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
        checks = 0

        def __init__(self, bundle: Bundle, *, precision: str = "fp32") -> None:
            super().__init__()
            self.precision = precision

        def describe(self) -> dict[str, Any]:
            return {"runtime": "fake", "precision": self.precision, "threads": 1}

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


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch):
    """Register a `fake` runtime; returns a function installing its latency script."""
    monkeypatch.setitem(
        bm.BACKENDS,
        "fake",
        bm.Backend(
            name="fake",
            variants={"cpu": {}},
            group=("cpu",),
            default_variant="cpu",
            native_precisions={"cpu": ("fp32",)},
        ),
    )

    def install(per_batch: dict[int, list[float]]) -> tuple[FakeClock, type[Runtime]]:
        clock = FakeClock()
        cls = make_fake_runtime(Script(clock, per_batch))
        monkeypatch.setattr(bm, "get_runtime", lambda name: cls)
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
    plans = [bm.Plan(bm.RuntimeChoice("fake"), "fp32", tuple(per_batch))]
    opts = bm.BenchOptions(iterations=iterations, seconds=None, warmup_iterations=2, **options)
    return bm.run_benchmark(bundle, plans, opts, clock=clock)


# -- statistics ---------------------------------------------------------------------------------


def test_summarize_known_values() -> None:
    stats = bm.summarize([float(x) for x in range(1, 101)])
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
    times = bm.time_calls(lambda _: clock.advance_ms(next(lat)), None, iterations=3, clock=clock)
    assert times == [2_000_000, 4_000_000, 6_000_000]
    # by time: stops once 20 ms have passed, but not before min_iterations calls
    times = bm.time_calls(
        lambda _: clock.advance_ms(5.0), None, seconds=0.02, min_iterations=2, clock=clock
    )
    assert len(times) == 4 and sum(times) == 20_000_000
    times = bm.time_calls(
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
    flops = Bundle.load(tiny_bundle_ro).model["flops_per_image"]
    assert c1["gflops_per_s"] == pytest.approx(flops * 1000 / 10.5 / 1e9)
    c4 = by_batch[4]
    assert c4["latency_ms"]["median"] == pytest.approx(8.0) and c4["latency_ms"]["std"] == 0
    assert c4["throughput_ips"] == pytest.approx(4 * 1000 / 8.0)
    assert c4["input_shapes"] == {"input": [4, 3, 32, 32]}
    assert c4["peak_rss_mb"] > 0
    assert "end-to-end" in c4["timing"] and c4["split_ms"] is None
    m = result["method"]
    assert m["host"]["cpu"] and m["host"]["logical_cores"] >= 1
    assert m["options"]["iterations"] == 20 and m["options"]["warmup_iterations"] == 2
    assert m["versions"]["vggdeploy"] and m["timestamp"]
    assert c4["describe"] == {"runtime": "fake", "precision": "fp32", "threads": 1}


def test_feed_checked_once_not_per_call(tiny_bundle_ro: Path, fake_backend) -> None:
    clock, cls = fake_backend({1: [1.0]})
    bundle = Bundle.load(tiny_bundle_ro)
    plans = [bm.Plan(bm.RuntimeChoice("fake"), "fp32", (1,))]
    bm.run_benchmark(
        bundle,
        plans,
        bm.BenchOptions(iterations=50, seconds=None, warmup_iterations=5),
        clock=clock,
    )
    assert cls.checks == 1


def test_cv_warning_on_noisy_data(tiny_bundle_ro: Path, fake_backend) -> None:
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0, 3.0], 2: [2.0, 2.04]})
    noisy = {c["batch"]: c for c in result["cases"]}
    assert noisy[1]["noisy"] and noisy[1]["cv"] == pytest.approx(0.5, rel=0.05)
    assert not noisy[2]["noisy"]
    warnings = bm.noisy_warnings(result)
    assert len(warnings) == 1 and "b1" in warnings[0] and "51.3%" in warnings[0]
    assert "warning:" in bm.render_markdown(result)


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
    assert isinstance(runtime, bm.StagedRuntime)
    monkeypatch.setattr(bm, "_new_runtime", lambda bundle, plan, options: runtime)
    plans = [bm.Plan(bm.RuntimeChoice("tensorrt"), "fp16", (1,))]
    result = bm.run_benchmark(
        Bundle.load(tiny_bundle_ro),
        plans,
        bm.BenchOptions(iterations=10, seconds=None, warmup_iterations=1),
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
    assert result["method"]["gpu_split"] == bm.STAGED_SPLIT
    md = bm.render_markdown(result)
    assert "GPU split" in md and "| 0.500 | 3.000 | 0.250 | 3.750 | 3.800 |" in md


# -- planning -----------------------------------------------------------------------------------


def test_parse_runtime_and_options() -> None:
    assert bm.parse_runtime("torch").spec == "torch"
    assert bm.parse_runtime("torch:cpu").spec == "torch"
    choice = bm.parse_runtime("torch:channels-last:cuda")
    assert choice.spec == "torch:cuda:channels-last"
    assert choice.kwargs() == {"device": "cuda", "channels_last": True}
    assert bm.parse_runtime("torch:channels-last").kwargs() == {
        "device": "cpu",
        "channels_last": True,
    }
    assert bm.parse_runtime("onnxruntime:cuda").kwargs() == {"provider": "cuda"}
    assert bm.parse_runtime("tensorrt:cuda-graphs").kwargs() == {"cuda_graphs": True}
    for bad in ("tflite", "torch:nhwc", "onnxruntime:cuda:tensorrt"):
        with pytest.raises(InputError):
            bm.parse_runtime(bad)
    assert bm.parse_batches("1,8,32") == (1, 8, 32)
    for bad in ("0", "1,x", "1,1", ""):
        with pytest.raises(InputError):
            bm.parse_batches(bad)
    assert bm.parse_amount("20", "--warmup") == ("iterations", 20)
    assert bm.parse_amount("2s", "--warmup") == ("seconds", 2.0)
    assert bm.parse_amount("500ms", "--warmup") == ("seconds", 0.5)
    with pytest.raises(InputError):
        bm.parse_amount("2.5", "--warmup")
    assert bm.parse_threshold("5%") == pytest.approx(0.05)
    assert bm.parse_threshold("0.1") == pytest.approx(0.1)


def test_skipped_cases_listed_with_reasons(tiny_bundle_ro: Path, monkeypatch) -> None:
    real_find_spec = bm.importlib.util.find_spec
    monkeypatch.setattr(
        bm.importlib.util,
        "find_spec",
        lambda name: None if name == "tensorrt" else real_find_spec(name),
    )
    bundle = Bundle.load(tiny_bundle_ro)
    choices = [
        bm.parse_runtime(r) for r in ("torch", "onnxruntime", "onnxruntime:cuda", "tensorrt")
    ]
    plans, skipped = bm.plan_cases(bundle, choices, ["fp32", "int8"], (1, 8))
    ran = {(p.choice.spec, p.precision) for p in plans}
    assert ran == {("torch", "fp32"), ("onnxruntime", "fp32")}
    reasons = {(s.runtime, s.precision): s.reason for s in skipped}
    assert "not installed" in reasons[("tensorrt", None)]
    assert "CUDAExecutionProvider" in reasons[("onnxruntime:cuda", None)]
    assert "onnx.int8" in reasons[("onnxruntime", "int8")]
    assert "vggdeploy calibrate" in reasons[("onnxruntime", "int8")]
    assert "int8" in reasons[("torch", "int8")]
    # defaults: every runtime the host has, every artifact of the bundle
    plans, skipped = bm.plan_cases(bundle, None, None, (1,))
    assert {(p.choice.spec, p.precision) for p in plans} == {
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
    }
    assert {s.runtime for s in skipped} >= {"tensorrt", "onnxruntime:cuda", "torch:cuda"}


def test_cli_lists_skipped_in_outputs(tiny_bundle_ro: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "bench",
                str(tiny_bundle_ro),
                "--runtime",
                "onnxruntime,tensorrt",
                "--precision",
                "fp32,fp16",
                "--batch",
                "1",
                "--iterations",
                "3",
                "--warmup",
                "1",
                "--json",
                str(out),
                "--markdown",
            ]
        )
    assert exc.value.code == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    skipped = {(s["runtime"], s["precision"]) for s in result["skipped"]}
    assert ("onnxruntime", "fp16") in skipped
    assert any(r == "tensorrt" for r, _ in skipped)
    assert "skipped onnxruntime fp16: the bundle has no onnx.fp16 artifact" in text
    assert "| onnxruntime | fp32 | 1 |" in text


def test_cli_bad_input_one_line(tiny_bundle_ro: Path, capsys) -> None:
    for args, needle in (
        (["--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["--batch", "0"], "--batch '0'"),
        (["--precision", "int4"], "--precision 'int4'"),
        (["--warmup", "lots"], "--warmup 'lots'"),
        (["--runtime", "torch", "--precision", "int8"], "nothing to benchmark"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["-q", "bench", str(tiny_bundle_ro), *args])
        assert exc.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and needle in err[-1], err
        assert "Traceback" not in "\n".join(err)


# -- outputs ------------------------------------------------------------------------------------


def test_json_csv_markdown_plot_written(tiny_bundle_ro: Path, tmp_path: Path, fake_backend):
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0, 1.1], 8: [6.0, 6.5]})
    bm.write_json(result, tmp_path / "r.json")
    bm.write_csv(result, tmp_path / "r.csv")
    bm.write_plot(result, tmp_path / "r.png")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["schema"] == bm.RESULT_SCHEMA and len(loaded["cases"]) == 2
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["batch"] for r in rows] == ["1", "8"]
    assert set(bm.CSV_COLUMNS) == set(rows[0])
    assert float(rows[1]["latency_median_ms"]) == pytest.approx(6.25)
    assert float(rows[1]["throughput_ips"]) == pytest.approx(8000 / 6.25, rel=1e-5)
    png = (tmp_path / "r.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    md = bm.render_markdown(result)
    assert md.count("| fake | fp32 |") == 2 and "median ms" in md


def test_outputs_are_atomic(tiny_bundle_ro: Path, tmp_path: Path, fake_backend) -> None:
    result = fake_result(tiny_bundle_ro, fake_backend, {1: [1.0]})
    dest = tmp_path / "r.json"
    dest.write_text("old")
    broken = {**result, "cases": [{**result["cases"][0], "oops": object()}]}
    with pytest.raises(TypeError):
        bm.write_json(broken, dest)
    assert dest.read_text() == "old"
    with pytest.raises(KeyError):
        bm.write_csv({"cases": [{"runtime": "x"}]}, tmp_path / "r.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no .partial left


# -- comparing ----------------------------------------------------------------------------------


def test_compare_flags_regression_and_exit_code(
    tiny_bundle_ro: Path, tmp_path: Path, fake_backend, capsys
) -> None:
    old = fake_result(tiny_bundle_ro, fake_backend, {1: [10.0], 8: [40.0]})
    new = fake_result(tiny_bundle_ro, fake_backend, {1: [10.3], 8: [48.0]})
    cmp = bm.compare_results(old, new, 0.05)
    status = {r["batch"]: r["status"] for r in cmp["rows"]}
    assert status == {1: "same", 8: "regression"} and cmp["regressions"] == 1
    ratio = {r["batch"]: r["latency_ratio"] for r in cmp["rows"]}
    assert ratio[8] == pytest.approx(1.2)
    with pytest.raises(CheckFailedError):
        bm.check_regressions(cmp)

    bm.write_json(old, tmp_path / "old.json")
    bm.write_json(new, tmp_path / "new.json")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "1.200" in captured.out
    assert captured.err.startswith("error: 1 case(s) slower by more than 5.0%")
    # a looser threshold passes
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "bench",
                "--compare",
                str(tmp_path / "old.json"),
                str(tmp_path / "new.json"),
                "--threshold",
                "25%",
            ]
        )
    assert exc.value.code == 0
    # a file that is not a bench result is a one-line error
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--compare", str(tmp_path / "x.json"), str(tmp_path / "new.json")])
    assert exc.value.code == 1


# -- real runtimes ------------------------------------------------------------------------------


def test_real_runtimes_on_tiny_bundle(tiny_bundle_ro: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    args = [
        "bench",
        str(tiny_bundle_ro),
        "--runtime",
        "torch,torch:channels-last,onnxruntime",
        "--batch",
        "1,2",
        "--iterations",
        "8",
        "--warmup",
        "2",
        "--reference-bare-ort",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "r.csv"),
        "--plot",
        str(tmp_path / "r.png"),
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    got = {(c["runtime"], c["batch"]) for c in result["cases"]}
    assert got == {(r, b) for r in ("torch", "torch:channels-last", "onnxruntime") for b in (1, 2)}
    for case in result["cases"]:
        assert case["iterations"] == 8 and case["latency_ms"]["min"] > 0
        if case["runtime"] == "onnxruntime":
            assert case["describe"]["providers"] == ["CPUExecutionProvider"]
            ref = case["reference"]
            assert ref["iterations"] == 8 and ref["latency_ms"]["median"] > 0
            assert ref["providers"] == ["CPUExecutionProvider"]
        else:
            assert case["reference"] is None
            assert case["describe"]["channels_last"] == (case["runtime"] == "torch:channels-last")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "bare onnxruntime" in out and "torch:channels-last" in out


def test_flops_follow_image_size_of_a_dense_bundle(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from vggdeploy.models import build_dense_model, count_flops, resolve_spec

    spec = resolve_spec("C", width_divisor=16, hidden=64, num_classes=10)
    model = {**spec.to_dict(), "dense": True, "image_size": 224}
    bundle = Bundle.create(tmp_path, {"model": {**model, "flops_per_image": count_flops(spec)}})
    net = build_dense_model(spec).eval()
    for size in (224, 256, 320):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, size, size))
        assert bm.flops_per_image(bundle, size) == counter.get_total_flops()
    # a fixed-size bundle refuses another size instead of timing a different model
    fixed = Bundle.create(tmp_path, {"model": {**model, "dense": False}})
    with pytest.raises(InputError, match="only a dense bundle"):
        bm._image_size(fixed, bm.BenchOptions(image_size=256))
