"""`vggdeploy pipeline`: the main job, from a model name or checkpoint to a checked bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vggdeploy.cli_options import (
    CONTEXT,
    echo_text,
    emit_json,
    export_model_options,
    image_size_option,
    json_option,
    model_from_options,
    model_size_options,
    opset_option,
    parse_int_list,
    parse_precisions,
    weights_option,
)
from vggdeploy.errors import InputError


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run folder (bundle + report)."
)
@weights_option()
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and sampling.")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False),
    help="Images for calibration, FP16 ranges and validation (default: the photographs shipped "
    "with vggdeploy for calibration; validation then judges like `vggdeploy validate`). With one "
    "sub-folder per class (named as the labels), every precision's top-1/top-5 is measured on "
    "them, as `vggdeploy evaluate`.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    metavar="P[,P...]",
    help="Precisions to make, fp32 among them (default: fp32,fp16,int8; int8 makes the one "
    "INT8 file, model.int8.onnx, which TensorRT and ONNX Runtime both run; repeatable or "
    "comma-separated).",
)
@image_size_option()
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
    help="Calibration images (default: 3/4 of the images, at most 64, the rest held out; every "
    "image when there are fewer than 4).",
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
@export_model_options()
@opset_option()
@json_option("the run's report (report.json)")
def pipeline(
    model: str,
    out: str,
    weights: str,
    seed: int,
    images: str | None,
    precisions: tuple[str, ...],
    image_size: int | None,
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
    labels: str | None,
    resize: int | None,
    mean: str | None,
    std: str | None,
    channel_order: str | None,
    opset: int,
    json_path: str | None,
) -> None:
    """Export, validate, convert/calibrate, build, validate all, evaluate, bench, and report.

    \b
    The main job on any machine, e.g. a CPU laptop in a few minutes:
      vggdeploy pipeline vgg16 --out runs/vgg16
    Your own model: the checkpoint's shapes give --num-classes (and --hidden,
    --width-divisor); --labels names the classes; --images DIR with one sub-folder per class
    adds every precision's top-1/top-5 to the report:
      vggdeploy pipeline vgg16 --weights ckpt.pth --labels labels.txt --images val/ --out runs/me
    OUT/bundle is the bundle; OUT/report.md and OUT/report.json say what was made and how it
    agrees and runs. Validation judges the bundle as `vggdeploy validate OUT/bundle` does.
    TensorRT engines are built only where TensorRT and a GPU are present (otherwise the build
    stage says why it skipped). Running again only redoes stages whose inputs changed (by
    sha256); --force redoes all. Exits with code 2 if a check failed.
    """
    from vggdeploy.cli_options import comma_list
    from vggdeploy.pipeline import MADE_PRECISIONS, PipelineOptions, run_pipeline
    from vggdeploy.report.pipeline import RichPipelineReporter, render_summary, write_report

    sizes = {"num_classes": num_classes, "width_divisor": width_divisor, "hidden": hidden}
    spec, _, pre, notes = model_from_options(
        model, weights, seed, sizes, image_size, resize, mean, std, channel_order
    )
    batches = parse_int_list(batch, "--batch")
    if not batches:
        raise InputError(f"--batch {batch!r} must list positive integers, e.g. 1,8")
    options = PipelineOptions(
        weights=weights,
        seed=seed,
        image_size=pre.crop,
        precisions=tuple(parse_precisions(precisions, MADE_PRECISIONS)) or MADE_PRECISIONS,
        images=images,
        calib_samples=calib_samples,
        calib_method=calib_method,
        batches=batches,
        bench_iterations=bench_iterations,
        **({"bench_runtimes": tuple(comma_list(bench_runtimes))} if bench_runtimes else {}),
        validate_samples=validate_samples,
        force=force,
        num_classes=spec.num_classes,
        width_divisor=spec.width_divisor,
        hidden=spec.hidden,
        labels=labels,
        preprocessing=pre.to_dict(),
        opset=opset,
    )
    argv = sys.argv[1:] if sys.argv and Path(sys.argv[0]).name.startswith("vggdeploy") else None
    to_stdout = json_path == "-"
    echo = (lambda text: echo_text(text, err=True)) if to_stdout else echo_text
    reporter = RichPipelineReporter(echo)
    for note in notes:
        reporter.note(note)
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
