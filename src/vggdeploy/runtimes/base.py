"""The contract every runtime follows.

Constructing a runtime is cheap and imports nothing heavy; `load()` (or entering the context
manager) does the work: reading weights, creating a session, deserializing an engine. `infer`
checks names, shapes and dtypes against `inputs` and then calls the backend's `_infer`.
Timing lives in the benchmark, not here.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from vggdeploy import precision as P
from vggdeploy.errors import CheckFailedError, InputError, VggDeployError

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle


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


def format_shape(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class SpecLike(Protocol):
    """What a runtime class reads of a `registry.RuntimeSpec` (kept here so the contract does
    not import the registry, which imports the contract)."""

    name: str
    precision: str | None

    @property
    def device(self) -> str | None: ...

    @property
    def runtime(self) -> str: ...


@dataclass(frozen=True)
class RuntimeDescription:
    """What really runs, for reports and bench results: the same fields for every backend,
    plus `details` for the backend's own facts (providers, engine build, threads...)."""

    runtime: str
    label: str
    precision: str
    device: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "label": self.label,
            "precision": self.precision,
            "device": self.device,
            **dict(self.details),
        }


class Runtime(abc.ABC):
    """Base class of every backend. Subclasses implement `_load`, `_infer` and maybe `_close`,
    and declare what the registry's spec grammar may say about them (below)."""

    #: the registry name ("torch", "onnxruntime", "tensorrt")
    name: str = ""

    # -- declarations read by `vggdeploy.runtimes.registry` ------------------------------------
    #: variant name (after `:` in a spec) -> constructor keyword arguments
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: variants that exclude each other (a device or provider); the others are flags
    EXCLUSIVE_VARIANTS: ClassVar[tuple[str, ...]] = ()
    #: the device/provider when a spec names none
    DEFAULT_VARIANT: ClassVar[str | None] = None
    #: precision names this runtime can run at all (`@PRECISION`)
    PRECISIONS: ClassVar[tuple[str, ...]] = ()
    PRECISION_HINT: ClassVar[str] = ""
    #: "onnx" or "engine": the bundle artifacts it runs; None: it rebuilds the model itself
    ARTIFACT_KIND: ClassVar[str | None] = None
    #: shared command-line options its constructor takes (threads, allow_fallback, verbosity)
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: the Python package it needs, and how to install it
    MODULE: ClassVar[str] = ""
    INSTALL_HINT: ClassVar[str] = ""

    @classmethod
    def native_precisions(cls, device: str | None) -> tuple[str, ...]:
        """Precisions a runtime without artifacts computes in on `device`."""
        return cls.PRECISIONS

    @classmethod
    def available(cls, spec: SpecLike, **options: Any) -> str | None:
        """Why this host cannot run `spec` (package, device, provider), or None. Cheap.
        `options` are the shared runtime options (`allow_fallback` may accept a missing GPU)."""
        from vggdeploy.host import module_missing

        return module_missing(cls.MODULE, cls.INSTALL_HINT) if cls.MODULE else None

    @classmethod
    def artifact_unavailable(cls, bundle: Bundle, spec: SpecLike) -> str | None:
        """Why `bundle` has nothing for `spec`'s precision to run, or None."""
        precision = spec.precision or "fp32"
        if cls.ARTIFACT_KIND is None:
            allowed = cls.native_precisions(spec.device)
            if precision not in allowed:
                return (
                    f"{spec.runtime} runs the PyTorch model in {' or '.join(allowed)} only; "
                    f"{precision} is an ONNX/engine artifact (use onnxruntime or tensorrt)"
                )
            return None
        key = f"{cls.ARTIFACT_KIND}.{precision}"
        if not bundle.has_artifact(key):
            return f"the bundle has no {key} artifact: create it with `{P.make_command(key, str(bundle.root))}`"
        return None

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

    def describe(self) -> RuntimeDescription:
        """What really runs (device, providers, precision, versions): for reports and results."""
        return RuntimeDescription(self.name, self.label, "fp32", "cpu")

    @property
    def label(self) -> str:
        """A short name for tables, e.g. `onnxruntime[cpu] int8`."""
        return self.name

    # -- inference ------------------------------------------------------------------------------

    @property
    def artifact(self) -> str:
        """What this runtime runs, for error lines: the artifact file, or the model it built."""
        return "the PyTorch model"

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Checks every input against `inputs` before the backend sees it, and
        every output after: a backend failure (an allocation that fails, a kernel error) and a
        NaN or infinite output are each one `VggDeployError` line naming the runtime, its
        precision (in `label`) and the artifact, in every command that runs a model."""
        self._require_loaded()
        self.check_feed(feed)
        outputs = self.infer_unchecked(feed)
        check_finite(outputs, self.label, self.artifact)
        return outputs

    def infer_unchecked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The benchmark's fast path: no checks of inputs or outputs (call `infer` once first
        with the same shapes); a backend failure is still one error line."""
        try:
            return self._infer(feed)
        except VggDeployError:
            raise
        except Exception as exc:  # the backend's own error types differ per library
            detail = str(exc).strip().splitlines()
            raise RuntimeFailedError(
                f"{self.label} failed while running {self.artifact}: {type(exc).__name__}"
                + (f": {detail[0]}" if detail else "")
                + " (a backend failure, e.g. out of memory: try a smaller --batch or another "
                "runtime)"
            ) from exc

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


class RuntimeFailedError(VggDeployError):
    """The backend raised while running a batch."""


def check_finite(outputs: Mapping[str, Any], label: str, artifact: str) -> None:
    """Refuse NaN or infinite model outputs: a probability or an accuracy computed from them
    would be meaningless, yet print like any other."""
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise CheckFailedError(
                f"{label} ({artifact}) produced {bad} non-finite value(s) (NaN or infinity) in "
                f"output {name!r}: the model or its inputs are broken; re-create the artifact "
                "(or check the bundle's preprocessing and weights)"
            )


def infer_array(runtime: Runtime, x: np.ndarray) -> np.ndarray:
    """`x` through a loaded runtime's first input; its first output as float32.

    `x` is cast to the input's dtype (an fp16 ONNX may take float16). A model exported with a
    fixed batch gets `x` in chunks of that size, the last one zero-padded and trimmed again.
    """
    spec = runtime.inputs[0]
    out_name = runtime.outputs[0].name
    x = x.astype(spec.dtype, copy=False)
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
    if fixed is None or len(x) == fixed:
        return np.asarray(runtime.infer({spec.name: x})[out_name], dtype=np.float32)
    outputs = []
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        out = np.asarray(runtime.infer({spec.name: chunk})[out_name], dtype=np.float32)
        outputs.append(out[:n])
    return np.concatenate(outputs)
