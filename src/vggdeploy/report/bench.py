"""Drawing `vggdeploy bench` results: text and Markdown tables, the comparison table, the plot.

The figures come from `vggdeploy.bench` as a result document (a dict, the `--json` schema);
this module only formats them. Sizes use `report.tables.mib`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vggdeploy.bench.results import failed_lines, noisy_warnings
from vggdeploy.bench.timing import THROUGHPUT_STAT
from vggdeploy.bundle import atomic_path
from vggdeploy.errors import InputError
from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import markdown_table, mib, text_table

#: throughput beside the median latency: from the median (`bench.timing.images_per_second`)
THROUGHPUT_HEADER = f"img/s ({THROUGHPUT_STAT})"
TABLE_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "median ms",
    "p90 ms",
    "p99 ms",
    "mean ms",
    "std ms",
    "CV",
    THROUGHPUT_HEADER,
    "GFLOP/s",
    "peak RSS",
]
TABLE_ALIGN = "lll" + "r" * 9
SPLIT_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "H2D ms",
    "compute ms",
    "D2H ms",
    "GPU total ms",
    "host e2e ms",
]
SPLIT_ALIGN = "lll" + "r" * 5
REF_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "harness median ms",
    "bare ORT median ms",
    "ratio",
    "within noise",
]
REF_ALIGN = "lll" + "r" * 4
E2E_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "compute ms",
    "decode ms",
    "preprocess ms",
    "copy ms",
    "infer ms",
    "top-k ms",
    "total ms",
    "total p99 ms",
    "total / compute",
    THROUGHPUT_HEADER,
]
E2E_ALIGN = "lll" + "r" * 10
E2E_STAGES = ("decode", "preprocess", "copy", "infer", "topk")
STREAM_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "streams",
    "threads",
    "img/s (wall)",
    "median ms",
    "p90 ms",
    "p99 ms",
    "img/s vs first",
]
STREAM_ALIGN = "lll" + "r" * 7
E2E_TITLE = "End to end per batch (medians; compute = the compute-only case above)"
STREAM_TITLE = "Concurrent streams over one loaded model (latency per call)"
SPLIT_TITLE = "GPU split (mean, CUDA events)"
REF_TITLE = "Same-run reference: bare onnxruntime loop"
COMPARE_HEADERS = [
    "runtime",
    "precision",
    "batch",
    "old median ms",
    "new median ms",
    "latency x",
    "p99 x",
    "throughput x",
    "verdict",
]
COMPARE_ALIGN = "lll" + "r" * 5 + "l"


# -- one result ---------------------------------------------------------------------------------


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table (strings), shared by the terminal and Markdown views."""
    rows = []
    for c in result["cases"]:
        lat = c["latency_ms"]
        gf = c.get("gflops_per_s")
        rows.append(
            [
                c["runtime"],
                c["precision"],
                str(c["batch"]),
                f"{lat['median']:.3f}",
                f"{lat['p90']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['mean']:.3f}",
                f"{lat['std']:.3f}",
                f"{c['cv']:.1%}" + (" !" if c["noisy"] else ""),
                f"{c['throughput_ips']:.1f}",
                f"{gf:.1f}" if gf is not None else "-",
                mib(c["peak_rss_mb"] * 1024 * 1024),
            ]
        )
    return rows


def split_rows(result: dict[str, Any]) -> list[list[str]]:
    """H2D / compute / D2H / GPU total means and host end to end, for staged cases."""
    rows = []
    for c in result["cases"]:
        s = c.get("split_ms")
        if s:
            rows.append(
                [c["runtime"], c["precision"], str(c["batch"])]
                + [f"{s[k]['mean']:.3f}" for k in ("h2d", "compute", "d2h", "gpu_total")]
                + [f"{c['latency_ms']['mean']:.3f}"]
            )
    return rows


def reference_rows(result: dict[str, Any]) -> list[list[str]]:
    """The harness against the bare ONNX Runtime loop, for cases that ran one."""
    rows = []
    for c in result["cases"]:
        ref = c.get("reference")
        if ref:
            rows.append(
                [
                    c["runtime"],
                    c["precision"],
                    str(c["batch"]),
                    f"{c['latency_ms']['median']:.3f}",
                    f"{ref['latency_ms']['median']:.3f}",
                    f"{ref['median_ratio']:.3f}",
                    ("yes" if ref["agrees"] else "NO") + f" (±{ref['tolerance']:.0%})",
                ]
            )
    return rows


def end_to_end_rows(result: dict[str, Any]) -> list[list[str]]:
    """Stage medians of `--end-to-end` cases beside the compute-only median."""
    rows = []
    for c in result["cases"]:
        st, e2e = c.get("stages"), c.get("end_to_end")
        if not st or not e2e:
            continue
        ratio = e2e.get("total_over_compute")
        rows.append(
            [c["runtime"], c["precision"], str(c["batch"]), f"{c['latency_ms']['median']:.3f}"]
            + [f"{st[k]['median']:.3f}" if k in st else "-" for k in E2E_STAGES]
            + [f"{st['total']['median']:.3f}", f"{st['total']['p99']:.3f}"]
            + [f"{ratio:.2f}x" if ratio else "-", f"{e2e['throughput_ips']:.1f}"]
        )
    return rows


def stream_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per stream count of each `--streams` case."""
    rows = []
    for c in result["cases"]:
        for r in c.get("streams") or []:
            lat, x = r["latency_ms"], r.get("throughput_vs_first")
            rows.append(
                [c["runtime"], c["precision"], str(c["batch"]), str(r["streams"])]
                + [str(r["intra_op_threads"] or "-"), f"{r['throughput_ips']:.1f}"]
                + [f"{lat[k]:.3f}" for k in ("median", "p90", "p99")]
                + [f"{x:.2f}x" if x else "-"]
            )
    return rows


def method_line(result: dict[str, Any]) -> str:
    """One line: the model, the host, warm-up and run length, and when."""
    m = result["method"]
    o = m["options"]
    host = m["host"]
    if o["iterations"] is not None and o["duration_s"] is None:
        run = f"{o['iterations']} iterations"
    elif o["iterations"] is None:
        least = o["min_iterations"] or 1
        run = f"{o['duration_s']:g} s" + (f" (at least {least} iterations)" if least > 1 else "")
    else:
        run = f"at least {o['iterations']} iterations and {o['duration_s']:g} s"
    warm = (
        f"{o['warmup_iterations']} iterations"
        if o["warmup_iterations"] is not None
        else f"{o['warmup_s']:g} s"
    )
    gpu = f", GPU {host['gpu']}" if host.get("gpu") else ", no GPU"
    return (
        f"{result['bundle']['model']} at {result['bundle']['image_size']}px on {host['cpu']} "
        f"({host['usable_cores']} cores){gpu}; warm-up {warm}, then {run} per case; "
        f"{m['timestamp']}"
    )


def notes(result: dict[str, Any]) -> list[str]:
    """Failed and skipped cases, the timing caveat and noise warnings (`warning: ...`), one per
    line."""
    lines = [f"failed {line}" for line in failed_lines(result)]
    lines += [
        f"skipped {s['runtime']}"
        + (f" {s['precision']}" if s["precision"] else "")
        + (f" b{s['batch']}" if s.get("batch") else "")
        + f": {s['reason']}"
        for s in result["skipped"]
    ]
    if not any(c.get("split_ms") for c in result["cases"]):
        lines.append(
            "end-to-end host timing only: no runtime here exposes the H2D/compute/D2H split"
        )
    copies = {c["end_to_end"]["copy"] for c in result["cases"] if c.get("end_to_end")}
    lines += [f"end to end, copy: {note}" for note in sorted(copies)]
    rules = {r["threads_rule"] for c in result["cases"] for r in c.get("streams") or [] if r}
    lines += [f"streams, intra-op threads: {rule}" for rule in sorted(rules)]
    lines += [f"warning: {w}" for w in noisy_warnings(result)]
    return lines


def _sections(result: dict[str, Any]) -> list[tuple[str | None, list[str], list[list[str]], str]]:
    sections: list[tuple[str | None, list[str], list[list[str]], str]] = [
        (None, TABLE_HEADERS, table_rows(result), TABLE_ALIGN)
    ]
    if split_rows(result):
        sections.append((SPLIT_TITLE, SPLIT_HEADERS, split_rows(result), SPLIT_ALIGN))
    if reference_rows(result):
        sections.append((REF_TITLE, REF_HEADERS, reference_rows(result), REF_ALIGN))
    if end_to_end_rows(result):
        sections.append((E2E_TITLE, E2E_HEADERS, end_to_end_rows(result), E2E_ALIGN))
    if stream_rows(result):
        sections.append((STREAM_TITLE, STREAM_HEADERS, stream_rows(result), STREAM_ALIGN))
    return sections


def render_text(result: dict[str, Any]) -> str:
    """The terminal view: the method line, the tables and the notes."""
    lines = [f"vggdeploy bench - {method_line(result)}", ""]
    for title, headers, rows, align in _sections(result):
        if title:
            lines += ["", title + ":"]
        lines.append(text_table(headers, rows, align))
    extra = notes(result)
    if extra:
        lines += ["", *extra]
    return report_lines([*lines, ""])


def render_markdown(result: dict[str, Any]) -> str:
    """The results as GitHub Markdown tables, with the method and skipped cases."""
    lines = [f"**vggdeploy bench** - {method_line(result)}", ""]
    for title, headers, rows, align in _sections(result):
        if title:
            lines += ["", f"{title}:", ""]
        lines.append(markdown_table(headers, rows, align))
    extra = notes(result)
    if extra:
        lines += ["", *(f"- {n}" for n in extra)]
    return report_lines([*lines, ""])


# -- the plot ---------------------------------------------------------------------------------


def write_plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Latency (median, whisker p90-p99) and throughput against batch size, one line per series;
    with `--end-to-end`, each case's stage medians as a stacked bar beside its compute-only
    median; with `--streams`, throughput against latency, one point per stream count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for c in result["cases"]:
        series.setdefault(f"{c['runtime']} {c['precision']}", []).append(c)
    if not series:
        raise InputError("nothing to plot: no case ran")
    batches = sorted({c["batch"] for c in result["cases"]})
    has_e2e = any(c.get("stages") for c in result["cases"])
    has_streams = any(c.get("streams") for c in result["cases"])
    panels = 2 + has_e2e + has_streams
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5.2), constrained_layout=True)
    ax_lat, ax_tp = axes[0], axes[1]
    extra = list(axes[2:])
    if has_e2e:
        _plot_end_to_end(extra.pop(0), result)
    if has_streams:
        _plot_streams(extra.pop(0), result)
    n = len(series)
    spread = 0.06  # offset the series on the log axis so whiskers do not overlap
    for i, (name, cs) in enumerate(sorted(series.items())):
        cs = sorted(cs, key=lambda c: c["batch"])
        shift = 2 ** ((i - (n - 1) / 2) * spread)
        xs = [c["batch"] * shift for c in cs]
        med = [c["latency_ms"]["median"] for c in cs]
        (line,) = ax_lat.plot(xs, med, marker="o", label=name)
        p90 = [c["latency_ms"]["p90"] for c in cs]
        p99 = [c["latency_ms"]["p99"] for c in cs]
        ax_lat.vlines(xs, med, p90, color=line.get_color(), linewidth=1, alpha=0.6)
        ax_lat.vlines(xs, p90, p99, color=line.get_color(), linewidth=4, alpha=0.6)
        ax_lat.plot(xs, p99, linestyle="none", marker="_", markersize=10, color=line.get_color())
        for x, c in zip(xs, cs):
            if c["noisy"]:
                ax_lat.annotate(
                    "noisy",
                    (x, c["latency_ms"]["p99"]),
                    fontsize=7,
                    color=line.get_color(),
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax_tp.plot(
            xs, [c["throughput_ips"] for c in cs], marker="o", label=name, color=line.get_color()
        )
    for ax in (ax_lat, ax_tp):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per batch, ms (log)")
    ax_lat.set_title("Latency per batch: dot = median, thick bar = p90 to p99")
    ax_tp.set_ylabel(f"throughput, images/s (batch / {THROUGHPUT_STAT} latency)")
    ax_tp.set_title("Throughput (serial calls)")
    ax_tp.set_ylim(bottom=0)
    ax_lat.legend(fontsize=8)
    ax_tp.legend(fontsize=8)
    host = result["method"]["host"]
    fig.suptitle(
        f"{result['bundle']['model']} {result['bundle']['image_size']}px - {host['cpu']}, "
        f"{host['usable_cores']} cores"
        + (f", {host['gpu']}" if host.get("gpu") else "")
        + f" - {result['method']['timestamp']}",
        fontsize=10,
    )
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)


def _case_name(c: dict[str, Any]) -> str:
    return f"{c['runtime']} {c['precision']} b{c['batch']}"


def _plot_end_to_end(ax: Any, result: dict[str, Any]) -> None:
    cases = [c for c in result["cases"] if c.get("stages")]
    names = [_case_name(c) for c in cases]
    ys = list(range(len(cases)))
    left = [0.0] * len(cases)
    for stage in E2E_STAGES:
        widths = [c["stages"][stage]["median"] if stage in c["stages"] else 0.0 for c in cases]
        if any(widths):
            ax.barh(ys, widths, left=left, height=0.55, label=stage)
            left = [a + b for a, b in zip(left, widths)]
    compute = [c["latency_ms"]["median"] for c in cases]
    ax.scatter(compute, ys, marker="|", s=300, color="black", zorder=3, label="compute only")
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median ms per batch")
    ax.set_title("End to end: stage medians vs compute only")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_streams(ax: Any, result: dict[str, Any]) -> None:
    for c in result["cases"]:
        rs = c.get("streams") or []
        if not rs:
            continue
        xs = [r["throughput_ips"] for r in rs]
        med = [r["latency_ms"]["median"] for r in rs]
        (line,) = ax.plot(xs, med, marker="o", label=_case_name(c))
        ax.plot(xs, [r["latency_ms"]["p99"] for r in rs], linestyle=":", color=line.get_color())
        for x, y, r in zip(xs, med, rs):
            ax.annotate(
                f"N={r['streams']}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4)
            )
    ax.set_xlabel("throughput, images/s")
    ax.set_ylabel("latency per call, ms (log; solid median, dotted p99)")
    ax.set_title("Concurrent streams: throughput vs latency")
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


# -- two results --------------------------------------------------------------------------------


def comparison_rows(cmp: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """Rows (under `COMPARE_HEADERS`) and notes of a `compare_results` comparison."""
    rows = [
        [
            r["runtime"],
            r["precision"],
            str(r["batch"]),
            f"{r['old_median_ms']:.3f}",
            f"{r['new_median_ms']:.3f}",
            f"{r['latency_ratio']:.3f}",
            f"{r['p99_ratio']:.3f}",
            f"{r['throughput_ratio']:.3f}",
            r["status"].upper()
            if r["status"] == "regression"
            else r["status"] + (" (noisy)" if r["noisy"] else ""),
        ]
        for r in cmp["rows"]
    ]
    lines = [f"only in OLD: {k[0]} {k[1]} b{k[2]}" for k in cmp["only_old"]]
    lines += [f"only in NEW: {k[0]} {k[1]} b{k[2]}" for k in cmp["only_new"]]
    lines += [f"method differs: {k}: {a} -> {b}" for k, (a, b) in cmp["method_differences"].items()]
    lines.append(
        f"{cmp['regressions']} regression(s) beyond {cmp['threshold']:.1%} in median latency"
    )
    return rows, lines


def render_comparison_text(cmp: dict[str, Any]) -> str:
    rows, lines = comparison_rows(cmp)
    return report_lines([text_table(COMPARE_HEADERS, rows, COMPARE_ALIGN), *lines, ""])


def render_comparison_markdown(cmp: dict[str, Any]) -> str:
    rows, lines = comparison_rows(cmp)
    md = markdown_table(COMPARE_HEADERS, rows, COMPARE_ALIGN)
    return report_lines([md, "", *(f"- {n}" for n in lines), ""])
