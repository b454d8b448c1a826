"""The whole job in one call: export, validate, convert/calibrate, build, validate all,
evaluate (top-1/top-5 on a labelled `images` folder), bench.

`run_pipeline(model, out, PipelineOptions(...), reporter=...)` chains the stage modules through
one bundle (`OUT/bundle`) and writes, in `OUT`:

- `report.json`: what was made and how well it agrees and runs (stages, artifacts, validation,
  benchmark); `vggdeploy.report.pipeline.write_report(OUT)` draws `report.md` (and `bench.md`,
  `bench.png`) from it;
- `pipeline.json`: per stage, the sha256 of its inputs (model spec, weights, options, source
  ONNX, images) and of what it produced. A stage whose inputs and outputs are unchanged is
  skipped as "up to date", so a second run, or a run after an interruption, only redoes what
  changed; `force=True` redoes everything;
- `validate-export.json`, `validate.json`, `evaluate.json`, `bench.json`: the stages' own
  results (`evaluate.json` only when `images` has one sub-folder per class).

The validation stages judge the bundle exactly as `vggdeploy validate` does (the same
`validate_bundle` call, inputs rule and verdict). TensorRT engines are built only where TensorRT
and an NVIDIA GPU are present; elsewhere the build stage is reported as skipped with the reason,
and the ONNX artifacts are what a GPU machine builds from (`vggdeploy pack`, then
`vggdeploy build` there).

With no `images`, calibration and FP16 range measurement use the photographs shipped in
`vggdeploy/data/calibration_images` (public domain / CC0, see its README.md); if those are
missing, clearly labelled synthetic images are generated instead, with a warning.

Progress reaches the caller only through a `PipelineReporter` (stage started / progress /
finished, notes); nothing here prints.
"""

from __future__ import annotations

from vggdeploy.pipeline.options import (
    MADE_PRECISIONS,
    MIN_DEFAULT_IMAGES,
    Images,
    PipelineOptions,
    calibration_split,
    resolve_images,
)
from vggdeploy.pipeline.reporter import NullReporter, PipelineReporter
from vggdeploy.pipeline.run import REPORT_JSON, Pipeline, run_pipeline
from vggdeploy.pipeline.stages import build_elsewhere
from vggdeploy.pipeline.state import BUNDLE_DIR, STAGES, STATE_NAME, StageRun

__all__ = [
    "BUNDLE_DIR",
    "MADE_PRECISIONS",
    "MIN_DEFAULT_IMAGES",
    "REPORT_JSON",
    "STAGES",
    "STATE_NAME",
    "Images",
    "NullReporter",
    "Pipeline",
    "PipelineOptions",
    "PipelineReporter",
    "StageRun",
    "build_elsewhere",
    "calibration_split",
    "resolve_images",
    "run_pipeline",
]
