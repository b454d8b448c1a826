"""Progress on stderr, reaching stages only through their callbacks.

On a terminal: a transient rich bar. Elsewhere (a log file, CI, a pipe): plain lines, at least
one every `PLAIN_INTERVAL` seconds while the command runs, and once the run has proved that
long, one as each later step starts. A run shorter than the interval prints none, so a quick
failure stays its one `error:` line.

The plain lines come from a small child process (`_ChildProgress`) that the command feeds
with each step and count through a pipe: a thread of our own would stall whenever a C
extension holds the GIL for long (measured: the ONNX checker and protobuf serialisation during
VGG-16's export held it for 21 s, and a heartbeat thread printed nothing meanwhile). The child
ends when the pipe closes, so it never outlives the command.
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
        started: float | None = None,
    ) -> None:
        self.description, self.total, self.done = description, total, 0
        self._amount = amount
        self._emit, self._clock, self.interval = emit, clock, interval
        self._started = clock() if started is None else started
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
        if self._progress is not None:
            self._progress.update(
                self._task, description=shown(description), completed=0, total=total
            )


class _PlainBar(_Bar):
    def update(self, done: int, total: int | None = None) -> None:
        self._progress.update(done, total)

    def step(self, description: str, total: int | None = None) -> None:
        self._progress.step(description, total)


class _ChildProgress:
    """`PlainProgress` run by a child Python process that owns the clock and prints to the
    inherited stderr; `update` and `step` send it one JSON line each through its stdin."""

    def __init__(
        self,
        description: str,
        total: int | None,
        interval: float,
        poll: float,
        unit: str = "count",
    ) -> None:
        import subprocess

        code = "import sys; from vggdeploy.report.progress import _child_main; _child_main()"
        args = [str(time.monotonic()), str(interval), str(poll), unit]
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self._send("step", description, total)

    def _send(self, kind: str, value: Any, total: int | None) -> None:
        import json

        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps([kind, value, total]) + "\n").encode())
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the child is gone: progress is not worth failing for
            pass

    def update(self, done: int, total: int | None = None) -> None:
        self._send("update", done, total)

    def step(self, description: str, total: int | None = None) -> None:
        self._send("step", description, total)

    def close(self) -> None:
        import subprocess

        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _child_main() -> None:
    """The child of `_ChildProgress`: apply each message from stdin to a `PlainProgress` that
    prints to stderr, tick every poll, and end at end of input (the command finished or died).
    Ctrl-C reaches the whole process group: the command handles it, the child ignores it."""
    import json
    import os
    import select
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started, interval, poll = (float(a) for a in sys.argv[1:4])
    amount = _mib if sys.argv[4:5] == ["bytes"] else str

    def emit(line: str) -> None:
        os.write(2, (line + "\n").encode("utf-8", "replace"))

    plain = PlainProgress("", None, emit=emit, interval=interval, started=started, amount=amount)
    fd, pending = sys.stdin.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], poll)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                kind, value, total = json.loads(line)
                if kind == "step":
                    plain.step(str(value), total)
                else:
                    plain.update(int(value), total)
        plain.tick()


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int | None,
    *,
    enabled: bool = True,
    tty: bool | None = None,
    emit: Callable[[str], None] | None = None,
    clock: Callable[[], float] | None = None,
    poll: float = POLL,
) -> Iterator[_Bar]:
    """Progress on stderr while the block runs; a no-op bar when not `enabled`.

    A transient rich bar when stderr is a terminal (`tty`, default: asked of stderr), else
    plain lines (`PlainProgress`, looked at every `poll` seconds) printed by a child process
    (`_ChildProgress`), or, when `emit` or `clock` is given (tests), through `emit` from a
    heartbeat thread.
    """
    if not enabled:
        yield _Bar()
        return
    if not (sys.stderr.isatty() if tty is None else tty):
        due = max(0.0, PLAIN_INTERVAL - poll)
        if emit is None and clock is None:
            child = _ChildProgress(description, total, due, poll)
            try:
                yield _PlainBar(child)
            finally:
                child.close()
            return
        plain = PlainProgress(
            description,
            total,
            emit=emit or _stderr_line,
            clock=clock or time.monotonic,
            interval=due,
        )
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
        child = _ChildProgress("", None, max(0.0, PLAIN_INTERVAL - POLL), POLL, unit="bytes")
        described: list[str] = []

        def plain_update(what: str, done: int, total: int) -> None:
            if not described or described[-1] != what:
                described.append(what)
                child.step(what, total)
            child.update(done, total)

        try:
            yield plain_update
        finally:
            child.close()
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
