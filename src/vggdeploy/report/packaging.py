"""Text for `vggdeploy pack`, `unpack` and `package`: draws what `vggdeploy.packaging` returns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vggdeploy import precision as P
from vggdeploy.host import install_hint
from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import mib, text_table

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle
    from vggdeploy.packaging import DeepStreamResult, PackResult, TritonResult
    from vggdeploy.packaging.kserve import KServeResult

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"


def format_pack(result: PackResult) -> str:
    lines = [
        f"packed {len(result.files)} files ({mib(result.content_bytes)}) into {result.archive} "
        f"({mib(result.size)}, sha256 {result.sha256})"
    ]
    if result.excluded:
        lines.append(f"left out: {', '.join(result.excluded)} (build engines on the target)")
    if result.paths_made_relative:
        lines.append(
            "absolute paths replaced by file names in the packed manifest: "
            f"{', '.join(result.paths_made_relative)}"
        )
    return report_lines(lines)


def format_unpack(bundle: Bundle) -> str:
    lines = [
        f"unpacked {bundle.manifest.model.name} to {bundle.root}: "
        f"{len(bundle.artifacts)} artifact(s), every sha256 verified"
    ]
    build = P.build_command(bundle.artifacts, str(bundle.root))
    if not bundle.manifest.engines() and build:
        lines.append(f"next, on this device: {build}")
    return report_lines(lines)


def format_triton(result: TritonResult) -> str:
    rows = [
        [
            m.name,
            m.platform,
            m.precision,
            m.max_batch_size,
            ", ".join(m.sources),
            ", ".join(m.files),
        ]
        for m in result.models
    ]
    headers = ["model", "platform", "precision", "max batch", "from artifact (file)", "files"]
    lines = [text_table(headers, rows, "lllrll")]
    lines += [f"note: {m.name}: {note}" for m in result.models for note in m.notes]
    lines.append(
        "config.pbtxt checked against Triton's ModelConfig schema"
        if result.schema_checked
        else "tritonclient is not installed: config.pbtxt not checked against Triton's schema "
        f"({install_hint('tritonclient')})"
    )
    lines.append(
        f"serve: docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 "
        f"-v {Path(result.repository).resolve()}:/models {TRITON_IMAGE} "
        "tritonserver --model-repository=/models"
    )
    return report_lines(lines)


def format_deepstream(result: DeepStreamResult) -> str:
    """The package's files, the config's properties, warnings, notes and the parity check."""
    lines = [f"warning: {w}" for w in result.warnings]
    rows = [[key, value] for key, value in result.properties.items()]
    lines.append(text_table(["[property]", "value"], rows, "ll"))
    sources = result.onnx_source + (f", {result.engine_source}" if result.engine_source else "")
    lines.append(
        f"wrote {Path(result.out) / result.config} with {', '.join(result.files[1:])} "
        f"(from {sources})"
    )
    if result.parity is not None:
        p = result.parity
        lines.append(
            "baked normalization checked against the bundle's model on the shipped photographs: "
            f"max_rel {p['max_rel']:.2g}, cosine {p['cosine']:.6f}, top-1 agreement {p['top1']:.0%}"
        )
    lines += [f"note: {n}" for n in result.notes]
    lines.append(
        f"use: nvinfer config-file-path={Path(result.out).resolve() / result.config} "
        "(e.g. [primary-gie] config-file= in a deepstream-app config)"
    )
    return report_lines(lines)


def format_kserve(result: KServeResult) -> str:
    """What `package --format kserve` wrote and how to apply it."""
    where = ", ".join(f"{k}={v}" for k, v in result.node_selector.get("nodeSelector", {}).items())
    lines = [
        f"wrote {result.out}: repository/ ({', '.join(result.models)}), {', '.join(result.files)}",
        f"Triton image {result.triton_image} (TensorRT {result.tensorrt_version}, as the engines)",
        f"scheduled on {where}" if where else "scheduled by node affinity on the engines' GPUs",
        "both manifests loaded into the KServe SDK's models (V1alpha1ServingRuntime, "
        "V1beta1InferenceService)",
        f"next: copy {result.repository} to the --storage-uri, then "
        f"kubectl apply -f {result.out / 'servingruntime.yaml'} -f "
        f"{result.out / 'inferenceservice.yaml'}",
    ]
    return report_lines(lines)
