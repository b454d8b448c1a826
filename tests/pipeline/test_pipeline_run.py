"""`vggdeploy pipeline` end to end on the tiny model: stages, resuming, --force, the report,
and the validation verdict agreeing with `vggdeploy validate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.pipeline import STAGES, PipelineOptions, run_pipeline
from vggdeploy.report.pipeline import write_report

pytest_plugins = ("trt_double.fixtures",)

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10, "image_size": 32}
FAST = {"batches": (1,), "bench_iterations": 2, "validate_samples": 8, **TINY}
TINY_ARGS = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
DONE_EVERYWHERE = (
    "export",
    "validate-export",
    "convert-fp16",
    "calibrate-int8",
    "validate",
    "bench",
)


class Recorder:
    """A PipelineReporter that keeps every call."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage_started(self, name: str) -> None:
        self.events.append(("started", name))

    def progress(self, text: str) -> None:
        self.events.append(("progress", text))

    def stage_finished(self, name: str, status: str, seconds: float, summary: str) -> None:
        self.events.append(("finished", name, status, summary))

    def note(self, text: str) -> None:
        self.events.append(("note", text))


def run(out: Path, options: PipelineOptions, reporter: Recorder | None = None) -> dict:
    """What the CLI does: run, then draw report.md from report.json (also after a failure)."""
    try:
        return run_pipeline("vgg11_bn", out, options, reporter=reporter)
    finally:
        write_report(out)


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Recorder]:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    recorder = Recorder()
    report = run(out, PipelineOptions(**FAST), recorder)
    return out, report, recorder


def test_first_run_does_every_stage(first_run: tuple[Path, dict, Recorder]) -> None:
    out, report, recorder = first_run
    assert [s["name"] for s in report["stages"]] == list(STAGES)
    status = statuses(report)
    for name in DONE_EVERYWHERE:
        assert status[name] == "done", (name, report["stages"])
    assert set(report["artifacts"]) >= {"onnx.fp32", "onnx.fp16", "onnx.int8"}
    assert "onnx.int8-u8" not in report["artifacts"]  # one INT8 file serves both runtimes
    assert report["validate"]["passed"]
    assert report["bench"]["cases"], "the benchmark measured nothing"
    assert any(
        e[0] == "note" and "photographs shipped with vggdeploy" in e[1] for e in recorder.events
    )
    assert report["options"]["images"]["kind"] == "default"
    for name in ("report.md", "report.json", "pipeline.json", "bench.png", "bundle/manifest.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial"))


def test_progress_reaches_the_reporter_for_every_stage(
    first_run: tuple[Path, dict, Recorder],
) -> None:
    _, report, recorder = first_run
    finished = [e[1] for e in recorder.events if e[0] == "finished"]
    assert finished == list(STAGES)
    started = [e[1] for e in recorder.events if e[0] == "started"]
    ran = [s["name"] for s in report["stages"] if s["status"] in ("done", "failed")]
    assert all(name in started for name in ran), (started, ran)
    # each long stage said what it was doing while it ran
    progress_by_stage: dict[str, list[str]] = {}
    current = None
    for event in recorder.events:
        if event[0] == "started":
            current = event[1]
        elif event[0] == "progress" and current:
            progress_by_stage.setdefault(current, []).append(event[1])
    for name in (
        "export",
        "validate-export",
        "convert-fp16",
        "calibrate-int8",
        "validate",
        "bench",
    ):
        assert progress_by_stage.get(name), f"{name} reported no progress"


def test_pipeline_verdict_is_the_verdict_of_vggdeploy_validate(
    first_run: tuple[Path, dict, Recorder], tmp_path: Path
) -> None:
    """`vggdeploy validate BUNDLE` judges the produced bundle exactly as the validate stage did."""
    out, report, _ = first_run
    dest = tmp_path / "validate.json"
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(out / "bundle"), "--samples", "8", "--json", str(dest)])
    cli = json.loads(dest.read_text())
    stage = report["validate"]
    assert cli["passed"] == stage["passed"]
    assert exc.value.code == (0 if stage["passed"] else 2)
    assert cli["summary"] == stage["summary"]
    assert list(cli["inputs"]) == list(stage["inputs"])  # the same input rule
    assert [(t["label"], t["status"], t["passed"]) for t in cli["targets"]] == [
        (t["label"], t["status"], t["passed"]) for t in stage["targets"]
    ]
    for got, want in zip(cli["targets"], stage["targets"]):
        for metric, value in want["metrics"].items():
            assert got["metrics"][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), metric
    # INT8 was judged on the shipped photographs, never on random tensors
    int8 = [t for t in stage["targets"] if (t["target"]["precision"] or "").startswith("int8")]
    assert int8 and all("photographs" in t["inputs"] for t in int8)


def test_tensorrt_stage_is_reported_with_reason(first_run: tuple[Path, dict, Recorder]) -> None:
    out, report, _ = first_run
    build = next(s for s in report["stages"] if s["name"] == "build")
    if build["status"] != "skipped":
        pytest.skip("TensorRT and a GPU are present here: the build stage runs")
    assert "TensorRT" in build["reason"] or "tensorrt" in build["reason"]
    assert "vggdeploy pack" in build["reason"]
    md = (out / "report.md").read_text()
    assert "Not built here: " + build["reason"] in md


def test_report_md_has_the_stages_and_tables(first_run: tuple[Path, dict, Recorder]) -> None:
    out, report, _ = first_run
    md = (out / "report.md").read_text()
    for name in STAGES:
        assert f"| {name} |" in md
    for heading in ("## Artifacts", "## Validation", "## INT8 calibration", "## Benchmark"):
        assert heading in md
    assert "![latency and throughput](bench.png)" in md
    assert "weights are random" in md
    # no --images: the evaluate stage is skipped and the report says accuracy was not measured
    assert statuses(report)["evaluate"] == "skipped"
    assert "evaluate" not in report
    assert "## Accuracy and latency\n\nAccuracy not measured: no --images folder" in md
    assert "MiB" in md or "KiB" in md  # sizes in the one unit family
    data = json.loads((out / "report.json").read_text())
    assert data["stages"] == report["stages"]
    assert data["wall_s"] > 0


def test_second_run_is_up_to_date(first_run: tuple[Path, dict, Recorder], capsys) -> None:
    out, _, _ = first_run
    before = (out / "bundle" / "model.onnx").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11_bn", "--out", str(out), *TINY_ARGS, "--batch", "1",
              "--bench-iterations", "2", "--validate-samples", "8"])  # fmt: skip
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    status = statuses(report)
    for name in DONE_EVERYWHERE:
        assert status[name] == "up to date", (name, status)
    assert "[1/8] export: up to date" in printed
    assert "report: " in printed and "report.md" in printed
    assert (out / "bundle" / "model.onnx").stat().st_mtime_ns == before


def test_json_to_stdout_is_the_report(first_run: tuple[Path, dict, Recorder], capsys) -> None:
    out, _, _ = first_run
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11_bn", "--out", str(out), *TINY_ARGS, "--batch", "1",
              "--bench-iterations", "2", "--validate-samples", "8", "--json", "-"])  # fmt: skip
    assert exc.value.code == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # only JSON on stdout; the stage lines went to stderr
    assert data == json.loads((out / "report.json").read_text())
    assert "[1/8] export: up to date" in captured.err


def test_changed_or_damaged_inputs_redo_only_their_stages(
    first_run: tuple[Path, dict, Recorder], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    # a removed artifact: its stage runs again, the export does not
    (out / "bundle" / "model.fp16.onnx").unlink()
    recorder = Recorder()
    status = statuses(run(out, PipelineOptions(**FAST), recorder))
    notes = [e[1] for e in recorder.events if e[0] == "note"]
    assert "convert-fp16: runs again - what it made last time changed or is missing" in notes
    assert status["export"] == "up to date"
    assert status["convert-fp16"] == "done"
    assert status["calibrate-int8"] == "up to date"
    assert (out / "bundle" / "model.fp16.onnx").is_file()
    # a changed option: only the stages that depend on it
    options = PipelineOptions(**{**FAST, "calib_samples": 4})
    recorder = Recorder()
    status = statuses(run(out, options, recorder))
    notes = [e[1] for e in recorder.events if e[0] == "note"]
    # the note names the option that changed as a setting, not as changed files
    assert "calibrate-int8: runs again - changed since the last run: samples (setting)" in notes
    assert any(
        n.startswith("validate: runs again - changed since the last run: artifacts (file")
        for n in notes
    ), notes
    assert status["export"] == "up to date" and status["calibrate-int8"] == "done"
    assert status["validate"] == "done"  # the int8 files changed


def test_force_redoes_everything(first_run: tuple[Path, dict, Recorder], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    options = PipelineOptions(**{**FAST, "precisions": ("fp32",), "force": True})
    report = run(out, options)
    status = statuses(report)
    assert status["export"] == "done" and status["validate-export"] == "done"
    assert status["bench"] == "done"
    assert status["convert-fp16"] == "skipped" and status["calibrate-int8"] == "skipped"
    assert set(report["artifacts"]) == {"onnx.fp32"}  # a fresh export replaced the bundle


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="holds no earlier pipeline run"):
        run(tmp_path, PipelineOptions(**FAST))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_int8_checks_are_informational_with_random_weights(
    first_run: tuple[Path, dict, Recorder], tmp_path: Path, monkeypatch
) -> None:
    from vggdeploy import metrics

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    monkeypatch.setitem(metrics.TOLERANCES, "int8", {"cosine": 1.1})  # nothing can pass
    options = PipelineOptions(**{**FAST, "validate_samples": 6})  # re-runs the validations only
    report = run(out, options)
    status = statuses(report)
    assert status["validate"] == "done" and status["bench"] == "up to date"
    assert not report["validate"]["passed"]  # the verdict itself is reported as it is
    assert any(w.startswith("INT8 checks are informational") for w in report["warnings"])
    md = (out / "report.md").read_text()
    assert "FAIL (informational: random weights)" in md


def test_failed_check_writes_the_report_then_exits_2(
    first_run: tuple[Path, dict, Recorder], tmp_path: Path, monkeypatch, capsys
) -> None:
    from vggdeploy import metrics

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    monkeypatch.setitem(metrics.TOLERANCES, "fp32", {"cosine": 1.1})
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
    first_run: tuple[Path, dict, Recorder], tmp_path: Path, trt10, gpu
) -> None:
    """With TensorRT and a GPU (here only the project's TensorRT double), the build stage runs."""
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    report = run(out, PipelineOptions(**FAST))
    status = statuses(report)
    assert status["build"] == "done", report["stages"]
    assert status["export"] == "up to date"
    assert {"engine.fp32", "engine.fp16", "engine.int8"} <= set(report["artifacts"])
    labels = [t["label"] for t in report["validate"]["targets"] if t["status"] == "compared"]
    assert sum("tensorrt" in label.lower() for label in labels) == 3, labels
    assert any(c["runtime"].startswith("tensorrt") for c in report["bench"]["cases"])
    md = (out / "report.md").read_text()
    assert gpu["name"] in md and "## TensorRT engines" in md
    # and a second run finds the engines up to date
    again = statuses(run(out, PipelineOptions(**FAST)))
    assert again["build"] == "up to date"
