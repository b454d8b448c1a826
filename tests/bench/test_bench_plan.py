"""`vggdeploy bench`: option parsing, planning runtime specs x precisions, the command line, and
the real torch and onnxruntime runtimes on the tiny bundle."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest

from vggdeploy import bench
from vggdeploy.bench import run as bench_run
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.runtimes.registry import parse_spec, parse_specs

# -- options ------------------------------------------------------------------------------------


def test_parse_options() -> None:
    assert bench.parse_batches("1,8,32") == (1, 8, 32)
    for bad in ("0", "1,x", "1,1", ""):
        with pytest.raises(InputError):
            bench.parse_batches(bad)
    assert bench.parse_amount("20", "--warmup") == ("iterations", 20)
    assert bench.parse_amount("2s", "--warmup") == ("seconds", 2.0)
    assert bench.parse_amount("500ms", "--warmup") == ("seconds", 0.5)
    with pytest.raises(InputError):
        bench.parse_amount("2.5", "--warmup")
    assert bench.parse_threshold("5%") == pytest.approx(0.05)
    assert bench.parse_threshold("0.1") == pytest.approx(0.1)
    # the command line's spelling: 3 s and at least 10 calls unless told otherwise
    default = bench.BenchOptions.from_cli()
    assert (default.seconds, default.min_iterations, default.iterations) == (3.0, 10, None)
    assert default.warmup_seconds == 0.5 and default.warmup_iterations is None
    counted = bench.BenchOptions.from_cli(warmup="5", iterations=20, cv_threshold="20%")
    assert (counted.seconds, counted.iterations, counted.warmup_iterations) == (None, 20, 5)
    assert counted.cv_threshold == pytest.approx(0.2)
    with pytest.raises(InputError, match="--cv-threshold"):
        bench.BenchOptions.from_cli(cv_threshold="lots")


# -- planning -----------------------------------------------------------------------------------


def test_specs_plan_their_precisions(tiny_bundle_ro: Path) -> None:
    """`@P` runs only that precision; without it, --precision or every one of the bundle."""
    bundle = Bundle.load(tiny_bundle_ro)
    specs = parse_specs(["onnxruntime:cpu@fp32", "torch:channels-last", "torch"])
    plans, skipped = bench.plan_cases(bundle, specs, ["fp32", "fp16"], (1,))
    ran = [(p.runtime, p.precision) for p in plans]
    assert ran == [("onnxruntime", "fp32"), ("torch:channels-last", "fp32"), ("torch", "fp32")]
    assert plans[1].spec.kwargs() == {"device": "cpu", "channels_last": True, "precision": "fp32"}
    # --precision fp16 reaches only the specs without @: torch on the CPU runs fp32 only
    reasons = {(s.runtime, s.precision): s.reason for s in skipped}
    assert set(reasons) == {("torch:channels-last", "fp16"), ("torch", "fp16")}
    assert "fp32 only" in reasons[("torch", "fp16")]
    # without --precision, every precision the bundle has for that runtime
    plans, skipped = bench.plan_cases(bundle, parse_specs(["onnxruntime,torch"]), None, (1, 2))
    assert [(p.runtime, p.precision, p.batches) for p in plans] == [
        ("onnxruntime", "fp32", (1, 2)),
        ("torch", "fp32", (1, 2)),
    ]
    assert not skipped
    # a spec that names a precision its runtime never runs is refused when parsed
    with pytest.raises(InputError, match="int8"):
        parse_spec("torch@int8")


def test_skipped_cases_listed_with_reasons(tiny_bundle_ro: Path, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorrt" else real_find_spec(name, *a),
    )
    bundle = Bundle.load(tiny_bundle_ro)
    specs = parse_specs(["torch", "onnxruntime", "onnxruntime:cuda", "tensorrt"])
    plans, skipped = bench.plan_cases(bundle, specs, ["fp32", "int8"], (1, 8))
    ran = {(p.runtime, p.precision) for p in plans}
    assert ran == {("torch", "fp32"), ("onnxruntime", "fp32")}
    reasons = {(s.runtime, s.precision): s.reason for s in skipped}
    assert "not installed" in reasons[("tensorrt", None)]
    assert "CUDAExecutionProvider" in reasons[("onnxruntime:cuda", None)]
    assert "onnx.int8" in reasons[("onnxruntime", "int8")]
    assert "vggdeploy calibrate" in reasons[("onnxruntime", "int8")]
    assert "int8" in reasons[("torch", "int8")]
    # defaults: every runtime the host has, every artifact of the bundle
    plans, skipped = bench.plan_cases(bundle, None, None, (1,))
    assert {(p.runtime, p.precision) for p in plans} == {("torch", "fp32"), ("onnxruntime", "fp32")}
    assert {s.runtime for s in skipped} >= {"tensorrt", "onnxruntime:cuda", "torch:cuda"}


# -- the command line ---------------------------------------------------------------------------

FAST = ["--batch", "1", "--iterations", "3", "--warmup", "1"]


def test_cli_lists_skipped_in_outputs(tiny_bundle_ro: Path, tmp_path: Path, capsys) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    args = ["--runtime", "onnxruntime,tensorrt", "--precision", "fp32,fp16", *FAST]
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tiny_bundle_ro), *args, "--json", str(out), "--markdown", str(md)])
    assert exc.value.code == 0
    text = md.read_text()
    result = json.loads(out.read_text())
    skipped = {(s["runtime"], s["precision"]) for s in result["skipped"]}
    assert ("onnxruntime", "fp16") in skipped
    assert any(r == "tensorrt" for r, _ in skipped)
    assert "skipped onnxruntime fp16: the bundle has no onnx.fp16 artifact" in text
    assert "| onnxruntime | fp32 | 1 |" in text
    # the terminal table went to stdout as well, with the same notes
    terminal = capsys.readouterr().out
    assert "onnxruntime" in terminal and "skipped onnxruntime fp16" in terminal


def test_cli_onnxruntime_cpu_at_fp32_to_json_on_stdout(tiny_bundle_ro: Path, capsys) -> None:
    """`--runtime onnxruntime:cpu@fp32` runs fp32 only, whatever --precision says; `--json -`
    prints the result instead of the table."""
    args = ["--runtime", "onnxruntime:cpu@fp32", "--precision", "fp16", *FAST, "--json", "-"]
    with pytest.raises(SystemExit) as exc:
        main(["-q", "bench", str(tiny_bundle_ro), *args])
    assert exc.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert [(c["runtime"], c["precision"], c["batch"]) for c in result["cases"]] == [
        ("onnxruntime", "fp32", 1)
    ]
    assert result["cases"][0]["describe"]["providers"] == ["CPUExecutionProvider"]
    assert result["skipped"] == []


def test_cli_csv_and_markdown_on_stdout(tiny_bundle_ro: Path, capsys) -> None:
    base = ["-q", "bench", str(tiny_bundle_ro), "--runtime", "onnxruntime", *FAST]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--csv", "-"])
    assert exc.value.code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["runtime"], r["precision"], r["batch"]) for r in rows] == [
        ("onnxruntime", "fp32", "1")
    ]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--markdown", "-"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("**vggdeploy bench**") and "| onnxruntime | fp32 | 1 |" in out
    with pytest.raises(SystemExit) as exc:
        main([*base, "--markdown", "-", "--json", "-"])
    assert exc.value.code == 1


def test_cli_bad_input_one_line(tiny_bundle_ro: Path, capsys) -> None:
    for args, needle in (
        (["--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["--runtime", "torch:nhwc"], "no variant 'nhwc'"),
        (["--runtime", "onnxruntime:cuda:tensorrt"], "not both"),
        (["--runtime", "torch@int8"], "not int8"),
        (["--batch", "0"], "--batch '0'"),
        (["--precision", "int4"], "--precision int4"),
        (["--warmup", "lots"], "--warmup 'lots'"),
        (["--runtime", "torch", "--precision", "int8"], "nothing to benchmark"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["-q", "bench", str(tiny_bundle_ro), *args])
        assert exc.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and needle in err[-1], err
        assert "Traceback" not in "\n".join(err)
    # CUDA graphs are the runtime spec variant tensorrt:cuda-graphs, not a flag
    with pytest.raises(SystemExit) as exc:
        main(["-q", "bench", str(tiny_bundle_ro), "--runtime", "tensorrt", "--cuda-graphs"])
    assert exc.value.code == 2 and "No such option '--cuda-graphs'" in capsys.readouterr().err


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


def test_flops_follow_image_size_of_a_dense_bundle(tiny_bundle_ro: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from vggdeploy.models import build_dense_model, count_flops, resolve_spec
    from vggdeploy.records import ModelRecord

    spec = resolve_spec("C", width_divisor=16, hidden=64, num_classes=10)
    fields = {**spec.to_dict(), "dense": True, "image_size": 224}
    model = ModelRecord.model_validate({**fields, "flops_per_image": count_flops(spec)})
    net = build_dense_model(spec).eval()
    for size in (224, 256, 320):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, size, size))
        assert bench.flops_per_image(model, size) == counter.get_total_flops()
    assert bench_run.resolve_image_size(model, 256) == 256
    # a fixed-size bundle refuses another size instead of timing a different model
    fixed = ModelRecord.model_validate({**fields, "dense": False})
    with pytest.raises(InputError, match="only a dense bundle"):
        bench_run.resolve_image_size(fixed, 256)
    assert bench_run.resolve_image_size(fixed, None) == 224
