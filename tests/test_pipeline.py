"""`vggdeploy pipeline` end to end on the tiny model: stages, resuming, --force, the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.pipeline import (
    STAGES,
    PipelineOptions,
    calibration_split,
    resolve_images,
    run_pipeline,
    tensorrt_unavailable,
)

pytest_plugins = ("trt_double.fixtures",)

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10, "image_size": 32}
FAST = {"batches": (1,), "bench_iterations": 2, "validate_samples": 8, **TINY}
TINY_ARGS = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    lines: list[str] = []
    report = run_pipeline("vgg11_bn", out, PipelineOptions(**FAST), say=lines.append)
    return out, report, lines


def test_first_run_does_every_stage(first_run: tuple[Path, dict, list[str]]) -> None:
    out, report, lines = first_run
    assert [s["name"] for s in report["stages"]] == list(STAGES)
    status = statuses(report)
    for name in (
        "export",
        "validate-export",
        "convert-fp16",
        "calibrate-int8",
        "validate",
        "bench",
    ):
        assert status[name] == "done", (name, report["stages"])
    assert set(report["artifacts"]) >= {"onnx.fp32", "onnx.fp16", "onnx.int8", "onnx.int8-u8"}
    assert report["validate"]["passed"]
    assert report["bench"]["cases"], "the benchmark measured nothing"
    assert any("photographs shipped with vggdeploy" in line for line in lines)
    assert report["options"]["images"]["kind"] == "default"
    for name in ("report.md", "report.json", "pipeline.json", "bench.png", "bundle/manifest.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial"))


def test_tensorrt_stage_is_reported_with_reason(first_run: tuple[Path, dict, list[str]]) -> None:
    out, report, _ = first_run
    build = next(s for s in report["stages"] if s["name"] == "build")
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present here: the build stage runs")
    assert build["status"] == "skipped" and build["reason"] == reason
    assert "TensorRT" in build["reason"]
    md = (out / "report.md").read_text()
    assert "Not built here: " + reason in md


def test_report_md_has_the_stages_and_tables(first_run: tuple[Path, dict, list[str]]) -> None:
    out, report, _ = first_run
    md = (out / "report.md").read_text()
    for name in STAGES:
        assert f"| {name} |" in md
    for heading in ("## Artifacts", "## Validation", "## INT8 calibration", "## Benchmark"):
        assert heading in md
    assert "![latency and throughput](bench.png)" in md
    assert "weights are random" in md
    data = json.loads((out / "report.json").read_text())
    assert data["stages"] == report["stages"]
    assert data["wall_s"] > 0


def test_second_run_is_up_to_date(first_run: tuple[Path, dict, list[str]], capsys) -> None:
    out, _, _ = first_run
    before = (out / "bundle" / "model.onnx").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11_bn", "--out", str(out), *TINY_ARGS, "--batch", "1",
              "--bench-iterations", "2", "--validate-samples", "8"])  # fmt: skip
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    status = statuses(report)
    for name in (
        "export",
        "validate-export",
        "convert-fp16",
        "calibrate-int8",
        "validate",
        "bench",
    ):
        assert status[name] == "up to date", (name, status)
    assert "[1/7] export: up to date" in printed
    assert (out / "bundle" / "model.onnx").stat().st_mtime_ns == before


def test_changed_or_damaged_inputs_redo_only_their_stages(
    first_run: tuple[Path, dict, list[str]], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    # a removed artifact: its stage runs again, the export does not
    (out / "bundle" / "model.fp16.onnx").unlink()
    status = statuses(run_pipeline("vgg11_bn", out, PipelineOptions(**FAST), say=lambda _: None))
    assert status["export"] == "up to date"
    assert status["convert-fp16"] == "done"
    assert status["calibrate-int8"] == "up to date"
    assert (out / "bundle" / "model.fp16.onnx").is_file()
    # a changed option: only the stages that depend on it
    options = PipelineOptions(**{**FAST, "calib_samples": 4})
    status = statuses(run_pipeline("vgg11_bn", out, options, say=lambda _: None))
    assert status["export"] == "up to date" and status["calibrate-int8"] == "done"
    assert status["validate"] == "done"  # the int8 files changed


def test_force_redoes_everything(first_run: tuple[Path, dict, list[str]], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    options = PipelineOptions(**{**FAST, "precisions": ("fp32",), "force": True})
    report = run_pipeline("vgg11_bn", out, options, say=lambda _: None)
    status = statuses(report)
    assert status["export"] == "done" and status["validate-export"] == "done"
    assert status["bench"] == "done"
    assert status["convert-fp16"] == "skipped" and status["calibrate-int8"] == "skipped"
    assert set(report["artifacts"]) == {"onnx.fp32"}  # a fresh export replaced the bundle


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="holds no earlier pipeline run"):
        run_pipeline("vgg11_bn", tmp_path, PipelineOptions(**FAST), say=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_option_checks() -> None:
    with pytest.raises(InputError, match="must include fp32"):
        PipelineOptions(precisions=("int8",))
    with pytest.raises(InputError, match="fp64"):
        PipelineOptions(precisions=("fp32", "fp64"))
    with pytest.raises(InputError, match="more than the 11 images"):
        calibration_split(11, 12)
    assert calibration_split(11, None) == 8  # 3 held out
    assert calibration_split(1000, None) == 64
    assert calibration_split(3, None) == 3


def test_synthetic_images_when_no_photographs(tmp_path: Path, monkeypatch) -> None:
    import vggdeploy.pipeline as pipeline

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(pipeline, "default_images_dir", lambda: empty)
    images = resolve_images(None, tmp_path / "out", lambda _: None)
    assert images["kind"] == "synthetic" and images["count"] >= 8
    assert "SYNTHETIC" in images["warning"] and "mean little" in images["warning"]
    import numpy as np
    from PIL import Image

    for path in (tmp_path / "out" / "synthetic_images").iterdir():
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        assert pixels.std() > 20, path  # structured, not flat
        # not noise either: neighbouring pixels are alike
        assert np.abs(np.diff(pixels, axis=1)).mean() < pixels.std() / 2, path


def test_shipped_photographs_are_real_and_licensed() -> None:
    from vggdeploy.pipeline import MIN_DEFAULT_IMAGES, default_images_dir
    from vggdeploy.preprocess import find_images

    folder = default_images_dir()
    images = find_images(folder)
    assert len(images) >= MIN_DEFAULT_IMAGES
    readme = (folder / "README.md").read_text()
    for path in images:
        assert f"| {path.name} |" in readme, f"{path.name} has no source/licence line"


def test_int8_checks_are_informational_with_random_weights(
    first_run: tuple[Path, dict, list[str]], tmp_path: Path, monkeypatch
) -> None:
    from vggdeploy import validate

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    monkeypatch.setitem(validate.TOLERANCES, "int8", {"cosine": 1.1})  # nothing can pass
    options = PipelineOptions(**{**FAST, "validate_samples": 6})  # re-runs the validations only
    report = run_pipeline("vgg11_bn", out, options, say=lambda _: None)
    status = statuses(report)
    assert status["validate"] == "done" and status["bench"] == "up to date"
    assert any(w.startswith("INT8 checks are informational") for w in report["warnings"])
    md = (out / "report.md").read_text()
    assert "FAIL (informational: random weights)" in md


def test_failed_check_writes_the_report_then_exits_2(
    first_run: tuple[Path, dict, list[str]], tmp_path: Path, monkeypatch, capsys
) -> None:
    from vggdeploy import validate

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    monkeypatch.setitem(validate.TOLERANCES, "fp32", {"cosine": 1.1})
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11_bn", "--out", str(out), *TINY_ARGS, "--batch", "1",
              "--bench-iterations", "2", "--validate-samples", "6"])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "validate-export" in err and "report.md" in err
    report = json.loads((out / "report.json").read_text())
    assert statuses(report)["validate-export"] == "failed"
    assert "> **FAILED** validate-export" in (out / "report.md").read_text()


def test_engines_are_built_validated_and_benched_where_tensorrt_is(
    first_run: tuple[Path, dict, list[str]], tmp_path: Path, trt10, gpu
) -> None:
    """With TensorRT and a GPU (here the project's TensorRT double), the build stage runs."""
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    report = run_pipeline("vgg11_bn", out, PipelineOptions(**FAST), say=lambda _: None)
    status = statuses(report)
    assert status["build"] == "done", report["stages"]
    assert status["export"] == "up to date"
    assert {"engine.fp32", "engine.fp16", "engine.int8"} <= set(report["artifacts"])
    labels = [t["label"] for t in report["validate"]["targets"] if t["status"] == "compared"]
    assert sum("tensorrt" in label for label in labels) == 3, labels
    assert any(c["runtime"].startswith("tensorrt") for c in report["bench"]["cases"])
    md = (out / "report.md").read_text()
    assert gpu["name"] in md and "## TensorRT engines" in md
    # and a second run finds the engines up to date
    again = statuses(run_pipeline("vgg11_bn", out, PipelineOptions(**FAST), say=lambda _: None))
    assert again["build"] == "up to date"
