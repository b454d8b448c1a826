"""`vggdeploy bench --end-to-end DIR`: per-stage timing from image files to top-k.

The stage statistics are checked exactly with the fake runtime and fake clock of
`test_bench_run` (decode and preprocess are patched to advance the clock by known amounts);
the real ONNX Runtime path and the command line run on the tiny bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_bench_run import FAKE, FakeClock, fake_backend  # noqa: F401 - a fixture

import vggdeploy.preprocess as preprocess_module
from vggdeploy import bench
from vggdeploy.bench import endtoend
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.report import bench as view

DECODE_MS = 1.0  # per image
PREPROCESS_MS = 0.25  # per image


def write_images(folder: Path, count: int = 3) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, size=(40 + i, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images")


def timed_images(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> list[str]:
    """Make decode and preprocess take DECODE_MS and PREPROCESS_MS per image on `clock`."""
    decoded: list[str] = []

    def load_image(path: Any, size: Any = None) -> str:
        clock.advance_ms(DECODE_MS)
        decoded.append(Path(path).name)
        return "img"

    def preprocess_image(img: Any, pre: Any) -> np.ndarray:
        clock.advance_ms(PREPROCESS_MS)
        return np.zeros((3, pre.crop, pre.crop), np.float32)

    monkeypatch.setattr(preprocess_module, "load_image", load_image)
    monkeypatch.setattr(preprocess_module, "preprocess_image", preprocess_image)
    return decoded


def e2e_result(
    bundle_root: Path, install, monkeypatch, images: Path, per_batch: dict[int, list[float]]
) -> tuple[dict[str, Any], list[str]]:
    clock, _ = install(per_batch)
    decoded = timed_images(monkeypatch, clock)
    opts = bench.BenchOptions(
        iterations=10, seconds=None, warmup_iterations=2, end_to_end=str(images), top_k=3
    )
    plans = [bench.Plan(FAKE, tuple(per_batch))]
    result = bench.run_benchmark(Bundle.load(bundle_root), plans, opts, clock=clock)
    return result, decoded


# -- the timed loop ---------------------------------------------------------------------------


def test_time_stages_exact_and_adding_up() -> None:
    clock = FakeClock()
    costs = {"a": [1.0, 2.0], "b": [0.5], "c": [3.0, 1.0, 2.0]}
    seen: dict[str, int] = {}

    def stage(name: str):
        def run(x: Any) -> Any:
            n = seen.get(name, 0)
            seen[name] = n + 1
            clock.advance_ms(costs[name][n % len(costs[name])])
            return x

        return run

    got = endtoend.time_stages([(n, stage(n)) for n in costs], iterations=4, clock=clock)
    assert got["a"] == [1_000_000, 2_000_000, 1_000_000, 2_000_000]
    assert got["b"] == [500_000] * 4
    assert got["c"] == [3_000_000, 1_000_000, 2_000_000, 3_000_000]
    assert got["total"] == [a + b + c for a, b, c in zip(got["a"], got["b"], got["c"])]
    # by time: stops once 20 ms have passed, not before min_iterations calls
    by_time = endtoend.time_stages(
        [("x", lambda i: clock.advance_ms(5.0))], seconds=0.02, min_iterations=2, clock=clock
    )
    assert len(by_time["total"]) == 4 and sum(by_time["total"]) == 20_000_000


def test_stage_statistics_exact_with_fake_clock(
    tiny_bundle_ro: Path,
    fake_backend,  # noqa: F811 - the fixture
    monkeypatch,
    images: Path,  # noqa: F811
) -> None:
    infer = [float(x) for x in range(1, 11)]
    result, decoded = e2e_result(tiny_bundle_ro, fake_backend, monkeypatch, images, {2: infer})
    (case,) = result["cases"]
    stages = case["stages"]
    assert list(stages) == ["decode", "preprocess", "infer", "topk", "total"]  # CPU: no copy
    for stats in stages.values():
        assert set(stats) == set(bench.STAT_KEYS)
    assert stages["decode"]["median"] == pytest.approx(2 * DECODE_MS)
    assert stages["decode"]["std"] == 0
    assert stages["preprocess"]["median"] == pytest.approx(2 * PREPROCESS_MS)
    assert stages["topk"]["max"] == 0  # the fake clock does not move in top-k
    # the compute-only case used 10 timed + 2 warm-up calls of the script; then 1 checked call,
    # 2 warm-up and 10 timed end-to-end calls: the timed ones see 4..10, 1, 2, 3 ms
    timed = [infer[(3 + i) % 10] for i in range(10)]
    assert stages["infer"]["median"] == pytest.approx(float(np.median(timed)))
    assert stages["infer"]["p90"] == pytest.approx(float(np.percentile(timed, 90)))
    extra = 2 * DECODE_MS + 2 * PREPROCESS_MS
    assert stages["total"]["median"] == pytest.approx(float(np.median(timed)) + extra)
    assert stages["total"]["mean"] == pytest.approx(float(np.mean(timed)) + extra)
    e2e = case["end_to_end"]
    assert e2e["iterations"] == 10 and e2e["warmup_iterations"] == 2 and e2e["images"] == 3
    assert e2e["throughput_ips"] == pytest.approx(2 * 1000 / (float(np.median(timed)) + extra))
    assert e2e["copy"].startswith("none: the runtime runs on the CPU")
    assert e2e["compute_median_ms"] == case["latency_ms"]["median"]
    assert e2e["total_over_compute"] == pytest.approx(
        stages["total"]["median"] / case["latency_ms"]["median"]
    )
    assert e2e["top_k"] == 3 and e2e["images_dir"] == str(images)
    # batch 2 over 3 images cycles: img0 img1 | img2 img0 | img1 img2 | ...
    assert decoded[3:9] == ["img0.jpg", "img1.png", "img0.jpg", "img1.png", "img2.jpg", "img0.jpg"]
    assert set(result["method"]["end_to_end_stages"]) == {*endtoend.STAGES, "total"}
    assert result["method"]["options"]["end_to_end"] == str(images)


def test_staged_runtime_gets_a_copy_stage(tiny_bundle_ro: Path, monkeypatch, images: Path) -> None:
    """A StagedRuntime (the hooks TensorRT implements) gets a timed copy stage. This fake of
    the hooks (from test_bench_run) exercises the order and the clock, not TensorRT."""
    from test_bench_run import FakeStaged

    import vggdeploy.bench.run as bench_run
    from vggdeploy.runtimes.registry import RuntimeSpec

    clock = FakeClock()
    runtime = FakeStaged(clock).load()
    timed_images(monkeypatch, clock)
    monkeypatch.setattr(bench_run, "_new_runtime", lambda bundle, plan, options: runtime)
    opts = bench.BenchOptions(
        iterations=4, seconds=None, warmup_iterations=1, end_to_end=str(images)
    )
    plans = [bench.Plan(RuntimeSpec("tensorrt", (), "fp16"), (1,))]
    result = bench.run_benchmark(Bundle.load(tiny_bundle_ro), plans, opts, clock=clock)
    stages = result["cases"][0]["stages"]
    assert list(stages) == ["decode", "preprocess", "copy", "infer", "topk", "total"]
    # copy: NumPy -> pinned (7 ms) + H2D (0.5) + synchronize (0.05)
    assert stages["copy"]["median"] == pytest.approx(7.55)
    # infer: compute (3) + D2H (0.25) + fetch_outputs, which waits and copies (11)
    assert stages["infer"]["median"] == pytest.approx(14.25)
    assert stages["total"]["max"] == pytest.approx(DECODE_MS + PREPROCESS_MS + 7.55 + 14.25)
    assert result["cases"][0]["end_to_end"]["copy"].startswith("timed: host -> device")
    assert "| 7.550 |" in view.render_markdown(result)


def test_top_k_matches_predict() -> None:
    from vggdeploy.metrics import softmax, top_k

    logits = np.array([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 5.0, 1.0]], np.float32)
    labels = ["a", "b", "c", "d"]
    got = endtoend.softmax_top_k(logits, 3, labels)
    assert got == [top_k(row, 3, labels) for row in softmax(logits)]


# -- views ------------------------------------------------------------------------------------


def test_json_csv_table_markdown_plot_show_end_to_end(
    tiny_bundle_ro: Path,
    fake_backend,  # noqa: F811 - the fixture
    monkeypatch,
    images: Path,
    tmp_path: Path,  # noqa: F811
) -> None:
    result, _ = e2e_result(tiny_bundle_ro, fake_backend, monkeypatch, images, {1: [2.0], 4: [4.0]})
    json.loads(json.dumps(result))  # serialisable as is
    text, md = view.render_text(result), view.render_markdown(result)
    for out in (text, md):
        assert view.E2E_TITLE in out and "decode ms" in out and "total / compute" in out
        assert "end to end, copy: none" in out
    # b4: compute 4 ms; total 4 x 1 + 4 x 0.25 + 4 = 9 ms
    assert "9.000" in text and "2.25x" in text
    csv = bench.csv_text(result).splitlines()
    header = csv[0].split(",")
    row4 = dict(zip(header, csv[2].split(",")))
    assert row4["e2e_total_median_ms"] == "9" and row4["e2e_copy_median_ms"] == ""
    plot = tmp_path / "plot.png"
    view.write_plot(result, plot)
    assert plot.stat().st_size > 1000


# -- real runtime and command line --------------------------------------------------------------


def test_cli_end_to_end_with_onnxruntime(tiny_bundle_ro: Path, images: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    args = ["--runtime", "onnxruntime@fp32", "--batch", "2", "--iterations", "5", "--warmup", "1"]
    with pytest.raises(SystemExit) as exc:
        main(
            ["-q", "bench", str(tiny_bundle_ro), *args, "--end-to-end", str(images), "--json", "-"]
        )
    assert exc.value.code == 0
    result = json.loads(capsys.readouterr().out)
    (case,) = result["cases"]
    st = case["stages"]
    assert set(st) == {"decode", "preprocess", "infer", "topk", "total"}
    assert all(st[k]["median"] > 0 for k in st)
    assert st["total"]["min"] <= st["total"]["median"] <= st["total"]["p90"] <= st["total"]["max"]
    assert case["end_to_end"]["iterations"] == 5


def test_cli_end_to_end_refusals(tiny_bundle_ro: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = write_images(tmp_path / "broken", 1)
    (broken / "zz_bad.jpg").write_bytes(b"not a jpeg at all")
    old = tmp_path / "old.json"
    for args, needle in (
        (["--end-to-end", str(empty)], "no images found under"),
        (["--end-to-end", str(tmp_path / "nowhere")], "not a folder"),
        (["--end-to-end", str(broken)], "zz_bad.jpg"),
        (["--end-to-end", str(empty), "--compare", str(old), str(old)], "--compare compares"),
        (["--end-to-end", str(empty), "--top", "0"], "--top 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["-q", "bench", str(tiny_bundle_ro), "--runtime", "onnxruntime@fp32", *args])
        assert exc.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
