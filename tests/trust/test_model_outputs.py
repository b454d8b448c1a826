"""Causes 8 and 9 of issue 18: a NaN/infinite model output and a backend failure inside
inference are one line naming the runtime (with its precision) and the artifact, in every
command that runs a model. The failure is injected into the ONNX Runtime runtime's `_infer`
with ONNX Runtime's own exception type (onnxruntime/python/onnxruntime_pybind_state.cc
registers RuntimeException for its runtime errors, e.g. a failed allocation)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vggdeploy.cli import main
from vggdeploy.runtimes.onnxrt import OrtRuntime


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(2):
        path = tmp_path / "labelled" / f"class_{c}" / "0.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return tmp_path / "labelled"


def _commands(bundle, labelled):
    image = next(labelled.rglob("*.png"))
    ort = ["--runtime", "onnxruntime"]
    return {
        "predict": ["predict", bundle, image, *ort],
        "predict-json": ["predict", bundle, image, *ort, "--json", "-"],
        "validate": ["validate", bundle, *ort, "--samples", "2"],
        "evaluate": ["evaluate", bundle, "--images", labelled, *ort],
        "bench": ["bench", bundle, *ort, "--iterations", "2", "--batch", "1"],
    }


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _allocation_failure(self, feed):
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    raise RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")


def _nan_outputs(original):
    def infer(self, feed):
        out = original(self, feed)
        return {k: np.full_like(v, np.nan) for k, v in out.items()}

    return infer


COMMANDS = ["predict", "predict-json", "validate", "evaluate", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_backend_failure_is_one_line_naming_the_artifact(
    tiny_bundle_ro, labelled, monkeypatch, capsys, command
) -> None:
    monkeypatch.setattr(OrtRuntime, "_infer", _allocation_failure)
    code, out, err = _run(_commands(tiny_bundle_ro, labelled)[command], capsys)
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    # the error line itself names it (bench too: a failed case is not a skipped one)
    named = [line for line in err.splitlines() if "Failed to allocate memory" in line]
    assert named == lines, err
    assert "onnxruntime[cpu] fp32" in named[0] and "model.onnx" in named[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_non_finite_outputs_are_an_error_naming_runtime_and_precision(
    tiny_bundle_ro, labelled, monkeypatch, capsys, command
) -> None:
    monkeypatch.setattr(OrtRuntime, "_infer", _nan_outputs(OrtRuntime._infer))
    code, out, err = _run(_commands(tiny_bundle_ro, labelled)[command], capsys)
    assert code != 0, err
    assert "nan%" not in out
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    named = [line for line in err.splitlines() if "non-finite" in line]
    assert len(named) == 1, err
    assert "onnxruntime[cpu] fp32" in named[0] and "model.onnx" in named[0]


def test_bench_reports_a_failed_case_as_failed_beside_the_cases_that_ran(
    tiny_bundle_ro, monkeypatch, capsys, tmp_path
) -> None:
    original = OrtRuntime._infer

    def fails_at_batch_2(self, feed):
        if next(iter(feed.values())).shape[0] == 2:
            _allocation_failure(self, feed)
        return original(self, feed)

    monkeypatch.setattr(OrtRuntime, "_infer", fails_at_batch_2)
    result = tmp_path / "bench.json"
    args = ["bench", tiny_bundle_ro, "--runtime", "onnxruntime:cpu@fp32", "--batch", "1,2"]
    code, out, err = _run([*args, "--iterations", "2", "--json", result], capsys)
    assert code == 1, err
    assert "Traceback" not in err and "no case could run" not in err, err
    errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: bench case onnxruntime fp32 b2: ")
    assert "onnxruntime[cpu] fp32 failed while running" in errors[0]
    assert f"{tiny_bundle_ro / 'model.onnx'}: RuntimeException" in errors[0]
    assert "Failed to allocate memory" in errors[0]
    # the case that ran is in the table; the failed one is a `failed` line, not a skipped one
    import json

    data = json.loads(result.read_text())
    assert [c["batch"] for c in data["cases"]] == [1]
    assert [(f["batch"], f["runtime"]) for f in data["failed"]] == [(2, "onnxruntime")]
    assert data["skipped"] == []
    failed = [line for line in out.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and "b2" in failed[0] and "model.onnx" in failed[0], out
    assert "skipped" not in out


def test_the_pipeline_bench_stage_fails_on_a_failed_case(tmp_path, monkeypatch, capsys) -> None:
    original = OrtRuntime._infer
    calls = {"bench": False}

    def fails_in_bench(self, feed):
        if calls["bench"]:
            _allocation_failure(self, feed)
        return original(self, feed)

    import vggdeploy.bench.run as bench_run

    real_run = bench_run.run_benchmark

    def run_benchmark(*args, **kwargs):  # only the bench stage's inference fails
        calls["bench"] = True
        return real_run(*args, **kwargs)

    monkeypatch.setattr(OrtRuntime, "_infer", fails_in_bench)
    monkeypatch.setattr("vggdeploy.bench.run_benchmark", run_benchmark)
    tiny = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
    code, out, err = _run(
        ["pipeline", "vgg11_bn", *tiny, "--out", tmp_path / "run", "--precision", "fp32",
         "--validate-samples", "2", "--batch", "1", "--bench-iterations", "2",
         "--bench-runtime", "onnxruntime"],
        capsys,
    )  # fmt: skip
    assert code != 0 and "Traceback" not in err, err
    failed = [line for line in (out + err).splitlines() if "bench: FAILED" in line]
    assert len(failed) == 1, out + err
    assert "onnxruntime fp32 b1" in failed[0] and "Failed to allocate memory" in failed[0]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Failed to allocate memory" in report
