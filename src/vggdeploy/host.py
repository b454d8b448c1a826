"""What this host has: CPU model and instruction sets, NVIDIA GPUs, TensorRT, OpenVINO's devices;
and whether it can run a given TensorRT engine.

The one home of "can this host run that engine": `engine_incompatibility` holds TensorRT's
portability rules, and `TrtRuntime`, `inspect`, `bench`, `validate` and `pipeline` all ask it
(or `check_engine`). Probes are cheap: no torch import unless there is no `nvidia-smi`.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from vggdeploy.records import EngineRecord

# -- CPU --------------------------------------------------------------------------------------

#: instruction sets that decide which integer kernels ONNX Runtime can use
CPU_FEATURES = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",
    "avx_vnni": "vnni",
    "amx_int8": "amx",
    "asimddp": "dotprod",  # Arm dot product (sdot/udot): no 16-bit intermediate either
}


@dataclass(frozen=True)
class CpuInfo:
    name: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def features(self) -> list[str]:
        """The instruction sets that matter for inference, e.g. ["avx2", "vnni"]."""
        return sorted({tag for flag, tag in CPU_FEATURES.items() if flag in self.flags})

    @property
    def has_vnni(self) -> bool:
        return "vnni" in self.features

    @property
    def has_avx512(self) -> bool:
        return "avx512" in self.features

    @property
    def int8_dot_product(self) -> bool:
        """Whether ONNX Runtime's u8s8 integer kernels accumulate int8 products straight into
        int32 here (VNNI, AMX, Arm dot product). Without it (AVX2/AVX-512 without VNNI) they
        add pairs of u8 x s8 products in int16 (`vpmaddubsw`), which saturates for weights
        beyond +-63 with large activations: ONNX Runtime's documented remedy is 7-bit weights
        ("reduce range") or u8u8."""
        return bool({"vnni", "amx", "dotprod"} & set(self.features))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "features": self.features}


@functools.cache
def cpu() -> CpuInfo:
    """This host's CPU model name and feature flags (from /proc/cpuinfo where it exists)."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return CpuInfo(name, flags)
    if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
        name = m.group(1).strip()
    if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
        flags = frozenset(m.group(1).split())
    return CpuInfo(name, flags)


# -- GPUs and TensorRT ------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str
    jetson: bool = False


@dataclass(frozen=True)
class HostProbe:
    """TensorRT and NVIDIA GPUs of this host, each with the reason when absent."""

    tensorrt: str | None
    tensorrt_error: str | None
    gpus: tuple[Gpu, ...]
    gpu_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensorrt": self.tensorrt,
            "tensorrt_error": self.tensorrt_error,
            "gpus": [
                {"name": g.name, "compute_capability": g.compute_capability} for g in self.gpus
            ],
            "gpu_error": self.gpu_error,
        }


def module_missing(module: str, hint: str) -> str | None:
    """Why `module` cannot be imported here (not installed), or None."""
    if importlib.util.find_spec(module) is None:
        return f"the {module} package is not installed ({hint})"
    return None


#: The one home of every install hint: what to install for a missing package, by the name a
#: command or runtime asks for. Every error and skip reason that says how to install something
#: reads it from here (`install_hint`), so two commands never give different advice.
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install 'vggdeploy[cpu]' (or 'vggdeploy[gpu]' for CUDA; never both)",
    # TensorRT's install guide: pip wheels for x86_64/SBSA Linux and Windows with an NVIDIA
    # driver, per CUDA major (tensorrt-cu12, tensorrt-cu13); Jetson gets TensorRT from JetPack
    # (nvidia-jetpack provides python3-libnvinfer), the pip wheels do not support it.
    "tensorrt": (
        "pip install 'vggdeploy[gpu]' on x86_64 or SBSA Linux/Windows with an NVIDIA GPU and "
        "driver (`pip install tensorrt-cu12` or `tensorrt-cu13` to match your CUDA); on a Jetson "
        "use the TensorRT that ships with JetPack (`sudo apt install nvidia-jetpack`, which "
        "provides python3-libnvinfer; pip wheels do not support Jetson)"
    ),
    "polygraphy": "pip install 'vggdeploy[gpu]' (or `pip install 'polygraphy>=0.53.6'`)",
    "openvino": "pip install 'vggdeploy[openvino]'",
    "torch": "pip install torch",
    "onnx": "pip install onnx",
    "tritonclient": "pip install 'tritonclient[http,grpc]'",
    "kserve": "pip install 'vggdeploy[serve]'",
}


def install_hint(package: str) -> str:
    """How to install `package` (a key of `INSTALL_HINTS`)."""
    return INSTALL_HINTS[package]


#: what a missing OpenVINO device needs (OpenVINO's "Inference Devices and Modes" pages: the GPU
#: plugin runs on Intel GPUs through Intel's compute runtime, the NPU plugin on Core Ultra NPUs
#: through the NPU driver)
OPENVINO_DEVICE_HINTS = {
    "CPU": "use an x86-64 or Arm CPU that OpenVINO supports",
    "GPU": "it needs an Intel GPU and Intel's GPU compute runtime (OpenCL / Level Zero drivers)",
    "NPU": "it needs an Intel NPU (Core Ultra) and Intel's NPU driver",
}


@functools.cache
def openvino_devices() -> tuple[tuple[str, ...], str | None]:
    """(OpenVINO's `Core().available_devices`, None), or ((), why OpenVINO cannot be used)."""
    if importlib.util.find_spec("openvino") is None:
        return (), f"the openvino package is not installed ({install_hint('openvino')})"
    try:
        import openvino

        return tuple(openvino.Core().available_devices), None
    except Exception as exc:  # a broken install can raise anything
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return (
            (),
            f"OpenVINO is not usable ({type(exc).__name__}: {first}; {install_hint('openvino')})",
        )


def openvino_device_missing(device: str) -> str | None:
    """Why OpenVINO cannot run on `device` ("CPU", "GPU", "NPU") here, in one line, or None.
    OpenVINO numbers several devices of a kind (`GPU.0`, `GPU.1`); any of them will do."""
    devices, error = openvino_devices()
    if error:
        return error
    if any(d == device or d.startswith(device + ".") for d in devices):
        return None
    return (
        f"OpenVINO finds no {device} device on this host (it has {', '.join(devices) or 'none'}): "
        f"{OPENVINO_DEVICE_HINTS.get(device, 'check the device and its driver')}"
    )


def tensorrt_version() -> tuple[str | None, str | None]:
    """(version, None) when TensorRT imports, else (None, why)."""
    try:
        import tensorrt as trt

        return str(trt.__version__), None
    except Exception as exc:  # ImportError, or a broken install raising anything
        return (
            None,
            f"TensorRT is not importable ({type(exc).__name__}: {exc}; {install_hint('tensorrt')})",
        )


def probe() -> HostProbe:
    """TensorRT version and GPU compute capabilities of this host."""
    version, error = tensorrt_version()
    gpus, gpu_error = _gpus()
    return HostProbe(version, error, tuple(gpus), gpu_error)


def _gpus() -> tuple[list[Gpu], str | None]:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            gpus = []
            for line in out.splitlines():
                if "," in line:
                    name, cc = (s.strip() for s in line.rsplit(",", 1))
                    gpus.append(Gpu(name, cc))
            if gpus:
                return gpus, None
        except (OSError, subprocess.SubprocessError) as exc:
            return [], f"nvidia-smi failed ({exc})"
    # Jetson boards have no nvidia-smi; a CUDA build of PyTorch knows the capability.
    try:
        import torch

        if torch.cuda.is_available():
            return [
                Gpu(
                    torch.cuda.get_device_name(i),
                    "{}.{}".format(*torch.cuda.get_device_capability(i)),
                )
                for i in range(torch.cuda.device_count())
            ], None
    except Exception:
        pass
    return [], "no NVIDIA GPU found (no nvidia-smi, and no CUDA build of PyTorch)"


# -- can an engine run here -------------------------------------------------------------------

# Across major versions, version-compatible engines run only on these (built, runtime) pairs
# of TensorRT majors (NVIDIA's TensorRT 11.4.1 support matrix, "Engine Portability").
CROSS_MAJOR_VERSION_COMPAT = {(8, 10), (10, 11)}


def version_tuple(version: str) -> tuple[int, ...]:
    """`"10.16.1.11"` -> (10, 16, 1, 11); the digits of each part, 0 where it has none."""
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def version_incompatibility(record: EngineRecord, host_version: str) -> str | None:
    """Why TensorRT `host_version` cannot deserialize the engine in `record`, or None.

    Engines run only on the TensorRT that built them, unless built version-compatible: then on
    the same or a later release of that major version, or of a supported later major.
    """
    built = record.tensorrt_version or ""
    if not built:
        return None
    built_v, host_v = version_tuple(built), version_tuple(host_version)
    if built_v == host_v:
        return None
    if not record.flags.version_compatible:
        return (
            f"was built with TensorRT {built} but this host has {host_version}; engines run "
            "only on the TensorRT version that built them (unless built with --version-compatible)"
        )
    if host_v < built_v:
        return (
            f"was built with TensorRT {built}, newer than this host's {host_version}; "
            "version-compatible engines run on the same or later TensorRT only"
        )
    if host_v[0] != built_v[0] and (built_v[0], host_v[0]) not in CROSS_MAJOR_VERSION_COMPAT:
        return (
            f"was built version-compatible with TensorRT {built}, which TensorRT {host_version} "
            "cannot run: across major versions NVIDIA supports only 8 -> 10 and 10 -> 11"
        )
    if record.flags.exclude_lean_runtime:
        return (
            f"was built version-compatible with TensorRT {built} but without its lean runtime "
            f"(--exclude-lean-runtime), so TensorRT {host_version} cannot run it"
        )
    return None


def gpu_incompatibility(
    record: EngineRecord, compute_capability: str, gpu: str, *, jetson: bool = False
) -> str | None:
    """Why the engine in `record` cannot run on a GPU of `compute_capability`, or None.

    `gpu` names that GPU in the message (e.g. "GPU 0 is Tesla T4"). Engines are specific to
    the compute capability they were built on, unless built hardware-compatible (ampere+: any
    compute capability 8.0 or later, but not on Jetson).
    """
    built_cc = record.gpu.compute_capability or ""
    if record.hardware_compat == "ampere+":
        if version_tuple(compute_capability) < (8, 0):
            return (
                "was built hardware-compatible for Ampere and later (compute capability 8.0+), "
                f"but {gpu} (compute capability {compute_capability})"
            )
        if jetson:
            return (
                "was built hardware-compatible (ampere+), which TensorRT does not support on "
                "Jetson/JetPack"
            )
        return None
    if built_cc and str(compute_capability) != built_cc:
        return (
            f"was built for compute capability {built_cc} ({record.gpu.name or '?'}) but "
            f"{gpu} (compute capability {compute_capability}); engines are not portable "
            "across GPU architectures"
        )
    return None


def engine_incompatibility(
    record: EngineRecord,
    host_version: str,
    compute_capability: str,
    gpu: str,
    *,
    jetson: bool = False,
) -> str | None:
    """Why this engine cannot run with TensorRT `host_version` on that GPU, or None."""
    return version_incompatibility(record, host_version) or gpu_incompatibility(
        record, compute_capability, gpu, jetson=jetson
    )


@dataclass(frozen=True)
class EngineVerdict:
    runnable: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"runnable": self.runnable, "reasons": list(self.reasons)}


def check_engine(record: EngineRecord, host: HostProbe | None = None) -> EngineVerdict:
    """Whether this host (TensorRT and some GPU of it) can deserialize the engine, and why not."""
    host = host or probe()
    reasons: list[str] = []
    if host.tensorrt is None:
        reasons.append(host.tensorrt_error or "TensorRT is not installed")
    elif why := version_incompatibility(record, host.tensorrt):
        reasons.append(f"{why}: rebuild with `vggdeploy build` here")
    if not host.gpus:
        reasons.append(host.gpu_error or "no NVIDIA GPU found")
    else:
        why_not = [
            gpu_incompatibility(
                record, g.compute_capability, f"this host's GPU is {g.name}", jetson=g.jetson
            )
            for g in host.gpus
        ]
        if all(why_not):
            reasons.append(f"{why_not[0]}: rebuild with `vggdeploy build` on this GPU")
    return EngineVerdict(not reasons, tuple(reasons))
