"""Progress bars on the terminal (rich), reaching stages only through their callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class _Bar:
    """What `progress_bar` yields: `update(done, total)` is the stages' progress callback."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def update(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[_Bar]:
    """A transient bar on stderr while the block runs; a no-op bar when not `enabled`."""
    if not enabled:
        yield _Bar()
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
        yield _Bar(progress, progress.add_task(description, total=total))


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
    `unpack_bundle` take, or None when not `enabled` or stderr is not a terminal.
    """
    import sys

    if not enabled or not sys.stderr.isatty():
        yield None
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
