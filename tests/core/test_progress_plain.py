"""Progress off a terminal: plain lines, one as each step starts and at least one every
`PLAIN_INTERVAL` seconds while it runs (a fake clock stands in for time: nothing sleeps)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vggdeploy.report.progress import PLAIN_INTERVAL, POLL, PlainProgress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_at_least_every_interval_and_not_more_often() -> None:
    clock, lines, at = FakeClock(), [], []

    def emit(line: str) -> None:
        lines.append(line)
        at.append(clock.now)

    plain = PlainProgress("calibrating", 100, emit=emit, clock=clock)
    plain.step("calibrating on 100 images", 100)
    assert lines == []  # nothing yet: a run shorter than the interval prints no progress
    # a count every 0.25 s for 35 s: a line each time the interval less one poll has passed
    for i in range(1, 141):
        clock.now = i * 0.25
        plain.update(i, None)
    assert at == [9.5, 19.0, 28.5]
    assert lines[0] == "calibrating on 100 images: 38/100 (10 s)"
    # the run has proved long: a new step is named at once
    plain.step("writing the Q/DQ model", None)
    assert lines[3] == "writing the Q/DQ model (35 s)"


@pytest.mark.parametrize("phase", [0.0, 0.13, 0.37, 0.49])
def test_the_heartbeat_keeps_every_gap_within_the_interval(phase: float) -> None:
    """A long step with no callback of its own: the heartbeat's ticks, every POLL seconds at
    any phase, keep every gap between lines (and from the start) within PLAIN_INTERVAL."""
    clock, at = FakeClock(), []
    plain = PlainProgress("x", emit=lambda _line: at.append(clock.now), clock=clock)
    plain.step("a step started between ticks", None)
    for i in range(400):
        clock.now = phase + i * POLL
        plain.tick()
    gaps = [b - a for a, b in zip([0.0, *at], at)]
    assert len(at) >= 19 and max(gaps) <= PLAIN_INTERVAL
    assert min(gaps) >= PLAIN_INTERVAL - POLL  # and not more often


def test_names_from_outside_are_escaped() -> None:
    clock, lines = FakeClock(), []
    plain = PlainProgress("x", emit=lines.append, clock=clock)
    clock.now = PLAIN_INTERVAL
    plain.tick()
    plain.step("reading a\x1b[2Jb.png", None)
    assert lines == ["x (10 s)", "reading a\\x1b[2Jb.png (10 s)"]


def test_progress_bar_off_a_terminal_beats_on_its_own() -> None:
    """The heartbeat thread prints while the stage is silent: advancing the fake clock past the
    interval brings a line with no callback from the stage."""
    clock, lines, arrived = FakeClock(), [], threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        arrived.set()

    with progress_bar("exporting", None, tty=False, emit=emit, clock=clock, poll=0.001) as bar:
        bar.step("tracing")
        assert lines == []
        clock.now = PLAIN_INTERVAL
        assert arrived.wait(timeout=30), "no heartbeat line"
    assert lines[0] == "tracing (10 s)"


def test_progress_bar_disabled_prints_nothing() -> None:
    lines: list[str] = []
    with progress_bar("x", 3, enabled=False, tty=False, emit=lines.append) as bar:
        bar.update(1, 3)
        bar.step("y")
    assert lines == []


def test_export_reports_its_steps_through_the_callback(tmp_path: Path) -> None:
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    seen: list[str] = []
    spec = resolve_spec("vgg11", width_divisor=16, hidden=64, num_classes=10)
    export_bundle(
        spec,
        WeightsSource("random", seed=0),
        tmp_path / "b",
        ExportOptions(image_size=32),
        progress=seen.append,
    )
    assert [line.split(" ")[0] for line in seen] == ["loading", "tracing", "checking", "writing"]


def test_cli_export_prints_plain_progress_off_a_terminal(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    import vggdeploy.report.progress as progress
    from vggdeploy.cli import main

    caplog.set_level(logging.INFO, logger="vggdeploy")  # as without -q
    # every step named once the first heartbeat (0.5 s) has spoken: a fast machine exports the
    # tiny model well within the real 10 s
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    args = ["export", "vgg11", "--width-divisor", "16", "--hidden", "64", "--num-classes", "10"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--image-size", "32", "--out", str(tmp_path / "b")])
    err = capfd.readouterr().err
    assert exc.value.code == 0
    assert "tracing the model and exporting it to ONNX (torch.onnx, dynamo) (" in err


def test_lines_keep_coming_while_a_c_extension_holds_the_gil(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The command's own process may hold the GIL for long (the ONNX checker on VGG-16: 21 s
    with no line from a heartbeat thread): the lines come from a child process. Here one
    regular-expression match holds the GIL for about a second while the interval is 0.3 s."""
    import re
    import time

    import vggdeploy.report.progress as progress

    def hold_gil(n: int) -> float:
        start = time.perf_counter()
        re.match(r"(a+)+$", "a" * n + "b")  # backtracks in C, never releasing the GIL
        return time.perf_counter() - start

    n = 18
    while hold_gil(n) < 0.2:  # each extra character doubles the time: aim at ~1.6 s
        n += 1
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.35)
    with progress_bar("export", None, tty=False, poll=0.05) as bar:
        bar.step("holding the GIL")
        hold = hold_gil(n + 3)  # one call: no thread of this process runs meanwhile
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("holding the GIL")]
    # a heartbeat thread would print at most one line, after the match returned
    assert hold >= 0.9 and len(lines) >= 2, (hold, err)


def test_the_child_prints_nothing_for_a_short_run(capfd: pytest.CaptureFixture[str]) -> None:
    with progress_bar("quick", 3, tty=False) as bar:
        bar.update(1, 3)
    assert capfd.readouterr().err == ""
