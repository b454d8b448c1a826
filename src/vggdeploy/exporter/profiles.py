"""Optimization profiles for `vggdeploy build`: parsing the command line's ranges and sizes,
and turning them into min/opt/max input shapes checked against the bundle's input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError

_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


@dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: (min, opt, max) batch, and for a dense bundle height/width."""

    batch: tuple[int, int, int] = (1, 8, 32)
    height: tuple[int, int, int] | None = None
    width: tuple[int, int, int] | None = None

    def describe(self) -> str:
        text = f"batch {_triple(self.batch)}"
        if self.height:
            text += f", height {_triple(self.height)}, width {_triple(self.width)}"
        return text


def parse_size(text: str) -> int:
    """'4GiB', '512MiB', '1.5G', '2GB' -> bytes (K/M/G alone are binary, as in trtexec)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise InputError(
            f"size {text!r} is not understood: use a number with a unit, e.g. 4GiB, 512MiB, 2GB"
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise InputError(f"size {text!r} must be positive")
    return value


def parse_triple(text: str, what: str) -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32); a single number means min = opt = max."""
    try:
        parts = tuple(int(p) for p in str(text).split(":"))
    except ValueError:
        raise InputError(f"{what} {text!r} must be MIN:OPT:MAX integers, e.g. 1:8:32") from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise InputError(f"{what} {text!r} must be MIN:OPT:MAX integers, e.g. 1:8:32")
    return parts  # type: ignore[return-value]


def parse_profile(text: str) -> ProfileSpec:
    """'batch=1:8:32' or 'b=1:8:32,h=224:320:512,w=224:320:512' -> ProfileSpec."""
    keys = {"b": "batch", "batch": "batch", "h": "height", "height": "height"}
    keys |= {"w": "width", "width": "width"}
    values: dict[str, tuple[int, int, int]] = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in keys:
            raise InputError(
                f"--profile {text!r}: use b=MIN:OPT:MAX[,h=MIN:OPT:MAX,w=MIN:OPT:MAX], "
                "e.g. b=1:8:32"
            )
        values[keys[key]] = parse_triple(value, f"--profile {keys[key]}")
    if "batch" not in values:
        raise InputError(f"--profile {text!r} has no batch range (b=MIN:OPT:MAX)")
    if ("height" in values) != ("width" in values):
        raise InputError(f"--profile {text!r}: give both h= and w= or neither")
    return ProfileSpec(values["batch"], values.get("height"), values.get("width"))


def parse_hw(text: str, what: str) -> tuple[int, int]:
    """'224' or '224x320' -> (height, width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(
            f"{what} {text!r} must be HxW or one number, e.g. 224x320 or 224"
        ) from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise InputError(f"{what} {text!r} must be HxW or one number, e.g. 224x320 or 224")
    return values[0], values[1]


def build_profiles(
    profiles: tuple[str, ...] | list[str],
    *,
    batch: tuple[int | None, int | None, int | None] = (None, None, None),
    size: tuple[str | None, str | None, str | None] = (None, None, None),
    static_batch: int | None = None,
) -> list[ProfileSpec]:
    """Profiles from `--profile` specs or from --min/--opt/--max-batch and -size (not both);
    `static_batch` (`--batch N`) is min = opt = max = N, instead of both.

    Unset batch values default to 1 / 8 / 32 kept in order around the ones given; unset sizes
    default to the smallest given size (224 if none).
    """
    if static_batch is not None:
        if profiles or any(v is not None for v in batch):
            raise InputError(
                "use either --batch N (one static batch) or --min/--opt/--max-batch or --profile"
            )
        batch = (static_batch,) * 3
    singles = any(v is not None for v in (*batch, *size))
    if profiles and singles:
        raise InputError(
            "use either --profile (repeatable) or --min/--opt/--max-batch and -size, not both"
        )
    if profiles:
        return [parse_profile(p) for p in profiles]
    if not singles:
        return []
    lo, opt, hi = batch
    lo = lo if lo is not None else 1
    hi = hi if hi is not None else max(32, lo, opt or 0)
    opt = opt if opt is not None else min(max(8, lo), hi)
    height = width = None
    if any(v is not None for v in size):
        names = ("--min-size", "--opt-size", "--max-size")
        given = {i: parse_hw(v, names[i]) for i, v in enumerate(size) if v is not None}
        smin = given.get(0) or min(given.values())
        sopt = given.get(1) or smin
        smax = given.get(2) or max(given.values())
        height, width = (smin[0], sopt[0], smax[0]), (smin[1], sopt[1], smax[1])
    return [ProfileSpec((lo, opt, hi), height, width)]


def _triple(t: tuple[int, int, int]) -> str:
    return f"{t[0]}:{t[1]}:{t[2]}"


def input_profiles(
    bundle: Bundle, profiles: list[ProfileSpec]
) -> tuple[str, list[dict[str, list[int]]]]:
    """Check the asked profiles against the bundle's input; return min/opt/max shapes."""
    inputs = bundle.manifest.io.inputs
    if len(inputs) != 1:
        raise BundleError(f"bundle {bundle.root} has {len(inputs)} inputs; vggdeploy expects one")
    name, shape = inputs[0].name, list(inputs[0].shape)
    if len(shape) != 4:
        raise BundleError(f"input {name!r} has shape {shape}; expected (batch, 3, height, width)")
    dense = isinstance(shape[2], str) or isinstance(shape[3], str)
    size = bundle.manifest.model.image_size
    if not profiles:
        static_batch = shape[0] if isinstance(shape[0], int) else None
        batch = (static_batch,) * 3 if static_batch else ProfileSpec().batch
        profiles = [ProfileSpec(batch, (size,) * 3, (size,) * 3) if dense else ProfileSpec(batch)]
    result = []
    for index, wanted in enumerate(profiles):
        where = f"profile {index} ({wanted.describe()})"
        _check_range(wanted.batch, "batch", where, minimum=1)
        if isinstance(shape[0], int) and wanted.batch != (shape[0],) * 3:
            raise InputError(
                f"{where}: this bundle was exported with a fixed batch of {shape[0]}; use "
                f"--min-batch/--opt-batch/--max-batch {shape[0]} or re-export with --batch dynamic"
            )
        if dense:
            height = wanted.height or (size,) * 3
            width = wanted.width or (size,) * 3
            for what, triple in (("height", height), ("width", width)):
                _check_range(triple, what, where, minimum=224)
                if any(v % 32 for v in triple):
                    raise InputError(
                        f"{where}: every {what} must be a multiple of 32 (the model has five "
                        "2x2 pools), e.g. 224:320:512"
                    )
        else:
            if wanted.height or wanted.width:
                raise InputError(
                    f"{where}: height/width ranges need a dense bundle (`vggdeploy export "
                    f"--dense`); this one takes a fixed {shape[2]}x{shape[3]} input"
                )
            height, width = (shape[2],) * 3, (shape[3],) * 3
        result.append(
            {
                k: [wanted.batch[i], shape[1], height[i], width[i]]
                for i, k in enumerate(("min", "opt", "max"))
            }
        )
    return name, result


def _check_range(triple: tuple[int, int, int], what: str, where: str, minimum: int) -> None:
    lo, opt, hi = triple
    if lo < minimum:
        raise InputError(f"{where}: minimum {what} {lo} must be at least {minimum}")
    if not lo <= opt <= hi:
        raise InputError(f"{where}: {what} must satisfy min <= opt <= max, got {lo}:{opt}:{hi}")
