"""The whole job in one call: export, validate, convert/calibrate, build, validate all, bench, report.

`run_pipeline(model, out, PipelineOptions(...))` chains the stage modules through one bundle
(`OUT/bundle`) and writes, in `OUT`:

- `report.md`: what was made and how well it agrees and runs (tables, the bench plot);
- `report.json`: the same facts for machines (stages, artifacts, validation, benchmark);
- `pipeline.json`: per stage, the sha256 of its inputs (model spec, weights, options, source
  ONNX, images) and of what it produced. A stage whose inputs and outputs are unchanged is
  skipped as "up to date", so a second run, or a run after an interruption, only redoes what
  changed; `force=True` redoes everything;
- `validate-export.json`, `validate.json`, `bench.json`, `bench.png`: the stages' own results.

TensorRT engines are built only where TensorRT and an NVIDIA GPU are present; elsewhere the
build stage is reported as skipped with the reason, and the ONNX artifacts are what a GPU
machine builds from (`vggdeploy pack`, then `vggdeploy build` there).

With no `images`, calibration and validation use the photographs shipped in
`vggdeploy/data/calibration_images` (public domain / CC0, see its README.md); if those are
missing, clearly labelled synthetic images are generated instead, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vggdeploy import __version__
from vggdeploy.bundle import Bundle, atomic_write_json, atomic_write_text, sha256_file
from vggdeploy.errors import CheckFailedError, InputError, VggDeployError

log = logging.getLogger(__name__)

STATE_NAME = "pipeline.json"
STATE_SCHEMA = "vggdeploy.pipeline/1"
BUNDLE_DIR = "bundle"
PRECISIONS = ("fp32", "fp16", "int8")
STAGES = (
    "export",
    "validate-export",
    "convert-fp16",
    "calibrate-int8",
    "build",
    "validate",
    "bench",
)
# Fewer real photos than this in the package data: use generated images instead (and say so).
MIN_DEFAULT_IMAGES = 6
SYNTHETIC_DIR = "synthetic_images"
RANDOM_INT8_WARNING = (
    "INT8 checks are informational with random weights: an untrained network has near-tied "
    "logits, so quantization noise flips its top-1 and lowers cosine far more than in a trained "
    "model; judge INT8 with --weights imagenet or your checkpoint, and real --images"
)
SYNTHETIC_WARNING = (
    "calibrating on SYNTHETIC images (no real photographs were found): INT8 scales and INT8 "
    "accuracy figures from them mean little - pass --images DIR with a few hundred real images"
)
DEFAULT_IMAGES_NOTE = (
    "the {n} photographs shipped with vggdeploy (public domain / CC0, far from ImageNet's "
    "distribution): enough for a working INT8 model and a smoke test, not a substitute for "
    "a few hundred images from your own data (--images DIR)"
)


@dataclass
class PipelineOptions:
    """What `vggdeploy pipeline` was asked for."""

    weights: str = "random"
    seed: int = 0
    image_size: int = 224
    precisions: tuple[str, ...] = PRECISIONS
    images: str | None = None
    calib_samples: int | None = None  # None: 3/4 of the images, at most 64; the rest held out
    calib_method: str = "entropy"
    batches: tuple[int, ...] = (1, 8)
    bench_iterations: int = 10
    bench_runtimes: tuple[str, ...] = ("onnxruntime", "tensorrt")
    validate_samples: int = 16
    force: bool = False
    # Model overrides, for small test models (like `vggdeploy export`).
    num_classes: int | None = None
    width_divisor: int | None = None
    hidden: int | None = None

    def __post_init__(self) -> None:
        self.precisions = tuple(dict.fromkeys(self.precisions))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(
                f"--precision {','.join(bad)} is not supported: choose from {', '.join(PRECISIONS)}"
            )
        if "fp32" not in self.precisions:
            # fp32 is the export itself and the reference every other precision is built from.
            raise InputError(
                "--precision must include fp32 (the exported model every other precision is made "
                "from), e.g. --precision fp32,int8"
            )
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError("--batch must list positive batch sizes, e.g. 1,8")
        if self.bench_iterations < 1:
            raise InputError(f"--bench-iterations {self.bench_iterations} must be at least 1")
        if self.calib_samples is not None and self.calib_samples < 1:
            raise InputError(f"--calib-samples {self.calib_samples} must be at least 1")
        if self.validate_samples < 1:
            raise InputError(f"--validate-samples {self.validate_samples} must be at least 1")


# -- default images -----------------------------------------------------------------------------


def default_images_dir() -> Path:
    """The calibration photographs shipped as package data."""
    from importlib import resources

    return Path(str(resources.files("vggdeploy").joinpath("data/calibration_images")))


def synthetic_images(dest: Path, count: int = 12, size: int = 256, seed: int = 0) -> Path:
    """Write `count` structured synthetic images (gratings, checkerboards, blobs; not noise)."""
    import numpy as np
    from PIL import Image

    from vggdeploy.bundle import atomic_path

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        kind = i % 4
        colour = rng.uniform(0.2, 1.0, 3)
        if kind == 0:  # oriented sinusoidal grating
            angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 24)
            base = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        elif kind == 1:  # checkerboard
            n = int(rng.integers(4, 16))
            base = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
        elif kind == 2:  # soft blobs
            base = np.zeros_like(xx)
            for _ in range(6):
                cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
                base += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            base /= base.max()
        else:  # radial rings on a gradient
            cx, cy = rng.uniform(0.3, 0.7, 2)
            base = 0.5 + 0.5 * np.cos(40 * np.hypot(xx - cx, yy - cy)) * (0.5 + 0.5 * xx)
        # a bright colour against a dark version of another: contrast in every image
        dark = rng.uniform(0.0, 0.15, 3)
        rgb = base[..., None] * colour + (1 - base[..., None]) * dark
        img = Image.fromarray(np.clip(rgb * 255, 0, 255).astype(np.uint8), "RGB")
        with atomic_path(dest / f"synthetic_{i:02d}.png") as tmp:
            img.save(tmp, format="PNG")
    return dest


def resolve_images(images: str | None, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The image folder to calibrate and validate on, and how to describe it in the report."""
    from vggdeploy.preprocess import find_images

    if images:
        paths = find_images(images)
        return {"dir": Path(images), "kind": "user", "count": len(paths), "warning": None}
    folder = default_images_dir()
    try:
        paths = find_images(folder)
    except InputError:
        paths = []
    if len(paths) >= MIN_DEFAULT_IMAGES:
        say(f"no --images given: using {DEFAULT_IMAGES_NOTE.format(n=len(paths))}")
        return {
            "dir": folder,
            "kind": "default",
            "count": len(paths),
            "warning": None,
            "note": DEFAULT_IMAGES_NOTE.format(n=len(paths)),
        }
    dest = out / SYNTHETIC_DIR
    synthetic_images(dest)
    log.warning("warning: %s", SYNTHETIC_WARNING)
    return {
        "dir": dest,
        "kind": "synthetic",
        "count": len(find_images(dest)),
        "warning": SYNTHETIC_WARNING,
    }


def calibration_split(n_images: int, asked: int | None) -> int:
    """Calibration samples: as asked, else 3/4 of the images (at most 64), the rest held out."""
    if asked is not None:
        if asked > n_images:
            raise InputError(
                f"--calib-samples {asked} is more than the {n_images} images available: "
                f"use {n_images} or fewer, or add images"
            )
        return asked
    return max(1, min(64, n_images * 3 // 4)) if n_images >= 4 else n_images


# -- state ----------------------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class State:
    """`pipeline.json`: per stage, its input hash, what it produced, and how it went."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, out: Path) -> State:
        path = out / STATE_NAME
        data: dict[str, Any] = {"schema": STATE_SCHEMA, "stages": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text("utf-8"))
                if loaded.get("schema") == STATE_SCHEMA:
                    data = loaded
            except (OSError, ValueError):
                log.warning("ignoring unreadable %s: every stage runs again", path)
        return cls(path, data)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


@dataclass
class StageRun:
    """One stage in this run: what it did, for the report."""

    name: str
    status: str  # "done" | "up to date" | "skipped" | "failed"
    seconds: float = 0.0
    detail: str = ""
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _outputs_intact(bundle_root: Path, outputs: dict[str, str], files: dict[str, str]) -> bool:
    """Every artifact a stage recorded is still in the manifest with the same sha256, and every
    file it wrote (relative to OUT) still exists with the same sha256."""
    if outputs:
        try:
            bundle = Bundle.load(bundle_root)
        except VggDeployError:
            return False
        for key, sha in outputs.items():
            record = bundle.artifacts.get(key)
            if not record or record.get("sha256") != sha or not bundle.has_artifact(key):
                return False
            if sha256_file(bundle.root / record["path"]) != sha:
                return False
    out = bundle_root.parent
    return all(
        (out / rel).is_file() and sha256_file(out / rel) == sha for rel, sha in files.items()
    )


# -- the pipeline ---------------------------------------------------------------------------------


class Pipeline:
    """Runs the stages in order; see the module docstring."""

    def __init__(
        self,
        model: str,
        out: str | os.PathLike[str],
        options: PipelineOptions,
        say: Callable[[str], None] | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        from vggdeploy.models import check_image_size, resolve_spec

        self.spec = resolve_spec(
            model,
            num_classes=options.num_classes,
            width_divisor=options.width_divisor,
            hidden=options.hidden,
        )
        check_image_size(options.image_size)
        self.model_name = model
        self.out = Path(out)
        self.options = options
        self.say = say or log.info
        self.argv = list(argv) if argv is not None else None
        self.bundle_root = self.out / BUNDLE_DIR
        self.runs: list[StageRun] = []
        self.warnings: list[str] = []
        self.failures: list[str] = []

    # -- helpers ----------------------------------------------------------------------------------

    def _prepare_out(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a folder: choose another --out")
        if self.out.is_dir() and any(self.out.iterdir()):
            known = (self.out / STATE_NAME).is_file() or (
                self.bundle_root / "manifest.json"
            ).is_file()
            if not known:
                raise InputError(
                    f"--out {self.out} is not empty and holds no earlier pipeline run: choose "
                    "another --out (a pipeline folder is resumed, any other folder is left alone)"
                )
        self.out.mkdir(parents=True, exist_ok=True)

    def _stage(
        self,
        name: str,
        inputs: dict[str, Any],
        body: Callable[[], tuple[dict[str, str], dict[str, str], dict[str, Any], str]],
    ) -> StageRun:
        """Run `body` unless the recorded inputs and outputs are unchanged.

        `body` returns (artifact key -> sha256, file under OUT -> sha256, result, detail).
        """
        index = STAGES.index(name) + 1
        prefix = f"[{index}/{len(STAGES)}] {name}"
        digest = _digest(inputs)
        previous = self.state.stages.get(name)
        if (
            not self.options.force
            and previous
            and previous.get("status") == "done"
            and previous.get("inputs_sha256") == digest
            and _outputs_intact(
                self.bundle_root, previous.get("outputs", {}), previous.get("files", {})
            )
        ):
            run = StageRun(
                name,
                "up to date",
                seconds=float(previous.get("seconds", 0.0)),
                detail=previous.get("detail", ""),
            )
            run.result = previous.get("result", {})
            self.say(
                f"{prefix}: up to date ({run.detail})" if run.detail else f"{prefix}: up to date"
            )
            self.runs.append(run)
            return run
        self.say(f"{prefix} ...")
        started = time.perf_counter()
        try:
            outputs, files, result, detail = body()
        except _Skip as skip:
            run = StageRun(name, "skipped", reason=str(skip))
            self.state.stages[name] = {"status": "skipped", "reason": str(skip)}
            self.state.save()
            self.say(f"{prefix}: skipped - {skip}")
            self.runs.append(run)
            return run
        except CheckFailedError as exc:
            seconds = time.perf_counter() - started
            run = StageRun(name, "failed", seconds=seconds, reason=str(exc))
            self.state.stages[name] = {"status": "failed", "reason": str(exc)}
            self.state.save()
            self.failures.append(f"{name}: {exc}")
            self.say(f"{prefix}: FAILED - {exc}")
            self.runs.append(run)
            return run
        except VggDeployError as exc:
            # Bad input or an unusable host: stop here, but leave the report of what ran.
            run = StageRun(name, "failed", seconds=time.perf_counter() - started, reason=str(exc))
            self.state.stages[name] = {"status": "failed", "reason": str(exc)}
            self.state.save()
            self.runs.append(run)
            raise
        seconds = time.perf_counter() - started
        self.state.stages[name] = {
            "status": "done",
            "inputs": inputs,
            "inputs_sha256": digest,
            "outputs": outputs,
            "files": files,
            "result": result,
            "detail": detail,
            "seconds": round(seconds, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.state.save()
        run = StageRun(name, "done", seconds=seconds, detail=detail, result=result)
        self.say(f"{prefix}: done in {seconds:.1f} s - {detail}" if detail else f"{prefix}: done")
        self.runs.append(run)
        return run

    def _artifact_sha(self, key: str) -> str | None:
        bundle = Bundle.load(self.bundle_root)
        record = bundle.artifacts.get(key)
        return record.get("sha256") if record else None

    def _write_json(self, name: str, data: Any) -> dict[str, str]:
        atomic_write_json(self.out / name, data)
        return {name: sha256_file(self.out / name)}

    # -- stages -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from vggdeploy.calibration.data import fingerprint_images
        from vggdeploy.preprocess import find_images

        wall = time.perf_counter()
        started = datetime.now(timezone.utc)
        self._prepare_out()
        self.state = State.load(self.out)
        self.state.save()  # marks OUT as a pipeline folder at once, so an interrupted run resumes
        if self.options.force:
            self.say("--force: every stage runs again")
        self.images = resolve_images(self.options.images, self.out, self.say)
        if self.images["warning"]:
            self.warnings.append(self.images["warning"])
        image_paths = find_images(self.images["dir"])
        self.images_sha = fingerprint_images(image_paths, Path(self.images["dir"]))
        self.random_weights = self.options.weights == "random"
        if self.random_weights:
            self.warnings.append(
                "the weights are random (--weights random): every figure here is about numerical "
                "agreement between runtimes and precisions, not accuracy; use --weights imagenet "
                "or a checkpoint for real predictions"
            )
        try:
            self.stage_export()
            self.stage_validate_export()
            self.stage_fp16()
            self.stage_int8()
            self.stage_build()
            self.stage_validate_all()
            self.stage_bench()
        finally:
            report = self.write_report(started, time.perf_counter() - wall)
        if self.failures:
            raise CheckFailedError(
                f"{len(self.failures)} stage(s) failed ({'; '.join(self.failures)})"[:600]
                + f" - details in {self.out / 'report.md'}"
            )
        return report

    def stage_export(self) -> None:
        from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
        from vggdeploy.weights import WeightsSource

        source = WeightsSource.parse(self.options.weights, self.options.seed)
        weights_id: dict[str, Any] = {"kind": source.kind, "seed": source.seed}
        if source.kind == "file":
            path = Path(source.path or "")
            if not path.is_file():
                raise InputError(f"--weights {path}: no such file")
            weights_id["sha256"] = sha256_file(path)
        inputs = {
            "spec": self.spec.to_dict(),
            "weights": weights_id,
            "image_size": self.options.image_size,
            "batch": "dynamic",
            "opset": 18,
            "vggdeploy": __version__,
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = export_bundle(
                self.spec,
                source,
                self.bundle_root,
                ExportOptions(image_size=self.options.image_size, force=True),
            )
            parity = bundle.manifest["parity"]
            result = {
                "seconds": bundle.manifest["export"]["seconds"],
                "parity": {k: parity[k] for k in ("worst_max_rel", "worst_cosine", "passed")},
            }
            detail = (
                f"model.onnx, parity vs PyTorch max rel {parity['worst_max_rel']:.1e}, "
                f"cosine {parity['worst_cosine']:.6f}"
            )
            return {"onnx.fp32": bundle.artifacts["onnx.fp32"]["sha256"]}, {}, result, detail

        self._stage("export", inputs, body)

    def _validation_inputs(self, bundle: Bundle) -> Any:
        from vggdeploy.validate import InputSet

        return InputSet.images(
            bundle, self.images["dir"], samples=self.options.validate_samples, batch=8
        )

    def stage_validate_export(self) -> None:
        from vggdeploy.validate import parse_target, validate_bundle

        inputs = {
            "onnx.fp32": self._artifact_sha("onnx.fp32"),
            "images": self.images_sha,
            "samples": self.options.validate_samples,
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = Bundle.load(self.bundle_root)
            report = validate_bundle(
                bundle,
                [parse_target("onnxruntime:cpu", "fp32")],
                self._validation_inputs(bundle),
            )
            data = report.to_dict()
            files = self._write_json("validate-export.json", data)
            if not report.passed:
                raise CheckFailedError(f"ONNX Runtime fp32 vs PyTorch: {report.summary()}")
            return {}, files, {"summary": report.summary(), "passed": True}, report.summary()

        self._stage("validate-export", inputs, body)

    def stage_fp16(self) -> None:
        if "fp16" not in self.options.precisions:
            self._not_asked("convert-fp16", "fp16")
            return
        from vggdeploy.exporter.fp16 import convert_fp16

        samples = min(self.images["count"], 16)
        inputs = {
            "onnx.fp32": self._artifact_sha("onnx.fp32"),
            "images": self.images_sha,
            "samples": samples,
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = Bundle.load(self.bundle_root)
            report = convert_fp16(bundle, images=self.images["dir"], samples=samples, batch_size=8)
            result = {
                "kept_fp32": report["kept_fp32"],
                "max_abs_activation": report["max_abs_activation"],
                "parity": report["parity"],
                "measured_on": report["measured_on"],
            }
            detail = (
                f"model.fp16.onnx, {len(report['kept_fp32'])} node(s) kept in fp32, "
                f"max |activation| {report['max_abs_activation']:.3g}"
            )
            return {"onnx.fp16": self._artifact_sha("onnx.fp16") or ""}, {}, result, detail

        self._stage("convert-fp16", inputs, body)

    def stage_int8(self) -> None:
        if "int8" not in self.options.precisions:
            self._not_asked("calibrate-int8", "int8")
            return
        from vggdeploy.calibration import CalibrationOptions, calibrate_bundle

        samples = calibration_split(self.images["count"], self.options.calib_samples)
        inputs = {
            "onnx.fp32": self._artifact_sha("onnx.fp32"),
            "images": self.images_sha,
            "samples": samples,
            "method": self.options.calib_method,
            "seed": self.options.seed,
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = Bundle.load(self.bundle_root)
            results = {}
            outputs = {}
            # One data pass: the second target reuses the calibration cache's histograms.
            for target in ("tensorrt", "onnxruntime"):
                summary = calibrate_bundle(
                    bundle,
                    self.images["dir"],
                    CalibrationOptions(
                        method=self.options.calib_method,
                        target=target,
                        samples=samples,
                        seed=self.options.seed,
                        batch_size=8,
                        progress=False,
                    ),
                )
                bundle = Bundle.load(self.bundle_root)
                outputs[summary["artifact"]] = summary["sha256"]
                results[summary["artifact"]] = {
                    k: summary[k]
                    for k in (
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
                }
            detail = (
                f"model.int8.onnx (TensorRT) and model.int8-u8.onnx (ONNX Runtime), "
                f"{self.options.calib_method} on {samples} of {self.images['count']} images"
            )
            return outputs, {}, {"targets": results, "images": self._images_record()}, detail

        run = self._stage("calibrate-int8", inputs, body)
        for key, target in (run.result.get("targets") or {}).items():
            self.warnings += [f"INT8 calibration ({key}): {w}" for w in target.get("warnings", [])]

    def _not_asked(self, name: str, precision: str) -> None:
        run = StageRun(name, "skipped", reason=f"{precision} not in --precision")
        self.say(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}: skipped - {run.reason}")
        self.runs.append(run)

    def stage_build(self) -> None:
        from vggdeploy.bundle import Bundle as _Bundle

        keys = {"fp32": "onnx.fp32", "fp16": "onnx.fp16", "int8": "onnx.int8"}
        wanted = [p for p in self.options.precisions if self._artifact_sha(keys[p])]
        inputs = {p: self._artifact_sha(keys[p]) for p in wanted}

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            reason = tensorrt_unavailable()
            if reason:
                raise _Skip(reason)
            from vggdeploy.exporter.engine import BuildOptions, build_engine

            outputs = {}
            result = {}
            for precision in wanted:
                record = build_engine(
                    _Bundle.load(self.bundle_root), BuildOptions(precision=precision)
                )
                outputs[f"engine.{precision}"] = record["sha256"]
                result[precision] = {
                    "tensorrt_version": record.get("tensorrt_version"),
                    "gpu": record.get("gpu"),
                    "build_seconds": record.get("build_seconds"),
                    "profiles": record.get("profiles"),
                }
            detail = ", ".join(f"model.{p}.engine" for p in wanted)
            return outputs, {}, result, detail

        self._stage("build", {**inputs, "host": _host_key()}, body)

    def stage_validate_all(self) -> None:
        from vggdeploy.validate import default_targets, validate_bundle

        bundle = Bundle.load(self.bundle_root)
        inputs = {
            "artifacts": {k: r.get("sha256") for k, r in sorted(bundle.artifacts.items())},
            "images": self.images_sha,
            "samples": self.options.validate_samples,
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = Bundle.load(self.bundle_root)
            report = validate_bundle(
                bundle, default_targets(bundle), self._validation_inputs(bundle)
            )
            data = report.to_dict()
            files = self._write_json("validate.json", data)
            result = {"summary": report.summary(), "passed": report.passed}
            if report.passed:
                return {}, files, result, report.summary()
            failing = [r for r in report.results if r.status == "compared" and not r.passed]
            if self.random_weights and all(r.target.precision.startswith("int8") for r in failing):
                # Random weights give near-tied logits and no trained structure, so INT8 noise
                # flips top-1 and lowers cosine in ways that say nothing about a trained model.
                # Report the figures, loudly, but do not fail the run on them.
                result["int8_informational"] = True
                return {}, files, result, f"{report.summary()} - INT8 checks informational"
            raise CheckFailedError(
                f"{report.summary()}: " + "; ".join(c.line() for c in report.failures[:4])
            )

        run = self._stage("validate", inputs, body)
        if run.result.get("int8_informational"):
            self.warnings.append(f"{RANDOM_INT8_WARNING} ({run.result['summary']})")

    def stage_bench(self) -> None:
        from vggdeploy.benchmark import (
            BenchOptions,
            bundle_precisions,
            parse_runtime,
            plan_cases,
            render_markdown,
            run_benchmark,
            write_plot,
        )

        bundle = Bundle.load(self.bundle_root)
        options = BenchOptions(
            iterations=self.options.bench_iterations,
            seconds=None,
            warmup_iterations=2,
            warmup_seconds=None,
        )
        inputs = {
            "artifacts": {k: r.get("sha256") for k, r in sorted(bundle.artifacts.items())},
            "options": options.to_dict(),
            "batches": list(self.options.batches),
            "runtimes": list(self.options.bench_runtimes),
            "ort_int8": "int8-u8 only",
            "host": _host_key(),
        }

        def body() -> tuple[dict[str, str], dict[str, str], dict[str, Any], str]:
            bundle = Bundle.load(self.bundle_root)
            plans, skipped = [], []
            for text in self.options.bench_runtimes:
                choice = parse_runtime(text)
                # model.int8.onnx (int8 activations) is made for TensorRT; ONNX Runtime's CPU
                # kernels want the u8 variant, which is the INT8 model timed on ONNX Runtime.
                wanted = None
                if choice.name == "onnxruntime" and bundle.has_artifact("onnx.int8-u8"):
                    wanted = [p for p in bundle_precisions(bundle, "onnx") if p != "int8"]
                more_plans, more_skipped = plan_cases(
                    bundle, [choice], wanted, self.options.batches
                )
                plans += more_plans
                skipped += more_skipped
            result = run_benchmark(bundle, plans, options, skipped=skipped, argv=self.argv)
            files = self._write_json("bench.json", result)
            if result["cases"]:
                write_plot(result, self.out / "bench.png")
                files["bench.png"] = sha256_file(self.out / "bench.png")
            atomic_write_text(self.out / "bench.md", render_markdown(result))
            files["bench.md"] = sha256_file(self.out / "bench.md")
            fastest = min(
                (c for c in result["cases"] if c["batch"] == min(self.options.batches)),
                key=lambda c: c["latency_ms"]["median"],
                default=None,
            )
            detail = f"{len(result['cases'])} case(s)"
            if fastest:
                detail += (
                    f"; fastest at batch {fastest['batch']}: {fastest['runtime']} "
                    f"{fastest['precision']} {fastest['latency_ms']['median']:.1f} ms"
                )
            return {}, files, {"cases": len(result["cases"])}, detail

        self._stage("bench", inputs, body)

    def _images_record(self) -> dict[str, Any]:
        return {
            "kind": self.images["kind"],
            "dir": str(self.images["dir"]),
            "count": self.images["count"],
            "sha256": self.images_sha,
        }

    # -- report -------------------------------------------------------------------------------------

    def write_report(self, started: datetime, wall_s: float) -> dict[str, Any]:
        bundle = (
            Bundle.load(self.bundle_root)
            if (self.bundle_root / "manifest.json").is_file()
            else None
        )
        data: dict[str, Any] = {
            "schema": "vggdeploy.pipeline-report/1",
            "vggdeploy": __version__,
            "command": self.argv,
            "model": self.model_name,
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
                **asdict(self.options),
                "images": self._images_record() if hasattr(self, "images_sha") else None,
            },
            "stages": [r.to_dict() for r in self.runs],
            "warnings": self.warnings,
            "failures": self.failures,
        }
        if bundle is not None:
            data["model_facts"] = {
                k: bundle.model.get(k)
                for k in (
                    "name",
                    "config",
                    "batch_norm",
                    "image_size",
                    "parameters",
                    "flops_per_image",
                )
            }
            data["weights"] = {
                k: v for k, v in bundle.manifest.get("weights", {}).items() if k != "path"
            }
            data["artifacts"] = {
                k: {x: r.get(x) for x in ("path", "precision", "size", "sha256", "kind")}
                for k, r in sorted(bundle.artifacts.items())
            }
            data["parity"] = bundle.manifest.get("parity")
        for name in ("validate-export.json", "validate.json", "bench.json"):
            path = self.out / name
            if path.is_file():
                data[name.removesuffix(".json").replace("-", "_")] = json.loads(
                    path.read_text("utf-8")
                )
        atomic_write_json(self.out / "report.json", data)
        atomic_write_text(self.out / "report.md", render_report_md(data, self.out))
        self.say(f"report: {self.out / 'report.md'} (and report.json)")
        return data


class _Skip(Exception):
    """A stage that cannot run on this host (not a failure)."""


BUILD_ELSEWHERE = (
    "engines are built on the target GPU: `vggdeploy pack` the bundle, then "
    "`vggdeploy build BUNDLE --precision fp16|int8` there"
)


def tensorrt_unavailable() -> str | None:
    """Why TensorRT engines cannot be built here, or None if TensorRT and a GPU are present."""
    from vggdeploy.runtimes.trt import cuda_glue, import_tensorrt

    try:
        import_tensorrt()
    except VggDeployError as exc:
        return f"{exc}; {BUILD_ELSEWHERE}"
    try:
        cuda_glue().device_info(0)
    except VggDeployError as exc:
        return f"{exc}; {BUILD_ELSEWHERE}"
    except ImportError as exc:  # the CUDA glue needs PyTorch
        return f"no usable CUDA device ({exc}); {BUILD_ELSEWHERE}"
    return None


def _host_key() -> dict[str, Any]:
    """What makes engines and timings specific to this machine."""
    return {"node": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()}


def run_pipeline(
    model: str,
    out: str | os.PathLike[str],
    options: PipelineOptions | None = None,
    *,
    say: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every stage for `model` into `out`; returns the report data (also in report.json).

    Raises `CheckFailedError` after writing the report if a check failed, other
    `VggDeployError`s for bad input (the report is still written for the stages that ran).
    """
    return Pipeline(model, out, options or PipelineOptions(), say=say, argv=argv).run()


# -- report.md ------------------------------------------------------------------------------------


def _md_table(headers: list[str], rows: list[list[Any]], right: str = "") -> list[str]:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append(
        "|"
        + "|".join(
            "---:" if i < len(right) and right[i] == "r" else "---" for i in range(len(headers))
        )
        + "|"
    )
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return lines


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def render_report_md(data: dict[str, Any], out: Path) -> str:
    """report.md from the report data."""
    m = data.get("model_facts") or {}
    lines = [f"# vggdeploy pipeline: {data['model']}", ""]
    if data.get("command"):
        lines += [f"`{shlex.join(['vggdeploy', *data['command']])}`", ""]
    lines += [
        f"Run {data['started']} on {data['host']['system']} {data['host']['machine']} "
        f"({data['host']['cpus']} CPUs), vggdeploy {data['vggdeploy']}, wall time "
        f"{data['wall_s']:.0f} s. Bundle: `{BUNDLE_DIR}/`.",
        "",
    ]
    if m:
        gflops = (m.get("flops_per_image") or 0) / 1e9
        weights = data.get("weights", {})
        lines += [
            f"**Model**: {m.get('name')} (VGG config {m.get('config')}"
            f"{', batch norm' if m.get('batch_norm') else ''}), {m.get('parameters', 0):,} "
            f"parameters, {gflops:.2f} GFLOPs per image at {m.get('image_size')}x"
            f"{m.get('image_size')}; weights: {weights.get('source')}"
            + (f" (seed {weights.get('seed')})" if weights.get("source") == "random" else ""),
            "",
        ]
    if data["warnings"] or data["failures"]:
        for f in data["failures"]:
            lines.append(f"> **FAILED** {f}")
        for w in data["warnings"]:
            lines.append(f"> **warning**: {w}")
        lines.append("")

    lines += ["## Stages", ""]
    rows = []
    for s in data["stages"]:
        note = s["detail"] if s["status"] in ("done", "up to date") else (s["reason"] or "")
        secs = {"done": f"{s['seconds']:.1f}", "up to date": f"({s['seconds']:.1f})"}.get(
            s["status"], "-"
        )
        rows.append([s["name"], s["status"], secs, note])
    lines += _md_table(["stage", "status", "seconds", "notes"], rows, "  r")
    lines += ["", "Seconds in parentheses: the earlier run that produced an up-to-date stage.", ""]

    if data.get("artifacts"):
        lines += ["## Artifacts", ""]
        rows = [
            [
                k,
                f"`{a['path']}`",
                a.get("precision") or "-",
                _size(a.get("size")),
                f"`{(a.get('sha256') or '')[:16]}`",
            ]
            for k, a in data["artifacts"].items()
        ]
        lines += _md_table(
            ["artifact", "file", "precision", "size", "sha256 (first 16)"], rows, "   r"
        )
        lines.append("")

    images = data["options"].get("images") or {}
    if images:
        kind = {
            "default": "the photographs shipped with vggdeploy (public domain / CC0)",
            "user": "your --images folder",
            "synthetic": "SYNTHETIC generated images (no real photographs found)",
        }[images["kind"]]
        lines += [
            "## Images",
            "",
            f"Calibration, FP16 range measurement and validation used {images['count']} images: "
            f"{kind}. INT8 calibration drew its samples from them and held the rest out for its "
            "own int8-vs-fp32 check; validation compares on "
            + (
                f"the first {data['options']['validate_samples']} of them"
                if data["options"]["validate_samples"] < images["count"]
                else "all of them"
            )
            + " (so, in part, on calibration images).",
            "",
        ]

    parity = data.get("parity")
    if parity:
        lines += [
            "## Export parity (PyTorch vs ONNX Runtime, fp32)",
            "",
            f"{len(parity.get('checks', []))} checks on seeded random inputs: worst max rel diff "
            f"{parity['worst_max_rel']:.2e}, worst cosine {parity['worst_cosine']:.7f} - "
            f"{'passed' if parity['passed'] else 'FAILED'}.",
            "",
        ]

    calib = next((s for s in data["stages"] if s["name"] == "calibrate-int8"), None)
    if calib and calib.get("result", {}).get("targets"):
        lines += ["## INT8 calibration", ""]
        rows = []
        for key, t in calib["result"]["targets"].items():
            hold = t.get("holdout") or {}
            held = (
                f"cosine {hold['cosine']:.4f} (worst image {hold.get('cosine_min', float('nan')):.4f}), "
                f"top-1 agreement {hold.get('top1_agreement', float('nan')):.2f} on "
                f"{hold.get('images', '?')} held-out images"
                + ("" if hold.get("passed", True) else " - BELOW TOLERANCE")
                if "cosine" in hold
                else hold.get("skipped", "-")
            )
            rows.append([key, t["target"], t["method"], t["samples"], t["quantized_ops"], held])
        lines += _md_table(
            ["artifact", "target", "method", "samples", "quantized ops", "held-out vs fp32"],
            rows,
            "   rr",
        )
        lines.append("")

    validation = data.get("validate")
    if validation:
        lines += [
            "## Validation (every artifact vs PyTorch fp32)",
            "",
            f"Reference {validation['reference']['label']}; inputs: {_inputs_text(validation['inputs'])}.",
            "",
        ]
        validate_stage = next((s for s in data["stages"] if s["name"] == "validate"), {})
        informational = bool((validate_stage.get("result") or {}).get("int8_informational"))
        rows = []
        for t in validation["targets"]:
            if t["status"] != "compared":
                rows.append([t["label"], "-", "-", "-", "-", f"skipped: {t['reason']}"])
                continue
            mt = t["metrics"]
            verdict = "PASS" if t["passed"] else "FAIL"
            if not t["checks"]:
                verdict = "not judged"
            elif not t["passed"] and informational and precision_of(t).startswith("int8"):
                verdict = "FAIL (informational: random weights)"
            rows.append(
                [
                    t["label"],
                    _fmt(mt.get("cosine"), ".6f"),
                    _fmt(mt.get("max_rel"), ".2e"),
                    _fmt(mt.get("top1"), ".3f"),
                    _fmt(mt.get("top5"), ".3f"),
                    verdict,
                ]
            )
        lines += _md_table(
            ["target", "cosine", "max rel", "top-1 agree", "top-5 overlap", "verdict"],
            rows,
            " rrrr",
        )
        lines += [""] + [f"- {n}" for n in validation.get("notes", [])]
        lines += [f"- {validation['summary']}", ""]

    build = next((s for s in data["stages"] if s["name"] == "build"), None)
    lines += ["## TensorRT engines", ""]
    if build and build["status"] == "skipped":
        lines += [f"Not built here: {build['reason']}.", ""]
    elif build and build.get("result"):
        rows = [
            [
                p,
                r.get("tensorrt_version"),
                (r.get("gpu") or {}).get("name"),
                (r.get("gpu") or {}).get("compute_capability"),
                r.get("build_seconds"),
            ]
            for p, r in build["result"].items()
        ]
        lines += _md_table(["precision", "TensorRT", "GPU", "compute capability", "build s"], rows)
        lines.append("")

    bench_md = out / "bench.md"
    if bench_md.is_file():
        lines += ["## Benchmark", "", bench_md.read_text("utf-8").strip(), ""]
        if "onnx.int8" in (data.get("artifacts") or {}):
            lines += [
                "`model.int8.onnx` (int8 activations, for TensorRT) is not timed on ONNX Runtime: "
                "its CPU kernels are made for the u8-activation `model.int8-u8.onnx` (int8-u8 "
                "above).",
                "",
            ]
        if (out / "bench.png").is_file():
            lines += ["![latency and throughput](bench.png)", ""]

    lines += [
        "## Next steps",
        "",
        f"- `vggdeploy inspect {out / BUNDLE_DIR}`: every artifact, checked against its sha256.",
        f"- `vggdeploy pack {out / BUNDLE_DIR} -o {data['model']}.tar.gz --no-engines`, copy it to the "
        "GPU machine (e.g. a Jetson), `vggdeploy unpack` it and `vggdeploy build BUNDLE --precision "
        "fp16` (or int8) there: engines are specific to a GPU and TensorRT version.",
        f"- `vggdeploy package {out / BUNDLE_DIR} --format triton --out model_repository "
        "--dynamic-batching`: a Triton Inference Server model repository.",
        "",
    ]
    return "\n".join(lines)


def precision_of(target: dict[str, Any]) -> str:
    return str((target.get("target") or {}).get("options", {}).get("precision", "fp32"))


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _inputs_text(inputs: dict[str, Any]) -> str:
    if inputs.get("kind") == "random":
        return f"{inputs['samples']} seeded random tensors"
    return f"{inputs['samples']} images, batch {inputs['batch']}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `vggdeploy pipeline`")
