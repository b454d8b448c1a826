"""Commands that ship a bundle: pipeline, pack, unpack, package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from vggdeploy.cli_options import (
    CONTEXT,
    echo_text,
    emit,
    emit_json,
    json_option,
    model_size_options,
    parse_int_list,
    parse_precisions,
    precision_option,
)
from vggdeploy.errors import InputError

# -- shipping: pipeline, inspect, pack, unpack, package (issue 7) -----------------------------


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run folder (bundle + report)."
)
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="'random' (seeded), 'imagenet', or a .pth/.pt/.safetensors file.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and sampling.")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False),
    help="Images for calibration, FP16 ranges and validation (default: the photographs shipped "
    "with vggdeploy for calibration; validation then judges like `vggdeploy validate`).",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    metavar="P[,P...]",
    help="Precisions to make, fp32 among them (default: fp32,fp16,int8; int8 makes both INT8 "
    "files, for TensorRT and ONNX Runtime; repeatable or comma-separated).",
)
@click.option("--image-size", default=224, show_default=True, help="Input height and width.")
@click.option(
    "--batch",
    default="1,8",
    show_default=True,
    metavar="B[,B...]",
    help="Batch sizes to benchmark.",
)
@click.option(
    "--bench-iterations", default=10, show_default=True, help="Timed calls per benchmark case."
)
@click.option(
    "--bench-runtime",
    "bench_runtimes",
    multiple=True,
    metavar="SPEC",
    help="Runtimes to benchmark (default: onnxruntime,tensorrt; unavailable ones are listed as "
    "skipped; repeatable or comma-separated). SPEC: NAME[:VARIANT...][@PRECISION] as in "
    "`vggdeploy bench --runtime`.",
)
@click.option(
    "--calib-samples",
    type=int,
    help="Calibration images (default: 3/4 of the images, at most 64; the rest are held out).",
)
@click.option(
    "--calib-method",
    type=click.Choice(["entropy", "minmax", "percentile"]),
    default="entropy",
    show_default=True,
)
@click.option(
    "--validate-samples",
    type=int,
    help="Samples compared in validation (default: as `vggdeploy validate`: 16 random inputs, "
    "every image).",
)
@click.option("--force", is_flag=True, help="Redo every stage, even those up to date.")
@model_size_options()
@json_option("the run's report (report.json)")
def pipeline(
    model: str,
    out: str,
    weights: str,
    seed: int,
    images: str | None,
    precisions: tuple[str, ...],
    image_size: int,
    batch: str,
    bench_iterations: int,
    bench_runtimes: tuple[str, ...],
    calib_samples: int | None,
    calib_method: str,
    validate_samples: int | None,
    force: bool,
    num_classes: int | None,
    width_divisor: int | None,
    hidden: int | None,
    json_path: str | None,
) -> None:
    """Export, validate, convert/calibrate, build, validate all, bench, and report, in OUT.

    \b
    The main job on any machine, e.g. a CPU laptop in a few minutes:
      vggdeploy pipeline vgg16 --out runs/vgg16
    OUT/bundle is the bundle; OUT/report.md and OUT/report.json say what was made and how it
    agrees and runs. Validation judges the bundle as `vggdeploy validate OUT/bundle` does.
    TensorRT engines are built only where TensorRT and a GPU are present (otherwise the build
    stage says why it skipped). Running again only redoes stages whose inputs changed (by
    sha256); --force redoes all. Exits with code 2 if a check failed.
    """
    from vggdeploy.cli_options import comma_list
    from vggdeploy.pipeline import MADE_PRECISIONS, PipelineOptions, run_pipeline
    from vggdeploy.report.pipeline import RichPipelineReporter, render_summary, write_report

    batches = parse_int_list(batch, "--batch")
    if not batches:
        raise InputError(f"--batch {batch!r} must list positive integers, e.g. 1,8")
    options = PipelineOptions(
        weights=weights,
        seed=seed,
        image_size=image_size,
        precisions=tuple(parse_precisions(precisions, MADE_PRECISIONS)) or MADE_PRECISIONS,
        images=images,
        calib_samples=calib_samples,
        calib_method=calib_method,
        batches=batches,
        bench_iterations=bench_iterations,
        **({"bench_runtimes": tuple(comma_list(bench_runtimes))} if bench_runtimes else {}),
        validate_samples=validate_samples,
        force=force,
        num_classes=num_classes,
        width_divisor=width_divisor,
        hidden=hidden,
    )
    argv = sys.argv[1:] if sys.argv and Path(sys.argv[0]).name.startswith("vggdeploy") else None
    to_stdout = json_path == "-"
    echo = (lambda text: echo_text(text, err=True)) if to_stdout else echo_text
    reporter = RichPipelineReporter(echo)
    data = None
    try:
        data = run_pipeline(model, out, options, reporter=reporter, argv=argv)
    finally:
        reporter.close()
        report_md = write_report(out)  # also after a failed check: the report says what failed
        if report_md is not None:
            from vggdeploy.pipeline import REPORT_JSON

            report = json.loads((Path(out) / REPORT_JSON).read_text("utf-8"))
            if json_path:
                emit_json(report, json_path)
            if data is None:
                echo(f"report: {report_md} (and {REPORT_JSON})")
            else:
                echo(render_summary(report, out))


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.tar.gz to write."
)
@click.option(
    "--no-engines",
    is_flag=True,
    help="Leave TensorRT engines out (they only run on the GPU and TensorRT that built them).",
)
@json_option("what was written")
def pack(bundle: str, output: str, no_engines: bool, json_path: str | None) -> None:
    """Pack BUNDLE into one checksummed archive to copy to another machine (e.g. a Jetson).

    \b
    Every artifact is checked against its sha256 as it is packed (a mismatch, a full disk or
    Ctrl-C leaves no archive; the archive may not be written inside BUNDLE); the packed
    manifest has no absolute paths of this machine; SHA256SUMS inside works with
    `sha256sum -c`. On the target:
      vggdeploy unpack vgg16.tar.gz -o bundles/vgg16
      vggdeploy build bundles/vgg16 --precision fp16     (engines are built per device)
    """
    from vggdeploy.packaging import pack_bundle
    from vggdeploy.report.packaging import format_pack
    from vggdeploy.report.progress import byte_progress

    with byte_progress() as progress:
        result = pack_bundle(bundle, output, include_engines=not no_engines, progress=progress)
    emit(format_pack(result), _jsonable(result), json_path)


@click.command(context_settings=CONTEXT)
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Bundle folder to create.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing bundle at the output folder, once the new one is verified "
    "(a folder that is not a bundle is never replaced).",
)
@json_option("what was written")
def unpack(archive: str, output: str, force: bool, json_path: str | None) -> None:
    """Unpack an archive made by `vggdeploy pack` and verify every sha256.

    The archive is untrusted: before anything is written, every member must be a plain file
    that its SHA256SUMS lists, with the size its manifest records (no links, devices, absolute
    or '..' names). It is unpacked into a temporary folder beside the output, checked, and only
    then moved into place; a failure or Ctrl-C leaves the output folder as it was.
    """
    from vggdeploy.packaging import unpack_bundle
    from vggdeploy.report.packaging import format_unpack
    from vggdeploy.report.progress import byte_progress

    with byte_progress() as progress:
        result = unpack_bundle(archive, output, force=force, progress=progress)
    data = {"bundle": str(result.root), "manifest": result.manifest.to_json_dict()}
    emit(format_unpack(result), data, json_path)


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["triton", "deepstream", "kserve"]),
    default="triton",
    show_default=True,
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Model repository (triton) or package folder (deepstream, kserve).",
)
@click.option("--name", help="Base model name (default: the bundle's model, e.g. vgg16).")
@click.option(
    "--max-batch",
    type=int,
    help="max_batch_size (default 32, or the engine profile's max if smaller).",
)
@click.option("--instances", default=1, show_default=True, help="Instances per model.")
@click.option("--dynamic-batching", is_flag=True, help="Let Triton batch requests together.")
@click.option("--preferred-batch", help="Preferred batch sizes for the dynamic batcher, e.g. 4,8.")
@click.option(
    "--max-queue-delay", default=100, show_default=True, help="Dynamic batcher delay (µs)."
)
@precision_option("Only the artifacts of these precisions (default: all)")
@click.option("--backend", default="onnx,trt", show_default=True, help="onnx, trt, or both.")
@click.option(
    "--kind",
    type=click.Choice(["auto", "gpu", "cpu"]),
    default="auto",
    show_default=True,
    help="Instance kind for the ONNX models (engines are always KIND_GPU).",
)
@click.option(
    "--engines-from",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Another copy of BUNDLE built on another GPU; its engines join (repeatable).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace models of the same name in --out (deepstream: replace a non-empty --out, "
    "once the new package is complete).",
)
@click.option("--batch", type=int, help="deepstream: batch-size (within the engine's profile).")
@click.option(
    "--bake-normalization",
    is_flag=True,
    help="deepstream: write an ONNX that normalizes raw 0..255 pixels exactly (per-channel "
    "mean/std), with net-scale-factor=1 and offsets 0.",
)
@click.option(
    "--color-format",
    type=click.Choice(["rgb", "bgr"], case_sensitive=False),
    help="deepstream: model-color-format (default: the bundle's channel order; another order "
    "needs --bake-normalization).",
)
@click.option(
    "--maintain-aspect-ratio",
    "--keep-aspect-ratio",
    is_flag=True,
    help="deepstream: scale frames to fit and pad (symmetric) instead of stretching.",
)
@click.option("--secondary", is_flag=True, help="deepstream: process-mode=2 (classify objects).")
@click.option(
    "--classifier-threshold",
    type=float,
    default=0.0,
    show_default=True,
    help="deepstream: minimum top output value (a logit) for a label.",
)
@click.option("--gpu-id", type=int, default=0, show_default=True, help="deepstream: gpu-id.")
@click.option(
    "--storage-uri",
    help="kserve: where the cluster reads OUT/repository (e.g. s3://bucket/vgg16, "
    "pvc://models/vgg16); required.",
)
@click.option("--namespace", help="kserve: the Kubernetes namespace of both resources.")
@click.option("--gpus", type=int, default=1, show_default=True, help="kserve: nvidia.com/gpu.")
@json_option("what was written")
def package(
    bundle: str,
    fmt: str,
    out: str,
    name: str | None,
    max_batch: int | None,
    instances: int,
    dynamic_batching: bool,
    preferred_batch: str | None,
    max_queue_delay: int,
    precisions: tuple[str, ...],
    backend: str,
    kind: str,
    engines_from: tuple[str, ...],
    force: bool,
    batch: int | None,
    bake_normalization: bool,
    color_format: str | None,
    maintain_aspect_ratio: bool,
    secondary: bool,
    classifier_threshold: float,
    gpu_id: int,
    storage_uri: str | None,
    namespace: str | None,
    gpus: int,
    json_path: str | None,
) -> None:
    """Write a Triton model repository, a DeepStream nvinfer package or KServe manifests.

    \b
    One model per artifact, named after its artifact key: <name>_onnx_<precision> (platform
    onnxruntime_onnx) and <name>_trt_<precision> (platform tensorrt_plan; one plan per
    compute capability via cc_model_filenames when several engines are built). Serve it with:
      docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 \\
        -v $PWD/REPO:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models
    --format deepstream writes OUT/config_infer_primary.txt (a Gst-nvinfer classifier config),
    labels.txt and the ONNX of --precision (one; default fp32), plus its engine when the
    bundle has one. nvinfer has one scale for all channels: by default the closest single
    scale is used (a warning says how far off); --bake-normalization makes it exact.
    --format kserve writes OUT/repository (the Triton repository of the bundle's engines),
    OUT/servingruntime.yaml (Triton, the image whose TensorRT built the engines) and
    OUT/inferenceservice.yaml (nvidia.com/gpu, scheduled on the engines' GPU product), both
    checked with the KServe SDK's models; a bundle without engines is refused.
    """
    kserve_only = {"--storage-uri": storage_uri is not None, "--namespace": namespace is not None}
    if fmt != "kserve" and any(kserve_only.values()):
        flags = ", ".join(f for f, used in kserve_only.items() if used)
        raise InputError(f"{flags}: only for --format kserve")
    if fmt == "deepstream":
        from vggdeploy.packaging import DeepStreamOptions, package_deepstream
        from vggdeploy.report.packaging import format_deepstream

        chosen = parse_precisions(precisions)
        if len(chosen) > 1:
            raise InputError(f"--precision {','.join(chosen)}: --format deepstream takes one")
        ds_options = DeepStreamOptions(
            precision=chosen[0] if chosen else "fp32",
            batch=batch,
            bake_normalization=bake_normalization,
            color_format=color_format,
            maintain_aspect_ratio=maintain_aspect_ratio,
            secondary=secondary,
            classifier_threshold=classifier_threshold,
            gpu_id=gpu_id,
            force=force,
        )
        written = package_deepstream(bundle, out, ds_options)
        emit(format_deepstream(written), written.to_dict(), json_path)
        return
    ds_only = {
        "--batch": batch is not None,
        "--bake-normalization": bake_normalization,
        "--color-format": color_format is not None,
        "--maintain-aspect-ratio": maintain_aspect_ratio,
        "--secondary": secondary,
    }
    given = [flag for flag, used in ds_only.items() if used]
    if given:
        raise InputError(f"{', '.join(given)}: only for --format deepstream")
    from vggdeploy.cli_options import comma_list
    from vggdeploy.packaging import TritonOptions, package_triton
    from vggdeploy.report.packaging import format_triton

    options = TritonOptions(
        name=name,
        max_batch=max_batch,
        instances=instances,
        dynamic_batching=dynamic_batching,
        preferred_batch=parse_int_list(preferred_batch, "--preferred-batch"),
        max_queue_delay_us=max_queue_delay,
        precisions=tuple(parse_precisions(precisions)),
        backends=tuple(comma_list(backend)),
        onnx_kind=kind,
        force=force,
    )
    if fmt == "kserve":
        from vggdeploy.packaging.kserve import KServeOptions, package_kserve
        from vggdeploy.report.packaging import format_kserve

        if not storage_uri:
            raise InputError(
                "--format kserve needs --storage-uri: where the cluster reads the repository, "
                "e.g. s3://bucket/vgg16"
            )
        if engines_from:
            raise InputError("--engines-from: not with --format kserve (one GPU product)")
        k_options = KServeOptions(
            storage_uri=storage_uri,
            name=name,
            namespace=namespace,
            gpus=gpus,
            precisions=options.precisions,
        )
        written_k = package_kserve(bundle, out, k_options, options)
        emit(format_kserve(written_k), written_k.to_dict(), json_path)
        return
    result = package_triton(bundle, out, options, engines_from=engines_from)
    emit(format_triton(result), result.to_dict(), json_path)


def _jsonable(result: Any) -> dict[str, Any]:
    """A result dataclass as JSON-ready data (paths as strings)."""
    import dataclasses

    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}
