"""Precisions: their names, order, artifact keys, file names and the command that makes each.

This is the one home of these facts; every command, runtime and report reads them from here.
No heavy imports: the CLI uses this module for `--help` choices.

A *precision name* is what a user types after `@` in a runtime spec and in `--precision`:

| name      | numbers                                | ONNX file             | made by                  |
|-----------|----------------------------------------|-----------------------|--------------------------|
| `fp32`    | float32 (the export)                   | `model.onnx`          | `vggdeploy export`       |
| `fp16`    | float16 weights/compute, float32 I/O    | `model.fp16.onnx`     | `vggdeploy convert`      |
| `int8`    | Q/DQ, int8 activations, zero point 0    | `model.int8.onnx`     | `vggdeploy calibrate`    |

Engines (`engine.<precision>`, `model.<precision>.engine`) exist for fp32, fp16 and int8.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vggdeploy.errors import InputError


@dataclass(frozen=True)
class Precision:
    """One precision name and everything that derives from it."""

    name: str
    #: the numeric family: what tolerances and Triton call it
    numeric: str
    onnx_file: str
    #: the command that makes the ONNX file, with BUNDLE as a placeholder
    make: str
    #: whether `vggdeploy build` turns this ONNX into a TensorRT engine
    engine: bool
    summary: str


#: In display order: every table, sort and listing follows this order.
_ALL = (
    Precision("fp32", "fp32", "model.onnx", "vggdeploy export MODEL --out BUNDLE", True, "float32"),
    Precision(
        "fp16",
        "fp16",
        "model.fp16.onnx",
        "vggdeploy convert BUNDLE --precision fp16",
        True,
        "float16 weights and compute, float32 inputs and outputs",
    ),
    Precision(
        "int8",
        "int8",
        "model.int8.onnx",
        "vggdeploy calibrate BUNDLE --images DIR",
        True,
        "Q/DQ, int8 activations with zero point 0 (TensorRT's explicit quantization)",
    ),
)

PRECISIONS: dict[str, Precision] = {p.name: p for p in _ALL}
#: every precision name, in display order
NAMES: tuple[str, ...] = tuple(PRECISIONS)
#: precisions a TensorRT engine can be built in
ENGINE_NAMES: tuple[str, ...] = tuple(p.name for p in _ALL if p.engine)
#: floating-point precisions (what a framework runs without quantization, e.g. PyTorch)
FLOAT_NAMES: tuple[str, ...] = tuple(p.name for p in _ALL if p.numeric.startswith("fp"))


def made_by(command: str) -> tuple[str, ...]:
    """The precisions whose ONNX file `vggdeploy COMMAND` makes (`convert` -> ("fp16",))."""
    return tuple(p.name for p in _ALL if p.make.split()[:2] == ["vggdeploy", command])


ONNX = "onnx"
ENGINE = "engine"
ARTIFACT_KINDS = (ONNX, ENGINE)


def get(name: str) -> Precision:
    """The precision called `name`; an unknown name is an `InputError` listing the choices."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise InputError(f"unknown precision {name!r}: choose one of {', '.join(NAMES)}") from None


def check(names: Iterable[str], allowed: Iterable[str] = NAMES, what: str = "--precision") -> None:
    """Refuse any name in `names` that is not in `allowed`, naming the choices."""
    allowed = tuple(allowed)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise InputError(f"{what} {', '.join(bad)}: choose from {', '.join(allowed)}")


def order(name: str) -> int:
    """Sort key of a precision name (unknown names sort last)."""
    return NAMES.index(name) if name in PRECISIONS else len(NAMES)


def sort(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (order(n), n))


# -- artifact keys and files ------------------------------------------------------------------


def onnx_key(name: str) -> str:
    """`int8` -> `onnx.int8`: the manifest key of the ONNX file in this precision."""
    return f"{ONNX}.{name}"


def engine_key(name: str) -> str:
    """`fp16` -> `engine.fp16`: the manifest key of the TensorRT engine in this precision."""
    return f"{ENGINE}.{name}"


def engine_file(name: str) -> str:
    return f"model.{name}.engine"


def onnx_file(name: str) -> str:
    return get(name).onnx_file


def split_key(key: str) -> tuple[str, str]:
    """`onnx.int8` -> ("onnx", "int8")."""
    kind, _, name = key.partition(".")
    return kind, name


def artifact_order(key: str) -> tuple[int, int, str]:
    """Sort key of an artifact key: ONNX files before engines, then by precision."""
    kind, name = split_key(key)
    kind_rank = ARTIFACT_KINDS.index(kind) if kind in ARTIFACT_KINDS else len(ARTIFACT_KINDS)
    return kind_rank, order(name), key


def buildable(artifact_keys: Iterable[str]) -> list[str]:
    """The engine precisions whose ONNX file is among `artifact_keys`: what `vggdeploy build`
    can make from that bundle, in display order."""
    keys = set(artifact_keys)
    return [n for n in ENGINE_NAMES if onnx_key(n) in keys]


def build_command(artifact_keys: Iterable[str], bundle: str = "BUNDLE") -> str | None:
    """`vggdeploy build BUNDLE --precision fp16|int8`: only the precisions the bundle's ONNX
    files allow (`buildable`); None when it has none."""
    names = buildable(artifact_keys)
    return f"vggdeploy build {bundle} --precision {'|'.join(names)}" if names else None


def make_command(key: str, bundle: str = "BUNDLE") -> str:
    """The command that creates artifact `key` in `bundle`."""
    kind, name = split_key(key)
    if kind == ENGINE:
        return f"vggdeploy build {bundle} --precision {name}  (on the target GPU)"
    if name in PRECISIONS:
        return PRECISIONS[name].make.replace("BUNDLE", bundle)
    return "re-run the stage that makes it"
