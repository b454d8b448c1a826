"""KServe manifests for a bundle's TensorRT engines served by Triton: `package --format kserve`.

OUT gets the Triton model repository `package --format triton` writes (engines only, one
model per precision, `<name>_trt_<precision>`), a `ServingRuntime` running the Triton image
whose TensorRT is the engines' (`TRITON_RELEASES`), and an `InferenceService` that asks for
`nvidia.com/gpu` and is scheduled only on the GPU product the engines were built on. Both are
loaded into the KServe SDK's own models (`V1alpha1ServingRuntime`, `V1beta1InferenceService`,
through its `ApiClient` deserializer) and written only if every field survives the round trip.

A bundle without an engine is refused: a TensorRT engine is what ties the manifests to one
Triton release and one GPU; ONNX models on Triton are `--format triton`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_write_text
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.host import install_hint
from vggdeploy.records import EngineRecord

#: (TensorRT major.minor.patch, Triton container release `<yy.mm>`) for the `-py3` image. Each
#: row is the "container also includes ... NVIDIA TensorRT x.y.z" line of that release's notes
#: (https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-YY-MM.html),
#: read from their copy in triton-inference-server/server, docs/introduction/release_notes.md,
#: at the commit given:
#:   10.3.0.26 <- 24.08: commit 7669321582e8bd5dcaf68b76e65389615e0a662f
#:   10.5.0.18 <- 24.10: commit 9fac69d6b7be565411a280ed3dff96335765d96e
#:   10.7.0.23 <- 24.12: commit ff695aeb49819e223c88272da45f251b60f38442 (also tag v2.53.0)
#:   10.8.0.43 <- 25.01: commit d3ee577e403a445fb69db3e8e5a641f9a6765650
#: No other release was grounded: that file's copies for 25.02 and later name no TensorRT, and
#: the search tools returned only the opening paragraphs of the NVIDIA pages, without the
#: version list. The rows for 24.05-24.07, 24.09, 24.11 and 25.02-25.07 were removed for that
#: reason. (The server repo's Dockerfile.win10.min pins the Windows build's TensorRT, which lags
#: the Linux image: 10.7 at 25.01. It is not a source here.) Not the `-trtllm-python-py3`
#: table of the server repository's docs/introduction/compatibility.md: that image has only
#: the TensorRT-LLM and Python backends, no `tensorrt_plan` (triton-inference-server/server
#: issue 7346), and ships an older TensorRT than the same release's `-py3` image. Where two
#: grounded releases ship the same TensorRT, the later one is listed, so a fix release is
#: preferred (no two grounded rows share a TensorRT at present).
TRITON_RELEASES: tuple[tuple[str, str], ...] = (
    ("10.3.0", "24.08"),
    ("10.5.0", "24.10"),
    ("10.7.0", "24.12"),
    ("10.8.0", "25.01"),
)
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:{release}-py3"
#: Node labels of NVIDIA's device plugin / GPU feature discovery: the product label is the
#: NVML device name with spaces replaced by "-" (NVIDIA/k8s-device-plugin,
#: internal/lm/resource.go `productLabel`); compute.major/minor come from the device's CUDA
#: compute capability (same file, `newArchitectureLabels`).
PRODUCT_LABEL = "nvidia.com/gpu.product"
COMPUTE_LABELS = ("nvidia.com/gpu.compute.major", "nvidia.com/gpu.compute.minor")
GPU_RESOURCE = "nvidia.com/gpu"
#: Triton's arguments as KServe's own Triton runtime gives them (kserve/kserve,
#: config/runtimes/kserve-tritonserver.yaml): the repository is mounted at /mnt/models.
TRITON_ARGS = (
    "tritonserver",
    "--model-store=/mnt/models",
    "--grpc-port=9000",
    "--http-port=8080",
    "--allow-grpc=true",
    "--allow-http=true",
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def triton_release(tensorrt_version: str) -> str | None:
    """The Triton release whose `-py3` image ships TensorRT `tensorrt_version` (the same
    major.minor.patch: an engine runs only on the TensorRT that built it), or None."""
    parts = tensorrt_version.strip().split(".")
    key = ".".join(parts[:3]) if len(parts) >= 3 else ".".join([*parts, "0", "0"][:3])
    for version, release in TRITON_RELEASES:
        if version == key:
            return release
    return None


def product_label(gpu_name: str) -> str:
    """The `nvidia.com/gpu.product` value of a GPU named `gpu_name` by NVML."""
    return gpu_name.strip().replace(" ", "-")


@dataclass
class KServeOptions:
    """What `vggdeploy package --format kserve` was asked for."""

    storage_uri: str
    name: str | None = None  # InferenceService name; default `<model>` (e.g. vgg16)
    namespace: str | None = None
    gpus: int = 1
    precisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9+.-]*://.+", self.storage_uri or ""):
            raise InputError(
                f"--storage-uri {self.storage_uri!r}: give where the cluster reads the "
                "repository, e.g. s3://bucket/vgg16 or pvc://models/vgg16"
            )
        if self.gpus < 1:
            raise InputError("--gpus must be at least 1")
        for what, value in (("--name", self.name), ("--namespace", self.namespace)):
            if value is not None and not _DNS_LABEL.match(value):
                raise InputError(
                    f"{what} {value!r}: Kubernetes names are lower-case letters, digits and "
                    "'-' (at most 63, starting and ending with a letter or digit)"
                )
        P.check(self.precisions)


@dataclass
class KServeResult:
    out: Path
    repository: Path
    models: list[str]
    triton_image: str
    tensorrt_version: str
    node_selector: dict[str, Any]
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "repository": str(self.repository),
            "models": self.models,
            "triton_image": self.triton_image,
            "tensorrt_version": self.tensorrt_version,
            "scheduling": self.node_selector,
            "files": self.files,
            "sdk_checked": True,
        }


def _engines(bundle: Bundle, precisions: Sequence[str]) -> dict[str, EngineRecord]:
    """Precision name -> engine record, for the engines asked for."""
    keys = [
        k for k in bundle.manifest.engines() if not precisions or P.split_key(k)[1] in precisions
    ]
    engines = {
        P.split_key(k)[1]: record
        for k in sorted(keys, key=P.artifact_order)
        if isinstance(record := bundle.artifacts[k], EngineRecord)
    }
    if not engines:
        asked = f" of precision {', '.join(precisions)}" if precisions else ""
        raise InputError(
            f"{bundle.root} has no TensorRT engine{asked}: --format kserve serves engines; build "
            f"one on the target GPU (`{P.make_command(P.engine_key('fp16'), str(bundle.root))}`), "
            "or write an ONNX Triton repository with --format triton"
        )
    return engines


def scheduling(engines: Sequence[EngineRecord]) -> dict[str, Any]:
    """Where the pods may run: `{"nodeSelector": ...}` for one GPU product, or `{"affinity":
    ...}` for several (one engine per compute capability), from each engine's recorded GPU."""
    products, ccs = set(), set()
    for e in engines:
        if e.gpu.name:
            products.add(product_label(e.gpu.name))
        elif e.compute_capability:
            ccs.add(e.compute_capability)
        else:
            raise InputError(
                f"the {e.precision} engine records neither its GPU nor its compute capability: "
                "rebuild it with `vggdeploy build` so the manifests can name the GPU"
            )
    bad = [p for p in products if not _LABEL_VALUE.match(p)]
    if bad:
        raise InputError(
            f"GPU name(s) {', '.join(bad)} do not make valid Kubernetes label values: "
            "schedule the pods yourself (edit the nodeSelector)"
        )
    if ccs and products:
        raise InputError(
            "some engines record their GPU and some only a compute capability: rebuild them "
            "with the same `vggdeploy build` so one node rule covers all"
        )
    if len(products) == 1:
        return {"nodeSelector": {PRODUCT_LABEL: products.pop()}}
    if len(ccs) == 1:
        major, _, minor = ccs.pop().partition(".")
        return {"nodeSelector": dict(zip(COMPUTE_LABELS, (major, minor or "0")))}
    key, values = (PRODUCT_LABEL, sorted(products)) if products else (None, sorted(ccs))
    if key is None:
        raise InputError(
            f"the engines were built for compute capabilities {', '.join(values)} without GPU "
            "names: give one --precision, or rebuild them with `vggdeploy build`"
        )
    term = {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    }


def manifests(
    name: str,
    namespace: str | None,
    image: str,
    release: str,
    storage_uri: str,
    gpus: int,
    placement: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ServingRuntime, InferenceService) as plain data."""
    runtime_name = f"{name}-triton-{release.replace('.', '-')}"
    meta: dict[str, Any] = {"name": runtime_name}
    isvc_meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = isvc_meta["namespace"] = namespace
    gpu = {"limits": {GPU_RESOURCE: str(gpus)}, "requests": {GPU_RESOURCE: str(gpus)}}
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": meta,
        "spec": {
            "supportedModelFormats": [{"name": "triton", "version": "2", "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image,
                    "args": list(TRITON_ARGS),
                    "resources": gpu,
                }
            ],
        },
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": isvc_meta,
        "spec": {
            "predictor": {
                **placement,
                "model": {
                    "modelFormat": {"name": "triton"},
                    "runtime": runtime_name,
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "resources": gpu,
                },
            }
        },
    }
    return runtime, isvc


def sdk_check(doc: Mapping[str, Any], klass: str) -> dict[str, Any]:
    """`doc` loaded into the KServe SDK model `klass` by its own ApiClient deserializer and
    serialized back; raises `CheckFailedError` when the SDK refuses it or drops or changes a
    field (a generator bug). Returns what the SDK model serializes to.

    It runs in a child process (`python -m vggdeploy.packaging.kserve_sdk`): importing
    `kserve` registers its gRPC messages (`inference.ServerLiveRequest`...) in protobuf's
    default pool, where `tritonclient.grpc` registers the same names, so the two cannot be
    imported into one process, and this process may already hold tritonclient (the Triton
    schema check of the repository)."""
    import subprocess
    import sys

    from vggdeploy.packaging.kserve_sdk import MISSING

    proc = subprocess.run(
        [sys.executable, "-m", "vggdeploy.packaging.kserve_sdk", klass],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == MISSING:
        raise InputError(
            "--format kserve checks the manifests with the KServe SDK: " + install_hint("kserve")
        )
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split())[-400:] or f"exit code {proc.returncode}"
        raise CheckFailedError(f"the KServe SDK refuses the {doc.get('kind')}: {reason}")
    back = json.loads(proc.stdout)
    lost = _differences(doc, back)
    if lost:
        raise CheckFailedError(
            f"the KServe SDK's {klass} does not keep {', '.join(lost)} of the {doc.get('kind')}"
        )
    return back


def _differences(want: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return [path or "."]
        out = []
        for key, value in want.items():
            where = f"{path}.{key}" if path else str(key)
            out += _differences(value, got.get(key), where) if key in got else [where]
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [path]
        return [
            d for i, (a, b) in enumerate(zip(want, got)) for d in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if want == got else [path]


def package_kserve(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: KServeOptions,
    triton_options: Any,
) -> KServeResult:
    """Write OUT/repository (Triton, engines only), OUT/servingruntime.yaml and
    OUT/inferenceservice.yaml for the bundle at `root`. `triton_options`: the `TritonOptions`
    of the repository (its backends are set to TensorRT only)."""
    import dataclasses

    import yaml

    from vggdeploy.packaging.triton import package_triton

    bundle = Bundle.load(root)
    by_precision = _engines(bundle, options.precisions)
    engines = list(by_precision.values())
    versions = sorted({e.tensorrt_version or "" for e in engines})
    if len(versions) != 1 or not versions[0]:
        raise InputError(
            f"the engines record TensorRT {', '.join(v or 'unknown' for v in versions)}: one "
            "Triton image runs one TensorRT; rebuild them with one TensorRT or give --precision"
        )
    release = triton_release(versions[0])
    if release is None:
        known = ", ".join(v for v, _ in TRITON_RELEASES)
        raise InputError(
            f"no Triton release in vggdeploy's table ships TensorRT {versions[0]} (it knows "
            f"{known}): rebuild the engines with one of those TensorRT versions"
        )
    image = TRITON_IMAGE.format(release=release)
    placement = scheduling(engines)
    name = options.name or bundle.manifest.model.name.replace(".", "-").replace("_", "-").lower()
    if not _DNS_LABEL.match(name):
        raise InputError(f"model name {name!r} is not a Kubernetes name: give --name")
    runtime, isvc = manifests(
        name, options.namespace, image, release, options.storage_uri, options.gpus, placement
    )
    sdk_check(runtime, "V1alpha1ServingRuntime")
    sdk_check(isvc, "V1beta1InferenceService")
    out = Path(out)
    repo = out / "repository"
    wanted = tuple(by_precision)
    repo_options = dataclasses.replace(triton_options, backends=("trt",), precisions=wanted)
    written = package_triton(root, repo, repo_options)
    files = []
    for fname, doc in (("servingruntime.yaml", runtime), ("inferenceservice.yaml", isvc)):
        atomic_write_text(out / fname, yaml.safe_dump(doc, sort_keys=False))
        files.append(fname)
    return KServeResult(
        out=out,
        repository=repo,
        models=[m.name for m in written.models],
        triton_image=image,
        tensorrt_version=versions[0],
        node_selector=placement,
        files=files,
    )
