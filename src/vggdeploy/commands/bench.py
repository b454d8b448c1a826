"""The bench command."""

from __future__ import annotations

import logging
import sys

import click

from vggdeploy.cli_options import (
    CONTEXT,
    DEFAULT_BENCH_RUNTIMES_HELP,
    echo_text,
    emit_json,
    emit_text,
    json_option,
    log,
    parse_precisions,
    parse_runtimes,
    precision_option,
    runtime_option,
    threads_option,
)
from vggdeploy.errors import InputError

# -- benchmark: bench (issue 6) ---------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@runtime_option(
    "Runtime to time, repeatable or comma-separated; a spec with @PRECISION runs only that "
    f"precision. Default: {DEFAULT_BENCH_RUNTIMES_HELP} (those this host cannot run are listed "
    "as skipped)."
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
@click.option(
    "--end-to-end",
    "end_to_end",
    type=click.Path(),
    metavar="DIR",
    help="Also time each case from DIR's JPEG/PNG files to top-k: decode, preprocess, copy to "
    "the device (where there is one), infer, top-k, per stage.",
)
@click.option(
    "--top", "top_k", default=5, show_default=True, help="With --end-to-end: classes per image."
)
@click.option(
    "--streams",
    "streams_text",
    metavar="N[,N...]",
    help="Also time N concurrent request streams over one loaded model (e.g. 1,2,4): images/s "
    "and latency per N.",
)
@click.option(
    "--stream-threads",
    default="auto",
    show_default=True,
    help="With --streams: intra-op threads of the model per stream count: 'auto' = usable "
    "cores // N, or a fixed number.",
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
    reference_bare_ort: bool,
    cv_threshold: str,
    seed: int,
    json_path: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    plot_path: str | None,
    end_to_end: str | None,
    top_k: int,
    streams_text: str | None,
    stream_threads: str,
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
    if compare and (end_to_end or streams_text):
        raise InputError(
            "--end-to-end and --streams time a BUNDLE; --compare compares two result files: "
            "drop one of them"
        )
    if streams_text is None and stream_threads != "auto":
        raise InputError("--stream-threads applies to --streams: add --streams N")
    if compare:
        if bundle:
            raise InputError("--compare takes two result files and no BUNDLE: drop one of them")
        _bench_compare(compare, stage.parse_threshold(threshold), json_path, markdown_path)
        return
    if not bundle:
        raise InputError("give a BUNDLE to benchmark (or --compare OLD.json NEW.json)")
    from vggdeploy.bench import streams as concurrency
    from vggdeploy.bundle import Bundle
    from vggdeploy.runtimes.base import RuntimeFailedError

    stream_counts = stage.parse_streams(streams_text) if streams_text is not None else ()
    options = stage.BenchOptions.from_cli(
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        cv_threshold=cv_threshold,
        seed=seed,
        image_size=image_size,
        threads=threads,
        reference_bare_ort=reference_bare_ort,
        keep_samples=samples,
        end_to_end=end_to_end,
        top_k=top_k,
        streams=stream_counts,
        stream_threads=concurrency.parse_stream_threads(stream_threads),
    )
    specs = parse_runtimes(runtimes) or None
    for spec in specs or ():  # asked for by name: refused now, not skipped later
        reason = concurrency.refusal(spec.name, max(stream_counts, default=1))
        if reason:
            raise InputError(f"{spec.runtime}: {reason}")
    wanted = parse_precisions(precisions) or None
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
    failed = list(stage.failed_lines(result))
    if not result["cases"]:
        for line in stage.skipped_lines(result):
            echo_text(f"skipped {line}", err=True)
        if failed:
            raise RuntimeFailedError(_failure_line(failed))
        raise InputError("no case could run on this host (reasons above)")
    if not to_stdout:
        echo_text(view.render_text(result), nl=False)
    if json_path:
        emit_json(result, json_path)
    if csv_path:
        emit_text(stage.csv_text(result), csv_path, data=True)
    if markdown_path:
        emit_text(view.render_markdown(result), markdown_path)
    if plot_path:
        view.write_plot(result, plot_path)
    for path in (json_path, csv_path, markdown_path, plot_path):
        if path and path != "-":
            log.info("wrote %s", path)
    if failed:  # the cases that ran are reported above; the run still failed
        raise RuntimeFailedError(_failure_line(failed))


def _failure_line(failed: list[str]) -> str:
    """The one error line for cases whose backend failed: the first in full (it names the
    runtime spec, the batch, the artifact and the error), then how many more."""
    more = f" (and {len(failed) - 1} more failed case(s), listed above)" if len(failed) > 1 else ""
    return f"bench case {failed[0]}{more}"


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
        echo_text(view.render_comparison_text(cmp), nl=False)
    if json_path:
        emit_json(cmp, json_path)
    if markdown_path:
        emit_text(view.render_comparison_markdown(cmp), markdown_path)
    stage.check_regressions(cmp)
