"""Running the stages in order, skipping those up to date, and writing `report.json`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vggdeploy import __version__
from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_write_json
from vggdeploy.errors import CheckFailedError, VggDeployError
from vggdeploy.pipeline.options import RANDOM_WEIGHTS_WARNING, PipelineOptions, resolve_images
from vggdeploy.pipeline.reporter import NullReporter, PipelineReporter
from vggdeploy.pipeline.stages import PIPELINE, Context, Skip, Stage, StageOutput
from vggdeploy.pipeline.state import (
    BUNDLE_DIR,
    StageRun,
    State,
    digest,
    pipeline_lock,
    prepare_out,
)

REPORT_SCHEMA = "vggdeploy.pipeline-report/1"
REPORT_JSON = "report.json"
#: the stages' own result files, embedded in report.json under their stem
RESULT_FILES = ("validate-export.json", "validate.json", "evaluate.json", "bench.json")


class Pipeline:
    """Runs `PIPELINE` for one model into one folder; see `vggdeploy.pipeline`."""

    def __init__(
        self,
        model: str,
        out: str | os.PathLike[str],
        options: PipelineOptions,
        reporter: PipelineReporter | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        from vggdeploy.models import check_image_size, resolve_spec
        from vggdeploy.weights import WeightsSource, spec_for_weights

        sizes = {
            "num_classes": options.num_classes,
            "width_divisor": options.width_divisor,
            "hidden": options.hidden,
        }
        # A checkpoint's shapes give the sizes not set (as `vggdeploy export`).
        self.spec = spec_for_weights(
            resolve_spec(model, **sizes),
            WeightsSource.parse(options.weights, options.seed),
            **sizes,
        )
        check_image_size(options.image_size)
        self.model = model
        self.out = Path(out)
        self.options = options
        self.reporter: PipelineReporter = reporter or NullReporter()
        self.argv = list(argv) if argv is not None else None
        self.bundle_root = self.out / BUNDLE_DIR
        self.runs: list[StageRun] = []
        self.warnings: list[str] = []
        self.failures: list[str] = []
        self.ctx: Context | None = None

    def run(self) -> dict[str, Any]:
        prepare_out(self.out)
        with pipeline_lock(self.out):  # a second pipeline on this OUT is refused with one line
            return self._run()

    def _run(self) -> dict[str, Any]:
        from vggdeploy.weights import reusing_random_weights

        wall = time.perf_counter()
        started = datetime.now(timezone.utc)
        self.state = State.load(self.out, force=self.options.force)
        self.state.save()  # marks OUT as a pipeline folder at once, so an interrupted run resumes
        if self.options.force:
            self.reporter.note("--force: every stage runs again")
        try:
            images = resolve_images(self.options.images, self.out)
            if images.note:
                self.reporter.note(images.note)
            if images.warning:
                self.warnings.append(images.warning)
            if self.options.weights == "random":
                self.warnings.append(RANDOM_WEIGHTS_WARNING)
            self.ctx = Context(
                self.model, self.spec, self.out, self.options, images, self.reporter, self.argv
            )
            with contextlib.ExitStack() as weights:
                # Export and the PyTorch reference of both validations load the same weights:
                # seeded random ones are made once (checkpoints are read each time) and let go
                # before bench, whose memory figures are the runtimes' own.
                weights.enter_context(reusing_random_weights())
                for stage in PIPELINE:
                    if stage.name == "bench":
                        weights.close()
                    self._run_stage(stage, self.ctx)
        finally:
            data = self.report_data(started, time.perf_counter() - wall)
            atomic_write_json(self.out / REPORT_JSON, data)
        if self.failures:
            raise CheckFailedError(
                f"{len(self.failures)} stage(s) failed ({'; '.join(self.failures)})"[:600]
                + f" - details in {self.out / 'report.md'}"
            )
        return data

    # -- one stage ----------------------------------------------------------------------------

    def _finish(self, run: StageRun) -> StageRun:
        self.runs.append(run)
        self.warnings += [w for w in run.result.get("warnings", []) if w not in self.warnings]
        self.reporter.stage_finished(run.name, run.status, run.seconds, run.summary)
        return run

    def _record(self, name: str, status: str, reason: str) -> None:
        self.state.stages[name] = {"status": status, "reason": reason}
        self.state.save()

    def _run_stage(self, stage: Stage, ctx: Context) -> StageRun:
        """Run `stage` unless its recorded inputs and outputs are unchanged."""
        name = stage.name
        reason = stage.not_asked(ctx)
        if reason:
            return self._finish(StageRun(name, "skipped", reason=reason))
        inputs = stage.inputs(ctx)
        inputs_sha256 = digest(inputs)
        previous = (
            None
            if self.options.force
            else self.state.up_to_date(name, inputs_sha256, self.bundle_root)
        )
        why = None if self.options.force else self.state.why_again(name, inputs, self.bundle_root)
        if previous is None and why:
            self.reporter.note(f"{name}: runs again - {why}")
        if previous is not None:
            run = StageRun(
                name,
                "up to date",
                seconds=float(previous.get("seconds", 0.0)),
                detail=previous.get("detail", ""),
                result=previous.get("result", {}),
            )
            return self._finish(run)
        self.reporter.stage_started(name)
        started = time.perf_counter()
        try:
            output: StageOutput = stage.run(ctx)
        except Skip as skip:
            self._record(name, "skipped", str(skip))
            return self._finish(StageRun(name, "skipped", reason=str(skip)))
        except CheckFailedError as exc:
            self._record(name, "failed", str(exc))
            self.failures.append(f"{name}: {exc}")
            seconds = time.perf_counter() - started
            return self._finish(StageRun(name, "failed", seconds=seconds, reason=str(exc)))
        except VggDeployError as exc:
            # Bad input or an unusable host: stop here, but leave the report of what ran.
            self._record(name, "failed", str(exc))
            seconds = time.perf_counter() - started
            self._finish(StageRun(name, "failed", seconds=seconds, reason=str(exc)))
            raise
        seconds = time.perf_counter() - started
        self.state.stages[name] = {
            "status": "done",
            "inputs": inputs,
            "inputs_sha256": inputs_sha256,
            "outputs": output.outputs,
            "files": output.files,
            "result": output.result,
            "detail": output.detail,
            "seconds": round(seconds, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.state.save()
        return self._finish(
            StageRun(name, "done", seconds=seconds, detail=output.detail, result=output.result)
        )

    # -- report.json --------------------------------------------------------------------------

    def report_data(self, started: datetime, wall_s: float) -> dict[str, Any]:
        """Everything the run made and found: report.json, and what report.md is drawn from."""
        data: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "vggdeploy": __version__,
            "command": self.argv,
            "model": self.model,
            "out": str(self.out),
            "bundle": str(self.bundle_root),
            "started": started.isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 1),
            "host": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "system": platform.system(),
                "cpus": os.cpu_count(),
            },
            "options": {
                **self.options.to_dict(),
                "images": self.ctx.images.to_dict() if self.ctx else None,
            },
            "stages": [r.to_dict() for r in self.runs],
            "warnings": self.warnings,
            "failures": self.failures,
        }
        if (self.bundle_root / "manifest.json").is_file():
            data.update(bundle_facts(Bundle.load(self.bundle_root)))
        skipped = {r.name for r in self.runs if r.status == "skipped"}
        for name in RESULT_FILES:
            path = self.out / name
            # A stage skipped in this run leaves an earlier run's file behind: not this run's.
            if path.is_file() and name.removesuffix(".json") not in skipped:
                data[name.removesuffix(".json").replace("-", "_")] = json.loads(
                    path.read_text("utf-8")
                )
        return data


def bundle_facts(bundle: Bundle) -> dict[str, Any]:
    """The model, weights, artifacts and export parity of the bundle, for the report."""
    m = bundle.manifest
    return {
        "model_facts": {
            "name": m.model.name,
            "config": m.model.config,
            "batch_norm": m.model.batch_norm,
            "image_size": m.model.image_size,
            "parameters": m.model.parameters,
            "flops_per_image": m.model.flops_per_image,
        },
        "weights": {k: v for k, v in m.weights.to_json_dict().items() if k != "path"},
        "artifacts": {
            key: {
                "path": r.path,
                "precision": r.precision,
                "size": r.size,
                "sha256": r.sha256,
                "kind": r.kind,
            }
            for key, r in sorted(m.artifacts.items(), key=lambda kv: P.artifact_order(kv[0]))
        },
        "parity": m.parity or None,
    }


def run_pipeline(
    model: str,
    out: str | os.PathLike[str],
    options: PipelineOptions | None = None,
    *,
    reporter: PipelineReporter | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every stage for `model` into `out`; returns the report data (also in report.json).

    Raises `CheckFailedError` after writing report.json if a check failed, other
    `VggDeployError`s for bad input (report.json is still written for the stages that ran).
    report.md is drawn from report.json by `vggdeploy.report.pipeline.write_report`.
    """
    return Pipeline(model, out, options or PipelineOptions(), reporter=reporter, argv=argv).run()
