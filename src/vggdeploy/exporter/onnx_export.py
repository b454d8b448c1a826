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

import contextlib
import copy
import functools
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import (
    MANIFEST_NAME,
    Bundle,
    atomic_path,
    atomic_write_text,
    library_versions,
    sha256_bytes,
    sha256_file,
)
from vggdeploy.errors import CheckFailedError, InputError, WeightsError
from vggdeploy.exporter.output_dir import check_output_dir, move_into_place, staging
from vggdeploy.metrics import TOLERANCES, compare_arrays
from vggdeploy.models import ModelSpec, check_image_size, count_flops, count_parameters
from vggdeploy.onnxutil import Background, onnx_metadata
from vggdeploy.ortsession import cpu_session, import_ort
from vggdeploy.precision import onnx_file, onnx_key
from vggdeploy.preprocess import Preprocessing
from vggdeploy.records import Manifest
from vggdeploy.weights import WeightsSource, check_seed, load_model

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Parity thresholds between ONNX Runtime CPU and PyTorch (fp32 both): relative to the output's
# largest magnitude, and cosine similarity of the flattened outputs; fp32's tolerance, whose
# one home is vggdeploy.metrics.TOLERANCES.
PARITY_MAX_REL = TOLERANCES["fp32"]["max_rel"]
PARITY_MIN_COSINE = TOLERANCES["fp32"]["cosine"]
DENSE_CHECK_SIZES = (224, 256, 320)
#: The largest batch: the dynamic axis's upper bound, and what a fixed batch may be.
MAX_BATCH = 4096


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
        for name, value in (("batch", self.batch), ("check batch", self.check_batch)):
            if value is None and name == "batch":
                continue  # dynamic
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} {value!r} must be a positive integer or 'dynamic'")
            if value > MAX_BATCH:
                raise InputError(
                    f"{name} {value} is too large: at most {MAX_BATCH} (the dynamic batch axis's "
                    "own limit; the export and parity check run a batch this size)"
                )
        check_seed(self.seed)
        for size in self.extra_sizes:
            check_image_size(size, dense=True)
        # Below 18 the dynamo exporter silently keeps 18 when its down-conversion fails (it does
        # for VGG's Pad and ReduceMean), so 17 would be a request we cannot keep.
        if not 18 <= self.opset <= 23:
            raise InputError(
                f"opset {self.opset} is not supported: use 18 to 23 (18 is the default)"
            )


def _interrupted(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is anywhere in `exc`'s cause/context chain."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:  # a chain can loop back
        seen.append(current)
        current = current.__cause__ or current.__context__
    return any(isinstance(e, KeyboardInterrupt) for e in seen)


def export_bundle(
    spec: ModelSpec,
    weights: WeightsSource,
    out: str | os.PathLike[str],
    options: ExportOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Export `spec` with `weights` to `out/model.onnx`, check parity, write the manifest.

    `progress(line)` is called as each step starts (weights, trace and export, parity, manifest).

    The bundle is built in a hidden `.NAME.export-*.partial` folder and moved into place only
    once the export, the parity check and the manifest are all written, so an error, Ctrl-C or
    a full disk leaves OUT as it was and removes the staging folder:

    - OUT absent or an empty folder: the new bundle becomes OUT. A parity failure still puts it
      in place, with the figures in its manifest, and raises CheckFailedError (exit 2).
    - OUT an existing bundle, with `force`: the old bundle is renamed aside, the new one renamed
      in, the old one removed. A parity failure does not replace a bundle: the old one stays
      untouched, the failing one is discarded and its figures are in the error line (exit 2).
    - OUT a non-empty folder that is not a bundle: refused, with or without `force`.

    A symbolic link as OUT stands for the folder it points to.
    """
    options = options or ExportOptions()
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        out = out.resolve()
    labels = _read_labels(options.labels, spec) if options.labels else None
    replace = check_output_dir(out, options.force)

    step = progress or (lambda _line: None)
    started = time.perf_counter()
    # Before any folder is made: a run that cannot start changes nothing.
    step(f"loading {spec.name} weights ({weights.kind})")
    model, weights_record = load_model(spec, weights, dense=options.dense)
    if weights_record["source"] == "imagenet" and labels is None:
        labels = imagenet_labels()
    with staging(out, replace) as stage:
        staged = _write_bundle(stage, model, spec, weights_record, labels, options, started, step)
        parity = staged.manifest.parity
        if not parity["passed"] and replace:
            raise CheckFailedError(f"{_disagree(parity)}; the bundle in {out} was not replaced")
        if replace and not check_output_dir(out, options.force):
            raise InputError(f"output folder {out} changed while exporting: run again")
        move_into_place(stage, out, replace)
    bundle = Bundle(out, staged.manifest)
    if not parity["passed"]:
        raise CheckFailedError(f"{_disagree(parity)}; figures in {out / MANIFEST_NAME}")
    return bundle


def _disagree(parity: dict[str, Any]) -> str:
    return (
        f"ONNX Runtime and PyTorch disagree (max rel diff {parity['worst_max_rel']:.2e} > "
        f"{PARITY_MAX_REL:g} or cosine {parity['worst_cosine']:.6f} < {PARITY_MIN_COSINE})"
    )


def _write_bundle(
    root: Path,
    model: Any,
    spec: ModelSpec,
    weights_record: dict[str, Any],
    labels: list[str] | None,
    options: ExportOptions,
    started: float,
    step: Callable[[str], None] = lambda _line: None,
) -> Bundle:
    """Write the ONNX file, labels and manifest of a bundle into the (staging) folder `root`.

    The model is serialised once (axis names and metadata are set on the exporter's graph
    first); while those bytes are written, ONNX Runtime builds its parity session from them,
    and they are hashed and checked."""
    pre = options.preprocessing or Preprocessing.for_size(options.image_size)
    if weights_record["source"] == "file":  # first: the ONNX metadata names the copy
        weights_record = copy_weights(root, weights_record)
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
    }
    onnx_path = root / onnx_file("fp32")
    with atomic_path(onnx_path) as tmp, contextlib.ExitStack() as alongside:
        # PyTorch's parity outputs, on one core, while the exporter traces on the other. On a
        # copy: while tracing, the exporter swaps the module's parameters for fake tensors.
        twin = [copy.deepcopy(model)]
        reference = alongside.enter_context(
            Background(lambda: reference_outputs(twin.pop(), options, threads=1))
        )
        helpers: dict[str, Background] = {}

        def serialized(data: bytes) -> None:
            # While the main thread writes these bytes, threads build ONNX Runtime's session
            # from them (no weight prepacking: it runs two batches) and run the parity check,
            # and hash then check them. ONNX Runtime, the hash and the write release the GIL;
            # the checker holds it, so it starts last, once the others are under way.
            def session() -> Any:
                return cpu_session(data, prepack=False)

            def parity() -> dict[str, Any]:
                runner = helpers["session"].result
                return check_parity(model, tmp, options, runner, reference.result())

            def hash_and_check() -> str:
                digest = sha256_bytes(data)
                finish_onnx(data, typed=True)
                return digest

            jobs = {"session": session, "parity": parity, "sha256": hash_and_check}
            for name, work in jobs.items():
                helpers[name] = alongside.enter_context(Background(work))

        step("tracing the model and exporting it to ONNX (torch.onnx, dynamo)")
        exported = export_onnx(model, tmp, options, onnx_metadata(manifest), serialized)
        step(f"checking ONNX Runtime against PyTorch ({onnx_file('fp32')})")
        if helpers:
            parity = helpers["parity"].result()
        else:  # shape inference rewrites the file: check, then parse the file
            finish_onnx(tmp, typed=False)
            session = functools.partial(cpu_session, tmp, prepack=False)
            parity = check_parity(model, tmp, options, session, reference.result())
        digest = helpers["sha256"].result() if "sha256" in helpers else None
    step("writing the manifest")
    seconds = round(time.perf_counter() - started, 2)
    export = {"opset": options.opset, "exporter": "torch.onnx dynamo", "seconds": seconds}
    manifest.update(io=exported["io"], export=export, parity=parity, artifacts={})
    if labels is not None:
        atomic_write_text(root / "labels.txt", "\n".join(labels) + "\n")
        manifest["labels"] = "labels.txt"
    bundle = Bundle.create(root, Manifest.model_validate(manifest))
    bundle.save()
    for rel in filter(None, (manifest["labels"], manifest["weights"].get("path"))):
        bundle.add_file(rel)
    bundle.add_artifact(
        onnx_key("fp32"),
        onnx_file("fp32"),
        known_sha256=digest,
        kind="onnx",
        precision="fp32",
        opset=options.opset,
    )
    return bundle


def export_onnx(
    model: Any,
    dest: Path,
    options: ExportOptions,
    metadata: Any = None,
    on_serialized: Any = None,
) -> dict[str, Any]:
    """Export `model`, name the dynamic axes, set `metadata`, write one self-contained file;
    return {"io": ..., "value_info_complete": the exporter typed and shaped every tensor}.

    `on_serialized(data)` gets the file's bytes before they are written, when the exporter
    typed every tensor (so the checker will not rewrite the file): the caller can start work
    on the same bytes while they are written."""
    import torch

    _quiet_exporter_logs()
    size = options.image_size
    batch = options.batch or options.check_batch
    example = torch.randn(batch, 3, size, size)
    dims: dict[int, Any] = {}
    if options.batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_BATCH)
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
        # The exporter wraps what it meets while tracing: a Ctrl-C must stay a Ctrl-C.
        if _interrupted(exc):
            raise KeyboardInterrupt from None
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise InputError(f"the ONNX exporter failed: {lines[0][:300]}") from exc
    written = program.model.opset_imports.get("", program.model.opset_imports.get("ai.onnx"))
    if written != options.opset:
        raise InputError(
            f"the exporter wrote opset {written}, not the requested {options.opset}: use --opset {written}"
        )
    io = _name_axes(program.model.graph, options)
    graph, meta = program.model.graph, program.model.metadata_props
    if metadata:
        meta.clear()
        meta.update(metadata["props"])
        program.model.doc_string = metadata["doc_string"]
    complete = all(v.type and v.shape is not None for n in graph for v in n.outputs if v.name)
    data = _serialize(program.model)
    del program, graph, meta  # the exporter's graph: only the bytes are needed from here on
    if on_serialized is not None and complete:
        on_serialized(data)
    dest.write_bytes(data)
    return {"io": io, "value_info_complete": complete}


def _serialize(model: Any) -> bytes:
    """The bytes `ONNXProgram.save` writes for a self-contained file (what `onnx_ir.save`
    does: the IR model to a ModelProto, then protobuf's serialiser), without the file."""
    import onnx_ir

    proto = onnx_ir.serde.serialize_model(model)
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise InputError(
            f"the exported model cannot be one self-contained ONNX file ({exc}): "
            "use a smaller model (--width-divisor, --hidden)"
        ) from None


def _name_axes(graph: Any, options: ExportOptions) -> dict[str, Any]:
    """Name the batch axis (and a dense model's height/width); return the io description."""
    from onnx_ir import Shape, SymbolicDim

    for value in [*graph.inputs, *graph.outputs]:
        dims = list(value.shape.dims)
        if options.batch is None:
            dims[0] = "batch"
        if options.dense and value.name == INPUT_NAME:
            dims[2], dims[3] = "height", "width"
        value.shape = Shape(dims)

    def describe(value: Any) -> dict[str, Any]:
        dims = [(d.value or 0) if isinstance(d, SymbolicDim) else int(d) for d in value.shape]
        return {"name": value.name, "shape": dims, "dtype": value.dtype.numpy().name}

    return {"inputs": [*map(describe, graph.inputs)], "outputs": [*map(describe, graph.outputs)]}


def finish_onnx(source: Path | bytes, typed: bool = False) -> None:
    """The checker with full_check, which runs strict type-checked shape inference (what
    `infer_shapes_path` ran), on a file or its bytes; the file is rewritten only if the
    exporter left a tensor untyped (`typed` False; then `source` must be the path). Path or
    bytes: the ModelProto forms copy the model (+1 GB on VGG-16)."""
    import onnx

    onnx.checker.check_model(source if isinstance(source, bytes) else str(source), full_check=True)
    if not typed:
        path = str(source)
        onnx.shape_inference.infer_shapes_path(path, path, check_type=True, strict_mode=True)


def reference_outputs(
    model: Any, options: ExportOptions, threads: int | None = None
) -> list[tuple[int, int, Any, Any]]:
    """(size, batch, seeded input, PyTorch's output) at every exported size and checked batch.

    `threads`: PyTorch's intra-op threads meanwhile (the export runs this on one core while
    the graph is serialised on the other); None keeps PyTorch's setting."""
    import torch

    sizes = [options.image_size]
    if options.dense:
        sizes += [s for s in (*DENSE_CHECK_SIZES, *options.extra_sizes) if s not in sizes]
    batches = [options.batch] if options.batch else [1, options.check_batch + 1]
    rng = np.random.default_rng(options.seed)
    cases = []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for size in sizes:
            for batch in batches:
                x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
                with torch.no_grad():
                    cases.append((size, batch, x, model(torch.from_numpy(x)).numpy()))
    finally:
        torch.set_num_threads(before)
    return cases


def check_parity(
    model: Any, onnx_path: Path, options: ExportOptions, session: Any = None, cases: Any = None
) -> dict[str, Any]:
    """Run seeded inputs through PyTorch and ONNX Runtime CPU at every exported size.

    `session`: returns the ONNX Runtime session on `onnx_path` (None: built here); `cases`:
    `reference_outputs(model, options)` when already computed."""
    ort = import_ort()
    cases = cases if cases is not None else reference_outputs(model, options)
    runner = session() if session is not None else cpu_session(onnx_path)
    checks = []
    for size, batch, x, ref in cases:
        got = runner.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        figures = compare_arrays(ref, got)
        passed = figures["max_rel"] <= PARITY_MAX_REL and figures["cosine"] >= PARITY_MIN_COSINE
        checks.append({"batch": batch, "height": size, "width": size, **figures, "passed": passed})
        log.info(
            "parity b=%d %dx%d: max rel %.2e, cosine %.7f",
            *(batch, size, size, figures["max_rel"], figures["cosine"]),
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


def copy_weights(root: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Copy a weights file into the bundle (`weights.<suffix>`), so the torch reference reads it
    from inside the bundle boundary and `pack` carries it; returns the record naming the copy.
    The copy must hash to the sha256 of the file the model was loaded from."""
    import shutil

    source = Path(record["path"])
    rel = "weights" + source.suffix.lower()
    with atomic_path(root / rel) as tmp:
        shutil.copyfile(source, tmp)
        if sha256_file(tmp) != record["sha256"]:
            raise WeightsError(
                f"weights file {source} changed while the bundle was exported: export again"
            )
    return {**record, "path": rel}


def _read_labels(path: str, spec: ModelSpec) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"labels file {p} does not exist: give a text file with one class name a line"
        )
    try:
        text = p.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"labels file {p} is not UTF-8 text (byte {exc.start}): save it as UTF-8, one class "
            "name a line"
        ) from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
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
