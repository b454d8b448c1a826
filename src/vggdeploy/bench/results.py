"""The result document of `vggdeploy bench` and what is done with it as data: its schema,
JSON and CSV files, noise warnings, and comparing two results case by case.

Results carry the method (host, threads, providers, versions, flags, counts) so a result file
explains itself. Drawing them (tables, Markdown, plots) is `vggdeploy.report.bench`'s work.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vggdeploy.bench.endtoend import STAGES as E2E_STAGES
from vggdeploy.bench.plan import Skipped
from vggdeploy.bench.timing import STAGED_SPLIT, STAT_KEYS, THROUGHPUT_STAT
from vggdeploy.bundle import atomic_write_json, atomic_write_text
from vggdeploy.errors import CheckFailedError, InputError

RESULT_SCHEMA = "vggdeploy.bench/1"
COMPARE_SCHEMA = "vggdeploy.bench-compare/1"

#: How the figures are made, recorded in every result's method.
METHOD_NOTES = {
    "timer": (
        "time.perf_counter_ns read once per call: a call lasts from its start to the "
        "next call's start; feed built and checked once, outside the loop"
    ),
    "latency": "per call (one batch), milliseconds; percentiles interpolate linearly",
    "throughput": f"batch / {THROUGHPUT_STAT} latency (serial calls, one stream); with "
    "--streams, all images over the wall time",
    "gflops": "flops_per_image x images/s; FLOPs count a multiply-accumulate as 2",
}


def make_result(
    *,
    bundle: dict[str, Any],
    method: dict[str, Any],
    cases: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    loads: list[dict[str, Any]],
    failed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The result document: the bundle, the method (with `METHOD_NOTES` and the GPU split's
    definition added), the cases, what was skipped, what failed while running (each like a
    skipped entry: runtime, precision, batch, reason) and each runtime's load."""
    return {
        "schema": RESULT_SCHEMA,
        "bundle": bundle,
        "method": {**method, **METHOD_NOTES, "gpu_split": dict(STAGED_SPLIT)},
        "cases": cases,
        "skipped": skipped,
        "failed": failed or [],
        "loads": loads,
    }


def skipped_lines(result: dict[str, Any]) -> Iterable[str]:
    """One line per skipped case: `runtime precision [bN]: reason`."""
    for s in result["skipped"]:
        yield str(Skipped.from_dict(s))


def failed_lines(result: dict[str, Any]) -> Iterable[str]:
    """One line per case whose backend failed while running: `runtime precision bN: reason`
    (the reason names the runtime, its precision and the artifact). Older result files have no
    `failed` list."""
    for f in result.get("failed") or ():
        yield str(Skipped.from_dict(f))


def noisy_warnings(result: dict[str, Any]) -> list[str]:
    """trtexec-style warnings for cases whose coefficient of variation is over the threshold."""
    threshold = result["method"]["options"]["cv_threshold"]
    out = []
    for c in result["cases"]:
        if c["noisy"]:
            out.append(
                f"{c['runtime']} {c['precision']} b{c['batch']}: latency varies by "
                f"{c['cv']:.1%} (coefficient of variation > {threshold:.0%}); the figures are "
                "noisy - close other work, pin threads, or measure longer (--duration)"
            )
        ref = c.get("reference")
        if ref and not ref["agrees"]:
            out.append(
                f"{c['runtime']} {c['precision']} b{c['batch']}: median {ref['median_ratio']:.3f}x "
                f"the bare onnxruntime loop (beyond {ref['tolerance']:.0%} noise)"
            )
    return out


# -- files ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    ["runtime", "precision", "batch", "label", "iterations", "warmup_iterations", "measured_s"]
    + [f"latency_{k}_ms" for k in STAT_KEYS]
    + ["cv", "noisy", "throughput_ips", "gflops_per_s", "flops_per_image", "peak_rss_mb", "load_s"]
    + [
        f"{s}_{k}_ms"
        for s in ("h2d", "compute", "d2h", "gpu_total")
        for k in ("mean", "median", "p99")
    ]
    + ["ref_median_ms", "ref_mean_ms", "ref_p99_ms", "ref_median_ratio", "ref_agrees", "timing"]
    # --end-to-end (empty without it); --streams sweeps are nested: in --json and the tables only
    + [f"e2e_{s}_median_ms" for s in (*E2E_STAGES, "total")]
    + ["e2e_total_p99_ms", "e2e_throughput_ips"]
)


def case_row(case: dict[str, Any]) -> dict[str, Any]:
    """One case flattened to the CSV columns."""
    row: dict[str, Any] = {k: case.get(k) for k in CSV_COLUMNS if k in case}
    for k in STAT_KEYS:
        row[f"latency_{k}_ms"] = case["latency_ms"][k]
    for stage in ("h2d", "compute", "d2h", "gpu_total"):
        split = (case.get("split_ms") or {}).get(stage)
        for k in ("mean", "median", "p99"):
            row[f"{stage}_{k}_ms"] = split[k] if split else None
    ref = case.get("reference")
    row["ref_median_ms"] = ref["latency_ms"]["median"] if ref else None
    row["ref_mean_ms"] = ref["latency_ms"]["mean"] if ref else None
    row["ref_p99_ms"] = ref["latency_ms"]["p99"] if ref else None
    row["ref_median_ratio"] = ref["median_ratio"] if ref else None
    row["ref_agrees"] = ref["agrees"] if ref else None
    stages = case.get("stages") or {}
    for stage in (*E2E_STAGES, "total"):
        row[f"e2e_{stage}_median_ms"] = stages[stage]["median"] if stage in stages else None
    row["e2e_total_p99_ms"] = stages["total"]["p99"] if stages else None
    e2e = case.get("end_to_end")
    row["e2e_throughput_ips"] = e2e["throughput_ips"] if e2e else None
    return row


def csv_text(result: dict[str, Any]) -> str:
    """Every case as CSV (`CSV_COLUMNS`), numbers to 6 significant digits."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in result["cases"]:
        writer.writerow({k: _csv_value(v) for k, v in case_row(case).items()})
    return buf.getvalue()


def write_csv(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, csv_text(result))


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, result)


# -- comparing ----------------------------------------------------------------------------------


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist: give a file written by `vggdeploy bench --json`")
    try:
        data = json.loads(p.read_text("utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{p} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        raise InputError(f"{p} is not a vggdeploy bench result (schema {RESULT_SCHEMA} expected)")
    problem = _result_problem(data)
    if problem:
        raise InputError(
            f"{p} is not a usable bench result ({problem}): give a file written by "
            "`vggdeploy bench --json`"
        )
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 1e12
    )


def _result_problem(data: dict[str, Any]) -> str | None:
    """What `compare_results` would trip over in a result file, or None."""
    method = data.get("method")
    if not isinstance(method, dict) or not all(
        isinstance(method.get(part, {}), dict) for part in ("host", "versions")
    ):
        return "'method' must be an object with 'host' and 'versions' objects"
    cases = data.get("cases")
    if not isinstance(cases, list):
        return "'cases' must be a list"
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            return f"case {i} is not an object"
        if not isinstance(case.get("runtime"), str) or not isinstance(case.get("precision"), str):
            return f"case {i} needs 'runtime' and 'precision' strings"
        batch = case.get("batch")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 < batch < 1 << 20:
            return f"case {i} needs a positive integer 'batch'"
        latency = case.get("latency_ms")
        if not isinstance(latency, dict) or not all(
            _positive(latency.get(k)) for k in ("median", "p99")
        ):
            return f"case {i} needs positive finite 'latency_ms' 'median' and 'p99'"
        if not _positive(case.get("throughput_ips")):
            return f"case {i} needs a positive finite 'throughput_ips'"
    return None


def case_key(case: dict[str, Any]) -> tuple[str, str, int]:
    return (case["runtime"], case["precision"], int(case["batch"]))


def compare_results(old: dict[str, Any], new: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Per-case ratios new/old of median latency and throughput; regressions beyond `threshold`.

    A case regresses when its median latency grew by more than `threshold` (0.05 = 5%).
    """
    old_cases = {case_key(c): c for c in old["cases"]}
    new_cases = {case_key(c): c for c in new["cases"]}
    rows = []
    for key in [k for k in new_cases if k in old_cases]:
        o, n = old_cases[key], new_cases[key]
        ratio = n["latency_ms"]["median"] / o["latency_ms"]["median"]
        status = (
            "regression"
            if ratio > 1 + threshold
            else ("faster" if ratio < 1 - threshold else "same")
        )
        rows.append(
            {
                "runtime": key[0],
                "precision": key[1],
                "batch": key[2],
                "old_median_ms": o["latency_ms"]["median"],
                "new_median_ms": n["latency_ms"]["median"],
                "latency_ratio": ratio,
                "p99_ratio": n["latency_ms"]["p99"] / o["latency_ms"]["p99"],
                "throughput_ratio": n["throughput_ips"] / o["throughput_ips"],
                "status": status,
                "noisy": bool(o.get("noisy") or n.get("noisy")),
            }
        )
    differences = {}
    for part in ("host", "versions"):
        a, b = old["method"].get(part, {}), new["method"].get(part, {})
        for k in sorted(set(a) | set(b)):
            if k in ("hostname",):
                continue
            if a.get(k) != b.get(k):
                differences[f"{part}.{k}"] = [a.get(k), b.get(k)]
    return {
        "schema": COMPARE_SCHEMA,
        "threshold": threshold,
        "rows": rows,
        "only_old": [list(k) for k in old_cases if k not in new_cases],
        "only_new": [list(k) for k in new_cases if k not in old_cases],
        "regressions": sum(r["status"] == "regression" for r in rows),
        "method_differences": differences,
    }


def check_regressions(cmp: dict[str, Any]) -> None:
    """Raise `CheckFailedError` (exit 2) if any case regressed."""
    if cmp["regressions"]:
        worst = max(cmp["rows"], key=lambda r: r["latency_ratio"])
        raise CheckFailedError(
            f"{cmp['regressions']} case(s) slower by more than {cmp['threshold']:.1%}; worst "
            f"{worst['runtime']} {worst['precision']} b{worst['batch']} at "
            f"{worst['latency_ratio']:.3f}x the old median"
        )
