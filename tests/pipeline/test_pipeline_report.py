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
