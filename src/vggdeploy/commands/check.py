"""Commands that check and use a bundle: models, validate, predict, evaluate, inspect."""

from __future__ import annotations

import logging

import click

from vggdeploy.cli_options import (
    CONTEXT,
    allow_fallback_option,
    batch_option,
    echo_text,
    emit_json,
    json_option,
    log,
    parse_precisions,
    parse_runtimes,
    precision_option,
    raise_if_skipped,
    runtime_option,
    skip_printer,
    strict_option,
    threads_option,
)
from vggdeploy.errors import InputError, RuntimeUnavailableError

# -- model zoo --------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
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
        echo_text(render_zoo(data))


# -- runtimes: validate, predict --------------------------------------------------------------


@click.command(context_settings=CONTEXT)
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
@strict_option()
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
    strict: bool,
) -> None:
    """Compare BUNDLE's runtimes and precisions with the PyTorch reference on the same inputs.

    Reports max/p99 absolute error, error relative to the output's largest magnitude and range,
    cosine similarity, top-1 agreement and top-5 overlap; each precision is judged by its own
    tolerances. INT8 is always judged on real images (yours, or the shipped photographs), never
    on random tensors, and on at least 10 of them (fewer: one image that disagrees would fail
    top-1 agreement 0.9 on its own, so the target is reported but not judged; the number
    follows --tol int8.top1). An unreadable
    image is listed and left out of every comparison (--strict: stop at the first). Exit 0 when
    every check passes, 2 when any fails, 3 when all passed but images were left out.
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
    from vggdeploy.report.progress import progress_bar

    show = log.isEnabledFor(logging.INFO) and json_path != "-"
    with progress_bar("validating", None, enabled=show) as bar:
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
            progress=bar.step,
            strict=strict,
            on_skip=skip_printer(),
        )
    if json_path != "-":
        echo_text(render_validation(report))
    if json_path:
        emit_json(report.to_dict(), json_path)
        if json_path != "-":
            echo_text(f"report written to {json_path}")
    if not report.passed:
        raise CheckFailedError(f"validation {report.summary()}")
    raise_if_skipped(report.skipped_images, "validated")


@click.command(context_settings=CONTEXT)
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
    # Unlike calibrate/validate/evaluate (exit 3 and --strict), a file predict cannot read
    # stays an error (exit 1): the predictions are the result asked for, one per named file,
    # so a missing one is the command failing at its job, not a sample left out of a figure.
    from vggdeploy.bundle import Bundle
    from vggdeploy.predict import predict_images
    from vggdeploy.report.predict import produced_by, render_predictions
    from vggdeploy.runtimes.registry import open_runtime, parse_spec, unavailable

    b = Bundle.load(bundle)
    spec = parse_spec(runtimes, precision=precision or "fp32")
    if reason := unavailable(spec, b, allow_fallback=allow_fallback):
        raise RuntimeUnavailableError(f"{spec.text}: {reason}")
    with open_runtime(b, spec, threads=threads, allow_fallback=allow_fallback) as rt:
        results = predict_images(rt, b, images, top=top, batch=batch)
        info = rt.describe().to_dict()
    failed = [r for r in results if not r.ok]
    by = produced_by(info)
    if json_path != "-":
        echo_text(render_predictions(results, by))
    if json_path:
        answered = {"runtime": info.get("label"), "precision": info.get("precision")}
        data = {
            "bundle": str(b.root),
            "runtime": info,
            "top": top,
            "results": [{**r.to_dict(), **(answered if r.ok else {})} for r in results],
            "failed": len(failed),
        }
        emit_json(data, json_path)
    if failed:
        raise InputError(
            f"{len(failed)} of {len(results)} files could not be classified (see above)"
        )


@click.command(context_settings=CONTEXT)
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
@strict_option()
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
    strict: bool,
    json_path: str | None,
) -> None:
    """Top-1/top-5 accuracy of BUNDLE on a labelled image folder, per runtime and precision.

    The folder holds one sub-folder per class (ImageFolder layout), matched to the bundle's
    labels; every runtime sees the same decoded batches. Deltas are percentage points against
    fp32. An unreadable image is listed, left out of every runtime's figures, and the run
    exits 3 (--strict: stop at the first).
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
            strict=strict,
            on_skip=skip_printer(),
        )
    if json_path != "-":
        echo_text(render_evaluation(report, images))
    if json_path:
        emit_json(report, json_path)
        if json_path != "-":
            echo_text(f"wrote {json_path}")
    raise_if_skipped(report["skipped_images"], "evaluated")


@click.command("inspect", context_settings=CONTEXT)
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
    from vggdeploy.inspection import inspect_path
    from vggdeploy.report.inspection import format_report

    info = inspect_path(path)
    if json_path is not None:
        emit_json(info, json_path)
    if json_path != "-":
        echo_text(format_report(info))
    if info.get("problems"):
        raise CheckFailedError(
            f"{len(info['problems'])} artifact problem(s) in {path}: {info['problems'][0]}"
            + (" (and more, listed above)" if len(info["problems"]) > 1 else "")
        )
