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
from vggdeploy.errors import InputError, VggDeployError

log = logging.getLogger("vggdeploy")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--image-size", default=224, show_default=True, help="Input size for the GFLOPs column."
)
def models(as_json: bool, image_size: int) -> None:
    """List the model zoo: names, paper config, weight layers, parameters, GFLOPs."""
    from vggdeploy.models import check_image_size, count_flops, count_parameters, list_specs
    from vggdeploy.weights import IMAGENET_URLS

    check_image_size(image_size)
    rows = []
    for spec in list_specs():
        rows.append(
            {
                "name": spec.name,
                "config": spec.config,
                "batch_norm": spec.batch_norm,
                "weight_layers": spec.weight_layers,
                "parameters": count_parameters(spec),
                "gflops": round(count_flops(spec, image_size) / 1e9, 2),
                "imagenet_weights": spec.name in IMAGENET_URLS,
            }
        )
    if as_json:
        _print_json({"image_size": image_size, "flops": "2 x multiply-accumulates", "models": rows})
        return
    table = format_table(
        ["name", "config", "BN", "layers", "parameters", "GFLOPs", "imagenet"],
        [
            [
                r["name"],
                r["config"],
                "yes" if r["batch_norm"] else "-",
                r["weight_layers"],
                f"{r['parameters']:,}",
                f"{r['gflops']:.2f}",
                "yes" if r["imagenet_weights"] else "-",
            ]
            for r in rows
        ],
        align="lllrrrl",
    )
    click.echo(table)
    click.echo(
        f"\nGFLOPs at {image_size}x{image_size}, counting a multiply-accumulate as 2 FLOPs. Paper names (A, A-LRN, B, C, D, E, and -bn) work too."
    )


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
    parity = bundle.manifest["parity"]
    click.echo(
        f"exported {spec.name} to {bundle.root / 'model.onnx'} in {bundle.manifest['export']['seconds']:.1f} s; "
        f"parity vs PyTorch: max rel diff {parity['worst_max_rel']:.1e}, cosine {parity['worst_cosine']:.6f} "
        f"over {len(parity['checks'])} checks - passed"
    )


# -- runtimes: validate, predict (issue 3) ----------------------------------------------------

_RUNTIME_HELP = (
    "NAME[:WHERE][@PRECISION]: torch, torch:cuda, onnxruntime:cpu, onnxruntime:cuda, "
    "onnxruntime:tensorrt, tensorrt@fp16 ..."
)
_PRECISIONS = ["fp32", "fp16", "int8", "int8-u8"]


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help=f"A target to compare with the reference (repeatable). {_RUNTIME_HELP} "
    "Default: onnxruntime:cpu on every ONNX in the bundle, plus its TensorRT engines if this host can run them.",
)
@click.option(
    "--reference",
    default="torch",
    show_default=True,
    help="What every target is compared with (same syntax as --runtime).",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(_PRECISIONS),
    help="Only these precisions (repeatable) for targets without @PRECISION.",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Folder of real images (bundle preprocessing) instead of random inputs.",
)
@click.option(
    "--samples",
    type=int,
    help="Inputs to compare (default 16 random; all images with --images).",
)
@click.option("--batch", default=8, show_default=True, help="Batch size.")
@click.option("--seed", default=0, show_default=True, help="Seed for random inputs.")
@click.option(
    "--tol",
    "tols",
    multiple=True,
    metavar="PRECISION.METRIC=VALUE",
    help="Override a tolerance, e.g. fp16.cosine=0.9995 or int8.top1=0.95 (repeatable).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the report as JSON to FILE ('-': stdout instead of the table).",
)
@click.option(
    "--allow-fallback",
    is_flag=True,
    help="Accept an ONNX Runtime session that fell back to another provider (warns).",
)
@click.option("--threads", type=int, help="Intra-op threads for onnxruntime and torch.")
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
    tolerances. Exit 0 when every check passes, 2 when any fails.
    """
    from vggdeploy.bundle import Bundle, atomic_write_json
    from vggdeploy.errors import CheckFailedError
    from vggdeploy.validate import (
        DEFAULT_SAMPLES,
        InputSet,
        default_targets,
        expand_targets,
        parse_target,
        parse_tolerances,
        validate_bundle,
    )

    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads} must be a positive integer")
    overrides = parse_tolerances(tols)
    b = Bundle.load(bundle)
    options = {"threads": threads, "allow_fallback": allow_fallback}
    targets = expand_targets(b, runtimes, precisions, **options)
    ref = parse_target(reference, threads=threads)
    if images:
        inputs = InputSet.images(b, images, samples=samples, batch=batch)
    else:
        inputs = InputSet.random(b, samples=samples or DEFAULT_SAMPLES, batch=batch, seed=seed)
    # Defaults skip what this host cannot run (engines without TensorRT); named targets must run.
    skip = targets is None
    if targets is None:
        targets = default_targets(b, **options)
    report = validate_bundle(b, targets, inputs, overrides, reference=ref, skip_unavailable=skip)
    if json_path == "-":
        _print_json(report.to_dict())
    else:
        click.echo(report.render())
        if json_path:
            atomic_write_json(json_path, report.to_dict())
            click.echo(f"report written to {json_path}")
    if not report.passed:
        raise CheckFailedError(f"validation {report.summary()} (listed above)")


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--runtime", default="onnxruntime", show_default=True, help=f"Runtime to use. {_RUNTIME_HELP}"
)
@click.option(
    "--precision",
    type=click.Choice(_PRECISIONS),
    help="Model precision (default fp32; tensorrt: its runtime's default).",
)
@click.option("--top", default=5, show_default=True, help="Classes to show per image.")
@click.option("--batch", default=8, show_default=True, help="Images per inference call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--threads", type=int, help="Intra-op threads for onnxruntime and torch.")
@click.option(
    "--allow-fallback",
    is_flag=True,
    help="Accept an ONNX Runtime session that fell back to another provider (warns).",
)
def predict(
    bundle: str,
    images: tuple[str, ...],
    runtime: str,
    precision: str | None,
    top: int,
    batch: int,
    as_json: bool,
    threads: int | None,
    allow_fallback: bool,
) -> None:
    """Classify IMAGE files (or folders of images) with BUNDLE: top-k classes and probabilities.

    A file that cannot be read gets its own error line; the others still run, and the exit
    code is non-zero if any failed.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.predict import predict_images, render_predictions
    from vggdeploy.validate import open_runtime, parse_target

    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads} must be a positive integer")
    b = Bundle.load(bundle)
    target = parse_target(runtime, precision, threads=threads, allow_fallback=allow_fallback)
    with open_runtime(b, target) as rt:
        results = predict_images(rt, b, images, top=top, batch=batch)
        info = rt.describe()
    failed = [r for r in results if not r.ok]
    if as_json:
        _print_json(
            {
                "bundle": str(b.root),
                "runtime": info,
                "top": top,
                "results": [r.to_dict() for r in results],
                "failed": len(failed),
            }
        )
    else:
        click.echo(render_predictions(results))
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
@click.option("--batch-size", default=16, show_default=True, type=int, help="Images per batch.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def calibrate(
    bundle: str,
    images: str,
    method: str,
    percentile: float,
    samples: int,
    seed: int,
    target: str,
    batch_size: int,
    cache: str | None,
    holdout: int | None,
    as_json: bool,
) -> None:
    """Calibrate BUNDLE on --images and write an INT8 Q/DQ ONNX (per-channel int8 weights).

    Ranges come from one streaming pass of the fp32 model (memory does not grow with
    --samples), kept in a calibration cache so a re-run with other --method/--target skips
    the data pass. The file is checked against its target's Q/DQ rules and compared with fp32
    on held-out images; agreement below the int8 tolerance prints a warning.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle

    options = CalibrationOptions(
        method=method,
        target=target,
        samples=samples,
        seed=seed,
        percentile=percentile,
        batch_size=batch_size,
        cache=cache,
        holdout=holdout,
        progress=log.isEnabledFor(logging.INFO) and not as_json,
    )
    summary = calibrate_bundle(Bundle.load(bundle), images, options)
    if as_json:
        _print_json({k: v for k, v in summary.items() if k != "ranges"})
        return
    held = summary["holdout"]
    if summary["cache_reused"]:
        source = "reused the cache, no data pass"
    else:
        source = f"{summary['data_pass_seconds']:.1f} s data pass"
    click.echo(
        f"wrote {summary['path']} ({summary['target']}, {summary['method']}, "
        f"{summary['samples']} images, {summary['quantized_ops']} quantized ops; {source}; "
        f"cache {summary['cache']})"
    )
    if held.get("images"):
        click.echo(
            f"held-out int8 vs fp32 on {held['images']} images: cosine {held['cosine']:.4f} "
            f"(worst image {held['cosine_min']:.4f}), top-1 agreement {held['top1_agreement']:.3f}, "
            f"top-5 overlap {held['top5_overlap']:.3f} - "
            + ("within tolerance" if held["passed"] else "BELOW TOLERANCE")
        )
    for line in summary["warnings"]:
        click.secho(f"WARNING: {line}", fg="yellow", bold=True)


def _comma_list(values: tuple[str, ...]) -> list[str]:
    """Repeatable options that also take comma-separated values: ("a,b", "c") -> [a, b, c]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


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
@click.option("--batch-size", default=8, show_default=True, help="Inputs per measured batch.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert(
    bundle: str,
    precision: str,
    images: str | None,
    samples: int,
    seed: int,
    batch_size: int,
    keep: tuple[str, ...],
    headroom: float,
    as_json: bool,
) -> None:
    """Convert BUNDLE's ONNX to fp16: model.fp16.onnx, float32 inputs and outputs.

    The fp32 model first runs on --images (or random pixels) with every intermediate tensor
    exposed; ops whose activations overflow the fp16 range (or come within --headroom of it)
    stay in fp32 and are reported. The result passes the ONNX checker and is compared with
    fp32 on ONNX Runtime CPU - which computes fp16 ops in fp32, so that parity checks weight
    rounding only; judge fp16 numerics on the GPU.
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.evaluate import progress_bar
    from vggdeploy.exporter.fp16 import convert_fp16, format_report, split_keep_fp32

    b = Bundle.load(bundle)
    ops, nodes = split_keep_fp32(b, _comma_list(keep))
    show = log.isEnabledFor(logging.INFO) and not as_json
    with progress_bar("measuring activations (batches)", None, enabled=show) as bar:
        report = convert_fp16(
            b,
            keep_fp32_ops=ops,
            keep_fp32_nodes=nodes,
            images=images,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            headroom=headroom,
            progress=bar.update,
        )
    if as_json:
        _print_json(report)
        return
    click.echo(f"wrote {b.root / 'model.fp16.onnx'} (onnx.fp16, float32 inputs and outputs)")
    click.echo(format_report(report))


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False),
    help="Labelled folder: one sub-folder per class, named like the bundle's labels.",
)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help="NAME[:WHERE][@PRECISION] as in validate: onnxruntime, onnxruntime:cuda, torch, "
    "tensorrt@int8 ... (repeatable or comma-separated). Default: onnxruntime:cpu on every "
    "ONNX in the bundle, plus its engines where this host can run them.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    help="fp32, fp16, int8, int8-u8 (repeatable or comma-separated) for runtimes without @.",
)
@click.option("--batch-size", default=32, show_default=True, help="Images per batch.")
@click.option("--limit", type=int, help="Evaluate a seeded random subset of N images.")
@click.option("--seed", default=0, show_default=True, help="Seed for --limit.")
@click.option("--threads", type=int, help="Intra-op threads for onnxruntime and torch.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the results as JSON to FILE ('-': stdout instead of the table).",
)
def evaluate(
    bundle: str,
    images: str,
    runtimes: tuple[str, ...],
    precisions: tuple[str, ...],
    batch_size: int,
    limit: int | None,
    seed: int,
    threads: int | None,
    json_path: str | None,
) -> None:
    """Top-1 and top-5 accuracy of BUNDLE on a labelled image folder, side by side.

    Every runtime and precision runs on the same decoded batches; the table shows accuracy,
    the change against fp32 in percentage points, and how often the top-1 class agrees with
    fp32. Without labels in the bundle, class folders map to outputs in alphabetical order.
    """
    from vggdeploy.bundle import Bundle, atomic_write_json
    from vggdeploy.evaluate import TABLE_HEADERS, evaluate_bundle, format_results

    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads} must be a positive integer")
    b = Bundle.load(bundle)
    report = evaluate_bundle(
        b,
        images,
        runtimes=_comma_list(runtimes),
        precisions=_comma_list(precisions),
        batch_size=batch_size,
        limit=limit,
        seed=seed,
        threads=threads,
        progress=log.isEnabledFor(logging.INFO) and json_path != "-",
    )
    if json_path == "-":
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if json_path:
        atomic_write_json(json_path, json.loads(json.dumps(report, default=str)))
    sample = f" (random {report['count']}, seed {seed})" if report["limit"] else ""
    click.echo(
        f"{report['count']} images{sample}, {report['classes']} classes from {images}: "
        f"{report['class_mapping']['note']}"
    )
    click.echo(format_table(TABLE_HEADERS, format_results(report), align="llrrrrr"))
    ref = next((r["agreement_with"] for r in report["results"] if r["agreement_with"]), None)
    if ref:
        click.echo(
            f"diff: percentage points vs fp32 on the same runtime; agrees: same top-1 as {ref}"
        )
    if any(r["precision"] == "fp16" and r["runtime"] == "onnxruntime" for r in report["results"]):
        cpu = [r for r in report["results"] if r["precision"] == "fp16"]
        if any(r["options"].get("provider", "cpu") == "cpu" for r in cpu):
            click.echo(
                "note: ONNX Runtime CPU runs fp16 models in fp32 with fp16-rounded weights; "
                "fp16 arithmetic is only exercised on a GPU"
            )
    for s in report["skipped"]:
        click.echo(f"skipped {s['target']}: {s['reason']}")
    if json_path:
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
    record = build_engine(bundle, options)
    check = record["precision_check"]
    gpu = record["gpu"]
    profiles_text = "; ".join(
        ", ".join(f"{k} {v['min']}..{v['max']}" for k, v in p.items()) for p in record["profiles"]
    )
    click.echo(
        f"built {bundle.root / record['path']} ({record['size'] / 1e6:.1f} MB) in "
        f"{record['build_seconds']:.1f} s with TensorRT {record['tensorrt_version']} on "
        f"{gpu['name']} (compute capability {gpu['compute_capability']}); profiles: "
        f"{profiles_text}; precision check: {check['by_precision'].get(precision, 0)}/"
        f"{check['convolutions']} convolutions run in {precision} - passed"
    )


# -- benchmark: bench (issue 6) ---------------------------------------------------------------


def _split_multi(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@cli.command(context_settings=CONTEXT)
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help="Runtime to time, repeatable or comma-separated: torch, torch:channels-last, "
    "torch:cuda, onnxruntime, onnxruntime:cuda, onnxruntime:tensorrt, tensorrt, "
    "tensorrt:cuda-graphs. Default: every one this host can run.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    help="fp32, fp16, int8, int8-u8 (repeatable or comma-separated). Default: every artifact.",
)
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
@click.option("--threads", type=int, help="Intra-op threads for torch and onnxruntime.")
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
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write every figure as JSON."
)
@click.option(
    "--csv", "csv_out", type=click.Path(dir_okay=False), help="Write every figure as CSV."
)
@click.option(
    "--markdown", is_flag=True, help="Print Markdown tables instead of the terminal table."
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False),
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
    json_out: str | None,
    csv_out: str | None,
    markdown: bool,
    plot_out: str | None,
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
    from vggdeploy import benchmark as bm

    if compare:
        if bundle:
            raise InputError("--compare takes two result files and no BUNDLE: drop one of them")
        _bench_compare(compare, bm.parse_threshold(threshold), json_out, markdown)
        return
    if not bundle:
        raise InputError("give a BUNDLE to benchmark (or --compare OLD.json NEW.json)")
    from vggdeploy.bundle import Bundle

    kind, amount = bm.parse_amount(warmup, "--warmup")
    options = bm.BenchOptions(
        iterations=iterations,
        seconds=duration if (duration is not None or iterations is not None) else 3.0,
        min_iterations=10 if (duration is None and iterations is None) else 1,
        warmup_iterations=int(amount) if kind == "iterations" else None,
        warmup_seconds=amount if kind == "seconds" else None,
        cv_threshold=bm.parse_threshold(cv_threshold),
        seed=seed,
        image_size=image_size,
        threads=threads,
        cuda_graphs=cuda_graphs,
        reference_bare_ort=reference_bare_ort,
        keep_samples=samples,
    )
    choices = [bm.parse_runtime(r) for r in _split_multi(runtimes)] or None
    wanted = _split_multi(precisions) or None
    for p in wanted or ():
        if p not in bm.PRECISIONS:
            raise InputError(f"--precision {p!r}: choose from {', '.join(bm.PRECISIONS)}")
    if cuda_graphs and choices and not any(c.name == "tensorrt" for c in choices):
        raise InputError("--cuda-graphs applies to the tensorrt runtime: add --runtime tensorrt")
    loaded = Bundle.load(bundle)
    plans, skipped = bm.plan_cases(loaded, choices, wanted, bm.parse_batches(batch))
    for s in skipped:
        log.warning("skipping %s", s)
    if not plans:
        raise InputError(
            "nothing to benchmark on this host: every case was skipped (reasons above)"
        )

    from rich.console import Console

    err = Console(stderr=True)
    show_progress = err.is_terminal and logging.getLogger().getEffectiveLevel() <= logging.INFO
    reporter = _RichReporter(err) if show_progress else None
    result = bm.run_benchmark(
        loaded, plans, options, skipped=skipped, reporter=reporter, argv=sys.argv[1:]
    )
    if not result["cases"]:
        for line in bm.iter_skipped_lines(result):
            click.echo(f"skipped {line}", err=True)
        raise InputError("no case could run on this host (reasons above)")
    if json_out:
        bm.write_json(result, json_out)
    if csv_out:
        bm.write_csv(result, csv_out)
    if plot_out:
        bm.write_plot(result, plot_out)
    if markdown:
        click.echo(bm.render_markdown(result), nl=False)
    else:
        # Never narrower than the table: a wrapped line beats a truncated number.
        out = Console(highlight=False)
        out = Console(width=max(out.width, 150) if out.is_terminal else 200, highlight=False)
        bm.print_rich(result, out)
    for path in (json_out, csv_out, plot_out):
        if path:
            log.info("wrote %s", path)


class _RichReporter:
    """Progress over cases on stderr. Refreshed only between phases (auto_refresh off), so no
    display thread competes with the timed loop."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=True,
        )
        self._task: Any = None

    def start(self, total_cases: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("bench", total=total_cases)
        self._progress.refresh()

    def case(self, label: str, phase: str) -> None:
        self._progress.update(self._task, description=f"{phase} {label}")
        self._progress.refresh()

    def advance(self) -> None:
        self._progress.advance(self._task)
        self._progress.refresh()

    def stop(self) -> None:
        self._progress.stop()


def _bench_compare(
    files: tuple[str, str], threshold: float, json_out: str | None, markdown: bool
) -> None:
    from vggdeploy import benchmark as bm

    old, new = bm.load_result(files[0]), bm.load_result(files[1])
    cmp = bm.compare_results(old, new, threshold)
    if not cmp["rows"]:
        raise InputError(f"{files[0]} and {files[1]} have no case in common to compare")
    headers, rows, notes = bm.render_comparison(cmp)
    if json_out:
        bm.write_json({"schema": "vggdeploy.bench-compare/1", **cmp}, json_out)
    if markdown:
        click.echo("| " + " | ".join(headers) + " |")
        click.echo("|" + "|".join("---" if i < 3 else "---:" for i in range(len(headers))) + "|")
        for r in rows:
            click.echo("| " + " | ".join(r) + " |")
        click.echo("")
        for n in notes:
            click.echo(f"- {n}")
    else:
        click.echo(format_table(headers, rows, align="lllrrrrrl"))
        for n in notes:
            click.echo(n)
    bm.check_regressions(cmp)


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
    help="Images for calibration and validation (default: the photographs shipped with vggdeploy).",
)
@click.option(
    "--precision", default="fp32,fp16,int8", show_default=True, help="Precisions to make."
)
@click.option("--image-size", default=224, show_default=True, help="Input height and width.")
@click.option("--batch", default="1,8", show_default=True, help="Batch sizes to benchmark.")
@click.option(
    "--bench-iterations", default=10, show_default=True, help="Timed calls per benchmark case."
)
@click.option(
    "--bench-runtime",
    default="onnxruntime,tensorrt",
    show_default=True,
    help="Runtimes to benchmark (bench --runtime names; unavailable ones are listed as skipped).",
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
    "--validate-samples", default=16, show_default=True, help="Images compared in validation."
)
@click.option("--force", is_flag=True, help="Redo every stage, even those up to date.")
@click.option("--num-classes", type=int, help="Classes (default 1000).")
@click.option("--width-divisor", type=int, help="Divide every conv width by this (small models).")
@click.option("--hidden", type=int, help="Width of the two hidden FC layers (default 4096).")
def pipeline(
    model: str,
    out: str,
    weights: str,
    seed: int,
    images: str | None,
    precision: str,
    image_size: int,
    batch: str,
    bench_iterations: int,
    bench_runtime: str,
    calib_samples: int | None,
    calib_method: str,
    validate_samples: int,
    force: bool,
    num_classes: int | None,
    width_divisor: int | None,
    hidden: int | None,
) -> None:
    """Export, validate, convert/calibrate, build, validate all, bench, and report, in OUT.

    \b
    The main job on any machine, e.g. a CPU laptop in a few minutes:
      vggdeploy pipeline vgg16 --out runs/vgg16
    OUT/bundle is the bundle; OUT/report.md and OUT/report.json say what was made and how it
    agrees and runs. TensorRT engines are built only where TensorRT and a GPU are present
    (otherwise the build stage says why it skipped). Running again only redoes stages whose
    inputs changed (by sha256); --force redoes all. Exits with code 2 if a check failed.
    """
    from vggdeploy.pipeline import PipelineOptions, run_pipeline

    def ints(text: str, name: str) -> tuple[int, ...]:
        values = _parse_int_list(text, name)
        if not values:
            raise InputError(f"{name} {text!r} must list positive integers, e.g. 1,8")
        return values

    options = PipelineOptions(
        weights=weights,
        seed=seed,
        image_size=image_size,
        precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
        images=images,
        calib_samples=calib_samples,
        calib_method=calib_method,
        batches=ints(batch, "--batch"),
        bench_iterations=bench_iterations,
        bench_runtimes=tuple(r.strip() for r in bench_runtime.split(",") if r.strip()),
        validate_samples=validate_samples,
        force=force,
        num_classes=num_classes,
        width_divisor=width_divisor,
        hidden=hidden,
    )
    argv = sys.argv[1:] if sys.argv and Path(sys.argv[0]).name.startswith("vggdeploy") else None
    run_pipeline(model, out, options, say=click.echo, argv=argv)


@cli.command("inspect", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect_cmd(path: str, as_json: bool) -> None:
    """Show what a bundle, an .onnx or an .engine file holds, and check it.

    \b
    A bundle: every artifact's size, precision and shapes, its sha256 checked against the
    manifest (a missing or tampered file exits with code 2), and for engines whether this host
    can run them (TensorRT version, GPU compute capability, compatibility flags) and why not.
    An .onnx: inputs, outputs, opset, vggdeploy metadata, op histogram, Q/DQ nodes, dtypes.
    An .engine: size, sha256, and its tensors where TensorRT and a GPU are available.
    """
    from vggdeploy.errors import CheckFailedError
    from vggdeploy.inspect_bundle import format_report, inspect_path

    info = inspect_path(path)
    if as_json:
        _print_json(info)
    else:
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
    Every artifact is checked against its sha256 first; the packed manifest has no absolute
    paths of this machine; SHA256SUMS inside works with `sha256sum -c`. On the target:
      vggdeploy unpack vgg16.tar.gz -o bundles/vgg16
      vggdeploy build bundles/vgg16 --precision fp16     (engines are built per device)
    """
    from vggdeploy.packaging import pack_bundle

    result = pack_bundle(bundle, output, include_engines=not no_engines)
    click.echo(
        f"packed {len(result.files)} files into {result.archive} ({result.size / 1e6:.1f} MB, "
        f"sha256 {result.sha256})"
    )
    if result.excluded:
        click.echo(f"left out: {', '.join(result.excluded)} (build engines on the target)")
    if result.paths_made_relative:
        click.echo(
            f"absolute paths replaced by file names in the packed manifest: "
            f"{', '.join(result.paths_made_relative)}"
        )


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

    result = unpack_bundle(archive, output, force=force)
    click.echo(
        f"unpacked {result.manifest['model']['name']} to {result.root}: "
        f"{len(result.artifacts)} artifact(s), every sha256 verified"
    )
    from vggdeploy.inspect_bundle import is_engine

    if not any(is_engine(r) for r in result.artifacts.values()):
        click.echo(f"next, on this device: vggdeploy build {result.root} --precision fp16")


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
@click.option("--precision", help="Only these precisions, e.g. fp16,int8 (default: all).")
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
    precision: str | None,
    backend: str,
    kind: str,
    engines_from: tuple[str, ...],
    force: bool,
) -> None:
    """Write a Triton Inference Server model repository for BUNDLE.

    \b
    One model per artifact: <name>_onnx_<precision> (platform onnxruntime_onnx) and
    <name>_trt_<precision> (platform tensorrt_plan; one plan per compute capability via
    cc_model_filenames when several engines are built). Serve it with:
      docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 \\
        -v $PWD/REPO:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models
    """
    from vggdeploy.packaging import TritonOptions, package_triton

    backends = tuple(b.strip() for b in backend.split(",") if b.strip())
    if not backends or any(b not in ("onnx", "trt") for b in backends):
        raise InputError(f"--backend {backend!r}: use onnx, trt or onnx,trt")
    precisions = tuple(p.strip() for p in (precision or "").split(",") if p.strip())
    bad = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise InputError(f"--precision {', '.join(bad)}: choose from fp32, fp16, int8")
    options = TritonOptions(
        name=name,
        max_batch=max_batch,
        instances=instances,
        dynamic_batching=dynamic_batching,
        preferred_batch=_parse_int_list(preferred_batch, "--preferred-batch"),
        max_queue_delay_us=max_queue_delay,
        precisions=precisions,
        backends=backends,
        onnx_kind=kind,
        force=force,
    )
    result = package_triton(bundle, out, options, engines_from=engines_from)
    rows = [
        [m["name"], m["platform"], m["precision"], m["max_batch_size"], ", ".join(m["files"])]
        for m in result.models
    ]
    click.echo(format_table(["model", "platform", "precision", "max batch", "files"], rows))
    for m in result.models:
        for note in m["notes"]:
            click.echo(f"note: {m['name']}: {note}")
    click.echo(
        "config.pbtxt checked against Triton's ModelConfig schema"
        if result.schema_checked
        else "tritonclient is not installed: config.pbtxt not checked against Triton's schema "
        "(pip install 'vggdeploy[triton]')"
    )
    click.echo(
        f"serve: docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 "
        f"-v {Path(out).resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
        "tritonserver --model-repository=/models"
    )


if __name__ == "__main__":
    main()
