"""Eager PyTorch, rebuilt from a bundle's model spec and weights record.

This is the reference every other runtime is compared with: the same `ModelSpec` and the same
weights the ONNX was exported from (seeded random weights are regenerated from their seed; a
weights file or torchvision's ImageNet checkpoint is read again and its sha256 checked against
the manifest, so a changed file is refused instead of silently compared).

Inputs and outputs are the bundle's (`manifest.io`, float32 both); with `precision="fp16"`
the model computes in half precision on the GPU and its logits are returned as float32.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vggdeploy import host
from vggdeploy import precision as P
from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError, WeightsError
from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec

DEVICES = ("cpu", "cuda")
PRECISIONS = P.FLOAT_NAMES


class TorchRuntime(Runtime):
    """PyTorch eager inference of a bundle's model.

    Args:
        bundle: a `Bundle` or the path of a bundle directory.
        device: "cpu" or "cuda" (a missing GPU is a `RuntimeUnavailableError`, never a switch).
        precision: "fp32", or "fp16" (CUDA only: half precision on a CPU is refused as
            unsupported and slow rather than quietly run in fp32).
        channels_last: run convolutions in NHWC memory layout (often faster on CPU and on
            tensor cores); inputs and outputs keep the bundle's NCHW layout.
        threads: `torch.set_num_threads` for CPU inference. It is process-wide in PyTorch, so
            it also affects other torch work in this process; None leaves it alone.
    """

    name = "torch"
    VARIANTS = {
        "cpu": {"device": "cpu"},
        "cuda": {"device": "cuda"},
        "channels-last": {"channels_last": True},
    }
    EXCLUSIVE_VARIANTS = ("cpu", "cuda")
    DEFAULT_VARIANT = "cpu"
    PRECISIONS = PRECISIONS
    PRECISION_HINT = "INT8 runs in onnxruntime, openvino or tensorrt"
    OPTIONS = ("threads",)
    MODULE = "torch"
    INSTALL_HINT = host.install_hint("torch")

    @classmethod
    def native_precisions(cls, device: str | None) -> tuple[str, ...]:
        # half precision only on the GPU (see __init__)
        return PRECISIONS if device == "cuda" else ("fp32",)

    @classmethod
    def available(cls, spec: Any, **options: Any) -> str | None:
        reason = super().available(spec)
        if reason is None and spec.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "no CUDA device visible to PyTorch (torch.cuda.is_available() is False)"
        return reason

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        *,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if device not in DEVICES:
            raise InputError(f"torch device {device!r} is not supported: use cpu or cuda")
        if precision not in PRECISIONS:
            raise InputError(
                f"torch precision {precision!r} is not supported: use fp32 or fp16 "
                "(INT8 runs in onnxruntime, openvino or tensorrt)"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads {threads!r} must be a positive integer")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.threads = threads
        self._model: Any = None
        self._weights: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return f"torch[{self.device}] {self.precision}" + (
            " channels-last" if self.channels_last else ""
        )

    def describe(self) -> RuntimeDescription:
        info: dict[str, Any] = {
            "channels_last": self.channels_last,
            "model": self.bundle.manifest.model.name,
            "dense": self.bundle.manifest.model.dense,
        }
        if self.is_loaded:
            import torch

            info["torch"] = torch.__version__
            info["threads"] = torch.get_num_threads()
            info["device_name"] = (
                torch.cuda.get_device_name() if self.device == "cuda" else host.cpu().name
            )
            info["weights"] = {k: v for k, v in self._weights.items() if k != "path"}
        return RuntimeDescription(self.name, self.label, self.precision, self.device, details=info)

    # -- backend --------------------------------------------------------------------------------

    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import torch

        from vggdeploy.models import ModelSpec
        from vggdeploy.weights import load_model

        if self.device == "cuda" and not torch.cuda.is_available():
            build = torch.version.cuda
            raise RuntimeUnavailableError(
                "torch cannot use CUDA here: "
                + (
                    f"this torch {torch.__version__} is a CPU-only build (install a CUDA wheel)"
                    if build is None
                    else f"torch {torch.__version__} (CUDA {build}) finds no usable GPU or driver"
                )
                + "; use --runtime torch (cpu)"
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise RuntimeUnavailableError(
                "torch fp16 on CPU is not supported here (many CPU kernels lack half precision "
                "and the rest are slow): use fp16 with torch:cuda, or fp32 on CPU"
            )
        if self.threads is not None:
            torch.set_num_threads(self.threads)

        manifest = self.bundle.manifest
        spec = ModelSpec.from_dict(manifest.model.to_json_dict())
        record = manifest.weights.to_json_dict()
        source = weights_source(record, self.bundle)
        model, loaded = load_model(spec, source, dense=manifest.model.dense)
        check_weights_sha(
            record, loaded.get("sha256"), loaded.get("path") or loaded.get("file") or source.kind
        )
        self._weights = loaded
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = model.to(device=self.device, dtype=dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model.eval()
        self._dtype = dtype
        inputs = [TensorSpec.from_dict(t.to_json_dict()) for t in manifest.io.inputs]
        outputs = [TensorSpec.from_dict(t.to_json_dict()) for t in manifest.io.outputs]
        return inputs, outputs

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feed[self._inputs[0].name]))
        x = x.to(device=self.device, dtype=self._dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._model(x)
        return {self._outputs[0].name: y.float().cpu().numpy()}

    def _close(self) -> None:
        self._model = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def weights_source(record: Any, bundle: Bundle) -> Any:
    """The `WeightsSource` that reproduces a manifest weights record (dict or `WeightsRecord`).

    A weights file is one the bundle carries: its path goes through the bundle's containment
    rule and must match the size and sha256 in the manifest's `files` (`Bundle.shipped_file`),
    never a path relative to the current folder or outside the bundle.

    Random weights come back from their seed. A weights file must still hash to the sha256
    recorded at export, otherwise the reference would silently be a different model: the
    caller checks the sha256 that `load_model` reports with `check_weights_sha`.
    """
    from vggdeploy.weights import WeightsSource

    record = _as_dict(record)
    kind = record.get("source")
    if kind == "random":
        return WeightsSource("random", seed=int(record.get("seed", 0)))
    if kind == "file":
        rel = record.get("path")
        if not rel:
            raise RuntimeUnavailableError(
                f"bundle {bundle.root} does not carry its weights file, so the torch reference "
                "is unavailable: re-export it with this vggdeploy (which copies the weights in), "
                "or choose another --reference"
            )
        try:
            path = bundle.shipped_file(rel, "weights.path")
        except BundleError as exc:
            raise WeightsError(f"the torch reference is unavailable: {exc}") from None
        return WeightsSource("file", path=str(path))
    if kind == "imagenet":
        return WeightsSource("imagenet")
    raise BundleError(f"unknown weights source {kind!r} in the manifest: re-export the bundle")


def check_weights_sha(record: Any, got: str | None, where: str) -> None:
    """Refuse weights whose sha256 differs from the one the manifest recorded at export."""
    record = _as_dict(record)
    want = record.get("sha256")
    if want and got and got != want and record.get("source") == "random":
        raise WeightsError(
            f"the seeded random weights (seed {record.get('seed')}) regenerate differently from "
            "the ones this bundle was exported with (made by another vggdeploy version): "
            "re-export the bundle"
        )
    if want and got and got != want:
        raise WeightsError(
            f"weights {where} changed since the bundle was exported (sha256 differs from the "
            "manifest): restore the original file or re-export the bundle"
        )


def _as_dict(record: Any) -> dict[str, Any]:
    return record.to_json_dict() if hasattr(record, "to_json_dict") else dict(record)
