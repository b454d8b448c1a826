"""What the pipeline does once instead of per stage, and that every check still runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggdeploy import weights as W
from vggdeploy.models import random_state_dict
from vggdeploy.pipeline import PipelineOptions, run_pipeline
from vggdeploy.runtimes.onnxrt import OrtRuntime

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10, "image_size": 32}
FAST = {"batches": (1,), "bench_iterations": 2, "validate_samples": 8, **TINY}


def test_random_weights_are_made_once_and_every_check_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    loads: list[str] = []

    def counted(spec, seed=0):
        made.append(seed)
        return random_state_dict(spec, seed)

    original = W.load_model

    def counted_load(spec, source, **kwargs):
        loads.append(source.kind)
        return original(spec, source, **kwargs)

    sessions: list[str] = []
    original_ort = OrtRuntime._load

    def counted_ort(self):
        sessions.append(self.precision)
        return original_ort(self)

    monkeypatch.setattr(OrtRuntime, "_load", counted_ort)
    from vggdeploy.bench import run as bench_run

    held_in_bench: list[object] = []
    real_bench = bench_run.run_benchmark

    def bench_spy(*args, **kwargs):
        held_in_bench.append(W._RANDOM_STATES)
        return real_bench(*args, **kwargs)

    monkeypatch.setattr(bench_run, "run_benchmark", bench_spy)
    import vggdeploy.bench as bench_package

    monkeypatch.setattr(bench_package, "run_benchmark", bench_spy)
    monkeypatch.setattr(W, "random_state_dict", counted)
    monkeypatch.setattr(W, "load_model", counted_load)
    from vggdeploy.exporter import onnx_export

    monkeypatch.setattr(onnx_export, "load_model", counted_load)  # imported by name there
    out = tmp_path / "run"
    report = run_pipeline("vgg11_bn", out, PipelineOptions(**FAST))

    # export and the PyTorch reference of both validations load the weights; made once
    assert len(loads) == 3, loads
    assert made == [0]
    assert W._RANDOM_STATES is None  # released with the run
    assert held_in_bench == [None]  # and before bench: its memory figures are the runtimes'
    # model.onnx on ONNX Runtime: validate-export and bench; the final validation judges
    # validate-export's outputs on the same random inputs again (test_validate_reuse)
    assert sorted(sessions) == ["fp16", "fp16", "fp32", "fp32", "int8", "int8"], sessions

    status = {s["name"]: s["status"] for s in report["stages"]}
    for name in ("export", "validate-export", "convert-fp16", "calibrate-int8", "validate"):
        assert status[name] == "done", report["stages"]
    assert status["bench"] == "done"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["parity"]["passed"]  # export's parity check
    first = json.loads((out / "validate-export.json").read_text())
    assert [t["status"] for t in first["targets"]] == ["compared"]
    assert manifest["artifacts"]["onnx.fp16"]["parity"]["passed"]  # fp16 measurement + parity
    assert manifest["artifacts"]["onnx.int8"]["holdout"]["images"] > 0  # INT8 held-out check
    final = json.loads((out / "validate.json").read_text())
    assert {t["target"]["precision"] for t in final["targets"] if t["status"] == "compared"} >= {
        "fp32",
        "fp16",
        "int8",
    }
    # the reference the final validation used is the torch model the weights record names
    assert final["reference"]["runtime"]["weights"]["sha256"] == (manifest["weights"]["sha256"])
    assert json.loads((out / "bench.json").read_text())["cases"]
