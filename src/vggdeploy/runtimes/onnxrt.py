"""ONNX Runtime on the CPU, CUDA or TensorRT execution provider.

ONNX Runtime quietly falls back to the CPU when a GPU provider cannot load (a CPU-only
`onnxruntime` package, missing CUDA/cuDNN/TensorRT libraries, no GPU). This runtime compares
the providers the session really got with the one asked for and refuses a mismatch with the
reason, unless `allow_fallback` is set, in which case it warns and `describe()` records the
providers that actually run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, sha256_file
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.host import install_hint
from vggdeploy.ortsession import import_ort
from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec

log = logging.getLogger(__name__)

#: every ONNX precision: fp32 is the export, the others come from `convert`/`calibrate`
#: ("int8": Q/DQ in NVIDIA's placement, symmetric int8, rewritten for the CPU provider on load)
PRECISIONS = P.NAMES

#: provider name -> ONNX Runtime execution providers in priority order
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}

# ONNX Runtime's type strings ("tensor(float)") -> NumPy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OrtRuntime(Runtime):
    """An ONNX Runtime inference session over one ONNX model of a bundle.

    Args:
        source: a `Bundle`, a bundle directory, or an `.onnx` file (no manifest: nothing to
            verify its sha256 against; `precision` is then only a label).
        precision: which ONNX of the bundle: "fp32" (`onnx.fp32`), "fp16" or "int8" (Q/DQ;
            the CPU provider runs it in its integer form, `onnxutil.cpu_int8_form`).
            The artifact's sha256 is checked against the manifest on load.
        provider: "cpu", "cuda" or "tensorrt".
        threads: `intra_op_num_threads` (None: ONNX Runtime's default, one per physical core).
        allow_fallback: accept a session that did not get the asked provider (warns loudly;
            `describe().details["providers"]` shows what really runs). Without it that is an error.
        fp16: TensorRT provider only: let TensorRT pick FP16 kernels (`trt_fp16_enable`).
        engine_cache: TensorRT provider only: folder for built engines
            (`trt_engine_cache_enable` / `trt_engine_cache_path`).
        workspace: TensorRT provider only: builder workspace in bytes (`trt_max_workspace_size`).
        device_id: the GPU for the CUDA and TensorRT providers.
    """

    name = "onnxruntime"
    VARIANTS = {
        "cpu": {"provider": "cpu"},
        "cuda": {"provider": "cuda"},
        "tensorrt": {"provider": "tensorrt"},
    }
    EXCLUSIVE_VARIANTS = ("cpu", "cuda", "tensorrt")
    DEFAULT_VARIANT = "cpu"
    PRECISIONS = PRECISIONS
    ARTIFACT_KIND = "onnx"
    OPTIONS = ("threads", "allow_fallback")
    MODULE = "onnxruntime"
    INSTALL_HINT = install_hint("onnxruntime")

    @classmethod
    def available(cls, spec: Any, **options: Any) -> str | None:
        reason = super().available(spec)
        # With allow_fallback the session may run on the CPU instead (it warns and records it).
        if (
            reason is None
            and spec.device in ("cuda", "tensorrt")
            and not options.get("allow_fallback")
        ):
            import onnxruntime as ort

            wanted = PROVIDERS[spec.device][0]
            have = ort.get_available_providers()
            if wanted not in have:
                return (
                    f"{wanted} is not in this onnxruntime build (it has {', '.join(have)}; "
                    "install onnxruntime-gpu instead of onnxruntime)"
                )
        return reason

    def __init__(
        self,
        source: Bundle | str | os.PathLike[str],
        *,
        precision: str = "fp32",
        provider: str = "cpu",
        threads: int | None = None,
        allow_fallback: bool = False,
        fp16: bool = False,
        engine_cache: str | os.PathLike[str] | None = None,
        workspace: int | None = None,
        device_id: int = 0,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(
                f"onnxruntime precision {precision!r} is not supported: use one of {', '.join(PRECISIONS)}"
            )
        if provider not in PROVIDERS:
            raise InputError(
                f"onnxruntime provider {provider!r} is not supported: use one of {', '.join(PROVIDERS)}"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads {threads!r} must be a positive integer")
        if not isinstance(device_id, int) or device_id < 0:
            raise InputError(f"device id {device_id!r} must be a non-negative integer")
        if workspace is not None and (not isinstance(workspace, int) or workspace < 1):
            raise InputError(f"workspace {workspace!r} must be a positive number of bytes")
        trt_only = [
            name
            for name, value in (
                ("fp16", fp16),
                ("engine_cache", engine_cache),
                ("workspace", workspace),
            )
            if value
        ]
        if trt_only and provider != "tensorrt":
            raise InputError(
                f"{', '.join(trt_only)} only apply to the tensorrt provider, not {provider!r}: "
                "drop them or use provider tensorrt"
            )
        self.bundle: Bundle | None = None
        self.onnx_file: Path | None = None
        path = source if isinstance(source, Bundle) else Path(source)
        if isinstance(path, Bundle):
            self.bundle = path
        elif path.is_file() and path.suffix.lower() == ".onnx":
            self.onnx_file = path
        else:
            self.bundle = Bundle.load(path)
        self.precision = precision
        if self.bundle is not None:
            _require_artifact(self.bundle, precision)  # a dict lookup: fail before heavy work
        self.provider = provider
        self.threads = threads
        self.allow_fallback = allow_fallback
        self.fp16 = fp16
        self.engine_cache = Path(engine_cache) if engine_cache else None
        self.workspace = workspace
        self.device_id = device_id
        self._session: Any = None
        self._path: Path | None = None
        self._sha256: str | None = None
        self._fallback: str | None = None
        self._active: list[str] = []
        self._ort_version = ""
        self._cpu_form: dict[str, int] = {}  # what _cpu_int8_form changed

    @property
    def artifact(self) -> str:
        return str(self._path) if self._path else "the ONNX model"

    @property
    def label(self) -> str:
        text = f"onnxruntime[{self.provider}] {self.precision}"
        if self.fp16:
            text += " trt-fp16"
        if self._fallback:
            text += " (fell back to " + ",".join(self._active_short()) + ")"
        return text

    def describe(self) -> RuntimeDescription:
        info: dict[str, Any] = {"requested_provider": self.provider}
        if self.is_loaded:
            session = self._session
            info.update(
                {
                    "providers": session.get_providers(),
                    "fallback": self._fallback,
                    "onnxruntime": self._ort_version,
                    "package": ort_package(),
                    "threads": self.threads or "default",
                    "artifact": str(self._path),
                    "sha256": self._sha256,
                    "cpu_int8_form": self._cpu_form,
                    "provider_options": {
                        k: v
                        for k, v in session.get_provider_options().items()
                        if k != "CPUExecutionProvider"
                    },
                }
            )
        device = "cpu" if self.provider == "cpu" else f"cuda:{self.device_id}"
        return RuntimeDescription(self.name, self.label, self.precision, device, details=info)

    # -- backend --------------------------------------------------------------------------------

    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        ort = import_ort()
        self._ort_version = ort.__version__
        if self.bundle is not None:
            key = P.onnx_key(self.precision)
            self._path = self.bundle.artifact_path(key, verify=True)
            self._sha256 = self.bundle.artifact(key).sha256
        else:
            assert self.onnx_file is not None
            self._path = self.onnx_file
            self._sha256 = sha256_file(self.onnx_file)

        wanted = PROVIDERS[self.provider][0]
        available = ort.get_available_providers()
        providers = self._provider_list()
        if wanted not in available:
            reason = _not_built_reason(wanted, available)
            if not self.allow_fallback:
                raise RuntimeUnavailableError(reason)
            # Leave out what this build lacks, so ONNX Runtime does not add its own warning.
            providers = [p for p in providers if _provider_name(p) in available]

        options = ort.SessionOptions()
        # ONNX Runtime's own warnings (e.g. why a provider failed) only at -vv.
        options.log_severity_level = 2 if log.isEnabledFor(logging.DEBUG) else 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            source = self._cpu_int8_form() if self.provider == "cpu" else None
            session = ort.InferenceSession(source or str(self._path), options, providers=providers)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if wanted != "CPUExecutionProvider":
                raise RuntimeUnavailableError(
                    f"ONNX Runtime could not create a session with {wanted} for {self._path}: "
                    f"{first}"
                ) from None
            raise BundleError(f"ONNX Runtime cannot load {self._path}: {first}") from None

        active = session.get_providers()
        self._active = list(active)
        if wanted not in active:
            reason = (
                _not_built_reason(wanted, available)
                if wanted not in available
                else _failed_to_load_reason(wanted, active)
            )
            if not self.allow_fallback:
                raise RuntimeUnavailableError(reason)
            self._fallback = reason
            log.warning(
                "WARNING: %s; continuing with %s because fallback was allowed - "
                "results and timings are NOT from %s",
                reason,
                ", ".join(active),
                wanted,
            )
        self._session = session
        inputs = [_spec(v) for v in session.get_inputs()]
        outputs = [_spec(v) for v in session.get_outputs()]
        return inputs, outputs

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(None, feed)
        return {spec.name: value for spec, value in zip(self._outputs, results)}

    def _close(self) -> None:
        self._session = None

    # -- helpers --------------------------------------------------------------------------------

    def _cpu_int8_form(self) -> bytes | None:
        """An int8 model in the form ONNX Runtime's CPU provider runs fastest, or None to load
        the file as it is (`onnxutil.cpu_int8_form`: a Q/DQ pair after each Conv/Gemm so that
        ONNX Runtime fuses them into integer kernels, ReLUs as integer maxima, activations
        uint8; bit for bit the outputs of the file evaluated as written; measured by
        benchmarks/int8_bench.py). The file keeps NVIDIA's form."""
        if self.precision != "int8":
            return None
        import onnx

        from vggdeploy.onnxutil import cpu_int8_form, external_tensors

        model = onnx.load(str(self._path), load_external_data=False)
        if external_tensors(model):
            return None  # a loose file with weights beside it: ONNX Runtime reads it from there
        self._cpu_form = cpu_int8_form(model)
        return model.SerializeToString() if any(self._cpu_form.values()) else None

    def _provider_list(self) -> list[Any]:
        """Providers with their options, as `InferenceSession(providers=...)` takes them."""
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_id})
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        trt: dict[str, Any] = {"device_id": self.device_id}
        if self.fp16:
            trt["trt_fp16_enable"] = True
        if self.precision == "int8":
            # A Q/DQ model: explicit quantization, no calibration table is read.
            trt["trt_int8_enable"] = True
        if self.engine_cache is not None:
            self.engine_cache.mkdir(parents=True, exist_ok=True)
            trt["trt_engine_cache_enable"] = True
            trt["trt_engine_cache_path"] = str(self.engine_cache)
        if self.workspace is not None:
            trt["trt_max_workspace_size"] = self.workspace
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]

    def _active_short(self) -> list[str]:
        return [p.replace("ExecutionProvider", "") for p in self._active]


def _require_artifact(bundle: Bundle, precision: str) -> None:
    key = P.onnx_key(precision)
    if key not in bundle.artifacts:
        have = sorted(k for k in bundle.artifacts if k.startswith("onnx."))
        hint = P.make_command(key, str(bundle.root))
        raise BundleError(
            f"bundle {bundle.root} has no {precision} ONNX ({key}); it has "
            f"{', '.join(have) or 'none'}: create it with `{hint}`"
        )


def _provider_name(entry: Any) -> str:
    return entry[0] if isinstance(entry, tuple) else entry


def _spec(value: Any) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) else (d or "?") for d in value.shape)
    return TensorSpec(value.name, dims, _ORT_TYPES.get(value.type, value.type))


def ort_distributions() -> dict[str, str]:
    """Installed ONNX Runtime distributions and their versions (several means a broken setup)."""
    from importlib import metadata

    found = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def ort_package() -> str:
    """Which ONNX Runtime distribution is installed, e.g. 'onnxruntime-gpu 1.22.0'."""
    return ", ".join(f"{k} {v}" for k, v in ort_distributions().items()) or "unknown"


def _not_built_reason(wanted: str, available: list[str]) -> str:
    dists = ort_distributions()
    text = (
        f"{wanted} is not in this ONNX Runtime build ({ort_package()}; it offers "
        f"{', '.join(available)}): "
    )
    if "onnxruntime-gpu" in dists and len(dists) > 1:
        return text + (
            "several ONNX Runtime packages are installed and a CPU one shadows the GPU one - "
            "pip uninstall -y " + " ".join(dists) + " && pip install onnxruntime-gpu"
        )
    if "onnxruntime-gpu" in dists:
        return text + "this onnxruntime-gpu build lacks it - install one that has it"
    return text + (
        "the 'onnxruntime' package is CPU-only - pip uninstall -y onnxruntime && "
        "pip install onnxruntime-gpu (never both), or use --runtime onnxruntime:cpu"
    )


def _failed_to_load_reason(wanted: str, active: list[str]) -> str:
    libs = {
        "CUDAExecutionProvider": "CUDA 12 runtime, cuBLAS and cuDNN 9 libraries",
        "TensorrtExecutionProvider": "TensorRT libraries (libnvinfer) and the CUDA/cuDNN ones",
    }[wanted]
    gpu = _gpu_hint()
    return (
        f"ONNX Runtime has {wanted} but could not load it and fell back to "
        f"{', '.join(active)}: {gpu}or the {libs} are missing from the library path "
        "(pip's nvidia-* wheels can be loaded with onnxruntime.preload_dlls(); run with -vv "
        "for ONNX Runtime's own log)"
    )


def _gpu_hint() -> str:
    if os.name == "posix" and Path("/dev").is_dir() and not Path("/dev/nvidia0").exists():
        return "no NVIDIA GPU is visible on this host (/dev/nvidia0 is missing), "
    return "the GPU or driver is not usable, "
