"""The `vggdeploy` command line.

Every command imports its heavy libraries (torch, onnx, onnxruntime, tensorrt) inside its body,
so `vggdeploy --help` and each `<command> --help` start fast and work on any machine. User
errors (`VggDeployError`) print as one line and exit non-zero; other exceptions are bugs and
keep their traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from vggdeploy import __version__
from vggdeploy.cli_options import (
    CONTEXT,
    allow_fallback_option,
    batch_option,
    emit_json,
    json_option,
    parse_precisions,
    parse_runtimes,
    precision_option,
    runtime_option,
    threads_option,
)
from vggdeploy.errors import InputError, RuntimeUnavailableError, VggDeployError

log = logging.getLogger("vggdeploy")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries we call are chatty at INFO; show them only at -vv.
    for noisy in ("onnxscript", "onnx_ir", "torch"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vggdeploy")
@click.option(
    "-v", "--verbose", count=True, help="More log output (-vv: debug, and TensorRT's own log)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Take VGG classifiers from PyTorch to checked ONNX, INT8/FP16 and TensorRT engines.

    \b
    The whole job in one command (export, validate, FP16/INT8, engines where
    TensorRT is present, benchmark, report):
      vggdeploy pipeline vgg16 --out runs/vgg16

    \b
    Or step by step:
      vggdeploy export vgg16 --weights imagenet --out bundles/vgg16
      vggdeploy validate bundles/vgg16
      vggdeploy calibrate bundles/vgg16 --images calib/
      vggdeploy build bundles/vgg16 --precision int8      (on the target GPU)
      vggdeploy bench bundles/vgg16
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = 0 if quiet else verbose
    _setup_logging(verbose, quiet)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and a non-zero exit for user errors."""
    try:
        cli.main(args=argv, prog_name="vggdeploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One line like every other user error (click's own format is a usage block).
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            # click turns Ctrl-C into Abort, so the KeyboardInterrupt branch below never sees it.
            click.echo("interrupted (no partial files were left behind)", err=True)
            sys.exit(130)
        click.echo("aborted", err=True)
        sys.exit(1)
    except VggDeployError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted (no partial files were left behind)", err=True)
        sys.exit(130)
    sys.exit(0)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def format_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A plain aligned text table (no dependencies, so cheap commands stay cheap)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    align = align or "l" * len(headers)

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)
        ).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


# -- model zoo --------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@json_option("the zoo")
@click.option(
    "--image-size", default=224, show_default=True, help="Input size for the GFLOPs column."
)
def models(json_path: str | None, image_size: int) -> None:
    """List the model zoo: names, paper config, weight layers, parameters, GFLOPs."""
    from vggdeploy.report.models import render_zoo
    from vggdeploy.zoo import zoo_table

    data = zoo_table(image_size)
    if json_path:
        emit_json(data, json_path)
    if json_path != "-":
        click.echo(render_zoo(data))


# -- export -----------------------------------------------------------------------------------


def _parse_batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--batch {value!r} must be 'dynamic' or a positive integer") from None


def _parse_floats(value: str | None, name: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"{name} {value!r} must be three comma-separated numbers") from None
    if len(parts) != 3:
        raise InputError(f"{name} {value!r} must be three comma-separated numbers")
    return parts  # type: ignore[return-value]


@cli.command(context_settings=CONTEXT)
@click.argument("model")
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="'random' (seeded), 'imagenet', or a .pth/.pt/.safetensors file.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for random weights.")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Bundle folder to create."
)
@click.option(
    "--image-size", default=224, show_default=True, help="Input height and width (multiple of 32)."
)
@click.option(
    "--batch", default="dynamic", show_default=True, help="'dynamic' or a fixed batch size."
)
@click.option("--opset", default=18, show_default=True, help="ONNX opset.")
@click.option(
    "--dense",
    is_flag=True,
    help="Export the paper's fully convolutional form with dynamic height/width.",
)
@click.option("--num-classes", type=int, help="Classes (default 1000).")
@click.option("--width-divisor", type=int, help="Divide every conv width by this (small models).")
@click.option("--hidden", type=int, help="Width of the two hidden FC layers (default 4096).")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Class names, one a line (ImageNet names ship for --weights imagenet).",
)
@click.option(
    "--resize",
    type=int,
    help="Preprocessing: shorter side before the crop (default image-size*256/224).",
)
@click.option("--mean", help="Preprocessing mean, e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Preprocessing std, e.g. 0.229,0.224,0.225.")
@click.option(
    "--channel-order", type=click.Choice(["RGB", "BGR"]), help="Preprocessing channel order."
)
@click.option("--force", is_flag=True, help="Replace the contents of a non-empty --out.")
def export(
    model: str,
    weights: str,
    seed: int,
    out: str,
    image_size: int,
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
    force: bool,
) -> None:
    """Export MODEL to a bundle: a checked ONNX file and manifest.json.

    The ONNX has a dynamic batch axis (and dynamic height/width with --dense), and is compared
    with PyTorch in ONNX Runtime at every exported size; a parity failure exits with code 2.
    """
    from vggdeploy.models import resolve_spec
    from vggdeploy.preprocess import Preprocessing

    spec = resolve_spec(model, num_classes=num_classes, width_divisor=width_divisor, hidden=hidden)
    from vggdeploy.models import check_image_size

    check_image_size(image_size, dense=dense)
    pre = Preprocessing.for_size(
        image_size,
        mean=_parse_floats(mean, "--mean"),
        std=_parse_floats(std, "--std"),
        channel_order=channel_order,
    )
    if resize is not None:
        pre = Preprocessing.from_dict({**pre.to_dict(), "resize": resize})

    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.weights import WeightsSource

    options = ExportOptions(
        image_size=image_size,
        batch=_parse_batch(batch),
        opset=opset,
        dense=dense,
        labels=labels,
        preprocessing=pre,
        force=force,
    )
    bundle = export_bundle(spec, WeightsSource.parse(weights, seed), Path(out), options)
    parity = bundle.manifest.parity
    click.echo(
        f"exported {spec.name} to {bundle.artifact_path('onnx.fp32')} in "
        f"{bundle.manifest.export['seconds']:.1f} s; "
        f"parity vs PyTorch: max rel diff {parity['worst_max_rel']:.1e}, cosine {parity['worst_cosine']:.6f} "
        f"over {len(parity['checks'])} checks - passed"
    )


# -- runtimes: validate, predict --------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@runtime_option(
    "A target to compare with the reference (repeatable or comma-separated). Default: "
    "onnxruntime:cpu on every ONNX in the bundle, plus its TensorRT engines where this host "
    "can run them."
)
@click.option(
    "--reference",
    default="torch@fp32",
    show_default=True,
    help="What every target is compared with (same SPEC grammar as --runtime).",
)
@precision_option("Precisions for targets without @PRECISION")
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Folder of real images (bundle preprocessing) for every target. Default: random "
    "tensors for fp32/fp16 and the shipped photographs for INT8.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    help="Inputs to compare (default 16 random; all images).",
)
@batch_option(8)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed for random inputs.",
)
@click.option(
    "--tol",
    "tols",
    multiple=True,
    metavar="PRECISION.METRIC=VALUE",
    help="Override a tolerance, e.g. fp16.cosine=0.9995 or int8.top1=0.95 (repeatable).",
)
@json_option("the report")
@allow_fallback_option()
@threads_option()
def validate(
    bundle: str,
    runtimes: tuple[str, ...],
    reference: str,
    precisions: tuple[str, ...],
    images: str | None,
    samples: int | None,
    batch: int,
    seed: int,
    tols: tuple[str, ...],
    json_path: str | None,
    allow_fallback: bool,
    threads: int | None,
) -> None:
    """Compare BUNDLE's runtimes and precisions with the PyTorch reference on the same inputs.

    Reports max/p99 absolute error, error relative to the output's largest magnitude and range,
    cosine similarity, top-1 agreement and top-5 overlap; each precision is judged by its own
    tolerances. INT8 is always judged on real images (yours, or the shipped photographs), never
    on random tensors. Exit 0 when every check passes, 2 when any fails.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.errors import CheckFailedError
    from vggdeploy.metrics import parse_tolerances
    from vggdeploy.report.validate import render_validation
    from vggdeploy.runtimes.registry import expand, parse_spec
    from vggdeploy.validate import validate_bundle

    overrides = parse_tolerances(tols)
    b = Bundle.load(bundle)
    specs = parse_runtimes(runtimes)
    wanted = parse_precisions(precisions)
    ref = parse_spec(reference, precision="fp32")
    if specs or wanted:
        from vggdeploy.runtimes.registry import RuntimeSpec

        specs = expand(b, specs or [RuntimeSpec("onnxruntime")], wanted)
    report = validate_bundle(
        b,
        specs or None,
        images=images,
        samples=samples,
        batch=batch,
        seed=seed,
        tolerances=overrides,
        reference=ref,
        options={"threads": threads, "allow_fallback": allow_fallback},
        progress=log.info,
    )
    if json_path != "-":
        click.echo(render_validation(report))
    if json_path:
        emit_json(report.to_dict(), json_path)
        if json_path != "-":
            click.echo(f"report written to {json_path}")
    if not report.passed:
        raise CheckFailedError(f"validation {report.summary()}")


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True)
@runtime_option("The runtime to classify with.", multiple=False, default="onnxruntime")
@click.option("--precision", help="Precision when SPEC has no @PRECISION (default fp32).")
@click.option(
    "--top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per image."
)
@batch_option(8)
@json_option("the predictions")
@threads_option()
@allow_fallback_option()
def predict(
    bundle: str,
    images: tuple[str, ...],
    runtimes: str,
    precision: str | None,
    top: int,
    batch: int,
    json_path: str | None,
    threads: int | None,
    allow_fallback: bool,
) -> None:
    """Classify IMAGE files (or folders of images) with BUNDLE: top-k classes and probabilities.

    A file that cannot be read gets its own error line; the others still run, and the exit
    code is non-zero if any failed.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.predict import predict_images
    from vggdeploy.report.predict import render_predictions
    from vggdeploy.runtimes.registry import open_runtime, parse_spec, unavailable

    b = Bundle.load(bundle)
    spec = parse_spec(runtimes, precision=precision or "fp32")
    if reason := unavailable(spec, b, allow_fallback=allow_fallback):
        raise RuntimeUnavailableError(f"{spec.text}: {reason}")
    with open_runtime(b, spec, threads=threads, allow_fallback=allow_fallback) as rt:
        results = predict_images(rt, b, images, top=top, batch=batch)
        info = rt.describe().to_dict()
    failed = [r for r in results if not r.ok]
    if json_path != "-":
        click.echo(render_predictions(results))
    if json_path:
        data = {
            "bundle": str(b.root),
            "runtime": info,
            "top": top,
            "results": [r.to_dict() for r in results],
            "failed": len(failed),
        }
        emit_json(data, json_path)
    if failed:
        raise InputError(
            f"{len(failed)} of {len(results)} files could not be classified (see above)"
        )


# -- calibration and conversion: calibrate, convert, evaluate (issue 4) -----------------------


@cli.command(context_settings=CONTEXT)
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
    help="Calibration images drawn from --images.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the image draw.")
@click.option(
    "--target",
    default="tensorrt",
    show_default=True,
    help="tensorrt: int8 symmetric activations -> model.int8.onnx; onnxruntime: uint8 "
    "activations -> model.int8-u8.onnx.",
)
@batch_option(16, "Images per batch.")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    help="Calibration cache file (default: calibration.cache.json in the bundle).",
)
@click.option(
    "--holdout",
    type=int,
    help="Held-out images for the int8 vs fp32 check (default: up to 64 not used to calibrate).",
)
@json_option("the summary")
def calibrate(
    bundle: str,
    images: str,
    method: str,
    percentile: float,
    samples: int,
    seed: int,
    target: str,
    batch: int,
    cache: str | None,
    holdout: int | None,
    json_path: str | None,
) -> None:
    """Calibrate BUNDLE on --images and write an INT8 Q/DQ ONNX (per-channel int8 weights).

    Ranges come from one streaming pass of the fp32 model (memory does not grow with
    --samples), kept in a calibration cache so a re-run with other --method/--target skips
    the data pass. The file is checked against its target's Q/DQ rules and compared with fp32
    on held-out images; agreement below the int8 tolerance prints a warning.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle
    from vggdeploy.report.calibrate import json_summary, render_calibration
    from vggdeploy.report.progress import progress_bar

    show = log.isEnabledFor(logging.INFO) and json_path != "-"
    with progress_bar("calibrating", samples, enabled=show) as bar:
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.update(done[0], samples)

        options = CalibrationOptions(
            method=method,
            target=target,
            samples=samples,
            seed=seed,
            percentile=percentile,
            batch_size=batch,
            cache=cache,
            holdout=holdout,
            progress=advance,
        )
        summary = calibrate_bundle(Bundle.load(bundle), images, options)
    if json_path:
        emit_json(json_summary(summary), json_path)
    if json_path == "-":
        return
    click.echo(render_calibration(summary))
    for line in summary["warnings"]:
        click.secho(f"WARNING: {line}", fg="yellow", bold=True)


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--precision",
    required=True,
    type=click.Choice(["fp16"]),
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
        click.echo(render_convert(report, str(b.root / FILE_NAME)))


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False),
    help="Labelled folder: one sub-folder per class, named like the bundle's labels.",
)
@runtime_option(
    "Runtimes to evaluate (repeatable or comma-separated). Default: onnxruntime:cpu on every "
    "ONNX in the bundle, plus its engines where this host can run them."
)
@precision_option("Precisions for runtimes without @PRECISION")
@batch_option(32, "Images per batch.")
@click.option(
    "--limit", type=click.IntRange(min=1), help="Evaluate a seeded random subset of N images."
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed for --limit."
)
@threads_option()
@json_option("the results")
def evaluate(
    bundle: str,
    images: str,
    runtimes: tuple[str, ...],
    precisions: tuple[str, ...],
    batch: int,
    limit: int | None,
    seed: int,
    threads: int | None,
    json_path: str | None,
) -> None:
    """Top-1/top-5 accuracy of BUNDLE on a labelled image folder, per runtime and precision.

    The folder holds one sub-folder per class (ImageFolder layout), matched to the bundle's
    labels; every runtime sees the same decoded batches. Deltas are percentage points against
    fp32.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.evaluate import evaluate_bundle
    from vggdeploy.report.evaluate import render_evaluation
    from vggdeploy.report.progress import progress_bar

    b = Bundle.load(bundle)
    show = log.isEnabledFor(logging.INFO) and json_path != "-"
    with progress_bar("evaluating", None, enabled=show) as bar:
        report = evaluate_bundle(
            b,
            images,
            specs=parse_runtimes(runtimes),
            precisions=parse_precisions(precisions),
            batch=batch,
            limit=limit,
            seed=seed,
            threads=threads,
            progress=bar.update,
        )
    if json_path != "-":
        click.echo(render_evaluation(report, images))
    if json_path:
        emit_json(report, json_path)
        if json_path != "-":
            click.echo(f"wrote {json_path}")


# -- TensorRT engines: build (issue 5) --------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("bundle_dir", metavar="BUNDLE", type=click.Path(file_okay=False))
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
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
@click.option("--device", "device_id", default=0, show_default=True, help="CUDA device index.")
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
    device_id: int,
) -> None:
    """Build a TensorRT engine (model.<precision>.engine) for this GPU from a bundle.

    Run it on the machine that will serve the engine (a Jetson included): engines are not
    portable across GPU architectures or TensorRT versions. The network is strongly typed, so
    the precision is the ONNX's; afterwards the engine inspector confirms the convolutions
    really run in that precision (exit 2 if not, and no engine is written).
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
        ),
        workspace=parse_size(workspace) if workspace is not None else None,
        opt_level=opt_level,
        timing_cache=Path(timing_cache) if timing_cache else None,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        exclude_lean_runtime=exclude_lean_runtime,
        device_id=device_id,
        verbosity=ctx.obj.get("verbose", 0) if ctx.obj else 0,
    )
    from vggdeploy.report.build import render_build

    record = build_engine(bundle, options)
    click.echo(render_build(record, bundle.root))


# -- benchmark: bench (issue 6) ---------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@runtime_option(
    "Runtime to time, repeatable or comma-separated; a spec with @PRECISION runs only that "
    "precision. Default: every runtime this host can run."
)
@precision_option("Precisions to time for specs without @PRECISION. Default: every artifact.")
@click.option("--batch", "batch", default="1,8,32", show_default=True, help="Batch sizes.")
@click.option(
    "--warmup",
    default="0.5s",
    show_default=True,
    help="Warm-up per case: iterations (10) or time (2s, 500ms).",
)
@click.option("--iterations", type=int, help="Timed calls per case (with --duration: at least).")
@click.option(
    "--duration",
    type=float,
    help="Seconds per case (default 3 s and at least 10 calls, as trtexec, when neither is given).",
)
@threads_option()
@click.option("--image-size", type=int, help="Input size for a dense bundle (default: its own).")
@click.option("--cuda-graphs", is_flag=True, help="TensorRT: launch the engine as a CUDA graph.")
@click.option(
    "--reference-bare-ort",
    is_flag=True,
    help="Also time a bare onnxruntime session.run loop for every onnxruntime case, alternating "
    "with the harness, and report the ratio.",
)
@click.option(
    "--cv-threshold",
    default="10%",
    show_default=True,
    help="Warn when a case's latency std/mean exceeds this.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
@json_option("every figure (with --compare: the comparison)")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write every figure as CSV to FILE ('-': standard output, instead of the table).",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write the tables as Markdown to FILE ('-': standard output, instead of the table).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write latency and throughput vs batch size as an image (PNG, SVG, PDF).",
)
@click.option("--samples", is_flag=True, help="Keep every latency sample in the --json file.")
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(dir_okay=False),
    metavar="OLD.json NEW.json",
    help="Compare two --json results instead of running; exit 2 if any case regressed.",
)
@click.option(
    "--threshold",
    default="5%",
    show_default=True,
    help="With --compare: a median latency this much higher is a regression.",
)
def bench(
    bundle: str | None,
    runtimes: tuple[str, ...],
    precisions: tuple[str, ...],
    batch: str,
    warmup: str,
    iterations: int | None,
    duration: float | None,
    threads: int | None,
    image_size: int | None,
    cuda_graphs: bool,
    reference_bare_ort: bool,
    cv_threshold: str,
    seed: int,
    json_path: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    plot_path: str | None,
    samples: bool,
    compare: tuple[str, str] | None,
    threshold: str,
) -> None:
    """Time BUNDLE across runtimes x precisions x batch sizes.

    Each case is warmed up, then timed call by call: latency min/mean/median/p90/p95/p99/max/std,
    images/s, GFLOP/s and peak RSS. GPU runtimes that expose it report trtexec's
    H2D / compute / D2H split (CUDA events); CPU runtimes report end to end. Cases that cannot
    run here are listed with the reason.

    \b
    Exit codes: 0 done; 1 bad input or nothing could run;
    with --compare, 2 when any case's median latency regressed beyond --threshold.
    """
    from vggdeploy import bench as stage
    from vggdeploy.report import bench as view

    to_stdout = [p for p in (json_path, csv_path, markdown_path) if p == "-"]
    if len(to_stdout) > 1:
        raise InputError("only one of --json, --csv and --markdown can be '-' (standard output)")
    if compare:
        if bundle:
            raise InputError("--compare takes two result files and no BUNDLE: drop one of them")
        _bench_compare(compare, stage.parse_threshold(threshold), json_path, markdown_path)
        return
    if not bundle:
        raise InputError("give a BUNDLE to benchmark (or --compare OLD.json NEW.json)")
    from vggdeploy.bundle import Bundle

    options = stage.BenchOptions.from_cli(
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        cv_threshold=cv_threshold,
        seed=seed,
        image_size=image_size,
        threads=threads,
        cuda_graphs=cuda_graphs,
        reference_bare_ort=reference_bare_ort,
        keep_samples=samples,
    )
    specs = parse_runtimes(runtimes) or None
    wanted = parse_precisions(precisions) or None
    if cuda_graphs and specs and not any(s.name == "tensorrt" for s in specs):
        raise InputError("--cuda-graphs applies to the tensorrt runtime: add --runtime tensorrt")
    loaded = Bundle.load(bundle)
    plans, skipped = stage.plan_cases(loaded, specs, wanted, stage.parse_batches(batch))
    for s in skipped:
        log.warning("skipping %s", s)
    if not plans:
        raise InputError(
            "nothing to benchmark on this host: every case was skipped (reasons above)"
        )

    from rich.console import Console

    from vggdeploy.report.progress import CaseProgress

    err = Console(stderr=True)
    show_progress = err.is_terminal and log.isEnabledFor(logging.INFO)
    result = stage.run_benchmark(
        loaded,
        plans,
        options,
        skipped=skipped,
        reporter=CaseProgress(err) if show_progress else None,
        argv=sys.argv[1:],
    )
    if not result["cases"]:
        for line in stage.skipped_lines(result):
            click.echo(f"skipped {line}", err=True)
        raise InputError("no case could run on this host (reasons above)")
    if not to_stdout:
        click.echo(view.render_text(result), nl=False)
    if json_path:
        emit_json(result, json_path)
    if csv_path:
        _emit_text(stage.csv_text(result), csv_path)
    if markdown_path:
        _emit_text(view.render_markdown(result), markdown_path)
    if plot_path:
        view.write_plot(result, plot_path)
    for path in (json_path, csv_path, markdown_path, plot_path):
        if path and path != "-":
            log.info("wrote %s", path)


def _emit_text(text: str, dest: str) -> None:
    """Text to standard output (`-`) or atomically to a file."""
    if dest == "-":
        click.echo(text, nl=False)
    else:
        from vggdeploy.bundle import atomic_write_text

        atomic_write_text(dest, text)


def _bench_compare(
    files: tuple[str, str], threshold: float, json_path: str | None, markdown_path: str | None
) -> None:
    from vggdeploy import bench as stage
    from vggdeploy.report import bench as view

    old, new = stage.load_result(files[0]), stage.load_result(files[1])
    cmp = stage.compare_results(old, new, threshold)
    if not cmp["rows"]:
        raise InputError(f"{files[0]} and {files[1]} have no case in common to compare")
    if "-" not in (json_path, markdown_path):
        click.echo(view.render_comparison_text(cmp), nl=False)
    if json_path:
        emit_json(cmp, json_path)
    if markdown_path:
        _emit_text(view.render_comparison_markdown(cmp), markdown_path)
    stage.check_regressions(cmp)


# -- shipping: pipeline, inspect, pack, unpack, package (issue 7) -----------------------------


@cli.command(context_settings=CONTEXT)
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
@click.option("--num-classes", type=int, help="Classes (default 1000).")
@click.option("--width-divisor", type=int, help="Divide every conv width by this (small models).")
@click.option("--hidden", type=int, help="Width of the two hidden FC layers (default 4096).")
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
    from vggdeploy.cli_options import comma_list, parse_int_list
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
    echo = (lambda text: click.echo(text, err=True)) if to_stdout else click.echo
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


@cli.command("inspect", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True))
@json_option("what was found")
def inspect_cmd(path: str, json_path: str | None) -> None:
    """Show what a bundle, an .onnx or an .engine file holds, and check it.

    \b
    A bundle: every artifact's size, precision and shapes, its sha256 checked against the
    manifest (a missing or tampered file exits with code 2), and for engines whether this host
    can run them (TensorRT version, GPU compute capability, compatibility flags) and why not.
    An .onnx: inputs, outputs, opset, vggdeploy metadata, op histogram, Q/DQ nodes, dtypes.
    An .engine: size, sha256, and its tensors where TensorRT and a GPU are available.
    """
    from vggdeploy.errors import CheckFailedError
    from vggdeploy.inspect import inspect_path
    from vggdeploy.report.inspect import format_report

    info = inspect_path(path)
    if json_path is not None:
        emit_json(info, json_path)
    if json_path != "-":
        click.echo(format_report(info))
    if info.get("problems"):
        raise CheckFailedError(
            f"{len(info['problems'])} artifact problem(s) in {path}: {info['problems'][0]}"
            + (" (and more, listed above)" if len(info["problems"]) > 1 else "")
        )


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.tar.gz to write."
)
@click.option(
    "--no-engines",
    is_flag=True,
    help="Leave TensorRT engines out (they only run on the GPU and TensorRT that built them).",
)
def pack(bundle: str, output: str, no_engines: bool) -> None:
    """Pack BUNDLE into one checksummed archive to copy to another machine (e.g. a Jetson).

    \b
    Every artifact is checked against its sha256 as it is packed (a mismatch leaves no archive);
    the packed manifest has no absolute paths of this machine; SHA256SUMS inside works with
    `sha256sum -c`. On the target:
      vggdeploy unpack vgg16.tar.gz -o bundles/vgg16
      vggdeploy build bundles/vgg16 --precision fp16     (engines are built per device)
    """
    from vggdeploy.packaging import pack_bundle
    from vggdeploy.report.packaging import format_pack
    from vggdeploy.report.progress import byte_progress

    with byte_progress() as progress:
        result = pack_bundle(bundle, output, include_engines=not no_engines, progress=progress)
    click.echo(format_pack(result))


@cli.command(context_settings=CONTEXT)
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Bundle folder to create.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
def unpack(archive: str, output: str, force: bool) -> None:
    """Unpack an archive made by `vggdeploy pack` and verify every sha256.

    Refuses absolute paths, '..' entries, links and device files before writing anything.
    """
    from vggdeploy.packaging import unpack_bundle
    from vggdeploy.report.packaging import format_unpack
    from vggdeploy.report.progress import byte_progress

    with byte_progress() as progress:
        result = unpack_bundle(archive, output, force=force, progress=progress)
    click.echo(format_unpack(result))


def _parse_int_list(value: str | None, name: str) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"{name} {value!r} must be comma-separated integers") from None


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["triton"]), default="triton", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model repository.")
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
@click.option("--force", is_flag=True, help="Replace models of the same name in --out.")
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
) -> None:
    """Write a Triton Inference Server model repository for BUNDLE.

    \b
    One model per artifact, named after its artifact key: <name>_onnx_<precision> (platform
    onnxruntime_onnx; onnx.int8 and onnx.int8-u8 are two models, <name>_onnx_int8 and
    <name>_onnx_int8-u8) and <name>_trt_<precision> (platform tensorrt_plan; one plan per
    compute capability via cc_model_filenames when several engines are built). Serve it with:
      docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 \\
        -v $PWD/REPO:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models
    """
    from vggdeploy.cli_options import comma_list, parse_int_list
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
    result = package_triton(bundle, out, options, engines_from=engines_from)
    click.echo(format_triton(result))


if __name__ == "__main__":
    main()
