"""Commands that make artifacts: export, convert, calibrate, build."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from vggdeploy import precision as P
from vggdeploy.cli_options import (
    CONTEXT,
    batch_option,
    echo_text,
    emit,
    emit_json,
    export_model_options,
    image_size_option,
    json_option,
    log,
    model_from_options,
    model_size_options,
    opset_option,
    parse_export_batch,
    progress_wanted,
    raise_if_skipped,
    skip_printer,
    strict_option,
    weights_option,
)
from vggdeploy.report.escape import shown

# -- export -----------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("model")
@weights_option()
@click.option("--seed", default=0, show_default=True, help="Seed for random weights.")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Bundle folder to create."
)
@image_size_option()
@click.option(
    "--batch", default="dynamic", show_default=True, help="'dynamic' or a fixed batch size."
)
@opset_option()
@click.option(
    "--dense",
    is_flag=True,
    help="Export the paper's fully convolutional form with dynamic height/width.",
)
@model_size_options()
@export_model_options()
@json_option("the bundle's manifest")
@click.option(
    "--force",
    is_flag=True,
    help="Replace the bundle in --out, only once the new one is complete and passes parity "
    "(a folder that is not a bundle is never replaced).",
)
def export(
    model: str,
    weights: str,
    seed: int,
    out: str,
    image_size: int | None,
    batch: str,
    opset: int,
    dense: bool,
    num_classes: int | None,
    width_divisor: int | None,
    hidden: int | None,
    labels: str | None,
    resize: int | None,
    mean: str | None,
    std: str | None,
    channel_order: str | None,
    json_path: str | None,
    force: bool,
) -> None:
    """Export MODEL to a bundle: a checked ONNX file and manifest.json.

    The ONNX has a dynamic batch axis (and dynamic height/width with --dense), and is compared
    with PyTorch in ONNX Runtime at every exported size; a parity failure exits with code 2.
    The bundle is built beside --out and moved into place at the end, so a failed or
    interrupted run leaves --out as it was; with --force a failing bundle does not replace one.
    """
    # Every number is checked before anything is allocated or written.
    sizes = {"num_classes": num_classes, "width_divisor": width_divisor, "hidden": hidden}
    spec, source, pre, notes = model_from_options(
        model, weights, seed, sizes, image_size, resize, mean, std, channel_order, dense=dense
    )

    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.report.progress import progress_bar

    options = ExportOptions(
        image_size=pre.crop,
        batch=parse_export_batch(batch),
        opset=opset,
        dense=dense,
        labels=labels,
        preprocessing=pre,
        force=force,
    )
    with progress_bar(f"exporting {spec.name}", None, enabled=progress_wanted(json_path)) as bar:
        bundle = export_bundle(spec, source, Path(out), options, progress=bar.step)
    parity = bundle.manifest.parity
    text = (
        f"exported {spec.name} to {bundle.artifact_path('onnx.fp32')} in "
        f"{bundle.manifest.export['seconds']:.1f} s; "
        f"parity vs PyTorch: max rel diff {parity['worst_max_rel']:.1e}, cosine {parity['worst_cosine']:.6f} "
        f"over {len(parity['checks'])} checks - passed"
    )
    emit("\n".join([*notes, text]), bundle.manifest.to_json_dict(), json_path)


# -- calibration and conversion: calibrate, convert, evaluate (issue 4) -----------------------


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--images",
    required=True,
    type=click.Path(),
    help="Folder of calibration images (searched recursively; jpg, png, bmp, tiff, webp...).",
)
@click.option(
    "--method",
    default="entropy",
    show_default=True,
    help="Range method: entropy (KL search, TensorRT's), minmax, or percentile.",
)
@click.option(
    "--percentile",
    default=99.99,
    show_default=True,
    type=float,
    help="Percentile of |x| kept by --method percentile.",
)
@click.option(
    "--samples",
    default=512,
    show_default=True,
    type=int,
    help="Most calibration images to draw from --images (fewer when the folder is short: "
    "a quarter of it, up to 64, is held out first; the run says how many it used).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the image draw.")
@batch_option(16, "Images per batch.")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    help="Calibration cache file (default: calibration.cache.json in the bundle).",
)
@click.option(
    "--holdout",
    type=int,
    help="Held-out images for the int8 vs fp32 check (default: a quarter of the folder, up to "
    "64, or up to 64 of the images --samples leaves; a verdict needs 10).",
)
@click.option(
    "--sensitivity",
    is_flag=True,
    help="Measure each Conv/Gemm quantized alone (top-1 drop on --accuracy-images, else "
    "agreement with fp32 on the held-out images) and record the table.",
)
@click.option(
    "--accuracy-images",
    type=click.Path(file_okay=False),
    help="Labelled folder (one sub-folder per class) to measure top-1 on; implies --sensitivity.",
)
@click.option(
    "--max-drop",
    type=float,
    metavar="POINTS",
    help="Accuracy budget: keep the most sensitive layers float until top-1 on "
    "--accuracy-images is within POINTS of fp32 (exit 2 if that needs half the layers).",
)
@click.option(
    "--keep-float",
    multiple=True,
    metavar="NAME,...",
    help="Layers to keep float: ONNX node names or layer names (features.10, classifier.0).",
)
@click.option(
    "--weight-bits",
    type=click.Choice(["auto", "8", "7"]),
    default="auto",
    show_default=True,
    help="auto: 8, or 7 (ONNX Runtime's reduce-range remedy) when measured better on a CPU "
    "without VNNI/AMX; 8 for TensorRT-only deployments.",
)
@strict_option()
@json_option("the summary")
def calibrate(
    bundle: str,
    images: str,
    method: str,
    percentile: float,
    samples: int,
    seed: int,
    batch: int,
    cache: str | None,
    holdout: int | None,
    sensitivity: bool,
    accuracy_images: str | None,
    max_drop: float | None,
    keep_float: tuple[str, ...],
    weight_bits: str,
    strict: bool,
    json_path: str | None,
) -> None:
    """Calibrate BUNDLE on --images and write an INT8 Q/DQ ONNX (per-channel int8 weights).

    Ranges come from one streaming pass of the fp32 model (memory does not grow with
    --samples), kept in a calibration cache so a re-run with another --method skips the data
    pass. The file (Q/DQ in NVIDIA's placement, for TensorRT and ONNX Runtime) is checked
    against TensorRT's Q/DQ rules and compared with fp32 on held-out images; agreement below
    the int8 tolerance prints a warning.

    --samples is an upper bound: a quarter of the folder (at most 64) is held out first and
    up to --samples of the rest calibrate, so a folder of 80 images calibrates on 60 (the
    run says how many it used). An unreadable image is listed, left out, and the run exits 3
    (--strict: stop at the first).

    --sensitivity ranks the layers by the accuracy lost quantizing each alone; --max-drop keeps
    the most sensitive ones float until top-1 is within budget; --keep-float does it by hand.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import CalibrationOptions
    from vggdeploy.calibration.budget import AccuracyOptions, calibrate_with_accuracy, split_names
    from vggdeploy.report.calibrate import json_summary, render_calibration
    from vggdeploy.report.progress import progress_bar

    accuracy = AccuracyOptions(
        sensitivity=sensitivity,
        accuracy_images=accuracy_images,
        max_drop=max_drop,
    )
    show = log.isEnabledFor(logging.INFO) and json_path != "-"
    with progress_bar("drawing calibration images", None, enabled=show) as bar:
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.update(done[0])

        options = CalibrationOptions(
            method=method,
            samples=samples,
            seed=seed,
            percentile=percentile,
            batch_size=batch,
            cache=cache,
            holdout=holdout,
            keep_float=split_names(keep_float),
            weight_bits=weight_bits if weight_bits == "auto" else int(weight_bits),
            progress=advance,
            step=bar.step,
            strict=strict,
            on_skip=skip_printer(),
        )
        summary = calibrate_with_accuracy(
            Bundle.load(bundle), images, options, accuracy, progress=bar.update
        )
    if json_path:
        emit_json(json_summary(summary), json_path)
    if json_path != "-":
        echo_text(render_calibration(summary))
        for line in summary["warnings"]:
            click.secho(shown(f"WARNING: {line}"), fg="yellow", bold=True)
    raise_if_skipped(summary.get("skipped", []), "calibrated")


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--precision",
    required=True,
    type=click.Choice(P.made_by("convert")),
    help="Target precision (INT8 is `vggdeploy calibrate`).",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Measure activations on these images (bundle preprocessing). Default: random pixels.",
)
@click.option("--samples", default=64, show_default=True, help="Inputs to measure on.")
@click.option("--seed", default=0, show_default=True, help="Seed of the inputs / image draw.")
@batch_option(8, "Inputs per measured batch.")
@click.option(
    "--keep-fp32",
    "keep",
    multiple=True,
    metavar="OP|NODE[,...]",
    help="ONNX op types (Conv, Gemm...) or node names to keep in fp32, besides the ones whose "
    "activations overflow (repeatable or comma-separated).",
)
@click.option(
    "--headroom",
    default=2.0,
    show_default=True,
    type=click.FloatRange(1.0, 1e6),
    help="Keep a tensor in fp32 when max|activation| x headroom reaches the fp16 max 65504.",
)
@json_option("the report")
def convert(
    bundle: str,
    precision: str,
    images: str | None,
    samples: int,
    seed: int,
    batch: int,
    keep: tuple[str, ...],
    headroom: float,
    json_path: str | None,
) -> None:
    """Convert BUNDLE's ONNX to fp16: model.fp16.onnx, float32 inputs and outputs.

    The fp32 model first runs on --images (or random pixels) with every intermediate tensor
    exposed; ops whose activations overflow the fp16 range (or come within --headroom of it)
    stay in fp32 and are reported. The result passes the ONNX checker and is compared with
    fp32 on ONNX Runtime CPU - which computes fp16 ops in fp32, so that parity checks weight
    rounding only; judge fp16 numerics on the GPU.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.cli_options import comma_list
    from vggdeploy.exporter.fp16 import FILE_NAME, convert_fp16, split_keep_fp32
    from vggdeploy.report.convert import render_convert
    from vggdeploy.report.progress import progress_bar

    b = Bundle.load(bundle)
    ops, nodes = split_keep_fp32(b, comma_list(keep))
    show = log.isEnabledFor(logging.INFO) and json_path != "-"
    with progress_bar("measuring activations (batches)", None, enabled=show) as bar:
        report = convert_fp16(
            b,
            keep_fp32_ops=ops,
            keep_fp32_nodes=nodes,
            images=images,
            samples=samples,
            batch_size=batch,
            seed=seed,
            headroom=headroom,
            progress=bar.update,
        )
    if json_path:
        emit_json(report, json_path)
    if json_path != "-":
        echo_text(render_convert(report, str(b.root / FILE_NAME)))


# -- TensorRT engines: build (issue 5) --------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("bundle_dir", metavar="BUNDLE", type=click.Path(file_okay=False))
@click.option(
    "--precision",
    type=click.Choice(P.ENGINE_NAMES),
    default="fp16",
    show_default=True,
    help="Which ONNX to build: model.onnx, model.fp16.onnx (convert) or model.int8.onnx (calibrate).",
)
@click.option("--min-batch", type=int, help="Smallest batch the engine accepts (default 1).")
@click.option("--opt-batch", type=int, help="Batch TensorRT tunes for (default 8).")
@click.option("--max-batch", type=int, help="Largest batch the engine accepts (default 32).")
@click.option("--min-size", help="Dense bundles: smallest HxW (or one number), e.g. 224.")
@click.option("--opt-size", help="Dense bundles: the HxW TensorRT tunes for.")
@click.option("--max-size", help="Dense bundles: largest HxW, e.g. 512x512.")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="An optimization profile b=MIN:OPT:MAX[,h=..,w=..]; repeat for several "
    "(instead of --min/--opt/--max-*).",
)
@click.option(
    "--workspace", help="Builder workspace limit, e.g. 4GiB or 512MiB (default: TensorRT's)."
)
@click.option(
    "--opt-level", type=int, help="Builder optimization level 0-5 (TensorRT's default 3)."
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    help="Timing cache file: loaded if it exists, saved after the build.",
)
@click.option(
    "--hardware-compat",
    type=click.Choice(["none", "ampere+", "same-cc"]),
    default="none",
    show_default=True,
    help="Let the engine run on other GPUs: Ampere and later, or any GPU of the same compute capability.",
)
@click.option(
    "--version-compatible",
    is_flag=True,
    help="Let the engine run on later TensorRT versions (embeds the lean runtime).",
)
@click.option(
    "--exclude-lean-runtime",
    is_flag=True,
    help="With --version-compatible: do not embed the lean runtime (smaller; the host supplies it).",
)
@click.option("--dla-core", type=int, help="Build for this DLA core (Jetson Orin; fp16/int8).")
@click.option("--gpu-fallback", is_flag=True, help="With --dla-core: GPU runs what DLA cannot.")
@click.option("--batch", "static_batch", type=click.IntRange(min=1), help="One static batch.")
@click.option(
    "--tf32",
    is_flag=True,
    help="Let fp32 layers use TF32 (faster on Ampere+; validated with the looser tf32 limits).",
)
@click.option("--device", "device_id", default=0, show_default=True, help="CUDA device index.")
@json_option("the engine's manifest record")
@click.pass_context
def build(
    ctx: click.Context,
    bundle_dir: str,
    precision: str,
    min_batch: int | None,
    opt_batch: int | None,
    max_batch: int | None,
    min_size: str | None,
    opt_size: str | None,
    max_size: str | None,
    profiles: tuple[str, ...],
    workspace: str | None,
    opt_level: int | None,
    timing_cache: str | None,
    hardware_compat: str,
    version_compatible: bool,
    exclude_lean_runtime: bool,
    dla_core: int | None,
    gpu_fallback: bool,
    static_batch: int | None,
    tf32: bool,
    device_id: int,
    json_path: str | None,
) -> None:
    """Build a TensorRT engine (model.<precision>.engine) for this GPU from a bundle.

    Run it on the machine that will serve the engine (a Jetson included): engines are not
    portable across GPU architectures or TensorRT versions. The network is strongly typed, so
    the precision is the ONNX's; afterwards the engine inspector confirms the convolutions
    really run in that precision (exit 2 if not, and no engine is written). --dla-core N
    (Jetson Orin) reports which layers DLA runs; one it cannot is an error unless --gpu-fallback.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.exporter.engine import BuildOptions, build_engine, build_profiles, parse_size

    bundle = Bundle.load(bundle_dir)
    options = BuildOptions(
        precision=precision,
        profiles=build_profiles(
            profiles,
            batch=(min_batch, opt_batch, max_batch),
            size=(min_size, opt_size, max_size),
            static_batch=static_batch,
        ),
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        workspace=parse_size(workspace) if workspace is not None else None,
        opt_level=opt_level,
        timing_cache=Path(timing_cache) if timing_cache else None,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        exclude_lean_runtime=exclude_lean_runtime,
        tf32=tf32,
        device_id=device_id,
        verbosity=ctx.obj.get("verbose", 0) if ctx.obj else 0,
    )
    from vggdeploy.report.build import render_build

    record = build_engine(bundle, options)
    emit(render_build(record, bundle.root), record.to_json_dict(), json_path)
