"""Options and parameter types shared by the commands in `cli.py`.

Cheap to import: nothing here pulls in torch, ONNX or a runtime backend, so `--help` stays fast.
One spelling per idea: `--runtime` takes the registry's spec grammar, `--precision` the names in
`vggdeploy.precision`, `--batch` a batch size, `--json FILE` writes JSON (`-`: standard output
instead of the table).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from vggdeploy import precision as P
from vggdeploy.errors import InputError
from vggdeploy.report.escape import shown_lines

F = TypeVar("F", bound=Callable[..., Any])

#: the package's logger; `-v`/`-q` set its level (progress lines go through it)
log = logging.getLogger("vggdeploy")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: the spec grammar in one line, for --help (runtimes.registry.SPEC_HELP without importing it)
RUNTIME_SPEC_HELP = (
    "NAME[:VARIANT...][@PRECISION], e.g. torch, torch:channels-last, onnxruntime:cpu@fp32, "
    "onnxruntime:cuda, tensorrt@int8, tensorrt:cuda-graphs"
)


def json_option(what: str = "the results") -> Callable[[F], F]:
    return click.option(
        "--json",
        "json_path",
        type=click.Path(dir_okay=False, allow_dash=True),
        metavar="FILE",
        help=f"Write {what} as JSON to FILE ('-': standard output, instead of the table).",
    )


def runtime_option(
    help_text: str, *, multiple: bool = True, default: Any = None
) -> Callable[[F], F]:
    return click.option(
        "--runtime",
        "runtimes",
        multiple=multiple,
        default=default,
        metavar="SPEC",
        help=f"{help_text} SPEC: {RUNTIME_SPEC_HELP}.",
    )


def precision_option(help_text: str, choices: Iterable[str] = P.NAMES) -> Callable[[F], F]:
    names = ", ".join(choices)
    return click.option(
        "--precision",
        "precisions",
        multiple=True,
        metavar="P[,P...]",
        help=f"{help_text} ({names}; repeatable or comma-separated).",
    )


def threads_option() -> Callable[[F], F]:
    return click.option(
        "--threads", type=click.IntRange(min=1), help="Intra-op threads for onnxruntime and torch."
    )


def allow_fallback_option() -> Callable[[F], F]:
    return click.option(
        "--allow-fallback",
        is_flag=True,
        help="Accept an ONNX Runtime session that fell back to another provider (warns).",
    )


def batch_option(default: int, help_text: str = "Batch size.") -> Callable[[F], F]:
    return click.option(
        "--batch", default=default, show_default=True, type=click.IntRange(1, 4096), help=help_text
    )


def model_size_options() -> Callable[[F], F]:
    """`--num-classes`, `--width-divisor`, `--hidden`: smaller variants with the same key layout."""

    def decorate(f: F) -> F:
        f = click.option(
            "--hidden",
            type=click.IntRange(min=1),
            help="Width of the two hidden FC layers (default 4096).",
        )(f)
        f = click.option(
            "--width-divisor",
            type=click.IntRange(1, 64),
            help="Divide every conv width by this (small models).",
        )(f)
        return click.option(
            "--num-classes", type=click.IntRange(min=1), help="Classes (default 1000)."
        )(f)

    return decorate


# -- parsing ------------------------------------------------------------------------------------


def comma_list(values: Iterable[str] | str | None) -> list[str]:
    """`("a,b", "c")` -> ["a", "b", "c"]."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def parse_precisions(
    values: Iterable[str] | str | None, allowed: Iterable[str] = P.NAMES
) -> list[str]:
    names = comma_list(values)
    P.check(names, allowed)
    return names


def parse_runtimes(values: Iterable[str] | str | None) -> list[Any]:
    """Runtime specs (`RuntimeSpec`) from repeatable, comma-separated `--runtime` values."""
    from vggdeploy.runtimes.registry import parse_spec

    return [parse_spec(text) for text in comma_list(values)]


def parse_int_list(value: str | None, name: str) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        values = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{name} {value!r} must be comma-separated integers") from None
    if any(v < 1 for v in values):
        raise InputError(f"{name} {value!r} must list positive integers")
    return values


def parse_export_batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--batch {value!r} must be 'dynamic' or a positive integer") from None


def parse_floats(value: str | None, name: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"{name} {value!r} must be three comma-separated numbers") from None
    if len(parts) != 3 or not all(math.isfinite(v) for v in parts):
        raise InputError(f"{name} {value!r} must be three comma-separated finite numbers")
    return parts  # type: ignore[return-value]


# -- outputs never inside inputs ---------------------------------------------------------------

#: every parameter (by its Python name, in any command) that names a file or folder the command
#: writes or replaces
OUTPUT_PARAMS = frozenset({"out", "output", "json_path", "csv_path", "markdown_path", "plot_path"})
#: every parameter that names a file or folder the command reads (`weights` may be a zoo name
#: instead: only an existing path counts)
INPUT_PARAMS = frozenset(
    {
        "bundle",
        "bundle_dir",
        "path",
        "archive",
        "images",
        "accuracy_images",
        "end_to_end",
        "labels",
        "engines_from",
        "compare",
        "weights",
    }
)
#: read and written back on purpose: a cache the command refreshes in place
READ_WRITE_PARAMS = frozenset({"cache", "timing_cache"})


def _paths(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _paths(item)]
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    return [text] if text and text != "-" else []


def check_outputs(params: dict[str, Any], flags: dict[str, str] | None = None) -> None:
    """Refuse an output that is, or lies inside, an input the command reads (it would overwrite
    or replace it), and a folder output that holds an input (`--force` would delete it)."""
    flags = flags or {}
    inputs = [
        (name, Path(p).resolve())
        for name in INPUT_PARAMS
        for p in _paths(params.get(name))
        if name != "weights" or Path(p).exists()
    ]
    for out_name in OUTPUT_PARAMS:
        for out_text in _paths(params.get(out_name)):
            out = Path(out_text).resolve()
            for in_name, source in inputs:
                if out == source or out.is_relative_to(source) or source.is_relative_to(out):
                    where = (
                        "is"
                        if out == source
                        else ("is inside" if out.is_relative_to(source) else "holds")
                    )
                    what = "bundle" if in_name in ("bundle", "bundle_dir") else "input"
                    raise InputError(
                        f"{flags.get(out_name, out_name)} {out_text} {where} the {what} "
                        f"{source} ({flags.get(in_name, in_name)}): the command would overwrite "
                        "what it reads; write it somewhere else"
                    )


def guard_outputs(command: click.Command) -> click.Command:
    """Run `check_outputs` on `command`'s parameters before its body runs (every command goes
    through this once, in `cli.py`)."""
    callback = command.callback
    if callback is None:
        return command
    flags = {
        p.name: (p.opts[0] if isinstance(p, click.Option) else p.human_readable_name)
        for p in command.params
        if p.name
    }

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_outputs(kwargs, flags)
        return callback(*args, **kwargs)

    command.callback = checked
    return command


def progress_wanted(json_path: str | None) -> bool:
    """Whether a command shows progress on stderr: not with -q, nor with --json - (a script
    reading the JSON may read stderr too)."""
    return log.isEnabledFor(logging.INFO) and json_path != "-"


def echo_text(text: str, *, nl: bool = True, err: bool = False) -> None:
    """Report text to the terminal: each line escaped (`report.escape.shown_lines`), since
    reports quote labels, model names and file names."""
    click.echo(shown_lines(text), nl=nl, err=err)


def emit_json(data: Any, dest: str) -> None:
    """JSON to standard output (`-`) or atomically to a file."""
    if dest == "-":
        from vggdeploy.report.tables import json_text

        click.echo(json_text(data))
    else:
        from vggdeploy.bundle import atomic_write_json

        atomic_write_json(dest, data)


def emit(text: str, data: Any, json_path: str | None) -> None:
    """A command's result: the text on standard output, and its JSON to `--json FILE`
    (`--json -`: the JSON instead of the text)."""
    if json_path:
        emit_json(data, json_path)
    if json_path != "-":
        echo_text(text)


def emit_text(text: str, dest: str) -> None:
    """Text to standard output (`-`) or atomically to a file."""
    if dest == "-":
        echo_text(text, nl=False)
    else:
        from vggdeploy.bundle import atomic_write_text

        atomic_write_text(dest, text)


# -- unreadable images (calibrate, validate, evaluate) ----------------------------------------


def strict_option() -> Callable[[F], F]:
    return click.option(
        "--strict",
        is_flag=True,
        help="Stop at the first unreadable image (exit 1). Default: report each on its own "
        "line, leave it out, finish, and exit 3.",
    )


def skip_printer() -> Callable[[Any], None]:
    """An `on_skip` callback for the stages: one escaped line on stderr per skipped image,
    once per file however many passes read it (`calibrate --max-drop` calibrates twice)."""
    from vggdeploy.report.skips import skip_line

    seen: set[Any] = set()

    def print_skip(skip: Any) -> None:
        if skip.path not in seen:
            seen.add(skip.path)
            click.echo(skip_line(skip), err=True)

    return print_skip


def raise_if_skipped(skipped: Sequence[Any], what: str) -> None:
    """End a run that left images out with exit 3 (`errors.InputsSkipped`) and its sentence."""
    if skipped:
        from vggdeploy.errors import InputsSkipped
        from vggdeploy.report.skips import skipped_sentence

        raise InputsSkipped(skipped_sentence(skipped, what))
