"""Commands that ship a bundle: pack, unpack, package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vggdeploy.cli_options import (
    CONTEXT,
    emit,
    json_option,
    parse_int_list,
    parse_precisions,
    precision_option,
    progress_wanted,
)
from vggdeploy.errors import InputError

# -- shipping: pack, unpack, package ----------------------------------------------------------


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

    with byte_progress(enabled=progress_wanted(json_path)) as progress:
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

    with byte_progress(enabled=progress_wanted(json_path)) as progress:
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
