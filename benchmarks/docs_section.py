"""`--write-docs`, shared by every script in benchmarks/: each script owns one section of
docs/performance.md, between `<!-- begin NAME -->` and `<!-- end NAME -->` (NAME: the script's
file name without `.py`), and rewrites that section, and nothing else, with what it printed.

    parser = argparse.ArgumentParser(...)
    docs_section.add_option(parser)
    args = parser.parse_args()
    record = docs_section.Recorder(__file__, args.write_docs)  # notes the time and load now
    ...                                                        # measure
    with record:                                               # print the results
        print(table)

What the `with` block prints goes to standard output as always and, with `--write-docs`, into
the section as a text block under one line saying the command, the date and the machine. A
block left by an exception writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import shlex
import sys
from pathlib import Path
from types import TracebackType

DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
OPTION = "--write-docs"


class SectionError(ValueError):
    """The page does not hold exactly one well-formed section of that name."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name} -->", f"<!-- end {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the lines between NAME's markers replaced by `body`; the markers and every
    other byte stay as they were."""
    begin, end = markers(name)
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SectionError(
            f"the page must hold one {begin!r} line followed by one {end!r} line "
            f"(found {len(starts)} and {len(ends)}{', in the wrong order' if starts and ends else ''})"
        )
    if begin in body or end in body:
        raise SectionError(f"the new text of section {name} holds its own markers")
    inner = body.strip("\n").split("\n") if body.strip("\n") else []
    return "\n".join([*lines[: starts[0] + 1], *inner, *lines[ends[0] :]])


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    """Rewrite NAME's section of `path` (atomically: a temporary file renamed over it)."""
    new = replace_section(path.read_text("utf-8"), name, body)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(new, "utf-8")
    os.replace(partial, path)


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        OPTION,
        action="store_true",
        help=f"also rewrite this script's section of {DOCS.relative_to(DOCS.parents[1])}",
    )


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class Recorder:
    """Tees what is printed inside `with` into the script's section (when `enabled`)."""

    def __init__(
        self,
        script: str,
        enabled: bool,
        argv: list[str] | None = None,
        path: Path = DOCS,
    ) -> None:
        self.name = Path(script).stem
        self.enabled = enabled
        self.path = path
        args = sys.argv[1:] if argv is None else argv
        self.command = shlex.join(
            [".venv/bin/python", f"benchmarks/{self.name}.py", *(a for a in args if a != OPTION)]
        )
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.load_before = _load()
        self._buffer = io.StringIO()
        self._redirect: contextlib.AbstractContextManager | None = None

    def heading(self) -> str:
        load_after = _load()
        load = ""
        if self.load_before is not None and load_after is not None:
            load = f", load average {self.load_before:.1f} -> {load_after:.1f}"
        return (
            f"Measured by `{self.command}` on {self.started:%Y-%m-%d} "
            f"({_cpu()}, {os.cpu_count()} CPUs{load}):"
        )

    def body(self) -> str:
        printed = self._buffer.getvalue().rstrip("\n")
        return f"{self.heading()}\n\n```text\n{printed}\n```"

    def __enter__(self) -> Recorder:
        self._redirect = contextlib.redirect_stdout(_Tee(sys.stdout, self._buffer))
        self._redirect.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._redirect is not None
        self._redirect.__exit__(kind, error, trace)
        if kind is None and self.enabled:
            write_section(self.name, self.body(), self.path)
            print(f"wrote section {self.name} of {self.path}", file=sys.stderr)


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()
