"""The contract every runtime follows.

Constructing a runtime is cheap and imports nothing heavy; `load()` (or entering the context
manager) does the work: reading weights, creating a session, deserializing an engine. `infer`
checks names, shapes and dtypes against `inputs` and then calls the backend's `_infer`.
Timing lives in the benchmark, not here.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from vggdeploy.errors import InputError


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; a dimension is an int, or a string for a dynamic axis (`"batch"`)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # a NumPy dtype name: "float32", "float16", ...

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])

    def check(self, array: np.ndarray) -> None:
        """Raise `InputError` if `array` does not fit this spec."""
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"input {self.name!r} must be a NumPy array, got {type(array).__name__}"
            )
        if array.dtype != np.dtype(self.dtype):
            raise InputError(f"input {self.name!r} has dtype {array.dtype}, expected {self.dtype}")
        if array.ndim != len(self.shape):
            raise InputError(
                f"input {self.name!r} has {array.ndim} dimensions {tuple(array.shape)}, "
                f"expected {len(self.shape)} {format_shape(self.shape)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, self.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                raise InputError(
                    f"input {self.name!r} has shape {tuple(array.shape)}, expected "
                    f"{format_shape(self.shape)} (axis {axis} must be {want})"
                )


def host_cpu() -> tuple[str, set[str]]:
    """This host's CPU model name and feature flags (from /proc/cpuinfo where it exists)."""
    import platform
    import re

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return name, flags
    if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
        name = m.group(1).strip()
    if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
        flags = set(m.group(1).split())
    return name, flags


def format_shape(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class Runtime(abc.ABC):
    """Base class of every backend. Subclasses implement `_load`, `_infer` and maybe `_close`."""

    #: the registry name ("torch", "onnxruntime", "tensorrt")
    name: str = ""

    def __init__(self) -> None:
        self._loaded = False
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def load(self) -> Runtime:
        if not self._loaded:
            self._inputs, self._outputs = self._load()
            self._loaded = True
        return self

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Runtime:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    # -- description ----------------------------------------------------------------------------

    @property
    def inputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return self._outputs

    def describe(self) -> dict[str, Any]:
        """What really runs (device, providers, precision, versions): for reports and results."""
        return {"runtime": self.name}

    @property
    def label(self) -> str:
        """A short name for tables, e.g. `onnxruntime[cpu] int8`."""
        return self.name

    # -- inference ------------------------------------------------------------------------------

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Checks every input against `inputs` before the backend sees it."""
        self._require_loaded()
        self.check_feed(feed)
        return self._infer(feed)

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        expected = {spec.name: spec for spec in self._inputs}
        missing = sorted(set(expected) - set(feed))
        unknown = sorted(set(feed) - set(expected))
        if missing or unknown:
            raise InputError(
                f"{self.label}: inputs do not match - missing {missing or 'none'}, "
                f"unknown {unknown or 'none'}; expected {sorted(expected)}"
            )
        for name, spec in expected.items():
            spec.check(feed[name])

    # -- for subclasses -------------------------------------------------------------------------

    @abc.abstractmethod
    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Do the heavy work; return the input and output specs."""

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the backend on a checked feed."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise RuntimeError(
                f"{type(self).__name__} is not loaded: use it in a `with` block or call load()"
            )
