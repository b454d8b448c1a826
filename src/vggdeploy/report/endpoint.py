"""Text for `vggdeploy verify-endpoint`: draws what `vggdeploy.endpoint` returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import text_table

if TYPE_CHECKING:
    from vggdeploy.endpoint.verify import EndpointReport, ModelResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _model_lines(m: ModelResult) -> list[str]:
    verdict = "agrees with" if m.agrees else "DISAGREES with"
    lines = [
        f"{m.model} ({m.precision}, sent as {m.send} to input {m.input!r}): {verdict} the "
        "bundle's reference (the agreement pass: every image once, one client)"
    ]
    rows = [
        [c.metric, f"{c.value:.6g}", f"{c.op} {c.limit:g}", "ok" if c.passed else "FAILED"]
        for c in m.checks
    ]
    lines.append(text_table(["metric", "value", "limit", ""], rows, "lrll"))
    if not m.agrees:
        lines.append(
            f"likely cause: {m.cause}"
            if m.cause
            else "likely cause: no recognised pattern (checked channel order, normalization "
            "missing or doubled, labels shifted by one)"
        )
    load_rows = [
        [
            load.concurrency,
            load.requests,
            load.answered,
            load.agreed,
            load.lost,
            _ms(load.latency_ms.get("median")),
            _ms(load.latency_ms.get("p95")),
            _ms(load.latency_ms.get("p99")),
            f"{load.throughput_rps:.1f}",
        ]
        for load in m.loads
    ]
    lines.append(
        text_table(
            [
                "clients",
                "requests",
                "answered",
                "same top-1",
                "lost",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "req/s",
            ],
            load_rows,
            "rrrrrrrrr",
        )
    )
    for load in m.loads:
        for error in load.errors:
            lines.append(f"  {load.concurrency} client(s): {error}")
    local = m.local
    if "skipped" in local:
        lines.append(f"local end-to-end skipped: {local['skipped']}")
    elif local:
        med = local["median_ms"]
        stage_rows = [[name, _ms(v)] for name, v in med.items()]
        stage_rows.append(["service round trip (p50, one client)", _ms(m.round_trip_ms["median"])])
        lines.append(
            f"the same images here, one per call ({local['runtime']}, {local['calls']} calls), "
            "as bench --end-to-end:"
        )
        lines.append(text_table(["stage", "median ms"], stage_rows, "lr"))
        here = sum(v for k, v in med.items() if k in _server_side(m.send))
        gap = m.round_trip_ms["median"] - here
        lines.append(
            f"round trip minus the local {' + '.join(_server_side(m.send))} medians: "
            f"{gap:.2f} ms (protocol, transport and server overhead, as measured on this run)"
        )
    return lines


def _server_side(send: str) -> tuple[str, ...]:
    """The local stages the service does inside one round trip."""
    return ("decode", "preprocess", "infer") if send == "images" else ("infer",)


def format_endpoint(report: EndpointReport) -> str:
    lines = [
        f"{report.endpoint}: {len(report.models)} model(s) checked against {report.bundle} "
        f"({report.reference} reference, {report.images} images)"
    ]
    for m in report.models:
        lines.append("")
        lines += _model_lines(m)
    lines.append("")
    failed = [m.model for m in report.models if not m.passed]
    lines.append(
        "PASSED: the answers agree with the bundle within validate's tolerances and none was lost"
        if report.passed
        else f"FAILED: {', '.join(failed)}"
    )
    return report_lines(lines)
