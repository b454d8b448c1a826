"""PyTorch -> ONNX export with an automatic parity check, into a bundle directory.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) writes one self-contained file
(`external_data=False`; VGG is far under protobuf's 2 GB limit) with a dynamic batch axis.

A measured pitfall decides the shapes: with dynamic height/width, `AdaptiveAvgPool2d(7)`
exports without error but computes wrong logits at other sizes. So the standard model is
exported at one fixed image size, and `dense=True` exports the paper's fully convolutional
test-time form (which has no adaptive pool) with dynamic height and width, checked at several
sizes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy import __version__
from vggdeploy.bundle import Bundle, atomic_path, atomic_write_text, library_versions
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.metrics import compare_arrays
from vggdeploy.models import ModelSpec, check_image_size, count_flops, count_parameters
from vggdeploy.ortsession import cpu_session, import_ort
from vggdeploy.precision import onnx_file, onnx_key
from vggdeploy.preprocess import Preprocessing
from vggdeploy.records import Manifest
from vggdeploy.weights import WeightsSource, load_model

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Parity thresholds between ONNX Runtime CPU and PyTorch (fp32 both): relative to the output's
# largest magnitude, and cosine similarity of the flattened outputs.
PARITY_MAX_REL = 1e-4
PARITY_MIN_COSINE = 0.9999
DENSE_CHECK_SIZES = (224, 256, 320)
METADATA_PREFIX = "vggdeploy."


@dataclass
class ExportOptions:
    """What `vggdeploy export` was asked for."""

    image_size: int = 224
    batch: int | None = None  # None: dynamic batch axis
    opset: int = 18
    dense: bool = False
    labels: str | None = None  # path to a labels file, one class name a line
    preprocessing: Preprocessing | None = None
    force: bool = False
    check_batch: int = 2
    seed: int = 0
    extra_sizes: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_image_size(self.image_size, dense=self.dense)
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise InputError(f"batch {self.batch!r} must be a positive integer or 'dynamic'")
        # Below 18 the dynamo exporter silently keeps 18 when its down-conversion fails (it does
        # for VGG's Pad and ReduceMean), so 17 would be a request we cannot keep.
        if not 18 <= self.opset <= 23:
            raise InputError(
                f"opset {self.opset} is not supported: use 18 to 23 (18 is the default)"
            )


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse a file, or a non-empty folder unless forced, without changing anything."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(
            f"output folder {out} is not empty: choose another --out, or add --force to replace its contents"
        )


def prepare_output_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty or unwritable folder unless forced; create it if needed."""
    check_output_dir(out, force)
    if out.is_dir() and any(out.iterdir()):
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vggdeploy-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"cannot write to output folder {out} ({exc.strerror}): choose a writable --out"
        ) from None


def export_bundle(
    spec: ModelSpec,
    weights: WeightsSource,
    out: str | os.PathLike[str],
    options: ExportOptions | None = None,
) -> Bundle:
    """Export `spec` with `weights` to `out/model.onnx`, check parity, write the manifest."""
    options = options or ExportOptions()
    out = Path(out)
    labels = _read_labels(options.labels, spec) if options.labels else None
    check_output_dir(out, options.force)

    started = time.perf_counter()
    model, weights_record = load_model(spec, weights, dense=options.dense)
    # Only now that the weights loaded: --force must not wipe a bundle for a run that cannot start.
    prepare_output_dir(out, options.force)
    if weights_record["source"] == "imagenet" and labels is None:
        labels = imagenet_labels()

    onnx_path = out / onnx_file("fp32")
    with atomic_path(onnx_path) as tmp:
        export_onnx(model, tmp, options)
        io = finish_onnx(tmp, spec, options)
        parity = check_parity(model, tmp, options)
    export_seconds = time.perf_counter() - started

    pre = options.preprocessing or Preprocessing.for_size(options.image_size)
    manifest: dict[str, Any] = {
        "created_by": {
            **library_versions("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu"),
            "python": platform.python_version(),
        },
        "model": {
            **spec.to_dict(),
            "dense": options.dense,
            "image_size": options.image_size,
            "parameters": count_parameters(spec),
            "flops_per_image": count_flops(spec, options.image_size),
            "weight_layers": spec.weight_layers,
        },
        "weights": weights_record,
        "preprocessing": pre.to_dict(),
        "labels": None,
        "io": io,
        "export": {
            "opset": options.opset,
            "exporter": "torch.onnx dynamo",
            "seconds": round(export_seconds, 2),
        },
        "parity": parity,
        "artifacts": {},
    }
    if labels is not None:
        atomic_write_text(out / "labels.txt", "\n".join(labels) + "\n")
        manifest["labels"] = "labels.txt"
    bundle = Bundle.create(out, Manifest.model_validate(manifest))
    _set_metadata(onnx_path, bundle)
    bundle.save()
    bundle.add_artifact(
        onnx_key("fp32"), onnx_file("fp32"), kind="onnx", precision="fp32", opset=options.opset
    )
    if not parity["passed"]:
        raise CheckFailedError(
            f"ONNX Runtime and PyTorch disagree (max rel diff {parity['worst_max_rel']:.2e} > "
            f"{PARITY_MAX_REL:g} or cosine {parity['worst_cosine']:.6f} < {PARITY_MIN_COSINE}); "
            f"figures in {out / 'manifest.json'}"
        )
    return bundle


def export_onnx(model: Any, dest: Path, options: ExportOptions) -> None:
    """Run the dynamo exporter on `model` and save one self-contained ONNX file at `dest`."""
    import torch

    _quiet_exporter_logs()
    size = options.image_size
    batch = options.batch or options.check_batch
    example = torch.randn(batch, 3, size, size)
    dims: dict[int, Any] = {}
    if options.batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if options.dense:
        # Keep the spatial dims dynamic in steps of 32 so every size keeps the pool arithmetic exact.
        dims[2] = 32 * torch.export.Dim("h32", min=7, max=128)
        dims[3] = 32 * torch.export.Dim("w32", min=7, max=128)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": dims} if dims else None,
            opset_version=options.opset,
            external_data=False,
            verbose=False,
        )
    except Exception as exc:
        raise InputError(f"the ONNX exporter failed: {str(exc).splitlines()[0][:300]}") from exc
    program.save(str(dest))


def finish_onnx(path: Path, spec: ModelSpec, options: ExportOptions) -> dict[str, Any]:
    """Name the dynamic axes, check the model, infer shapes; return the io description."""
    import onnx

    model = onnx.load(str(path))
    written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if written != options.opset:
        raise InputError(
            f"the exporter wrote opset {written}, not the requested {options.opset}: use --opset {written}"
        )
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if options.batch is None:
            dims[0].dim_param = "batch"
        if options.dense and value.name == INPUT_NAME:
            dims[2].dim_param, dims[3].dim_param = "height", "width"

    def describe(value: Any) -> dict[str, Any]:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        return {"name": value.name, "shape": dims, "dtype": dtype}

    io = {
        "inputs": [describe(v) for v in model.graph.input],
        "outputs": [describe(v) for v in model.graph.output],
    }
    onnx.save(model, str(path))
    del model
    # Check and infer on the file: the in-memory forms copy the whole model (measured on VGG-16:
    # +1 GB over the exporter's own peak); the path forms work on it in C++ once.
    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    return io


def check_parity(model: Any, onnx_path: Path, options: ExportOptions) -> dict[str, Any]:
    """Run seeded inputs through PyTorch and ONNX Runtime CPU at every exported size."""
    import torch

    ort = import_ort()
    session = cpu_session(onnx_path)
    sizes = [options.image_size]
    if options.dense:
        sizes += [s for s in (*DENSE_CHECK_SIZES, *options.extra_sizes) if s not in sizes]
    batches = [options.batch] if options.batch else [1, options.check_batch + 1]
    rng = np.random.default_rng(options.seed)
    checks = []
    for size in sizes:
        for batch in batches:
            x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            figures = compare_arrays(ref, got)
            passed = figures["max_rel"] <= PARITY_MAX_REL and figures["cosine"] >= PARITY_MIN_COSINE
            checks.append(
                {"batch": batch, "height": size, "width": size, **figures, "passed": passed}
            )
            log.info(
                "parity b=%d %dx%d: max rel %.2e, cosine %.7f",
                batch,
                size,
                size,
                figures["max_rel"],
                figures["cosine"],
            )
    return {
        "reference": "torch (cpu, fp32)",
        "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        "thresholds": {"max_rel": PARITY_MAX_REL, "min_cosine": PARITY_MIN_COSINE},
        "checks": checks,
        "worst_max_rel": max(c["max_rel"] for c in checks),
        "worst_cosine": min(c["cosine"] for c in checks),
        "passed": all(c["passed"] for c in checks),
    }


def _set_metadata(onnx_path: Path, bundle: Bundle) -> None:
    """Record what the model is and how to feed it inside the ONNX file itself."""
    import onnx

    model = onnx.load(str(onnx_path))
    m = bundle.manifest.model
    weights = bundle.manifest.weights.to_json_dict()
    entries = {
        "model": m.name,
        "config": m.config,
        "batch_norm": json.dumps(m.batch_norm),
        "num_classes": str(m.num_classes),
        "dense": json.dumps(m.dense),
        "image_size": str(m.image_size),
        "preprocessing": json.dumps(bundle.manifest.preprocessing.to_json_dict()),
        "weights": json.dumps({k: v for k, v in weights.items() if k != "path"}),
        "version": __version__,
    }
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    model.doc_string = f"{m.name} (VGG config {m.config}) exported by vggdeploy {__version__}"
    with atomic_path(onnx_path) as tmp:
        onnx.save(model, str(tmp))


def _read_labels(path: str, spec: ModelSpec) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"labels file {p} does not exist: give a text file with one class name a line"
        )
    labels = [line.strip() for line in p.read_text("utf-8").splitlines() if line.strip()]
    if len(labels) != spec.num_classes:
        raise InputError(
            f"labels file {p} has {len(labels)} names but the model has {spec.num_classes} classes"
        )
    return labels


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names shipped with the package, in output order."""
    from importlib import resources

    text = resources.files("vggdeploy").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _quiet_exporter_logs() -> None:
    # The exporter warns once per missing torchvision op it could register; irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # torch 2.13's own exporter trips its pytree deprecation (copying a LeafSpec): not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
