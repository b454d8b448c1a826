"""The pipeline's stages. Each declares its inputs (digested into `pipeline.json`) and a body
that does the work through the stage modules and returns what it made; none prints.

A body returns a `StageOutput`; it raises `Skip` when the stage cannot run on this host (not a
failure), `CheckFailedError` when a check failed, other `VggDeployError`s for bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy import __version__
from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_write_json, sha256_file
from vggdeploy.errors import CheckFailedError, InputError, RuntimeUnavailableError
from vggdeploy.pipeline.options import (
    RANDOM_INT8_WARNING,
    Images,
    PipelineOptions,
    calibration_split,
)
from vggdeploy.pipeline.reporter import PipelineReporter
from vggdeploy.pipeline.state import host_key


def build_elsewhere(precisions: Iterable[str]) -> str:
    """Why and where engines are built, naming only the precisions this run made ONNX for."""
    build = P.build_command(P.onnx_key(p) for p in precisions)
    return "engines are built on the target GPU: `vggdeploy pack` the bundle, then " + (
        f"`{build}` there" if build else "`vggdeploy build BUNDLE` there"
    )


#: which INT8 file ONNX Runtime times (part of bench's inputs: a change re-runs the stage)
ORT_INT8_NOTE = "model.int8.onnx, NVIDIA placement, integer form on load"
FP16_SAMPLES = 16
BATCH = 8


class Skip(Exception):
    """A stage that cannot run on this host (not a failure)."""


@dataclass
class StageOutput:
    """What a stage made: artifact key -> sha256, file under OUT -> sha256, facts, one line."""

    outputs: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass
class Context:
    """What every stage sees."""

    model: str
    spec: Any  # models.ModelSpec
    out: Path
    options: PipelineOptions
    images: Images
    reporter: PipelineReporter
    argv: list[str] | None = None
    #: the reference's outputs, shared by the two validation stages of one run
    reference_cache: dict[Any, Any] = field(default_factory=dict)
    #: ONNX Runtime CPU outputs on random inputs, likewise (`validate_bundle`'s outputs_cache)
    outputs_cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def bundle_root(self) -> Path:
        from vggdeploy.pipeline.state import BUNDLE_DIR

        return self.out / BUNDLE_DIR

    @property
    def random_weights(self) -> bool:
        return self.options.weights == "random"

    def bundle(self) -> Bundle:
        return Bundle.load(self.bundle_root)

    def artifact_sha(self, key: str) -> str | None:
        if not (self.bundle_root / "manifest.json").is_file():
            return None
        record = self.bundle().artifacts.get(key)
        return record.sha256 if record else None

    def artifact_shas(self) -> dict[str, str]:
        return {k: r.sha256 for k, r in sorted(self.bundle().artifacts.items())}

    def write_json(self, name: str, data: Any) -> dict[str, str]:
        atomic_write_json(self.out / name, data)
        return {name: sha256_file(self.out / name)}

    def validation_inputs(self) -> dict[str, Any]:
        """What a validation's inputs depend on (the rule of `vggdeploy validate`)."""
        return {
            "images": self.images.sha256 if self.options.images else "validate's default rule",
            "photographs": self.images.sha256 if self.images.kind == "default" else None,
            "samples": self.options.validate_samples,
        }


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: Callable[[Context], dict[str, Any]]
    run: Callable[[Context], StageOutput]
    #: why this run does not ask for the stage (`--precision`), or None
    not_asked: Callable[[Context], str | None] = lambda ctx: None


# -- export -------------------------------------------------------------------------------------


def _weights_source(ctx: Context) -> Any:
    from vggdeploy.weights import WeightsSource

    return WeightsSource.parse(ctx.options.weights, ctx.options.seed)


def export_inputs(ctx: Context) -> dict[str, Any]:
    source = _weights_source(ctx)
    weights_id: dict[str, Any] = {"kind": source.kind, "seed": source.seed}
    if source.kind == "file":
        path = Path(source.path or "")
        if not path.is_file():
            raise InputError(f"--weights {path}: no such file")
        weights_id["sha256"] = sha256_file(path)
    labels = ctx.options.labels
    if labels is not None and not Path(labels).is_file():
        raise InputError(
            f"--labels {labels}: no such file; give a text file with one class name a line"
        )
    return {
        "spec": ctx.spec.to_dict(),
        "weights": weights_id,
        "image_size": ctx.options.image_size,
        "batch": "dynamic",
        "opset": ctx.options.opset,
        "labels": sha256_file(Path(labels)) if labels else None,
        "preprocessing": _preprocessing(ctx).to_dict(),
        "vggdeploy": __version__,
    }


def _preprocessing(ctx: Context) -> Any:
    """The bundle's preprocessing: as asked, else torchvision's for the image size (what
    `vggdeploy export` records without --resize/--mean/--std/--channel-order)."""
    from vggdeploy.preprocess import Preprocessing

    pre = ctx.options.preprocessing
    if pre is None:
        return Preprocessing.for_size(ctx.options.image_size)
    return Preprocessing.from_dict(pre)


def export_run(ctx: Context) -> StageOutput:
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle

    ctx.reporter.progress("loading weights, exporting to ONNX, checking parity with PyTorch")
    bundle = export_bundle(
        ctx.spec,
        _weights_source(ctx),
        ctx.bundle_root,
        ExportOptions(
            image_size=ctx.options.image_size,
            opset=ctx.options.opset,
            labels=ctx.options.labels,
            preprocessing=_preprocessing(ctx),
            force=True,
        ),
    )
    parity = bundle.manifest.parity
    result = {
        "seconds": bundle.manifest.export.get("seconds"),
        "parity": {k: parity.get(k) for k in ("worst_max_rel", "worst_cosine", "passed")},
    }
    detail = (
        f"{P.onnx_file('fp32')}, parity vs PyTorch max rel {parity['worst_max_rel']:.1e}, "
        f"cosine {parity['worst_cosine']:.6f}"
    )
    key = P.onnx_key("fp32")
    return StageOutput({key: bundle.artifacts[key].sha256}, {}, result, detail)


# -- validation (the rule and verdict of `vggdeploy validate`) ---------------------------------------


def _validate(ctx: Context, specs: list[Any] | None) -> Any:
    from vggdeploy.validate import validate_bundle

    return validate_bundle(
        ctx.bundle(),
        specs,
        images=ctx.options.images,
        samples=ctx.options.validate_samples,
        progress=ctx.reporter.progress,
        reference_cache=ctx.reference_cache,
        outputs_cache=ctx.outputs_cache,
    )


def _failure_lines(report: Any, limit: int = 4) -> str:
    return "; ".join(
        f"{c.target}: {c.metric} {c.value:.4g} (limit {c.op} {c.limit:g})"
        for c in report.failures[:limit]
    )


def validate_export_inputs(ctx: Context) -> dict[str, Any]:
    return {P.onnx_key("fp32"): ctx.artifact_sha(P.onnx_key("fp32")), **ctx.validation_inputs()}


def validate_export_run(ctx: Context) -> StageOutput:
    """`vggdeploy validate BUNDLE --runtime onnxruntime:cpu@fp32`."""
    from vggdeploy.runtimes.registry import parse_spec

    report = _validate(ctx, [parse_spec("onnxruntime:cpu", "fp32")])
    files = ctx.write_json("validate-export.json", report.to_dict())
    if not report.passed:
        raise CheckFailedError(
            f"ONNX Runtime fp32 vs PyTorch: {report.summary()}"
            + (f": {_failure_lines(report)}" if report.failures else "")
        )
    return StageOutput({}, files, {"summary": report.summary(), "passed": True}, report.summary())


def validate_inputs(ctx: Context) -> dict[str, Any]:
    return {"artifacts": ctx.artifact_shas(), **ctx.validation_inputs()}


def validate_run(ctx: Context) -> StageOutput:
    """`vggdeploy validate BUNDLE`: every artifact this host can run, against PyTorch fp32."""
    report = _validate(ctx, None)
    files = ctx.write_json("validate.json", report.to_dict())
    result: dict[str, Any] = {"summary": report.summary(), "passed": report.passed}
    if report.passed:
        return StageOutput({}, files, result, report.summary())
    failing = [r for r in report.compared if not r.passed]
    if (
        ctx.random_weights
        and report.checks
        and failing
        and all(P.get(r.precision).numeric == "int8" for r in failing)
    ):
        # Random weights give near-tied logits and no trained structure, so INT8 noise flips
        # top-1 and lowers cosine in ways that say nothing about a trained model. Report the
        # figures and the verdict, loudly, but do not fail the run on them.
        result["int8_informational"] = True
        result["warnings"] = [f"{RANDOM_INT8_WARNING} ({report.summary()})"]
        return StageOutput({}, files, result, f"{report.summary()} - INT8 checks informational")
    raise CheckFailedError(
        report.summary() + (f": {_failure_lines(report)}" if report.failures else "")
    )


# -- accuracy (the stage of `vggdeploy evaluate`) ---------------------------------------------------

NO_LABELLED_IMAGES = (
    "accuracy not measured: no --images folder with one sub-folder per class (ImageFolder "
    "layout, folder names = class names) was given"
)
EVALUATE_BATCH = 32


def evaluate_not_asked(ctx: Context) -> str | None:
    return None if ctx.options.images else NO_LABELLED_IMAGES


def evaluate_inputs(ctx: Context) -> dict[str, Any]:
    labels = ctx.bundle_root / "labels.txt"
    return {
        "artifacts": ctx.artifact_shas(),
        "labels": sha256_file(labels) if labels.is_file() else None,
        "images": ctx.images.sha256,
        "batch": EVALUATE_BATCH,
    }


def evaluate_run(ctx: Context) -> StageOutput:
    """`vggdeploy evaluate BUNDLE --images DIR`: top-1/top-5 of every artifact this host can run
    on the labelled `--images` folder. A folder that is not labelled (no class sub-folders, or
    sub-folders that are not the bundle's class names) skips the stage, saying why."""
    from vggdeploy.evaluate import evaluate_bundle
    from vggdeploy.inputs import map_class_folders

    bundle = ctx.bundle()
    images = ctx.options.images or ""
    try:
        map_class_folders(images, bundle.labels(), bundle.model.num_classes)
    except InputError as exc:
        raise Skip(f"accuracy not measured: {exc}") from None

    def progress(done: int, total: int) -> None:
        ctx.reporter.progress(f"evaluating {done}/{total} images")

    report = evaluate_bundle(bundle, images, batch=EVALUATE_BATCH, progress=progress)
    files = ctx.write_json("evaluate.json", report)
    accuracy = {
        r["label"]: {k: r[k] for k in ("runtime", "precision", "top1", "top5", "delta_top1")}
        for r in report["results"]
    }
    detail = f"{report['count']} labelled images: " + ", ".join(
        f"{r['label']} top-1 {100 * r['top1']:.1f}%" for r in report["results"]
    )
    return StageOutput({}, files, {"accuracy": accuracy, "count": report["count"]}, detail)


# -- FP16 and INT8 --------------------------------------------------------------------------------


def _fp16_samples(ctx: Context) -> int:
    return min(ctx.images.count, FP16_SAMPLES)


def fp16_inputs(ctx: Context) -> dict[str, Any]:
    return {
        P.onnx_key("fp32"): ctx.artifact_sha(P.onnx_key("fp32")),
        "images": ctx.images.sha256,
        "samples": _fp16_samples(ctx),
    }


def fp16_run(ctx: Context) -> StageOutput:
    from vggdeploy.exporter.fp16 import convert_fp16

    def progress(done: int, total: int) -> None:
        ctx.reporter.progress(f"measuring activations {done}/{total} images")

    ctx.reporter.progress("measuring activations")
    report = convert_fp16(
        ctx.bundle(),
        images=ctx.images.dir,
        samples=_fp16_samples(ctx),
        batch_size=BATCH,
        progress=progress,
    )
    result = {k: report[k] for k in ("kept_fp32", "max_abs_activation", "parity", "measured_on")}
    detail = (
        f"{P.onnx_file('fp16')}, {len(report['kept_fp32'])} node(s) kept in fp32, "
        f"max |activation| {report['max_abs_activation']:.3g}"
    )
    key = P.onnx_key("fp16")
    return StageOutput({key: ctx.artifact_sha(key) or ""}, {}, result, detail)


def int8_inputs(ctx: Context) -> dict[str, Any]:
    return {
        P.onnx_key("fp32"): ctx.artifact_sha(P.onnx_key("fp32")),
        "images": ctx.images.sha256,
        "samples": calibration_split(ctx.images.count, ctx.options.calib_samples),
        "method": ctx.options.calib_method,
        "seed": ctx.options.seed,
    }


CALIBRATION_FACTS = (
    "target",
    "method",
    "samples",
    "tensors",
    "quantized_ops",
    "cache_reused",
    "data_pass_seconds",
    "seconds",
    "holdout",
    "warnings",
)


class _CalibrationProgress:
    """The calibration data pass (called with each batch's image count) as progress text."""

    def __init__(self, reporter: PipelineReporter, target: str, total: int) -> None:
        self.reporter, self.target, self.total, self.done = reporter, target, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.reporter.progress(f"calibrating for {self.target}: {self.done}/{self.total} images")


def int8_run(ctx: Context) -> StageOutput:
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle

    samples = calibration_split(ctx.images.count, ctx.options.calib_samples)
    targets: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    warnings: list[str] = []
    # One INT8 file: model.int8.onnx in NVIDIA's Q/DQ placement, which vggdeploy's ONNX Runtime
    # CPU runtime rewrites on load into integer kernels (onnxutil.cpu_int8_form).
    for target in ("tensorrt",):
        progress = _CalibrationProgress(ctx.reporter, target, samples)
        ctx.reporter.progress(f"calibrating for {target} on {samples} images")
        summary = calibrate_bundle(
            ctx.bundle(),
            ctx.images.dir,
            CalibrationOptions(
                method=ctx.options.calib_method,
                target=target,
                samples=samples,
                seed=ctx.options.seed,
                batch_size=BATCH,
                progress=progress,
            ),
        )
        key = summary["artifact"]
        outputs[key] = summary["sha256"]
        targets[key] = {k: summary.get(k) for k in CALIBRATION_FACTS}
        warnings += [f"INT8 calibration ({key}): {w}" for w in summary.get("warnings") or []]
    detail = (
        f"{P.onnx_file('int8')} (TensorRT and ONNX Runtime), "
        f"{ctx.options.calib_method} on {samples} of {ctx.images.count} images"
    )
    result = {"targets": targets, "images": ctx.images.to_dict(), "warnings": warnings}
    return StageOutput(outputs, {}, result, detail)


def _precision_not_asked(precision: str) -> Callable[[Context], str | None]:
    def check(ctx: Context) -> str | None:
        return None if precision in ctx.options.precisions else f"{precision} not in --precision"

    return check


# -- TensorRT engines -----------------------------------------------------------------------------


def _engine_sources(ctx: Context) -> dict[str, str | None]:
    return {
        p: sha
        for p in ctx.options.precisions
        if (sha := ctx.artifact_sha(P.onnx_key(p))) is not None
    }


def build_inputs(ctx: Context) -> dict[str, Any]:
    return {**_engine_sources(ctx), "host": host_key(gpu=True)}


def build_run(ctx: Context) -> StageOutput:
    from vggdeploy.runtimes.registry import parse_spec, unavailable

    reason = unavailable(parse_spec("tensorrt"))
    if reason:
        raise Skip(f"{reason}; {build_elsewhere(_engine_sources(ctx))}")
    from vggdeploy.exporter.engine import BuildOptions, build_engine

    wanted = list(_engine_sources(ctx))
    for precision in wanted:
        ctx.reporter.progress(f"building {P.engine_file(precision)}")
        try:
            build_engine(ctx.bundle(), BuildOptions(precision=precision))
        except (RuntimeUnavailableError, ImportError) as exc:
            if precision != wanted[0]:
                raise
            raise Skip(f"{exc}; {build_elsewhere(wanted)}") from None
    engines = ctx.bundle().manifest.engines()
    outputs, result = {}, {}
    for precision in wanted:
        record = engines[P.engine_key(precision)]
        outputs[P.engine_key(precision)] = record.sha256
        result[precision] = {
            "tensorrt_version": record.tensorrt_version,
            "gpu": record.gpu.to_json_dict(),
            "build_seconds": (record.model_extra or {}).get("build_seconds"),
            "profiles": record.profiles,
        }
    return StageOutput(outputs, {}, result, ", ".join(P.engine_file(p) for p in wanted))


# -- benchmark ------------------------------------------------------------------------------------


def _bench_options() -> Any:
    from vggdeploy.bench import BenchOptions

    return BenchOptions


def bench_inputs(ctx: Context) -> dict[str, Any]:
    options = _bench_options()(
        iterations=ctx.options.bench_iterations,
        seconds=None,
        warmup_iterations=2,
        warmup_seconds=None,
    )
    return {
        "artifacts": ctx.artifact_shas(),
        "options": options.to_dict(),
        "batches": list(ctx.options.batches),
        "runtimes": list(ctx.options.bench_runtimes),
        "ort_int8": ORT_INT8_NOTE,
        "host": host_key(gpu="tensorrt" in " ".join(ctx.options.bench_runtimes)),
    }


def _bench_reporter(ctx: Context) -> Any:
    from vggdeploy.bench import Reporter

    class Forward(Reporter):
        """The benchmark's progress as the bench stage's progress line."""

        total = 0
        done = 0

        def start(self, total_cases: int) -> None:
            self.total = total_cases

        def case(self, label: str, phase: str) -> None:
            ctx.reporter.progress(f"{label}: {phase} ({self.done}/{self.total} cases done)")

        def advance(self) -> None:
            self.done += 1

    return Forward()


def bench_run(ctx: Context) -> StageOutput:
    from vggdeploy.bench import failed_lines, run_benchmark
    from vggdeploy.bench.plan import plan_cases
    from vggdeploy.runtimes import registry

    bundle = ctx.bundle()
    options = _bench_options()(
        iterations=ctx.options.bench_iterations,
        seconds=None,
        warmup_iterations=2,
        warmup_seconds=None,
    )
    plans: list[Any] = []
    skipped: list[Any] = []
    for spec in registry.parse_specs(ctx.options.bench_runtimes):
        more_plans, more_skipped = plan_cases(bundle, [spec], None, ctx.options.batches)
        plans += more_plans
        skipped += more_skipped
    result = run_benchmark(
        bundle, plans, options, skipped=skipped, reporter=_bench_reporter(ctx), argv=ctx.argv
    )
    files = ctx.write_json("bench.json", result)
    failed = list(failed_lines(result))
    if failed:  # a backend failure is the stage's failure, not a case that was skipped
        from vggdeploy.runtimes.base import RuntimeFailedError

        more = f" (and {len(failed) - 1} more, in bench.json)" if len(failed) > 1 else ""
        raise RuntimeFailedError(f"bench case {failed[0]}{more}")
    smallest = min(ctx.options.batches)
    fastest = min(
        (c for c in result["cases"] if c["batch"] == smallest),
        key=lambda c: c["latency_ms"]["median"],
        default=None,
    )
    detail = f"{len(result['cases'])} case(s)"
    if fastest:
        detail += (
            f"; fastest at batch {fastest['batch']}: {fastest['runtime']} "
            f"{fastest['precision']} {fastest['latency_ms']['median']:.1f} ms"
        )
    return StageOutput({}, files, {"cases": len(result["cases"])}, detail)


#: In the order they run; `state.STAGES` lists the same names.
PIPELINE: tuple[Stage, ...] = (
    Stage("export", export_inputs, export_run),
    Stage("validate-export", validate_export_inputs, validate_export_run),
    Stage("convert-fp16", fp16_inputs, fp16_run, _precision_not_asked("fp16")),
    Stage("calibrate-int8", int8_inputs, int8_run, _precision_not_asked("int8")),
    Stage("build", build_inputs, build_run),
    Stage("validate", validate_inputs, validate_run),
    Stage("evaluate", evaluate_inputs, evaluate_run, evaluate_not_asked),
    Stage("bench", bench_inputs, bench_run),
)
