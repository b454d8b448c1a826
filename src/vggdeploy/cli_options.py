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
from vggdeploy.report.escape import Drawn, shown, shown_lines

F = TypeVar("F", bound=Callable[..., Any])

#: the package's logger; `-v`/`-q` set its level (progress lines go through it)
log = logging.getLogger("vggdeploy")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: the spec grammar in one line, for --help: runtimes.registry.SPEC_HELP, copied so that --help
#: does not import the registry (it pulls in NumPy); tests/test_cli.py checks the two are equal
RUNTIME_SPEC_HELP = (
    "NAME[:VARIANT...][@PRECISION], e.g. torch, torch:channels-last, onnxruntime:cpu@fp32, "
    "onnxruntime:cuda, tensorrt@int8, tensorrt:cuda-graphs, openvino@int8"
)
#: `vggdeploy bench`'s runtimes without --runtime: runtimes.registry.DEFAULT_BENCH_SPECS as text
#: (checked equal by tests/test_cli.py)
DEFAULT_BENCH_RUNTIMES_HELP = (
    "torch, torch:cuda, onnxruntime, onnxruntime:cuda, onnxruntime:tensorrt, tensorrt"
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
            help="Width of the two hidden FC layers (default: the checkpoint's, else 4096).",
        )(f)
        f = click.option(
            "--width-divisor",
            type=click.IntRange(1, 64),
            help="Divide every conv width by this (small models; default: the checkpoint's, "
            "else 1).",
        )(f)
        return click.option(
            "--num-classes",
            type=click.IntRange(min=1),
            help="Classes (default: the checkpoint's, else 1000).",
        )(f)

    return decorate


def weights_option() -> Callable[[F], F]:
    """`--weights`, as `export` and `pipeline` take it (`weights.WeightsSource.parse` reads it)."""
    return click.option(
        "--weights",
        default="random",
        show_default=True,
        help="'random' (seeded), 'imagenet', or a .pth/.pt/.safetensors file.",
    )


def opset_option() -> Callable[[F], F]:
    return click.option("--opset", default=18, show_default=True, help="ONNX opset.")


def export_model_options() -> Callable[[F], F]:
    """What a custom model's bundle records besides its weights: `--labels`, and the
    preprocessing (`--resize`, `--mean`, `--std`, `--channel-order`) every consumer (validate,
    Triton, DeepStream, predict) applies. `vggdeploy export` and `vggdeploy pipeline` share them;
    `preprocessing_from_options` reads them."""

    def decorate(f: F) -> F:
        f = click.option(
            "--channel-order",
            type=click.Choice(["RGB", "BGR"]),
            help="Preprocessing channel order.",
        )(f)
        f = click.option("--std", help="Preprocessing std, e.g. 0.229,0.224,0.225.")(f)
        f = click.option("--mean", help="Preprocessing mean, e.g. 0.485,0.456,0.406.")(f)
        f = click.option(
            "--resize",
            type=int,
            help="Preprocessing: shorter side before the crop (default: image-size*256/224, or "
            "the val_resize_size a torchvision-reference checkpoint records for its crop).",
        )(f)
        return click.option(
            "--labels",
            type=click.Path(dir_okay=False),
            help="Class names, one a line (ImageNet names ship for --weights imagenet).",
        )(f)

    return decorate


def image_size_option() -> Callable[[F], F]:
    return click.option(
        "--image-size",
        type=int,
        help="Input height and width, a multiple of 32 (default: the val_crop_size a "
        "torchvision-reference checkpoint records, else 224).",
    )


def model_from_options(
    model: str,
    weights: str,
    seed: int,
    sizes: dict[str, int | None],
    image_size: int | None,
    resize: int | None,
    mean: str | None,
    std: str | None,
    channel_order: str | None,
    *,
    dense: bool = False,
) -> tuple[Any, Any, Any, list[str]]:
    """The model spec, weights source and `Preprocessing` `export` and `pipeline` make a bundle
    from, and notes on what the checkpoint decided.

    A checkpoint file's shapes give the sizes not set (`weights.spec_for_weights`); when it
    records how its training run evaluated (torchvision's reference script: `val_crop_size`,
    `val_resize_size`, `interpolation`) and --image-size is not given, the bundle uses that
    crop, that resize (unless --resize is given) and that interpolation."""
    from vggdeploy.models import check_image_size, resolve_spec
    from vggdeploy.preprocess import INTERPOLATIONS
    from vggdeploy.weights import WeightsSource, check_seed, checkpoint_facts, spec_for_weights

    check_seed(seed, "--seed")
    spec = resolve_spec(model, **sizes)
    if image_size is not None:
        check_image_size(image_size, dense=dense)
    source = WeightsSource.parse(weights, seed)
    fitted = spec_for_weights(spec, source, **sizes)
    notes = [
        f"--{k.replace('_', '-')} {getattr(fitted, k)} read from the checkpoint's shapes"
        for k, v in sizes.items()
        if v is None and getattr(fitted, k) != getattr(spec, k)
    ]
    trained = checkpoint_facts(source.path).preprocessing if source.kind == "file" else {}
    interpolation = None
    if image_size is None and isinstance(trained.get("crop"), int):
        # The checkpoint's own evaluation preprocessing, all of it or none.
        image_size = trained["crop"]
        notes.append(f"--image-size {image_size}: the checkpoint's args.val_crop_size")
        if resize is None and isinstance(trained.get("resize"), int):
            resize = trained["resize"]
            notes.append(f"--resize {resize}: the checkpoint's args.val_resize_size")
        try:
            check_image_size(image_size, dense=dense)
            preprocessing_from_options(image_size, resize, None, None, None)
        except InputError as exc:
            raise InputError(
                f"the checkpoint's recorded preprocessing (args.val_crop_size "
                f"{trained['crop']}, args.val_resize_size {trained.get('resize')}) does not "
                f"fit: {exc}; pass --image-size (and --resize) to choose it yourself"
            ) from None
        interpolation = trained.get("interpolation")
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise InputError(
                f"the checkpoint records args.interpolation {interpolation!r}, which vggdeploy "
                f"does not apply ({', '.join(INTERPOLATIONS)}): pass --image-size (and "
                "--resize) to choose the preprocessing yourself (bilinear)"
            )
    image_size = 224 if image_size is None else image_size
    check_image_size(image_size, dense=dense)
    return (
        fitted,
        source,
        preprocessing_from_options(
            image_size, resize, mean, std, channel_order, interpolation=interpolation
        ),
        notes,
    )


def preprocessing_from_options(
    image_size: int,
    resize: int | None,
    mean: str | None,
    std: str | None,
    channel_order: str | None,
    *,
    interpolation: str | None = None,
) -> Any:
    """The bundle's `Preprocessing` from `export_model_options`' values, checked."""
    from vggdeploy.models import MAX_IMAGE_SIZE
    from vggdeploy.preprocess import Preprocessing

    if resize is not None and not image_size <= resize <= 2 * MAX_IMAGE_SIZE:
        raise InputError(
            f"--resize {resize} must be between the crop (--image-size {image_size}) and "
            f"{2 * MAX_IMAGE_SIZE}: images are resized to it, then cropped to the image size"
        )
    pre = Preprocessing.for_size(
        image_size,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        channel_order=channel_order,
        interpolation=interpolation,
    )
    if resize is not None:
        pre = Preprocessing.from_dict({**pre.to_dict(), "resize": resize})
    return pre


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
    """Report text to the terminal, escaped, since reports quote labels, model names and file
    names: a formatter's text (`report.escape.Drawn`) is already escaped line by line and keeps
    its lines; any other text is one line, escaped whole (`shown`), so a newline in a name it
    quotes shows as `\\n` instead of starting a line of its own."""
    click.echo(text if isinstance(text, Drawn) else shown(text), nl=nl, err=err)


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


def emit_text(text: str, dest: str, *, data: bool = False) -> None:
    """Report text (Markdown) to standard output (`-`) or atomically to a file, each line
    escaped either way (`report.escape`). `data`: a data file (CSV) whose values a reader parses
    back: written as it is (standard output still escaped, as every line a terminal shows)."""
    if dest == "-":
        # a data file's lines are its rows: each escaped, the rows kept
        echo_text(Drawn(shown_lines(text)) if data else text, nl=False)
    elif data:
        from vggdeploy.bundle import atomic_write_text

        atomic_write_text(dest, text)
    else:
        from vggdeploy.report.escape import write_shown

        write_shown(dest, text)


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
