"""Latency and throughput across runtimes, precisions and batch sizes: `vggdeploy bench`.

A *case* is one runtime spec (`torch`, `torch:channels-last`, `onnxruntime:cuda`,
`tensorrt@int8`, ... - the grammar of `vggdeploy.runtimes.registry`) at one precision and one
batch size. The stage is split by responsibility:

- `options`: `BenchOptions` and the option parsers (`parse_batches`, `parse_amount`,
  `parse_threshold`);
- `plan`: `plan_cases` expands specs x precisions into `Plan`s and `Skipped` cases (with why);
- `timing`: the timed loop (`time_calls`), trtexec's staged GPU split (`time_staged`,
  `StagedRuntime`), statistics (`summarize`) and peak memory (`PeakRss`);
- `run`: `run_benchmark` runs the plans and returns the result document;
- `endtoend`: `--end-to-end DIR`, image files to top-k, timed per stage (`time_stages`);
- `streams`: `--streams N`, concurrent request streams over one loaded model;
- `reference`: the bare ONNX Runtime loop of `--reference-bare-ort`;
- `results`: the document's schema, JSON/CSV files, noise warnings and `compare_results`.

Nothing here prints; `vggdeploy.report.bench` draws results.
"""

from __future__ import annotations

from vggdeploy.bench.options import (
    DEFAULT_BATCHES,
    DEFAULT_CV_THRESHOLD,
    BenchOptions,
    parse_amount,
    parse_batches,
    parse_streams,
    parse_threshold,
)
from vggdeploy.bench.plan import Plan, Skipped, plan_cases
from vggdeploy.bench.results import (
    COMPARE_SCHEMA,
    CSV_COLUMNS,
    RESULT_SCHEMA,
    case_key,
    case_row,
    check_regressions,
    compare_results,
    csv_text,
    failed_lines,
    load_result,
    noisy_warnings,
    skipped_lines,
    write_csv,
    write_json,
)
from vggdeploy.bench.run import Reporter, flops_per_image, make_feed, run_benchmark
from vggdeploy.bench.timing import (
    STAGED_SPLIT,
    STAT_KEYS,
    Clock,
    PeakRss,
    StagedRuntime,
    summarize,
    time_calls,
    time_staged,
)

__all__ = [
    "COMPARE_SCHEMA",
    "CSV_COLUMNS",
    "DEFAULT_BATCHES",
    "DEFAULT_CV_THRESHOLD",
    "RESULT_SCHEMA",
    "STAGED_SPLIT",
    "STAT_KEYS",
    "BenchOptions",
    "Clock",
    "PeakRss",
    "Plan",
    "Reporter",
    "Skipped",
    "StagedRuntime",
    "case_key",
    "case_row",
    "check_regressions",
    "compare_results",
    "csv_text",
    "failed_lines",
    "flops_per_image",
    "load_result",
    "make_feed",
    "noisy_warnings",
    "parse_amount",
    "parse_batches",
    "parse_streams",
    "parse_threshold",
    "plan_cases",
    "run_benchmark",
    "skipped_lines",
    "summarize",
    "time_calls",
    "time_staged",
    "write_csv",
    "write_json",
]
