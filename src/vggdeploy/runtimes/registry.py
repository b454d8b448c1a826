"""Runtime names and the one spec grammar every command accepts.

A runtime spec is `NAME[:VARIANT...][@PRECISION]`:

    torch                     PyTorch eager on the CPU, fp32
    torch:channels-last       ... with NHWC convolutions
    torch:cuda@fp16           ... on the GPU in half precision
    onnxruntime:cpu@fp32      ONNX Runtime, CPU provider, the bundle's model.onnx
    onnxruntime:cuda@int8     ... CUDA provider, the Q/DQ model.int8.onnx
    tensorrt@int8             the bundle's TensorRT engine.int8
    tensorrt:cuda-graphs      ... replayed from CUDA graphs
    openvino@int8             OpenVINO on the CPU, the bundle's model.int8.onnx
    openvino:gpu@fp16         ... on an Intel GPU, model.fp16.onnx

`parse_spec` is the only parser; `validate`, `predict`, `evaluate`, `bench` and `pipeline` all
call it. What a name means - its variants, precisions, where its models come from, whether the
host can run it - is declared on the runtime class (`Runtime.VARIANTS`, `.PRECISIONS`,
`.available()`); this module maps names to classes and imports a class only when asked, so
`--help` imports no backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vggdeploy import precision as P
from vggdeploy.errors import InputError
from vggdeploy.runtimes.base import Runtime

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle

#: name -> "module:Class"; nothing is imported until a name is used
RUNTIMES: dict[str, str] = {
    "torch": "vggdeploy.runtimes.pytorch:TorchRuntime",
    "onnxruntime": "vggdeploy.runtimes.onnxrt:OrtRuntime",
    "tensorrt": "vggdeploy.runtimes.trt:TrtRuntime",
    "openvino": "vggdeploy.runtimes.openvino_rt:OpenVinoRuntime",
}
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}

SPEC_HELP = (
    "NAME[:VARIANT...][@PRECISION], e.g. torch, torch:channels-last, onnxruntime:cpu@fp32, "
    "onnxruntime:cuda, tensorrt@int8, tensorrt:cuda-graphs, openvino@int8"
)


def runtime_class(name: str) -> type[Runtime]:
    """The runtime class registered under `name` (or an alias), imported now."""
    name = ALIASES.get(name, name)
    if name not in RUNTIMES:
        raise InputError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")
    module_name, class_name = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


@dataclass(frozen=True)
class RuntimeSpec:
    """A parsed runtime spec. `variants` is canonical: the default device is implicit, the
    device (or provider) comes first, flags follow sorted. `precision` None means "not given"."""

    name: str
    variants: tuple[str, ...] = ()
    precision: str | None = None

    @property
    def runtime(self) -> str:
        """`name[:variants]` without the precision: what a table's runtime column shows."""
        return ":".join((self.name, *self.variants))

    @property
    def text(self) -> str:
        return self.runtime + (f"@{self.precision}" if self.precision else "")

    def __str__(self) -> str:
        return self.text

    @property
    def cls(self) -> type[Runtime]:
        return runtime_class(self.name)

    @property
    def device(self) -> str | None:
        """The chosen device/provider variant (the class default when none is named)."""
        cls = self.cls
        chosen = [v for v in self.variants if v in cls.EXCLUSIVE_VARIANTS]
        return chosen[0] if chosen else cls.DEFAULT_VARIANT

    def with_precision(self, precision: str) -> RuntimeSpec:
        return RuntimeSpec(self.name, self.variants, precision)

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments: the variants' options and the precision."""
        cls = self.cls
        out: dict[str, Any] = {}
        if cls.DEFAULT_VARIANT and not any(v in cls.EXCLUSIVE_VARIANTS for v in self.variants):
            out.update(cls.VARIANTS[cls.DEFAULT_VARIANT])
        for v in self.variants:
            out.update(cls.VARIANTS[v])
        if self.precision:
            out["precision"] = self.precision
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.text,
            "runtime": self.name,
            "variants": list(self.variants),
            "precision": self.precision,
        }


def parse_spec(text: str, precision: str | None = None) -> RuntimeSpec:
    """Parse `NAME[:VARIANT...][@PRECISION]`; `precision` applies when the text has no `@`."""
    raw = (text or "").strip()
    body, at, prec = raw.partition("@")
    if at and not prec.strip():
        raise InputError(f"runtime {raw!r}: name a precision after '@' ({', '.join(P.NAMES)})")
    parts = [p.strip() for p in body.split(":")]
    if any(not p for p in parts[1:]):
        raise InputError(
            f"runtime {raw!r}: a ':' with no variant after it; write NAME[:VARIANT...] "
            f"({SPEC_HELP})"
        )
    name = ALIASES.get(parts[0], parts[0])
    if name not in RUNTIMES:
        raise InputError(
            f"runtime {raw!r}: unknown runtime {parts[0]!r}; choose one of {', '.join(RUNTIMES)} "
            f"({SPEC_HELP})"
        )
    cls = runtime_class(name)
    variants = [p for p in parts[1:] if p]
    for v in variants:
        if v not in cls.VARIANTS:
            raise InputError(
                f"runtime {raw!r}: {name} has no variant {v!r}; choose from "
                f"{', '.join(cls.VARIANTS) or 'none'}"
            )
    if len(set(variants)) != len(variants):
        raise InputError(f"runtime {raw!r} repeats a variant")
    grouped = [v for v in variants if v in cls.EXCLUSIVE_VARIANTS]
    if len(grouped) > 1:
        raise InputError(f"runtime {raw!r}: choose one of {' / '.join(grouped)}, not both")
    if grouped and grouped[0] == cls.DEFAULT_VARIANT:
        variants = [v for v in variants if v != cls.DEFAULT_VARIANT]
    variants.sort(key=lambda v: (v not in cls.EXCLUSIVE_VARIANTS, v))
    chosen = prec.strip() if at else precision
    if chosen is not None:
        P.get(chosen)  # an unknown name is an error listing the choices
        if chosen not in cls.PRECISIONS:
            raise InputError(
                f"runtime {raw!r}: {name} runs {', '.join(cls.PRECISIONS)}, not {chosen}"
                + (f" ({cls.PRECISION_HINT})" if cls.PRECISION_HINT else "")
            )
    return RuntimeSpec(name, tuple(variants), chosen)


def parse_specs(texts: Iterable[str]) -> list[RuntimeSpec]:
    """Several specs; each text may hold a comma-separated list (`torch,onnxruntime`)."""
    specs = []
    for text in texts:
        specs.extend(parse_spec(t) for t in text.split(",") if t.strip())
    return specs


# -- specs against a bundle and a host -----------------------------------------------------------


def bundle_precisions(bundle: Bundle, spec: RuntimeSpec) -> list[str]:
    """The precisions `spec` can run from this bundle, in display order.

    Runtimes that run the bundle's files (ONNX Runtime: `onnx.*`, TensorRT: `engine.*`) run
    every such artifact; PyTorch runs its native precisions on its device.
    """
    cls = spec.cls
    if cls.ARTIFACT_KIND is None:
        return list(cls.native_precisions(spec.device))
    found = []
    for key in bundle.artifacts:
        kind, name = P.split_key(key)
        if kind == cls.ARTIFACT_KIND and name in cls.PRECISIONS:
            found.append(name)
    return P.sort(found)


def expand(
    bundle: Bundle, specs: Sequence[RuntimeSpec], precisions: Sequence[str] = ()
) -> list[RuntimeSpec]:
    """Give every spec a precision: its own `@P`, else each of `precisions`, else every one the
    bundle has for that runtime (`bundle_precisions`). The order is stable; repeats are dropped."""
    out: list[RuntimeSpec] = []
    for spec in specs:
        if spec.precision:
            wanted = [spec.precision]
        elif precisions:
            wanted = list(precisions)
        else:
            wanted = bundle_precisions(bundle, spec)
            if not wanted:
                kind = spec.cls.ARTIFACT_KIND
                raise InputError(
                    f"bundle {bundle.root} has no {kind}.* artifacts for runtime {spec.text}"
                    + (
                        f": create one with `{P.make_command(f'{kind}.fp16', str(bundle.root))}`"
                        if kind == P.ENGINE
                        else ""
                    )
                )
        for p in wanted:
            s = spec.with_precision(p)
            if s not in out:
                out.append(s)
    return out


def unavailable(spec: RuntimeSpec, bundle: Bundle | None = None, **options: Any) -> str | None:
    """Why this host (and, with `bundle`, this bundle) cannot run `spec`, or None if it may.

    The class's `available()` answers for the host (package installed, device present,
    provider built in, engine built for this GPU); the bundle must hold the artifact.
    """
    cls = spec.cls
    reason = cls.available(spec, **options)
    if reason:
        return reason
    if bundle is not None and spec.precision:
        return cls.artifact_unavailable(bundle, spec)
    return None


def open_runtime(bundle: Bundle, spec: RuntimeSpec, **options: Any) -> Runtime:
    """Construct (not load) the runtime for `spec` on `bundle`.

    `options` are shared command-line settings (`threads`, `allow_fallback`, `verbosity`); each
    is passed only to classes that declare it in `OPTIONS`, so one call serves every runtime.
    """
    cls = spec.cls
    kwargs = spec.kwargs()
    for key, value in options.items():
        if key in cls.OPTIONS and value is not None:
            kwargs[key] = value
    return cls(bundle, **kwargs)


def open_available(bundle: Bundle, spec: RuntimeSpec, **options: Any) -> Runtime:
    """`open_runtime` after `unavailable`: a spec this host or bundle cannot run is one
    `RuntimeUnavailableError` line naming the spec and the reason."""
    from vggdeploy.errors import RuntimeUnavailableError

    if reason := unavailable(spec, bundle, **options):
        raise RuntimeUnavailableError(f"{spec.text}: {reason}")
    return open_runtime(bundle, spec, **options)


def default_validation_specs(bundle: Bundle) -> list[RuntimeSpec]:
    """What `validate` and `pipeline` compare by default: ONNX Runtime CPU on every ONNX file,
    then every TensorRT engine the manifest lists (those this host cannot run are reported as
    skipped; a listed file that is missing is the caller's to report)."""
    specs = []
    for key in sorted(bundle.artifacts, key=P.artifact_order):
        kind, name = P.split_key(key)
        if kind == P.ONNX:
            specs.append(RuntimeSpec("onnxruntime", (), name))
        elif kind == P.ENGINE:
            specs.append(RuntimeSpec("tensorrt", (), name))
    return specs


#: What `bench` tries by default (those the host lacks are listed as skipped).
DEFAULT_BENCH_SPECS = (
    RuntimeSpec("torch"),
    RuntimeSpec("torch", ("cuda",)),
    RuntimeSpec("onnxruntime"),
    RuntimeSpec("onnxruntime", ("cuda",)),
    RuntimeSpec("onnxruntime", ("tensorrt",)),
    RuntimeSpec("tensorrt"),
)

REFERENCE = RuntimeSpec("torch", (), "fp32")
