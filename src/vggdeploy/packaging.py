"""Ship a bundle: one checksummed archive for an edge device, or a Triton model repository.

`pack_bundle` writes `FILE.tar.gz`: every artifact verified against its sha256 first, a copy
of the manifest without machine-specific paths, and a `SHA256SUMS` file (`sha256sum -c`
reads it). The archive is reproducible: sorted names, fixed mtime, uid/gid 0, no gzip
timestamp. Engines can be left out (`include_engines=False`), since an engine only runs on the
GPU and TensorRT that built it; on the target, `vggdeploy build` makes that device's engine.

`unpack_bundle` refuses absolute names, `..` entries, links and device files before writing
anything, extracts into a temporary folder beside the destination (with tarfile's `data`
filter where Python has it), checks every sha256, and only then moves the bundle into place.

`package_triton` writes a Triton Inference Server model repository, one model per artifact
(`<name>_onnx_<precision>` on the `onnxruntime_onnx` platform, `<name>_trt_<precision>` on
`tensorrt_plan`), so a client picks backend and precision by model name and each model has
exactly one platform, as Triton requires.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vggdeploy.bundle import MANIFEST_NAME, Bundle, atomic_path, atomic_write_text, sha256_file
from vggdeploy.errors import BundleError, InputError
from vggdeploy.inspect_bundle import engine_facts, is_engine

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS"
# Reproducible archives: a fixed timestamp (SOURCE_DATE_EPOCH if set, as reproducible-builds
# tools expect) instead of each file's mtime.
DEFAULT_MTIME = 315532800  # 1980-01-01, the earliest time zip-based tools accept too


# -- pack -------------------------------------------------------------------------------------


def _is_abs_path(value: str) -> bool:
    return value.startswith(("/", "\\", "~")) or (
        len(value) > 2 and value[1] == ":" and value[2] in "/\\"
    )


def portable_manifest(
    manifest: dict[str, Any], drop: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `manifest` without the artifacts in `drop` and without absolute paths.

    Returns the copy and the JSON paths (`weights.path`, ...) whose absolute paths were
    replaced by the file's base name; a packed bundle never names the packing machine's folders.
    """
    clean = copy.deepcopy(manifest)
    for key in drop:
        clean["artifacts"].pop(key, None)
    removed: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and _is_abs_path(node):
            removed.append(where)
            return PurePosixPath(node.replace("\\", "/")).name
        return node

    clean = walk(clean, "")
    clean["packed"] = {
        "excluded_artifacts": sorted(drop),
        "paths_made_relative": removed,
        "note": "absolute paths of the packing machine were replaced by file names",
    }
    return clean, removed


@dataclass
class PackResult:
    archive: Path
    files: list[str]
    excluded: list[str]
    paths_made_relative: list[str]
    size: int
    sha256: str


def pack_bundle(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    include_engines: bool = True,
    compresslevel: int = 6,
) -> PackResult:
    """Write the bundle at `root` as one archive at `out` (`.tar.gz`, `.tgz` or `.tar`)."""
    bundle = Bundle.load(root)
    out = Path(out)
    name = out.name.lower()
    if not name.endswith((".tar.gz", ".tgz", ".tar")):
        raise InputError(f"archive {out} must end in .tar.gz, .tgz or .tar")
    if out.is_dir():
        raise InputError(f"{out} is a folder: give a file name such as {out / 'bundle.tar.gz'}")

    excluded = sorted(
        k for k, r in bundle.artifacts.items() if not include_engines and is_engine(r)
    )
    files: dict[str, Path] = {}
    bad: list[str] = []
    for key, record in sorted(bundle.artifacts.items()):
        if key in excluded:
            continue
        rel = str(record.get("path", ""))
        if not _safe_member_name(rel):
            bad.append(f"{key}: path {rel!r} is not inside the bundle")
            continue
        path = bundle.root / rel
        if not path.is_file():
            bad.append(f"{key}: {rel} is missing")
        elif sha256_file(path) != record.get("sha256"):
            bad.append(f"{key}: {rel} does not match its sha256 (modified or corrupt)")
        else:
            files[rel] = path
    if bad:
        raise BundleError(
            f"not packing {bundle.root}: {'; '.join(bad)} - re-create these artifacts "
            "(`vggdeploy inspect` lists them)"
        )
    labels = bundle.manifest.get("labels")
    if labels:
        if not _safe_member_name(labels) or not (bundle.root / labels).is_file():
            raise BundleError(f"labels file {labels!r} of {bundle.root} is missing: re-export")
        files[labels] = bundle.root / labels

    manifest, removed = portable_manifest(bundle.manifest, excluded)
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    sums = {rel: sha256_file(path) for rel, path in files.items()}
    sums[MANIFEST_NAME] = _sha256_bytes(manifest_bytes)
    sums_bytes = "".join(f"{sums[k]}  {k}\n" for k in sorted(sums)).encode("utf-8")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_MTIME))

    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        if name.endswith(".tar"):
            _write_tar(raw, files, manifest_bytes, sums_bytes, mtime)
        else:
            # GzipFile with an explicit mtime and no file name keeps the archive reproducible.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=compresslevel
            ) as gz:
                _write_tar(gz, files, manifest_bytes, sums_bytes, mtime)
    return PackResult(
        archive=out,
        files=sorted([*files, MANIFEST_NAME, SUMS_NAME]),
        excluded=excluded,
        paths_made_relative=removed,
        size=out.stat().st_size,
        sha256=sha256_file(out),
    )


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(
    fileobj: Any, files: dict[str, Path], manifest: bytes, sums: bytes, mtime: int
) -> None:
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest), mtime), io.BytesIO(manifest))
        tar.addfile(_tarinfo(SUMS_NAME, len(sums), mtime), io.BytesIO(sums))
        for rel in sorted(files):
            path = files[rel]
            with open(path, "rb") as f:
                tar.addfile(_tarinfo(rel, path.stat().st_size, mtime), f)


# -- unpack -----------------------------------------------------------------------------------


def _safe_member_name(name: str) -> bool:
    if not name or "\\" in name or "\x00" in name or _is_abs_path(name):
        return False
    parts = PurePosixPath(name).parts
    return ".." not in parts and not PurePosixPath(name).is_absolute()


def check_members(members: list[tarfile.TarInfo]) -> list[str]:
    """Every reason to refuse this archive (empty if it is safe to extract)."""
    problems: list[str] = []
    seen: set[str] = set()
    for m in members:
        name = m.name
        if not _safe_member_name(name.rstrip("/")):
            problems.append(f"{name!r}: absolute path or '..' entry")
        elif m.issym() or m.islnk():
            problems.append(
                f"{name!r}: a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}"
            )
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{name!r}: a device, FIFO or other special file")
        elif name.rstrip("/") in seen:
            problems.append(f"{name!r}: appears twice")
        seen.add(name.rstrip("/"))
    return problems


def unpack_bundle(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], *, force: bool = False
) -> Bundle:
    """Extract a packed bundle to `dest` after checking names and kinds, then verify sha256s."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise InputError(f"archive {archive} does not exist")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise InputError(
            f"{dest} exists and is not empty: choose another -o, or add --force to replace it"
        )
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with tar` below
    except (tarfile.TarError, OSError) as exc:
        # tarfile's own message lists every compression it tried, one per line: keep the gist.
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise BundleError(
            f"{archive} is not a readable tar archive ({reason}): give a file made by `vggdeploy pack`"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
    try:
        with tar:
            members = tar.getmembers()
            problems = check_members(members)
            if problems:
                raise BundleError(
                    f"refusing to unpack {archive}: {'; '.join(problems[:5])}"
                    + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                    + " - this is not an archive written by `vggdeploy pack`"
                )
            if hasattr(tarfile, "data_filter"):
                # Python's own guard too (3.12, backported to 3.8.17+): rejects what we missed.
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; our checks above already ran
                tar.extractall(staging, members=members)
        verify_unpacked(staging)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(staging, dest)
    except tarfile.TarError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"refusing to unpack {archive}: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(dest)


def verify_unpacked(root: Path) -> None:
    """Check SHA256SUMS (if present) and every artifact's sha256 from the manifest."""
    bundle = Bundle.load(root)
    bad: list[str] = []
    sums = root / SUMS_NAME
    if sums.is_file():
        for line in sums.read_text("utf-8").splitlines():
            digest, _, rel = line.partition("  ")
            path = root / rel
            if not _safe_member_name(rel) or not path.is_file():
                bad.append(f"{rel}: listed in {SUMS_NAME} but missing")
            elif sha256_file(path) != digest:
                bad.append(f"{rel}: sha256 differs from {SUMS_NAME}")
    for key, record in bundle.artifacts.items():
        rel = str(record.get("path", ""))
        path = root / rel
        if not _safe_member_name(rel) or not path.is_file():
            bad.append(f"{key}: {rel} is missing from the archive")
        elif sha256_file(path) != record.get("sha256"):
            bad.append(f"{key}: {rel} does not match the manifest's sha256")
    if bad:
        raise BundleError(
            f"the unpacked bundle is corrupt: {'; '.join(bad)} - copy the archive again"
        )


# -- Triton model repository ------------------------------------------------------------------

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# The ONNX artifact per precision for ONNX Runtime: the u8-activation INT8 model is the one
# made for ORT's CPU kernels; the s8 Q/DQ model targets TensorRT.
ORT_ARTIFACTS = {
    "fp32": ("onnx.fp32",),
    "fp16": ("onnx.fp16",),
    "int8": ("onnx.int8-u8", "onnx.int8"),
}


@dataclass
class TritonOptions:
    """What `vggdeploy package --format triton` was asked for."""

    name: str | None = None  # base model name; default the bundle's model name
    max_batch: int | None = None  # default: 32, or the engine profile's max if smaller
    instances: int = 1
    dynamic_batching: bool = False
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    precisions: tuple[str, ...] = ()  # empty: every precision the bundle has
    backends: tuple[str, ...] = ("onnx", "trt")
    onnx_kind: str = "auto"  # Triton instance kind for ONNX models: auto, gpu or cpu
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise InputError(f"--instances {self.instances} must be at least 1")
        if self.max_batch is not None and self.max_batch < 0:
            raise InputError(f"--max-batch {self.max_batch} must be 0 (no batching) or positive")
        if self.onnx_kind not in KINDS:
            raise InputError(f"instance kind {self.onnx_kind!r}: choose auto, gpu or cpu")
        if self.max_queue_delay_us < 0:
            raise InputError("--max-queue-delay must be 0 or more microseconds")
        if any(b < 1 for b in self.preferred_batch):
            raise InputError("--preferred-batch sizes must be positive")
        if self.name is not None and not _valid_model_name(self.name):
            raise InputError(f"--name {self.name!r}: use letters, digits, '-' and '_' only")


def _valid_model_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


@dataclass
class TritonModel:
    """One model of the repository, before it is written."""

    name: str
    platform: str
    precision: str
    artifacts: list[tuple[str, dict[str, Any], Path]]  # (key, record, file): one per GPU kind
    max_batch: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    kind: str
    preferred_batch: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)


def _batch_axis(spec: dict[str, Any]) -> bool:
    return bool(spec["shape"]) and isinstance(spec["shape"][0], str)


def _dims(spec: dict[str, Any], batched: bool) -> list[int]:
    shape = spec["shape"][1:] if batched else spec["shape"]
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _engine_batch_ranges(record: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(min, opt, max) batch of each optimization profile in an engine's manifest record.

    `vggdeploy build` records `profiles` as `[{input_name: {"min": shape, "opt": shape,
    "max": shape}}, ...]`, one entry per profile; the batch is the first dimension.
    """
    ranges = []
    for profile in record.get("profiles") or []:
        for shape in profile.values():
            ranges.append((int(shape["min"][0]), int(shape["opt"][0]), int(shape["max"][0])))
    return ranges


def _engine_profile_max(record: dict[str, Any]) -> int | None:
    """Largest batch any of the engine's optimization profiles accepts."""
    ranges = _engine_batch_ranges(record)
    return max(r[2] for r in ranges) if ranges else None


def _engine_profile_opts(record: dict[str, Any]) -> list[int]:
    """The batch sizes the engine's profiles were tuned for (Triton's preferred sizes)."""
    return [r[1] for r in _engine_batch_ranges(record)]


def _onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from vggdeploy.inspect_bundle import inspect_onnx

    info = inspect_onnx(path)
    return info["inputs"], info["outputs"]


def plan_triton(
    bundle: Bundle, options: TritonOptions, engines_from: Sequence[Bundle] = ()
) -> list[TritonModel]:
    """Decide the models of the repository; raises `InputError` for impossible requests.

    `engines_from`: more bundles unpacked from the same export and built on other GPUs; their
    engines join this bundle's, one plan per compute capability.
    """
    source_sha = bundle.artifact("onnx.fp32").get("sha256")
    for other in engines_from:
        other_sha = other.artifacts.get("onnx.fp32", {}).get("sha256")
        if other_sha != source_sha:
            raise InputError(
                f"{other.root} was not made from the same export as {bundle.root} (its "
                "model.onnx differs): engines of different models cannot share a Triton model"
            )
    base = options.name or bundle.model["name"].replace(".", "_")
    wanted = set(options.precisions)
    models: list[TritonModel] = []
    io_ = bundle.manifest["io"]
    batched = _batch_axis(io_["inputs"][0])
    if not batched and options.dynamic_batching:
        raise InputError(
            f"the bundle was exported with a fixed batch of {io_['inputs'][0]['shape'][0]}: "
            "Triton cannot batch it; re-export with --batch dynamic or drop --dynamic-batching"
        )
    if not batched and options.max_batch:
        raise InputError(
            f"the bundle was exported with a fixed batch of {io_['inputs'][0]['shape'][0]}: "
            "Triton cannot batch it; re-export with --batch dynamic or drop --max-batch"
        )
    # The ONNX export's dynamic batch axis goes up to 4096 (torch.export.Dim max).
    onnx_limit = 4096
    default_max = 32

    if "onnx" in options.backends:
        for precision, keys in ORT_ARTIFACTS.items():
            if wanted and precision not in wanted:
                continue
            key = next((k for k in keys if k in bundle.artifacts), None)
            if key is None:
                continue
            record = bundle.artifacts[key]
            max_batch = options.max_batch if options.max_batch is not None else default_max
            if batched and max_batch > onnx_limit:
                raise InputError(
                    f"--max-batch {max_batch} is above the ONNX model's dynamic batch limit "
                    f"{onnx_limit}"
                )
            inputs, outputs = _onnx_io(bundle.artifact_path(key))
            models.append(
                TritonModel(
                    name=f"{base}_onnx_{precision}",
                    platform="onnxruntime_onnx",
                    precision=precision,
                    artifacts=[(key, record, bundle.root / record["path"])],
                    max_batch=max_batch if batched else 0,
                    inputs=inputs,
                    outputs=outputs,
                    kind=KINDS[options.onnx_kind],
                    preferred_batch=options.preferred_batch,
                )
            )

    if "trt" in options.backends:
        engines: dict[str, list[tuple[str, dict[str, Any], Path]]] = {}
        for source in (bundle, *engines_from):
            for key, record in sorted(source.artifacts.items()):
                if not is_engine(record):
                    continue
                precision = str(record.get("precision") or key.split(".")[1])
                if wanted and precision not in wanted:
                    continue
                label = key if source is bundle else f"{key} ({source.root})"
                engines.setdefault(precision, []).append(
                    (label, record, source.root / record["path"])
                )
        for precision, group in sorted(engines.items()):
            ccs = [str(engine_facts(r)["compute_capability"] or "") for _, r, _ in group]
            if len(group) > 1 and (not all(ccs) or len(set(ccs)) != len(ccs)):
                raise InputError(
                    f"the bundle has {len(group)} {precision} engines but not one per compute "
                    f"capability ({', '.join(c or '?' for c in ccs)}): Triton picks a plan by "
                    "compute capability only; remove the duplicates"
                )
            limits = [m for m in (_engine_profile_max(r) for _, r, _ in group) if m is not None]
            limit = min(limits) if limits else None
            if options.max_batch is not None:
                max_batch = options.max_batch
                if batched and limit is not None and max_batch > limit:
                    raise InputError(
                        f"--max-batch {max_batch} is above the {precision} engine's optimization "
                        f"profile max batch {limit}: use --max-batch {limit} or rebuild the engine "
                        f"with a larger profile (`vggdeploy build ... --max-batch {max_batch}`)"
                    )
            else:
                max_batch = min(default_max, limit) if limit is not None else default_max
            notes = []
            if limit is None and batched:
                notes.append(
                    "the engine's optimization profile is not in the manifest: make sure it "
                    f"accepts batch {max_batch}"
                )
            opts = sorted({o for _, r, _ in group for o in _engine_profile_opts(r)})
            preferred = options.preferred_batch or tuple(o for o in opts if o <= max_batch)
            models.append(
                TritonModel(
                    name=f"{base}_trt_{precision}",
                    platform="tensorrt_plan",
                    precision=precision,
                    artifacts=group,
                    max_batch=max_batch if batched else 0,
                    inputs=group[0][1].get("inputs") or io_["inputs"],
                    outputs=group[0][1].get("outputs") or io_["outputs"],
                    kind="KIND_GPU",
                    preferred_batch=preferred,
                    notes=notes,
                )
            )
    if not models:
        have = ", ".join(sorted(bundle.artifacts)) or "none"
        asked = f" for precision {', '.join(sorted(wanted))}" if wanted else ""
        raise InputError(f"nothing to package{asked}: the bundle has {have}")
    for m in models:
        too_big = [b for b in m.preferred_batch if m.max_batch and b > m.max_batch]
        if too_big:
            raise InputError(
                f"--preferred-batch {too_big} is above max_batch_size {m.max_batch} of {m.name}"
            )
    return models


def _plan_filename(cc: str) -> str:
    return f"model.sm{cc.replace('.', '')}.plan"


def config_pbtxt(model: TritonModel, options: TritonOptions, labels: bool) -> str:
    """The text of `config.pbtxt` for one model (Triton's protobuf text format)."""
    batched = model.max_batch > 0
    lines = [f'name: "{model.name}"', f'platform: "{model.platform}"']
    lines.append(f"max_batch_size: {model.max_batch}")
    if model.platform == "tensorrt_plan":
        if len(model.artifacts) > 1:
            lines.append("cc_model_filenames [")
            entries = [
                f'  {{ key: "{cc}" value: "{_plan_filename(cc)}" }}'
                for cc in (
                    str(engine_facts(r)["compute_capability"]) for _, r, _ in model.artifacts
                )
            ]
            lines.append(",\n".join(entries))
            lines.append("]")
        else:
            lines.append('default_model_filename: "model.plan"')
    else:
        lines.append('default_model_filename: "model.onnx"')

    def tensor(spec: dict[str, Any], label: bool) -> str:
        dtype = TRITON_DTYPES.get(str(spec.get("dtype", "float32")))
        if dtype is None:
            raise InputError(f"tensor {spec['name']!r} has dtype {spec['dtype']} that Triton lacks")
        dims = ", ".join(str(d) for d in _dims(spec, batched))
        text = f'    name: "{spec["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]'
        if label:
            text += '\n    label_filename: "labels.txt"'
        return "  {\n" + text + "\n  }"

    lines.append("input [\n" + ",\n".join(tensor(s, False) for s in model.inputs) + "\n]")
    lines.append(
        "output [\n"
        + ",\n".join(tensor(s, labels and i == 0) for i, s in enumerate(model.outputs))
        + "\n]"
    )
    if options.dynamic_batching and batched:
        body = []
        if model.preferred_batch:
            body.append(
                f"  preferred_batch_size: [ {', '.join(str(b) for b in model.preferred_batch)} ]"
            )
        body.append(f"  max_queue_delay_microseconds: {options.max_queue_delay_us}")
        lines.append("dynamic_batching {\n" + "\n".join(body) + "\n}")
    lines.append(
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {model.kind}\n  }}\n]"
    )
    return "\n".join(lines) + "\n"


def triton_model_config_pb2() -> Any | None:
    """Triton's `model_config_pb2` module as tritonclient ships it, or None if not installed.

    `tritonclient.grpc`'s package `__init__` refuses to import without the grpc extra, though
    the generated protobuf module itself needs only protobuf: load that file directly then.
    """
    try:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2
    except ImportError:
        return None
    except RuntimeError:  # "The installation does not include grpc support"
        pass
    import importlib.util
    import sys

    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "_vggdeploy_triton_model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    for location in spec.submodule_search_locations:
        path = Path(location) / "grpc" / "model_config_pb2.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location(name, path)
            if file_spec is None or file_spec.loader is None:
                return None
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            sys.modules[name] = module
            return module
    return None


def parse_config_pbtxt(text: str) -> Any | None:
    """Parse `text` into Triton's own `ModelConfig` message; None if tritonclient is absent.

    Raises `CheckFailedError` if Triton's schema rejects it (a bug in the generator).
    """
    model_config_pb2 = triton_model_config_pb2()
    if model_config_pb2 is None:
        return None
    from google.protobuf import text_format

    from vggdeploy.errors import CheckFailedError

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise CheckFailedError(
            f"generated config.pbtxt does not parse as Triton's ModelConfig: {exc}"
        ) from None
    return config


@dataclass
class TritonResult:
    repository: Path
    models: list[dict[str, Any]]
    schema_checked: bool


def package_triton(
    root: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    options: TritonOptions | None = None,
    engines_from: Sequence[str | os.PathLike[str]] = (),
) -> TritonResult:
    """Write a Triton model repository for the bundle at `root` under `repo`.

    `engines_from`: other copies of this bundle built on other GPUs (see `plan_triton`).
    """
    options = options or TritonOptions()
    bundle = Bundle.load(root)
    repo = Path(repo)
    models = plan_triton(bundle, options, [Bundle.load(r) for r in engines_from])
    labels = bundle.labels()
    existing = [m.name for m in models if (repo / m.name).exists()]
    if existing and not options.force:
        raise InputError(
            f"{repo} already has model(s) {', '.join(existing)}: choose another --out or add --force"
        )
    # Verify every source before writing anything.
    bad = [
        f"{key}: {path} is missing or does not match its sha256"
        for m in models
        for key, record, path in m.artifacts
        if not path.is_file() or sha256_file(path) != record.get("sha256")
    ]
    if bad:
        raise BundleError(f"not packaging: {'; '.join(bad)} - re-create these artifacts")
    schema_checked = False
    written = []
    for model in models:
        text = config_pbtxt(model, options, labels is not None)
        config = parse_config_pbtxt(text)
        schema_checked = config is not None
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=_mkdir(repo)))
        try:
            version = staging / "1"
            version.mkdir()
            files = []
            for _key, record, source in model.artifacts:
                if model.platform == "onnxruntime_onnx":
                    fname = "model.onnx"
                elif len(model.artifacts) > 1:
                    fname = _plan_filename(str(engine_facts(record)["compute_capability"]))
                else:
                    fname = "model.plan"
                _copy(source, version / fname)
                files.append(f"1/{fname}")
            atomic_write_text(staging / "config.pbtxt", text)
            if labels is not None:
                atomic_write_text(staging / "labels.txt", "\n".join(labels) + "\n")
            target = repo / model.name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        written.append(
            {
                "name": model.name,
                "platform": model.platform,
                "precision": model.precision,
                "max_batch_size": model.max_batch,
                "artifacts": [k for k, _, _ in model.artifacts],
                "files": ["config.pbtxt", *files, *(["labels.txt"] if labels else [])],
                "notes": model.notes,
            }
        )
    return TritonResult(repository=repo, models=written, schema_checked=schema_checked)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy(src: Path, dest: Path) -> None:
    # A hard link would be cheaper, but a later rebuild of the bundle must not change a
    # repository that a server is serving.
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
