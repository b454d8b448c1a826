"""Progress on stderr, reaching stages only through their callbacks.

On a terminal: a transient rich bar. Elsewhere (a log file, CI, a pipe): plain lines, at least
one every `PLAIN_INTERVAL` seconds while the command runs (from a small background thread, so
a long step with no callback of its own, torch's ONNX export or a reference model's run, still
shows it is alive), and once the run has proved that long, one as each later step starts. A
run shorter than the interval prints none, so a quick failure stays its one `error:` line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from vggdeploy.report.escape import shown

#: the most seconds between two plain progress lines while something runs
PLAIN_INTERVAL = 10.0
#: how often the heartbeat thread looks at the clock: a line is due `PLAIN_INTERVAL - POLL`
#: seconds after the last, so the tick that finds it late still keeps the promise above
POLL = 0.5


class PlainProgress:
    """Progress as plain lines through `emit`: one whenever `tick` finds `interval` seconds of
    `clock` have passed since the last line (or the start), and, once a line has been printed,
    one as each step starts (`step`). `update(done, total)` records the count (printed with the
    next line). Thread-safe: the heartbeat thread calls `tick` while the stage calls `update`."""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        interval: float = PLAIN_INTERVAL - POLL,
        amount: Callable[[int], str] = str,
    ) -> None:
        self.description, self.total, self.done = description, total, 0
        self._amount = amount
        self._emit, self._clock, self.interval = emit, clock, interval
        self._started = clock()
        self._last = self._started
        self._spoke = False  # no line yet: the run may end before the interval
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None) -> None:
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
        self.tick()

    def step(self, description: str, total: int | None = None) -> None:
        """A new step: its line now if the run has printed before, else with the next tick."""
        with self._lock:
            self.description, self.total, self.done = description, total, 0
            if self._spoke:
                self._line()

    def tick(self) -> None:
        with self._lock:
            if self._clock() - self._last >= self.interval:
                self._line()

    def _line(self) -> None:
        now = self._clock()
        count = ""
        if self.total:
            count = f": {self._amount(self.done)}/{self._amount(self.total)}"
        elif self.done:
            count = f": {self._amount(self.done)}"
        self._emit(f"{shown(self.description)}{count} ({now - self._started:.0f} s)")
        self._last, self._spoke = now, True


@contextlib.contextmanager
def heartbeat(progress: PlainProgress, poll: float = POLL) -> Iterator[None]:
    """Call `progress.tick()` every `poll` seconds from a daemon thread while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(poll):
            progress.tick()

    thread = threading.Thread(target=beat, name="vggdeploy-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _Bar:
    """What `progress_bar` yields: `update(done, total)` is the stages' count callback and
    `step(line)` their step callback."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def update(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def step(self, description: str, total: int | None = None) -> None:
        if self._progress is None:
            return
        if isinstance(self._progress, PlainProgress):
            self._progress.step(description, total)
        else:
            self._progress.update(
                self._task, description=shown(description), completed=0, total=total
            )


class _PlainBar(_Bar):
    def update(self, done: int, total: int | None = None) -> None:
        self._progress.update(done, total)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int | None,
    *,
    enabled: bool = True,
    tty: bool | None = None,
    emit: Callable[[str], None] = _stderr_line,
    clock: Callable[[], float] = time.monotonic,
    poll: float = POLL,
) -> Iterator[_Bar]:
    """Progress on stderr while the block runs; a no-op bar when not `enabled`.

    A transient rich bar when stderr is a terminal (`tty`, default: asked of stderr), else
    plain lines through `emit` (`PlainProgress`, with a heartbeat every `poll` seconds).
    """
    if not enabled:
        yield _Bar()
        return
    if not (sys.stderr.isatty() if tty is None else tty):
        due = max(0.0, PLAIN_INTERVAL - poll)
        plain = PlainProgress(description, total, emit=emit, clock=clock, interval=due)
        with heartbeat(plain, poll):
            yield _PlainBar(plain)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield _Bar(progress, progress.add_task(shown(description), total=total))


class CaseProgress:
    """A `vggdeploy.bench.Reporter`: progress over bench cases on `console` (stderr).

    Refreshed only between phases (auto_refresh off), so no display thread competes with the
    timed loop.
    """

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


# -- bytes (pack, unpack) -----------------------------------------------------------------------


@contextlib.contextmanager
def byte_progress(*, enabled: bool = True) -> Iterator[Any]:
    """A transient bar of bytes (size, speed, time left) on stderr for the block.

    Yields the `progress(what, done_bytes, total_bytes)` callback that `pack_bundle` and
    `unpack_bundle` take (None when not `enabled`); off a terminal, plain lines
    (`PlainProgress`) as each file starts and at least every `PLAIN_INTERVAL` seconds.
    """
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        plain = PlainProgress("", None, emit=_stderr_line, amount=_mib)
        described: list[str] = []

        def plain_update(what: str, done: int, total: int) -> None:
            if not described or described[-1] != what:
                described.append(what)
                plain.step(what, total)
            plain.update(done, total)

        with heartbeat(plain):
            yield plain_update
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
