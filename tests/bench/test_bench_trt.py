"""`vggdeploy bench` on the TensorRT runtime, against the test double (both API generations);
only the final `gpu` test runs real TensorRT.

The double's CUDA glue runs on a fake timeline (`fake_cuda.CLOCK`, costs in `fake_cuda.COSTS`):
every copy, engine run, graph launch and synchronize advances it by a fixed amount, and events
stamp it. Bench's host clock is pointed at the same timeline, so every figure is exact and the
tests can check trtexec's split (H2D, compute, D2H from events, plus host end to end) to the
nanosecond. The double also charges the host memcpy from NumPy into pinned memory
(`HostBuffer.fill`) and back (`HostBuffer.read`), so the tests can show that, as in trtexec,
neither is inside a timed stage. What this cannot show is real GPU timing: see the `gpu` test at
the end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from trt_double import fake_cuda

from vggdeploy import bench as bm
from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError
from vggdeploy.exporter.engine import BuildOptions, build_engine
from vggdeploy.report import bench as view
from vggdeploy.runtimes.registry import parse_spec, parse_specs
from vggdeploy.runtimes.trt import TrtRuntime

# trt: the TensorRT double of each API generation (10.16 and 11.4), with the fake CUDA glue
pytest_plugins = ("trt_double.fixtures",)

BATCHES = (1, 4)
WARMUP, ITERATIONS = 2, 6
INPUT_ELEMENTS = 3 * 32 * 32  # per image of the tiny bundle
OUTPUT_ELEMENTS = 10


@pytest.fixture
def engine_bundle(trt, tiny_bundle) -> Path:
    """The tiny bundle with an fp32 engine built by the double (profile batch 1..32)."""
    build_engine(Bundle.load(tiny_bundle), BuildOptions(precision="fp32"))
    return tiny_bundle


def engine_layers(root: Path) -> int:
    with TrtRuntime(root, precision="fp32") as runtime:
        return runtime._engine.num_layers


def x_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def ort_logits(root: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    path = Bundle.load(root).artifact_path("onnx.fp32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def run_bench(root: Path, specs: list[str]) -> dict:
    bundle = Bundle.load(root)
    plans, skipped = bm.plan_cases(bundle, parse_specs(specs), None, BATCHES)
    assert not skipped, skipped
    assert [(p.runtime, p.precision) for p in plans] == [(s, "fp32") for s in specs]
    options = bm.BenchOptions(iterations=ITERATIONS, seconds=None, warmup_iterations=WARMUP)
    return bm.run_benchmark(bundle, plans, options, clock=fake_cuda.CLOCK.now)


# -- bench through the staged hooks ---------------------------------------------------------------


def test_bench_reports_h2d_compute_d2h_and_end_to_end(engine_bundle, tmp_path) -> None:
    layers = engine_layers(engine_bundle)
    fake_cuda.GRAPHS.clear()
    fake_cuda.HOST_COPIES.update(fill=0, read=0)
    result = run_bench(engine_bundle, ["tensorrt", "tensorrt:cuda-graphs"])
    assert result["skipped"] == []
    # The NumPy -> pinned fill happened once per case (one input tensor), never per iteration
    # (the double charges it on the timeline, so inside a stage it would also break the split
    # below); the pinned -> NumPy copy never happened (bench does not need the outputs).
    assert fake_cuda.HOST_COPIES["fill"] == 2 * len(BATCHES)
    assert fake_cuda.HOST_COPIES["read"] == 0
    assert result["method"]["gpu_split"] == bm.STAGED_SPLIT
    cases = {(c["runtime"], c["batch"]): c for c in result["cases"]}
    assert sorted(cases) == sorted(
        (r, b) for r in ("tensorrt", "tensorrt:cuda-graphs") for b in BATCHES
    )
    costs = fake_cuda.COSTS
    for (spec, batch), case in cases.items():
        graphs = spec.endswith("cuda-graphs")
        assert case["describe"]["cuda_graphs"] is graphs
        assert case["iterations"] == ITERATIONS and case["warmup_iterations"] == WARMUP
        split = case["split_ms"]
        assert set(split) == {"h2d", "compute", "d2h", "gpu_total"}
        # every stage is what the fake timeline charges for it, in every iteration: H2D and
        # D2H are exactly the pinned transfers, with no NumPy <-> pinned copy in them
        want = {
            "h2d": fake_cuda.copy_cost_ns(batch * INPUT_ELEMENTS * 4, pinned=True),
            "compute": fake_cuda.kernel_cost_ns(layers, batch * INPUT_ELEMENTS, in_graph=graphs)
            + (costs["graph_launch_ns"] if graphs else 0),
            "d2h": fake_cuda.copy_cost_ns(batch * OUTPUT_ELEMENTS * 4, pinned=True),
        }
        want["gpu_total"] = sum(want.values())
        for stage, ns in want.items():
            assert split[stage]["min"] == split[stage]["max"] == pytest.approx(ns / 1e6), stage
        # the host clock sees the whole call: the GPU's work plus the wake-up after the sync
        host_ms = (want["gpu_total"] + costs["sync_ns"]) / 1e6
        assert case["latency_ms"]["median"] == pytest.approx(host_ms)
        assert case["cv"] == pytest.approx(0, abs=1e-9) and not case["noisy"]
        assert case["throughput_ips"] == pytest.approx(batch * 1000 / host_ms)
    # one capture per batch size (after the first warm-up call ran the engine), then replays
    assert len(fake_cuda.GRAPHS) == len(BATCHES)
    assert [g._replays for g in fake_cuda.GRAPHS] == [WARMUP - 1 + ITERATIONS] * len(BATCHES)

    # JSON and CSV carry the split; the Markdown shows its table
    bm.write_json(result, tmp_path / "r.json")
    bm.write_csv(result, tmp_path / "r.csv")
    loaded = bm.load_result(tmp_path / "r.json")
    for case in loaded["cases"]:
        key = (case["runtime"], case["batch"])
        assert case["split_ms"] == cases[key]["split_ms"]
        assert case["latency_ms"] == cases[key]["latency_ms"]
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == len(cases)
    for row in rows:
        case = cases[(row["runtime"], int(row["batch"]))]
        for stage in ("h2d", "compute", "d2h", "gpu_total"):
            assert float(row[f"{stage}_mean_ms"]) == pytest.approx(
                case["split_ms"][stage]["mean"], rel=1e-5
            )
    md = view.render_markdown(result)
    assert "GPU split (mean, CUDA events)" in md and "| tensorrt:cuda-graphs | fp32 | 4 |" in md
    assert "end-to-end host timing only" not in md


def test_cli_bench_runs_tensorrt_with_cuda_graphs(engine_bundle, tmp_path) -> None:
    """CUDA graphs are the spec variant, and the runtime column names it: no flag relabels a
    `tensorrt` row that ran with graphs."""
    from vggdeploy.cli import cli

    out = tmp_path / "bench.json"
    args = [
        "bench", str(engine_bundle), "--runtime", "tensorrt:cuda-graphs", "--batch", "1,2",
        "--warmup", "2", "--iterations", "3", "--json", str(out), "--markdown", "-",
    ]  # fmt: skip
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "GPU split" in run.output and "skipped" not in run.output
    result = json.loads(out.read_text())
    assert "cuda_graphs" not in result["method"]["options"]
    assert [(c["runtime"], c["batch"]) for c in result["cases"]] == [
        ("tensorrt:cuda-graphs", 1),
        ("tensorrt:cuda-graphs", 2),
    ]
    for case in result["cases"]:
        assert case["describe"]["cuda_graphs"] is True
        assert case["split_ms"]["compute"]["mean"] > 0
    assert len(fake_cuda.GRAPHS) == 2


@pytest.fixture
def int8_engine_bundle(trt, precision_bundle) -> Path:
    """The tiny bundle with fp32 and int8 engines built by the double (int8 from the Q/DQ ONNX)."""
    for precision in ("fp32", "int8"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision=precision))
    return precision_bundle


def test_bench_runs_tensorrt_at_int8_only(int8_engine_bundle) -> None:
    """`tensorrt@int8` times the int8 engine alone; `tensorrt` times every engine."""
    bundle = Bundle.load(int8_engine_bundle)
    plans, skipped = bm.plan_cases(bundle, parse_specs(["tensorrt@int8"]), ["fp32"], (1,))
    assert not skipped, skipped
    assert [(p.runtime, p.precision) for p in plans] == [("tensorrt", "int8")]
    plans, skipped = bm.plan_cases(bundle, parse_specs(["tensorrt"]), None, (1,))
    assert [(p.runtime, p.precision) for p in plans] == [("tensorrt", "fp32"), ("tensorrt", "int8")]
    # int8-u8 (a uint8 form that no longer exists) is refused when the spec is parsed
    with pytest.raises(InputError, match="int8-u8"):
        parse_spec("tensorrt@int8-u8")


def test_cli_bench_tensorrt_at_int8(int8_engine_bundle, tmp_path) -> None:
    from vggdeploy.cli import cli

    out = tmp_path / "bench.json"
    args = [
        "bench", str(int8_engine_bundle), "--runtime", "tensorrt@int8", "--batch", "1,2",
        "--warmup", "1", "--iterations", "2", "--json", str(out),
    ]  # fmt: skip
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "GPU split" in run.output and "skipped" not in run.output
    result = json.loads(out.read_text())
    assert [(c["runtime"], c["precision"], c["batch"]) for c in result["cases"]] == [
        ("tensorrt", "int8", 1),
        ("tensorrt", "int8", 2),
    ]
    for case in result["cases"]:
        assert case["describe"]["precision"] == "int8"
        assert case["split_ms"]["compute"]["mean"] > 0


# -- the staged hooks themselves --------------------------------------------------------------------


def staged_run(runtime: TrtRuntime, x: np.ndarray) -> dict[str, np.ndarray]:
    runtime.stage_inputs({"input": x})
    runtime.enqueue_h2d()
    runtime.enqueue_compute()
    runtime.enqueue_d2h()
    runtime.synchronize()
    return runtime.fetch_outputs()


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graphs"])
def test_staged_hooks_compute_what_infer_computes(engine_bundle, graphs) -> None:
    with TrtRuntime(engine_bundle, precision="fp32", cuda_graphs=graphs) as runtime:
        assert isinstance(runtime, bm.StagedRuntime)
        # shapes change, come back, and interleave with infer() on other shapes
        for n, seed, interleave in [(4, 0, None), (4, 1, None), (2, 2, None), (4, 3, 3), (4, 4, 1)]:
            if interleave:
                y = x_batch(interleave, seed=100 + seed)
                np.testing.assert_array_equal(
                    runtime.infer({"input": y})["logits"], ort_logits(engine_bundle, y)
                )
            x = x_batch(n, seed=seed)
            got = staged_run(runtime, x)
            assert list(got) == ["logits"] and got["logits"].shape == (n, 10)
            np.testing.assert_array_equal(got["logits"], ort_logits(engine_bundle, x))
            np.testing.assert_array_equal(got["logits"], runtime.infer({"input": x})["logits"])
        first = runtime.fetch_outputs()["logits"]
        first[...] = 0  # a copy: the pinned buffer itself is not handed out
        assert np.abs(runtime.fetch_outputs()["logits"]).sum() > 0
        # Staged once, sent many times: every iteration copies the same pinned input.
        x = x_batch(3, seed=8)
        runtime.stage_inputs({"input": x})
        for _ in range(3):
            runtime.enqueue_h2d()
            runtime.enqueue_compute()
            runtime.enqueue_d2h()
            runtime.synchronize()
            np.testing.assert_array_equal(
                runtime.fetch_outputs()["logits"], ort_logits(engine_bundle, x)
            )
        # infer() on other shapes between staging and H2D: the staged shapes are bound again
        runtime.stage_inputs({"input": x})
        y = x_batch(5, seed=9)
        np.testing.assert_array_equal(
            runtime.infer({"input": y})["logits"], ort_logits(engine_bundle, y)
        )
        runtime.enqueue_h2d()
        runtime.enqueue_compute()
        runtime.enqueue_d2h()
        np.testing.assert_array_equal(
            runtime.fetch_outputs()["logits"], ort_logits(engine_bundle, x)
        )
        # New shapes bound (buffers reallocated) but nothing run: the batch-4 graph holds the
        # old addresses, so it must not be replayed for the next batch of 4.
        runtime.stage_inputs({"input": x_batch(2)})
        x = x_batch(4, seed=7)
        np.testing.assert_array_equal(
            runtime.infer({"input": x})["logits"], ort_logits(engine_bundle, x)
        )
    if graphs:
        assert fake_cuda.GRAPHS and all(g._replays >= 0 for g in fake_cuda.GRAPHS)
    else:
        assert not fake_cuda.GRAPHS


def test_staged_hooks_check_their_use(engine_bundle) -> None:
    with TrtRuntime(engine_bundle, precision="fp32") as runtime:
        with pytest.raises(RuntimeError, match="stage_inputs"):
            runtime.enqueue_h2d()
        with pytest.raises(RuntimeError, match="stage_inputs"):
            runtime.enqueue_compute()
        with pytest.raises(TypeError, match="float64"):  # no silent cast into the pinned input
            runtime.stage_inputs({"input": x_batch(1).astype(np.float64)})
        with pytest.raises(RuntimeError, match="stage_inputs"):  # a failed staging stages nothing
            runtime.enqueue_h2d()
        start = runtime.record_event()
        runtime.stage_inputs({"input": x_batch(2)})
        end = runtime.record_event()
        runtime.synchronize()
        # staging is the host memcpy into pinned memory (after waiting for the stream), all of
        # it between these events: so it is nothing bench may put inside a timed stage
        fill = fake_cuda.host_copy_cost_ns(2 * INPUT_ELEMENTS * 4)
        assert fill > 0
        assert runtime.event_ms(start, end) == pytest.approx(
            (fake_cuda.COSTS["sync_ns"] + fill) / 1e6
        )
        start = runtime.record_event()
        runtime.enqueue_h2d()
        end = runtime.record_event()
        # as on a GPU, an event's time is readable only once it has completed
        with pytest.raises(RuntimeError, match="not ready"):
            runtime.event_ms(start, end)
        runtime.synchronize()
        # H2D is the pinned transfer and nothing else
        assert runtime.event_ms(start, end) == pytest.approx(
            fake_cuda.copy_cost_ns(2 * INPUT_ELEMENTS * 4, pinned=True) / 1e6
        )
        runtime.enqueue_compute()
        start = runtime.record_event()
        runtime.enqueue_d2h()
        end = runtime.record_event()
        runtime.synchronize()
        assert runtime.event_ms(start, end) == pytest.approx(
            fake_cuda.copy_cost_ns(2 * OUTPUT_ELEMENTS * 4, pinned=True) / 1e6
        )
        # the pinned -> NumPy copy is fetch_outputs' (a stream synchronize, then the memcpy)
        reads, t0 = fake_cuda.HOST_COPIES["read"], fake_cuda.CLOCK.now()
        runtime.fetch_outputs()
        assert fake_cuda.HOST_COPIES["read"] == reads + 1
        assert fake_cuda.CLOCK.now() - t0 == fake_cuda.COSTS["sync_ns"] + (
            fake_cuda.host_copy_cost_ns(2 * OUTPUT_ELEMENTS * 4)
        )
    with pytest.raises(RuntimeError, match="not loaded|load"):
        runtime.record_event()


def test_double_graph_replays_what_was_bound_at_capture(engine_bundle) -> None:
    """As a real CUDA graph: replay uses the capture's addresses, and fails once they are freed."""
    with TrtRuntime(engine_bundle, precision="fp32", cuda_graphs=True) as runtime:
        x = x_batch(3)
        staged_run(runtime, x)  # ordinary run, then capture
        graph = fake_cuda.GRAPHS[-1]
        runtime._context.set_input_shape("input", (1, 3, 32, 32))  # rebinding does not matter
        runtime._buffers["input"].copy_from_host(x_batch(3, seed=5), runtime._stream)
        graph.replay(runtime._stream)
        got = runtime._buffers["logits"].copy_to_host(runtime._stream)
        np.testing.assert_array_equal(got, ort_logits(engine_bundle, x_batch(3, seed=5)))
        runtime._buffers.clear()  # the device buffers are freed
        with pytest.raises(RuntimeError, match="illegal memory access"):
            graph.replay(runtime._stream)


def test_bench_sees_the_double_as_installed(trt) -> None:
    """The double is a module with a spec, as an imported `tensorrt` is, so bench's
    `importlib.util.find_spec` check treats TensorRT as installed (not a ValueError)."""
    from vggdeploy.runtimes.registry import unavailable

    assert unavailable(parse_spec("tensorrt")) is None
    assert unavailable(parse_spec("tensorrt:cuda-graphs")) is None


# -- on a real GPU ------------------------------------------------------------------------------------


def _real_tensorrt_and_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as exc:
        return f"needs TensorRT and torch ({exc})"
    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU"
    return None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_real_tensorrt_and_gpu() is not None, reason=str(_real_tensorrt_and_gpu()))
def test_real_bench_split_on_a_gpu(tiny_bundle) -> None:
    """On a GPU with TensorRT: real events, pinned copies and CUDA graphs through bench."""
    build_engine(Bundle.load(tiny_bundle), BuildOptions(precision="fp32"))
    bundle = Bundle.load(tiny_bundle)
    plans, skipped = bm.plan_cases(
        bundle,
        parse_specs(["tensorrt", "tensorrt:cuda-graphs"]),
        None,
        (1, 8),
    )
    assert not skipped
    options = bm.BenchOptions(iterations=50, seconds=None, warmup_iterations=10)
    result = bm.run_benchmark(bundle, plans, options)
    assert len(result["cases"]) == 4, result["skipped"]
    for case in result["cases"]:
        split = case["split_ms"]
        stages = sum(split[s]["mean"] for s in ("h2d", "compute", "d2h"))
        assert all(split[s]["min"] > 0 for s in ("h2d", "compute", "d2h"))
        assert stages == pytest.approx(split["gpu_total"]["mean"], rel=0.05, abs=0.01)
        assert split["gpu_total"]["median"] <= case["latency_ms"]["median"] * 1.05
    for graphs in (False, True):
        with TrtRuntime(tiny_bundle, precision="fp32", cuda_graphs=graphs) as runtime:
            x = x_batch(8)
            np.testing.assert_allclose(
                staged_run(runtime, x)["logits"], ort_logits(tiny_bundle, x), atol=1e-3
            )
