"""An NVIDIA DeepStream Gst-nvinfer classifier package from a bundle.

Written against the Gst-nvinfer documentation of DeepStream 7.1 / 8.0 (the `[property]` keys
have kept their meaning through 9.x): `config_infer_primary.txt` (or `_secondary` with
`--secondary`), the labels file, the ONNX the config names and, when the bundle has a TensorRT
engine of the chosen precision, that engine; every path in the config is relative to it.

Keys and what decides them:

- `onnx-file`: the bundle's ONNX of the precision (`model.onnx`, `model.fp16.onnx`, or the
  Q/DQ `model.int8.onnx` in NVIDIA's placement).
- `model-engine-file`: only when `engine.<precision>` exists (not with `--bake-normalization`:
  that engine expects normalized input); `batch-size` must lie in its optimization profile.
- `network-mode` 0 fp32, 1 int8, 2 fp16. For int8 the ONNX carries Q/DQ nodes (explicit
  quantization): TensorRT takes every scale from the graph, so no `int8-calib-file` is written;
  nvinfer sets the INT8 builder flag and may log that no calibration file is given, which is
  harmless for a Q/DQ network. Prefer shipping an engine built by `vggdeploy build --precision
  int8` (strongly typed) and let nvinfer deserialize it.
- `network-type=1` (classifier), `process-mode` 1 (primary, full frame) or 2 (secondary, on
  objects), `classifier-threshold` (compared with the top output value: vggdeploy's models
  output logits, not probabilities), `output-blob-names` (the bundle's output),
  `model-color-format` 0 RGB / 1 BGR, `infer-dims=3;H;W`, `network-input-order=0` (NCHW).
- `net-scale-factor` and `offsets`: nvinfer computes `y = net-scale-factor * (x - offsets[c])`
  on 0..255 pixels, one scale for all channels. The bundle's `(x/255 - mean[c]) / std[c]` needs
  `offsets[c] = 255*mean[c]` (exact) and a scale `1/(255*std[c])` per channel, which nvinfer
  cannot express: the single scale uses `std* = (min std + max std) / 2`, the value that
  minimises the worst channel's relative scale error `|std[c]/std* - 1|` (ImageNet: 1.10%).
  `--bake-normalization` instead writes an ONNX that does the exact normalization itself
  (`vggdeploy.packaging.bake`), with `net-scale-factor=1` and `offsets=0;0;0`.
- `maintain-aspect-ratio` (+ `symmetric-padding=1`, centred padding) with
  `--maintain-aspect-ratio`.

Resizing differs from the bundle: the bundle resizes the shorter side to `resize` and centre-
crops `crop` x `crop`; nvinfer scales the whole frame (or object) to H x W, stretching it, or,
with `maintain-aspect-ratio=1`, scales it to fit and pads the rest with black. Neither crops.
`benchmarks/deepstream_resize.py` measures what that costs in top-1.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.bundle import (
    Bundle,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
    replace_folder,
)
from vggdeploy.errors import InputError

__all__ = [
    "DEEPSTREAM_VERSION",
    "DeepStreamOptions",
    "DeepStreamResult",
    "ScaleChoice",
    "closest_scale",
    "nvinfer_config",
    "package_deepstream",
]

DEEPSTREAM_VERSION = "7.1 / 8.0"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
COLOR_FORMATS = {"RGB": 0, "BGR": 1}
LABELS_FILE = "labels.txt"


@dataclass
class DeepStreamOptions:
    """What `vggdeploy package --format deepstream` was asked for."""

    precision: str = "fp32"
    batch: int | None = None  # default: 1, or the engine profile's min if larger
    bake_normalization: bool = False
    color_format: str | None = None  # "RGB"/"BGR"; default the bundle's channel order
    maintain_aspect_ratio: bool = False
    secondary: bool = False
    classifier_threshold: float = 0.0
    gpu_id: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        P.get(self.precision)  # an unknown name: one line listing the choices
        if self.batch is not None and self.batch < 1:
            raise InputError(f"--batch {self.batch} must be a positive integer")
        if self.color_format is not None:
            self.color_format = self.color_format.upper()
            if self.color_format not in COLOR_FORMATS:
                raise InputError(f"--color-format {self.color_format}: choose rgb or bgr")
        if not math.isfinite(self.classifier_threshold):
            raise InputError("--classifier-threshold must be a finite number")
        if self.gpu_id < 0:
            raise InputError(f"--gpu-id {self.gpu_id} must be 0 or more")


@dataclass(frozen=True)
class ScaleChoice:
    """The single nvinfer scale for a per-channel std, and what it costs per channel."""

    std: float  # the std the single scale stands for
    net_scale_factor: float
    relative_error: tuple[float, float, float]  # |std[c]/std - 1|, per channel (model order)


def closest_scale(std: tuple[float, ...], scale: float = 1 / 255) -> ScaleChoice:
    """`std* = (min + max) / 2` minimises max_c |std[c]/std* - 1|; the factor is scale/std*."""
    chosen = (min(std) + max(std)) / 2
    errors = tuple(abs(s / chosen - 1) for s in std)
    return ScaleChoice(chosen, scale / chosen, errors)  # type: ignore[arg-type]


@dataclass
class DeepStreamResult:
    out: Path
    config: str  # file name inside `out`
    files: list[str]
    precision: str
    onnx_source: str  # `key (file)` of the bundle's ONNX
    engine_source: str | None
    batch_size: int
    properties: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parity: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "config": self.config,
            "files": self.files,
            "precision": self.precision,
            "onnx_source": self.onnx_source,
            "engine_source": self.engine_source,
            "batch_size": self.batch_size,
            "properties": self.properties,
            "warnings": self.warnings,
            "notes": self.notes,
            "parity": self.parity,
        }


def _fmt(value: float) -> str:
    return f"{value:.9g}"


def _batch_size(bundle: Bundle, options: DeepStreamOptions, engine: Any) -> int:
    first = bundle.manifest.input
    fixed = None if first.batched() else first.shape[0]
    if fixed is not None:
        if options.batch is not None and options.batch != fixed:
            raise InputError(
                f"--batch {options.batch}: the bundle was exported with a fixed batch of {fixed}"
            )
        return int(fixed)
    ranges = engine.batch_ranges() if engine is not None else []
    if options.batch is None:
        return max(1, min(r[0] for r in ranges)) if ranges else 1
    if ranges and not any(lo <= options.batch <= hi for lo, _, hi in ranges):
        spans = ", ".join(f"{lo}..{hi}" for lo, _, hi in ranges)
        raise InputError(
            f"--batch {options.batch} is outside the {options.precision} engine's optimization "
            f"profile (batch {spans}): choose a batch in it or rebuild with "
            f"`vggdeploy build ... --max-batch {options.batch}`"
        )
    return options.batch


def nvinfer_config(properties: dict[str, str], comments: list[str]) -> str:
    """The text of an nvinfer config file: comment lines, then the `[property]` group."""
    lines = [f"# {c}" for c in comments]
    lines.append("[property]")
    lines += [f"{key}={value}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def _plan(bundle: Bundle, options: DeepStreamOptions) -> dict[str, Any]:
    """Decide every property (no file is written); raises `InputError` for bad requests."""
    from vggdeploy.inputs import bundle_input_shape

    pre = bundle.preprocessing
    onnx_key = P.onnx_key(options.precision)
    bundle.artifact(onnx_key)  # a missing file: one line with the command that makes it
    engine_key = P.engine_key(options.precision)
    engine = bundle.manifest.engines().get(engine_key)
    notes: list[str] = []
    warnings: list[str] = []
    if engine is not None and options.bake_normalization:
        notes.append(
            f"{engine_key} is left out: it expects normalized input; nvinfer builds an engine "
            "from the baked ONNX on first run"
        )
        engine = None
    batch = _batch_size(bundle, options, engine)
    order = options.color_format or pre.channel_order
    if order != pre.channel_order and not options.bake_normalization:
        raise InputError(
            f"--color-format {order.lower()}: the model expects {pre.channel_order}; nvinfer "
            "cannot reorder channels for it: add --bake-normalization (the ONNX then reorders)"
        )
    c, h, w = bundle_input_shape(bundle)
    scale_choice = None
    if options.bake_normalization:
        net_scale, offsets = 1.0, (0.0, 0.0, 0.0)
    else:
        flip = pre.channel_order == "BGR"
        mean = pre.mean[::-1] if flip else pre.mean
        std = tuple(pre.std[::-1] if flip else pre.std)
        offsets = tuple(m / pre.scale for m in mean)
        scale_choice = closest_scale(std, pre.scale)
        net_scale = scale_choice.net_scale_factor
        if max(scale_choice.relative_error) > 1e-7:
            errors = ", ".join(
                f"{ch} {e:.2%}" for ch, e in zip(pre.channel_order, scale_choice.relative_error)
            )
            warnings.append(
                f"nvinfer has one net-scale-factor for all channels, so the per-channel std "
                f"{list(std)} cannot be expressed: using std {scale_choice.std:.6g} "
                f"(scale error {errors}); --bake-normalization makes it exact"
            )
    properties: dict[str, str] = {"gpu-id": str(options.gpu_id)}
    properties["onnx-file"] = ""  # filled in by the writer (the copied/baked file's name)
    if engine is not None:
        properties["model-engine-file"] = P.engine_file(options.precision)
    properties.update(
        {
            "labelfile-path": LABELS_FILE,
            "network-mode": str(NETWORK_MODES[options.precision]),
            "network-type": "1",
            "process-mode": "2" if options.secondary else "1",
            "gie-unique-id": "2" if options.secondary else "1",
            "batch-size": str(batch),
            "infer-dims": f"{c};{h};{w}",
            "network-input-order": "0",
            "model-color-format": str(COLOR_FORMATS[order]),
            "net-scale-factor": _fmt(net_scale),
            "offsets": ";".join(_fmt(o) for o in offsets),
            "maintain-aspect-ratio": "1" if options.maintain_aspect_ratio else "0",
            "output-blob-names": bundle.output_name,
            "classifier-threshold": _fmt(options.classifier_threshold),
        }
    )
    if options.maintain_aspect_ratio:
        properties["symmetric-padding"] = "1"
    if options.secondary:
        properties["operate-on-gie-id"] = "1"
        properties["classifier-async-mode"] = "0"
    return {
        "properties": properties,
        "engine_key": engine_key if engine is not None else None,
        "onnx_key": onnx_key,
        "order": order,
        "batch": batch,
        "warnings": warnings,
        "notes": notes,
        "scale": scale_choice,
    }


def _labels_line(bundle: Bundle) -> tuple[str, list[str]]:
    """nvinfer's classifier labels file: one line per output layer, labels separated by ';'."""
    labels = bundle.labels()
    notes = []
    if labels is None:
        classes = bundle.manifest.output.shape[-1]
        labels = [f"class {i}" for i in range(int(classes) if isinstance(classes, int) else 0)]
        notes.append("the bundle has no class names: labels.txt says 'class N'")
    if any(";" in label for label in labels):
        labels = [label.replace(";", ",") for label in labels]
        notes.append("';' in class names became ',' (nvinfer separates labels with ';')")
    return ";".join(labels) + "\n", notes


def package_deepstream(
    root: str | os.PathLike[str], out: str | os.PathLike[str], options: DeepStreamOptions
) -> DeepStreamResult:
    """Write a DeepStream nvinfer classifier package for the bundle at `root` into `out`.

    `out` must be missing or empty unless `options.force`; everything is written in a temporary
    folder beside it and renamed into place only once complete (and, with baking, checked).
    """
    bundle = Bundle.load(root)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: choose a folder")
    if out.is_dir() and any(out.iterdir()) and not options.force:
        raise InputError(f"--out {out} is not empty: choose another folder or add --force")
    plan = _plan(bundle, options)
    properties: dict[str, str] = plan["properties"]
    onnx_path = bundle.artifact_path(plan["onnx_key"], verify=True)
    engine_path = (
        bundle.artifact_path(plan["engine_key"], verify=True) if plan["engine_key"] else None
    )
    labels_text, label_notes = _labels_line(bundle)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; a server must read it
    parity = None
    try:
        if options.bake_normalization:
            onnx_name = onnx_path.name.replace(".onnx", ".baked.onnx")
            parity = _write_baked(
                bundle, onnx_path, staging / onnx_name, plan["order"], options.precision
            )
        else:
            onnx_name = onnx_path.name
            with atomic_path(staging / onnx_name) as tmp:
                shutil.copyfile(onnx_path, tmp)
        properties["onnx-file"] = onnx_name
        files = [onnx_name]
        if engine_path is not None:
            with atomic_path(staging / engine_path.name) as tmp:
                shutil.copyfile(engine_path, tmp)
            files.append(engine_path.name)
        atomic_write_text(staging / LABELS_FILE, labels_text)
        config = f"config_infer_{'secondary' if options.secondary else 'primary'}.txt"
        comments = _comments(bundle, options, plan)
        atomic_write_text(staging / config, nvinfer_config(properties, comments))
        files = [config, *files, LABELS_FILE]
        replace_folder(staging, out, replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rec = bundle.artifacts
    return DeepStreamResult(
        out=out,
        config=config,
        files=files,
        precision=options.precision,
        onnx_source=f"{plan['onnx_key']} ({rec[plan['onnx_key']].path})",
        engine_source=(
            f"{plan['engine_key']} ({rec[plan['engine_key']].path})" if plan["engine_key"] else None
        ),
        batch_size=plan["batch"],
        properties=properties,
        warnings=plan["warnings"],
        notes=plan["notes"] + label_notes,
        parity=parity,
    )


def _comments(bundle: Bundle, options: DeepStreamOptions, plan: dict[str, Any]) -> list[str]:
    pre = bundle.preprocessing
    lines = [
        f"Gst-nvinfer classifier config for {bundle.manifest.model.name}, written by vggdeploy "
        f"(DeepStream {DEEPSTREAM_VERSION} keys); paths are relative to this file.",
        "nvinfer scales the whole frame/object to infer-dims (maintain-aspect-ratio=1: fit and "
        "pad); the bundle resized the shorter side to "
        f"{pre.resize} and centre-cropped {pre.crop}: see benchmarks/deepstream_resize.py.",
        "classifier-threshold is compared with the top output value, a logit for this model.",
    ]
    if options.bake_normalization:
        lines.append(
            "The ONNX normalizes raw 0..255 pixels itself (mean/std per channel, exact): "
            "net-scale-factor=1, offsets=0."
        )
    elif plan["scale"] is not None:
        lines.append(
            f"net-scale-factor=1/(255*{plan['scale'].std:.6g}) approximates the per-channel std "
            f"{list(pre.std)} (RGB); offsets are 255*mean in the model's channel order."
        )
    if options.precision == "int8":
        lines.append(
            "INT8: the ONNX is Q/DQ (explicit quantization); no int8-calib-file is needed."
        )
    return lines


def _write_baked(
    bundle: Bundle, src: Path, dest: Path, order: str, precision: str
) -> dict[str, float]:
    """Bake, check parity on the shipped photographs, then write (nothing on a failure)."""
    import onnx

    from vggdeploy.inputs import default_images_dir
    from vggdeploy.packaging.bake import (
        BakedNormalization,
        bake_normalization,
        check_baked_parity,
    )
    from vggdeploy.preprocess import find_images

    pre = bundle.preprocessing
    norm = BakedNormalization.from_preprocessing(pre, order)
    baked = bake_normalization(onnx.load(str(src)), norm)
    onnx.checker.check_model(baked)
    data = baked.SerializeToString()
    first = bundle.manifest.input
    fixed = None if first.batched() else int(first.shape[0])
    parity = check_baked_parity(
        src, data, pre, norm, find_images(default_images_dir()), batch=fixed
    )
    if precision == "int8":
        _check_qdq(baked)
    atomic_write_bytes(dest, data)
    return parity


def _check_qdq(model: Any) -> None:
    from vggdeploy.calibration.qdq import verify_qdq
    from vggdeploy.errors import CheckFailedError

    problems = verify_qdq(model, "tensorrt")
    if problems:
        raise CheckFailedError(
            f"the baked INT8 ONNX breaks TensorRT's Q/DQ rules: {problems[0]}; nothing written"
        )
