"""Weights for zoo models: seeded random, a local file, or torchvision's ImageNet checkpoints.

Checkpoints are untrusted input: `.pth`/`.pt` files load with `torch.load(weights_only=True)`
(no pickle code runs; never plain pickle) and `.safetensors` with safetensors. What loads must be
a flat mapping of names to ordinary dense CPU tensors: meta, sparse and quantized tensors are
refused. Every source is checked against the model in one pass that lists all missing,
unexpected and misshapen keys at once; then every value is checked - floating-point where the
model is (integer, bool or complex weights are refused, never cast) and finite (NaN/inf named).
Each problem is one `WeightsError` line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggdeploy.bundle import sha256_file
from vggdeploy.errors import InputError, WeightsError
from vggdeploy.models import ModelSpec, random_state_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

# torchvision's published ImageNet checkpoints (IMAGENET1K_V1). The 8 hex digits in each file
# name are the start of its sha256, which torch.hub checks the same way.
IMAGENET_URLS = {
    "vgg11": "https://download.pytorch.org/models/vgg11-8a719046.pth",
    "vgg13": "https://download.pytorch.org/models/vgg13-19584684.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg11_bn": "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
    "vgg13_bn": "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
    "vgg19_bn": "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth",
}


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from, as recorded in the manifest."""

    kind: str  # "random" | "file" | "imagenet"
    seed: int = 0
    path: str | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> WeightsSource:
        """`random`, `imagenet`, or a path to a `.pth`/`.pt`/`.safetensors` file."""
        if text == "random":
            return cls("random", seed=seed)
        if text == "imagenet":
            return cls("imagenet")
        return cls("file", path=str(Path(text).expanduser()))


#: Seeds are 32-bit unsigned, as NumPy's legacy seeds: the same seed means the same tensors
#: everywhere (torch would accept negatives and wrap them).
MAX_SEED = 2**32 - 1


def check_seed(seed: object, name: str = "seed") -> None:
    """Refuse a seed that is not an integer in [0, MAX_SEED]."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"{name} {seed!r} is not supported: use an integer from 0 to {MAX_SEED}")


#: seeded random weights already made, by (spec, seed), while `reusing_random_weights` is on
_RANDOM_STATES: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None
#: those of them that passed `check_values` (the tensors' identity: the spec is in their key)
_CHECKED_STATES: list[dict[str, torch.Tensor]] = []


@contextlib.contextmanager
def reusing_random_weights() -> Iterator[None]:
    """Inside the block, seeded random weights are generated and hashed once per (spec, seed)
    and the same tensors and record are returned by every later `load_state_dict` (the
    pipeline's export and the PyTorch reference of its two validations load the same weights:
    seconds each for VGG-16). Exact: the same spec and seed give the same tensors by
    construction (`random_state_dict`), and the cached tensors are only ever copied into a
    model (`load_model`'s `load_state_dict` copies), so a model changed in place does not
    change them. Checkpoint files are never cached: their contents may change between loads.
    The tensors are released when the block ends."""
    global _RANDOM_STATES
    outer = _RANDOM_STATES
    _RANDOM_STATES = {} if outer is None else outer
    try:
        yield
    finally:
        _RANDOM_STATES = outer
        if outer is None:
            _CHECKED_STATES.clear()


def load_state_dict(
    spec: ModelSpec, source: WeightsSource
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict for `spec` from `source`, and the manifest record describing it."""
    if source.kind == "random":
        key = json.dumps([spec.to_dict(), source.seed], sort_keys=True, default=str)
        if _RANDOM_STATES is not None and key in _RANDOM_STATES:
            state, record = _RANDOM_STATES[key]
            return state, dict(record)
        state = random_state_dict(spec, source.seed)
        # The digest lets a later run (the torch runtime) prove it regenerated the same tensors.
        record = {"source": "random", "seed": source.seed, "sha256": state_dict_sha256(state)}
        record = {**record, "sha256_of": "tensors"}
        if _RANDOM_STATES is not None:
            _RANDOM_STATES[key] = (state, dict(record))
        return state, record
    if source.kind == "imagenet":
        path = imagenet_checkpoint(spec)
        state = read_checkpoint(path)
        return state, {
            "source": "imagenet",
            "url": IMAGENET_URLS[spec.name],
            "file": path.name,
            "sha256": sha256_file(path),
        }
    path = Path(source.path or "")
    state = read_checkpoint(path)
    return state, {"source": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in key order."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` or a `.pth`/`.pt` file, never running pickled code."""
    return read_checkpoint_and_args(path)[0]


def read_checkpoint_and_args(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`read_checkpoint`, and the training options a torchvision-reference checkpoint records
    (its `args` Namespace as a dict; empty for any other checkpoint)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist: give a .pth, .pt or .safetensors file, 'random' or 'imagenet'"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = _torch_load(path)
        else:
            raise WeightsError(
                f"weights file {path} has an unknown type {suffix!r}: use .pth, .pt or .safetensors"
            )
    except WeightsError:
        raise
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise WeightsError(
                f"cannot read weights file {path}: {_reason(exc)} (is it a .pth checkpoint?)"
            ) from None
        # torch's own text suggests weights_only=False, which is exactly what must not happen.
        raise WeightsError(unsafe_checkpoint_message(path, str(exc))) from None
    except Exception as exc:  # corrupt zip, bad header, truncated file...
        raise WeightsError(
            f"cannot read weights file {path}: {_reason(exc)} (is it a complete state_dict checkpoint?)"
        ) from None
    args = state.get("args") if isinstance(state, dict) else None
    training_args = dict(vars(args)) if isinstance(args, argparse.Namespace) else {}
    # Training checkpoints often wrap the state dict.
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise WeightsError(
            f"weights file {path} does not hold a state_dict of tensors: save model.state_dict() "
            "(a mapping of names to tensors)"
        )
    for key, tensor in state.items():
        if tensor.is_meta or tensor.device.type != "cpu":
            raise WeightsError(
                f"weights file {path}: {key} is a {tensor.device.type} tensor with no data "
                "(saved from a model on the 'meta' device?): save the trained weights"
            )
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise WeightsError(
                f"weights file {path}: {key} is a {str(tensor.layout).removeprefix('torch.')} "
                f"{str(tensor.dtype).removeprefix('torch.')} tensor: save dense float weights"
            )
    # DataParallel checkpoints prefix every key with "module."
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, training_args


#: The one pickled object, besides tensors and containers, a checkpoint may hold: torchvision's
#: reference training script (references/classification/train.py) saves
#: `{"model": state_dict, "optimizer": ..., "lr_scheduler": ..., "epoch": ..., "args": args}`
#: with `args` an `argparse.Namespace`, a plain attribute bag whose unpickling runs no code
#: (NEWOBJ + BUILD of a `__dict__`). torch.serialization.safe_globals allow-lists it for this
#: one `torch.load(weights_only=True)` call (torch/serialization.py `safe_globals`, documented in
#: https://docs.pytorch.org/docs/stable/notes/serialization.html, "weights_only").
SAFE_GLOBALS = (argparse.Namespace,)
#: torch's weights-only unpickler names what it refused: "Unsupported global: GLOBAL {full_path}
#: was not an allowed global by default" (torch/_weights_only_unpickler.py, `load`).
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _torch_load(path: Path) -> Any:
    import torch

    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        return torch.load(path, map_location="cpu", weights_only=True)


def _blocking_globals(path: Path, torch_text: str) -> list[str]:
    """The globals a weights-only load refuses in `path`: all of them, read from the pickle's
    opcodes without running any (torch.serialization.get_unsafe_globals_in_checkpoint, torch
    2.5+, zip checkpoints), else the one torch's error message names."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) file, or one torch cannot parse
        names = []
    names = [n for n in names if _GLOBAL_NAME.fullmatch(n)]
    if not names:
        found = _UNSUPPORTED_GLOBAL.search(torch_text)
        names = [found.group(1)] if found else []
    return sorted(set(names))[:8]


#: a dotted Python name, nothing else (names come from an untrusted file)
_GLOBAL_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")


def unsafe_checkpoint_message(path: Path, torch_text: str) -> str:
    """The one line for a checkpoint that holds pickled objects other than tensors: which
    globals block it, and the command that re-saves only the weights through torch's own
    allow-list (`add_safe_globals` of exactly those globals, still `weights_only=True`: torch's
    weights-only unpickler then calls those and nothing else; the command refuses any that is
    not a class, and the line names them so the user judges them)."""
    names = _blocking_globals(path, torch_text)
    if not names:
        return (
            f"cannot read weights file {path}: it holds pickled objects other than tensors, "
            "refused because loading them could run code: re-save it as a plain state_dict or "
            ".safetensors"
        )
    dest = path.with_name(path.stem + ".state_dict.pth")
    code = (
        "import importlib, torch; g = [getattr(importlib.import_module(m), a) for m, _, a in "
        f"(n.rpartition('.') for n in {names!r})]; "
        "assert all(isinstance(x, type) for x in g), 'not classes: do not load this file'; "
        f"torch.serialization.add_safe_globals(g); c = torch.load({str(path)!r}, "
        "weights_only=True); "
        "m = c.get('model', c.get('state_dict', c)) if isinstance(c, dict) else c; "
        f"torch.save(m.state_dict() if hasattr(m, 'state_dict') else m, {str(dest)!r})"
    )
    objects = ", ".join(names)
    return (
        f"cannot read weights file {path}: it holds pickled objects other than tensors "
        f"({objects}), refused because loading them could run code; if you trust the file "
        "and those classes, re-save its weights once, allowing exactly them: "
        f"python -c {shlex.quote(code)} (then pass --weights {dest})"
    )


def _reason(exc: BaseException) -> str:
    """The first line of an exception's text, printable characters only, at most 200 of them."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return "".join(c if c.isprintable() else "?" for c in line)[:200]


# -- the model a checkpoint fits ------------------------------------------------------------------

#: size options read from a checkpoint: option name -> (key, axis, what that axis is)
SIZE_KEYS = {
    "num_classes": ("classifier.6.weight", "outputs"),
    "hidden": ("classifier.0.weight", "outputs"),
}


@dataclass(frozen=True)
class CheckpointFacts:
    """What a checkpoint file says about the model it fits, without its tensors: every key's
    shape, and the evaluation preprocessing its training run used (torchvision's reference
    script records it in `args`: `val_resize_size`, `val_crop_size`, `interpolation`, which its
    `load_data` hands to `presets.ClassificationPresetEval`: Resize(shorter side), CenterCrop,
    ImageNet mean/std; references/classification/train.py)."""

    shapes: dict[str, tuple[int, ...]]
    preprocessing: dict[str, Any]


def checkpoint_facts(path: str | os.PathLike[str]) -> CheckpointFacts:
    """`CheckpointFacts` of a checkpoint file (read once per file version: the export and the
    pipeline ask before loading it for real)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(p), -1, -1)
    if key not in _FACTS:
        state, args = read_checkpoint_and_args(p)
        pre = {
            name: args[arg]
            for name, arg in (
                ("resize", "val_resize_size"),
                ("crop", "val_crop_size"),
                ("interpolation", "interpolation"),
            )
            if isinstance(args.get(arg), (int, str)) and not isinstance(args.get(arg), bool)
        }
        _FACTS.clear()
        _FACTS[key] = CheckpointFacts({k: tuple(v.shape) for k, v in state.items()}, pre)
    return _FACTS[key]


_FACTS: dict[tuple[str, int, int], CheckpointFacts] = {}


def checkpoint_sizes(state: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """`num_classes`, `hidden` and `width_divisor` as the shapes in `state` give them (those it
    gives: a key that is absent or oddly shaped gives nothing)."""
    sizes: dict[str, int] = {}
    for option, (key, _) in SIZE_KEYS.items():
        shape = state.get(key)
        if shape is not None and len(shape) >= 2 and shape[0] >= 1:
            sizes[option] = int(shape[0])
    first = state.get("features.0.weight")
    if first is not None and len(first) == 4 and 0 < first[0] <= 64 and 64 % first[0] == 0:
        sizes["width_divisor"] = 64 // int(first[0])
    return sizes


def _convs(state: dict[str, tuple[int, ...]]) -> tuple[list[tuple[int, int, int]], bool]:
    """The feature convolutions of `state` in order, as (index, out channels, kernel), and
    whether it has BatchNorm layers (running statistics under `features.`)."""
    convs = []
    for key, shape in state.items():
        parts = key.split(".")
        if (
            len(parts) == 3
            and parts[0] == "features"
            and parts[1].isdigit()
            and parts[2] == "weight"
            and len(shape) == 4
        ):
            convs.append((int(parts[1]), int(shape[0]), int(shape[-1])))
    bn = any(k.startswith("features.") and k.endswith(".running_mean") for k in state)
    return sorted(convs), bn


def _spec_convs(spec: ModelSpec) -> list[tuple[int, int, int]]:
    """(index under `features.`, out channels, kernel) of each conv `models.make_features`
    builds for `spec`."""
    convs, index = [], 0
    for layer in spec.layers:
        if isinstance(layer, str):  # a pool or LRN: one module
            index += 1
            continue
        out, k = (layer, 3) if isinstance(layer, int) else layer
        convs.append((index, out, k))
        index += 3 if spec.batch_norm else 2  # conv, (BatchNorm,) ReLU
    return convs


def fit_spec(
    spec: ModelSpec, state: dict[str, tuple[int, ...]], origin: str, given: dict[str, int | None]
) -> ModelSpec:
    """`spec` with the sizes the checkpoint's shapes give (`num_classes`, `hidden`,
    `width_divisor`) where `given` (the command line) leaves them unset.

    One `WeightsError` line when the checkpoint is another VGG (BatchNorm keys present or
    absent, or another conv layout: it names the model it fits) or a size given contradicts its
    shapes. A checkpoint that fits no VGG is left to `apply_state_dict`, which lists every key.
    """
    from vggdeploy.models import CATALOG, canonical_name, with_options

    sizes = checkpoint_sizes(state)
    flags = {
        "num_classes": "--num-classes",
        "hidden": "--hidden",
        "width_divisor": "--width-divisor",
    }
    for option, value in given.items():
        if value is not None and option in sizes and sizes[option] != value:
            read = (
                f"its first conv has {64 // sizes[option]} channels (64 / {sizes[option]})"
                if option == "width_divisor"
                else f"its {SIZE_KEYS[option][0]} has {sizes[option]} {SIZE_KEYS[option][1]}"
            )
            raise WeightsError(
                f"{flags[option]} {value} does not fit weights from {origin}: {read}; drop "
                f"{flags[option]} (it is read from the checkpoint) or pass {sizes[option]}"
            )
    options = {k: (given.get(k) if given.get(k) is not None else sizes.get(k)) for k in flags}
    try:
        fitted = with_options(spec, **options)
    except InputError:
        return with_options(spec, **{k: v for k, v in given.items() if v is not None})
    convs, bn = _convs(state)
    if not convs or (_spec_convs(fitted), fitted.batch_norm) == (convs, bn):
        return fitted
    fits = []
    for config, batch_norm in dict.fromkeys(CATALOG.values()):
        try:
            other = with_options(fitted, config=config, batch_norm=batch_norm)
        except InputError:
            continue
        if (_spec_convs(other), batch_norm) == (convs, bn):
            fits.append(canonical_name(config, batch_norm))
    if not fits:
        return fitted
    same_convs = [c[1:] for c in _spec_convs(fitted)] == [c[1:] for c in convs]
    if same_convs and fitted.batch_norm != bn:
        why = (
            "it has BatchNorm layers (features.*.running_mean), which"
            if bn
            else "it has no BatchNorm layers (no features.*.running_mean), which"
        )
        need = "has none" if bn else "needs"
        raise WeightsError(
            f"weights from {origin} are for {fits[0]}, not {fitted.name}: {why} "
            f"{fitted.name} {need}; use the model name {fits[0]}"
        )
    raise WeightsError(
        f"weights from {origin} are for {' or '.join(fits)}, not {fitted.name}: its "
        f"{len(convs)} feature convolutions{' with BatchNorm' if bn else ''} and their "
        f"places under features.* fit {fits[0]}; use the model name {fits[0]}"
    )


def spec_for_weights(
    spec: ModelSpec,
    source: WeightsSource,
    *,
    num_classes: int | None = None,
    width_divisor: int | None = None,
    hidden: int | None = None,
) -> ModelSpec:
    """The model `source` loads into: for a checkpoint file, `spec` with the sizes its shapes
    give (see `fit_spec`); otherwise `spec` with the sizes given."""
    from vggdeploy.models import with_options

    given = {"num_classes": num_classes, "width_divisor": width_divisor, "hidden": hidden}
    if source.kind != "file":
        return with_options(spec, **given)
    path = Path(source.path or "")
    return fit_spec(spec, checkpoint_facts(path).shapes, str(path), given)


def check_values(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Refuse a tensor of the wrong kind (never cast int/bool/complex to float) or not finite."""
    import torch

    for key, want in model.state_dict().items():
        got = state[key]
        dtype = str(got.dtype).removeprefix("torch.")
        if want.is_floating_point() and not got.is_floating_point():
            raise WeightsError(
                f"weights from {origin}: {key} is {dtype}, not floating point: "
                "save the float weights (integer, bool or complex ones are not cast)"
            )
        if not want.is_floating_point() and (got.is_floating_point() or got.is_complex()):
            raise WeightsError(f"weights from {origin}: {key} is {dtype}, not an integer")
        # float8 kinds have no isfinite kernel: widen those (the small ones) first.
        wide = got.float() if got.is_floating_point() and got.element_size() == 1 else got
        if got.is_floating_point() and not bool(torch.isfinite(wide).all()):
            bad = int((~torch.isfinite(wide)).sum())
            raise WeightsError(
                f"weights from {origin}: {key} has {bad} NaN or infinite values: "
                "the checkpoint is broken (diverged training?)"
            )


def apply_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], origin: str, *, values_checked: bool = False
) -> None:
    """Load `state` into `model`, or raise one error listing every mismatch. `values_checked`:
    these very tensors already passed `check_values` for this model (`load_model`, reusing)."""
    expected = model.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 (torchvision's *_bn ones among them) have no
    # BatchNorm `num_batches_tracked`; it is a training counter that inference never reads.
    state = {
        **{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")},
        **state,
    }
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshapen:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("misshapen", misshapen),
        ):
            if items:
                shown = ", ".join(items[:5]) + (
                    f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                )
                parts.append(f"{len(items)} {label}: {shown}")
        raise WeightsError(
            f"weights from {origin} do not fit this model - {'; '.join(parts)}. "
            "Check the model name and --num-classes/--width-divisor/--hidden"
        )
    if not values_checked:
        check_values(model, state, origin)
    model.load_state_dict(state)


def imagenet_checkpoint(spec: ModelSpec) -> Path:
    """torchvision's checkpoint in the torch hub cache, downloaded (hash-checked) if absent."""
    import torch

    if spec.name not in IMAGENET_URLS or not spec.is_standard:
        raise WeightsError(
            f"no published ImageNet weights for {spec.name} with these options "
            f"(available: {', '.join(IMAGENET_URLS)} at 1000 classes, full width): use --weights random or a file"
        )
    url = IMAGENET_URLS[spec.name]
    filename = url.rsplit("/", 1)[1]
    hash_prefix = filename.rsplit("-", 1)[1].split(".")[0]
    dest = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if dest.is_file():
        if not sha256_file(dest).startswith(hash_prefix):
            raise WeightsError(
                f"{dest} is corrupt (sha256 does not start with {hash_prefix}): delete it and retry"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # download_url_to_file writes to a temporary file and renames it only after the hash check.
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"downloaded {filename} is corrupt ({exc}): retry, or place a verified copy at {dest}"
        ) from None
    except Exception as exc:
        raise WeightsError(
            f"cannot download {url} ({type(exc).__name__}): on an offline machine, place {filename} at {dest}"
        ) from None
    return dest


def load_model(
    spec: ModelSpec, source: WeightsSource, *, dense: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """An eval-mode model with weights applied, and the weights' manifest record."""
    from vggdeploy.models import build_model, densify, unfilled

    state, record = load_state_dict(spec, source)
    # Every tensor is overwritten by `state` (apply_state_dict is strict): no initialisation.
    model = unfilled(lambda: build_model(spec, init=False))
    # Reused random tensors (`reusing_random_weights`) that passed `check_values` for a model of
    # this spec already give the same verdict: the check ran on these very tensors.
    checked = any(state is made for made in _CHECKED_STATES)
    apply_state_dict(
        model,
        state,
        record.get("path") or record.get("file") or record["source"],
        values_checked=checked,
    )
    if _RANDOM_STATES is not None and source.kind == "random" and not checked:
        _CHECKED_STATES.append(state)
    model.eval()
    if dense:
        model = densify(model, spec).eval()
    return model, record
