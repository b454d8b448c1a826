"""Drawing a pipeline run: stage lines, the live reporter, and report.md from report data."""

from __future__ import annotations

from pathlib import Path

from vggdeploy.pipeline import STAGES
from vggdeploy.report.pipeline import (
    RichPipelineReporter,
    render_report_md,
    render_summary,
    stage_line,
    write_report,
)


def test_stage_lines() -> None:
    assert (
        stage_line("export", "done", 1.25, "model.onnx")
        == "[1/8] export: done in 1.2 s - model.onnx"
    )
    assert (
        stage_line("bench", "up to date", 3.0, "2 case(s)") == "[8/8] bench: up to date (2 case(s))"
    )
    assert stage_line("build", "skipped", 0, "no GPU") == "[5/8] build: skipped - no GPU"
    assert (
        stage_line("validate", "failed", 2, "FAILED: 1 of 4")
        == "[6/8] validate: FAILED - FAILED: 1 of 4"
    )


def test_reporter_without_a_terminal_prints_only_lines() -> None:
    lines: list[str] = []
    reporter = RichPipelineReporter(lines.append, live=False)
    reporter.note("using the photographs")
    reporter.stage_started("export")
    reporter.progress("exporting")
    reporter.stage_finished("export", "done", 2.0, "model.onnx")
    reporter.close()
    assert lines == ["using the photographs", "[1/8] export: done in 2.0 s - model.onnx"]


def test_reporter_with_a_live_spinner_still_prints_the_lines() -> None:
    lines: list[str] = []
    reporter = RichPipelineReporter(lines.append, live=True)
    reporter.stage_started("convert-fp16")
    reporter.progress("measuring activations 8/16 images")
    reporter.stage_finished("convert-fp16", "done", 1.0, "model.fp16.onnx")
    reporter.close()
    assert lines == ["[3/8] convert-fp16: done in 1.0 s - model.fp16.onnx"]


def _data() -> dict:
    stages = [
        {
            "name": n,
            "status": "skipped",
            "seconds": 0.0,
            "detail": "",
            "reason": "not asked",
            "result": {},
        }
        for n in STAGES
    ]
    stages[0] = {
        "name": "export",
        "status": "done",
        "seconds": 3.0,
        "detail": "model.onnx",
        "reason": None,
        "result": {},
    }
    return {
        "model": "vgg11",
        "command": ["pipeline", "vgg11", "--out", "x"],
        "started": "2025-01-01T00:00:00+00:00",
        "wall_s": 3.4,
        "vggdeploy": "0.1",
        "host": {"system": "Linux", "machine": "x86_64", "cpus": 2},
        "options": {"images": None, "validate_samples": None},
        "stages": stages,
        "warnings": ["the weights are random"],
        "failures": [],
        "artifacts": {
            "onnx.fp32": {
                "path": "model.onnx",
                "precision": "fp32",
                "size": 3 << 20,
                "sha256": "ab" * 32,
                "kind": "onnx",
            }
        },
    }


def test_report_md_from_data(tmp_path: Path) -> None:
    md = render_report_md(_data(), tmp_path)
    assert md.startswith("# vggdeploy pipeline: vgg11")
    assert "`vggdeploy pipeline vgg11 --out x`" in md
    assert "| export | done | 3.0 | model.onnx |" in md
    assert "3.0 MiB" in md
    assert "> **warning**: the weights are random" in md
    assert "## Benchmark" not in md  # no bench data, no section


def test_summary_lists_every_stage(tmp_path: Path) -> None:
    text = render_summary(_data(), tmp_path)
    for name in STAGES:
        assert name in text
    assert "pipeline: done" in text and str(tmp_path / "report.md") in text


def test_write_report_without_report_json_writes_nothing(tmp_path: Path) -> None:
    assert write_report(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def _case(runtime: str, precision: str, batch: int) -> dict:
    return {"runtime": runtime, "precision": precision, "batch": batch}


def test_int8_note_says_what_onnx_runtime_timed() -> None:
    from vggdeploy.report.pipeline import ort_int8_notes

    cases = [_case("onnxruntime", "int8", 8), _case("onnxruntime", "int8", 1)]
    cases += [_case("onnxruntime", "fp32", 1), _case("tensorrt", "int8", 1)]
    (note,) = ort_int8_notes({"cases": cases})
    assert "`onnxruntime` timed `model.int8.onnx`" in note
    assert "cpu provider in the integer form" in note and note.endswith("at batch 1, 8.")
    (note,) = ort_int8_notes({"cases": [_case("onnxruntime:cuda", "int8", 1)]})
    assert "cuda provider as written" in note and "integer form" not in note
    # No ONNX Runtime INT8 case ran: nothing is said about how ONNX Runtime runs the file.
    assert ort_int8_notes({"cases": [_case("tensorrt", "int8", 1)]}) == []


def test_report_md_says_nothing_of_int8_timing_when_ort_did_not_time_it(tmp_path: Path) -> None:
    data = _data()
    data["artifacts"]["onnx.int8"] = {**data["artifacts"]["onnx.fp32"], "path": "model.int8.onnx"}
    data["bench"] = {"cases": [_case("tensorrt", "int8", 1)]}
    (tmp_path / "bench.md").write_text("bench table")
    md = render_report_md(data, tmp_path)
    assert "## Benchmark" in md and "ONNX Runtime" not in md


def test_next_steps_build_only_what_the_bundle_has(tmp_path: Path) -> None:
    data = _data()  # model.onnx only
    md = render_report_md(data, tmp_path)
    steps = md.split("## Next steps")[1]
    assert "`vggdeploy build BUNDLE --precision fp32` there" in steps and "fp16" not in steps
    data["artifacts"]["onnx.int8"] = {**data["artifacts"]["onnx.fp32"], "path": "model.int8.onnx"}
    assert "--precision fp32|int8` there" in render_report_md(data, tmp_path)


def test_images_section_names_only_the_stages_that_used_them(tmp_path: Path) -> None:
    data = _data()
    data["options"]["images"] = {"kind": "default", "count": 10}
    md = render_report_md(data, tmp_path)  # fp16 and int8 stages skipped
    assert "The images: 10," in md
    assert "calibration" not in md.split("## Images")[1].split("##")[0].lower()
    calib = next(s for s in data["stages"] if s["name"] == "calibrate-int8")
    target = {"target": "tensorrt", "method": "entropy", "samples": 7, "quantized_ops": 9}
    calib.update(status="done", result={"targets": {"onnx.int8": target}})
    md = render_report_md(data, tmp_path)
    assert "INT8 calibration used 10 images" in md
    assert "drew 7 of them and held the other 3 out" in md
    target["samples"] = 10
    assert "drew all 10 of them (none held out" in render_report_md(data, tmp_path)


def test_build_skip_reason_names_only_the_precisions_made() -> None:
    from vggdeploy.pipeline import build_elsewhere

    assert "`vggdeploy build BUNDLE --precision fp32` there" in build_elsewhere(["fp32"])
    assert "--precision fp32|fp16|int8`" in build_elsewhere(["int8", "fp16", "fp32"])


def test_pipeline_help_describes_the_one_int8_file() -> None:
    from click.testing import CliRunner

    from vggdeploy.cli import cli

    out = " ".join(CliRunner().invoke(cli, ["pipeline", "--help"]).output.split())
    assert "int8 makes the one INT8 file, model.int8.onnx" in out
    assert "both INT8 files" not in out
    # the default calibration split, as pipeline.options.calibration_split does it
    from vggdeploy.pipeline import calibration_split

    assert "every image when there are fewer than 4" in out
    assert [calibration_split(n, None) for n in (3, 4, 100)] == [3, 3, 64]


def test_the_parentheses_note_only_when_a_stage_was_up_to_date(tmp_path: Path) -> None:
    data = _data()  # export done, the rest skipped
    assert "Seconds in parentheses" not in render_report_md(data, tmp_path)
    data["stages"][0]["status"] = "up to date"
    md = render_report_md(data, tmp_path)
    assert "| export | up to date | (3.0) |" in md and "Seconds in parentheses" in md
