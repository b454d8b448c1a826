"""A Triton Inference Server model repository from a bundle: one model per artifact.

Each ONNX file becomes its own model on the `onnxruntime_onnx` platform, named after its
artifact key (`onnx.int8` -> `<name>_onnx_int8`); each engine precision becomes `<name>_trt_<precision>` on `tensorrt_plan`, with one
plan per GPU compute capability (`cc_model_filenames`) when engines built on several GPUs are
given. A client picks backend and precision by model name and each model has exactly one
platform, as Triton requires. Every file copied is checked against its sha256 first, and each
model folder appears at once (written beside it, then renamed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_path, atomic_write_text, sha256_file
from vggdeploy.errors import BundleError, InputError
from vggdeploy.packaging.triton_schema import parse_config_pbtxt, triton_model_config_pb2
from vggdeploy.preprocess import Preprocessing
from vggdeploy.records import ArtifactRecord, EngineRecord, OnnxArtifact, TensorRecord

__all__ = [
    "TritonModel",
    "TritonOptions",
    "TritonResult",
    "TritonSource",
    "WrittenModel",
    "config_pbtxt",
    "model_name",
    "package_triton",
    "parse_config_pbtxt",
    "plan_triton",
    "triton_model_config_pb2",
]

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
BACKENDS = ("onnx", "trt")
PLATFORMS = {"onnx": "onnxruntime_onnx", "trt": "tensorrt_plan"}
#: the ONNX export's dynamic batch axis goes up to 4096 (torch.export.Dim max)
ONNX_BATCH_LIMIT = 4096
DEFAULT_MAX_BATCH = 32
LABELS_FILE = "labels.txt"
#: beside config.pbtxt: how clients must preprocess (Triton reads only config.pbtxt, the
#: labels file it names, and the numbered version folders)
README_FILE = "README.md"


@dataclass
class TritonOptions:
    """What `vggdeploy package --format triton` was asked for."""

    name: str | None = None  # base model name; default the bundle's model name
    max_batch: int | None = None  # default: 32, or the engine profile's max if smaller
    instances: int = 1
    dynamic_batching: bool = False
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    precisions: tuple[str, ...] = ()  # empty: every precision the bundle has (precision.NAMES)
    backends: tuple[str, ...] = BACKENDS
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
        if not self.backends or any(b not in BACKENDS for b in self.backends):
            raise InputError(f"--backend {','.join(self.backends)!r}: use onnx, trt or onnx,trt")
        P.check(self.precisions)


def _valid_model_name(name: str) -> bool:
    """Triton model names here: ASCII letters, digits, '_' and '-' (a folder name on any OS)."""
    return bool(name) and all((c.isascii() and c.isalnum()) or c in "-_" for c in name)


def model_name(base: str, key: str) -> str:
    """The Triton model of artifact `key`: `onnx.int8` -> `<base>_onnx_int8`,
    `engine.fp16` -> `<base>_trt_fp16`."""
    kind, precision = P.split_key(key)
    return f"{base}_{'trt' if kind == P.ENGINE else 'onnx'}_{precision}"


@dataclass
class TritonSource:
    """One file a model is made from."""

    key: str  # the artifact key in its bundle
    record: ArtifactRecord
    path: Path  # the file (resolved inside its bundle)
    bundle: Path  # the bundle it comes from

    def describe(self, main: Path) -> str:
        """`onnx.int8 (model.int8.onnx)`; the full path for another bundle's file."""
        where = self.record.path if self.bundle == main else str(self.path)
        return f"{self.key} ({where})"


@dataclass
class TritonModel:
    """One model of the repository, before it is written."""

    name: str
    platform: str
    precision: str
    sources: list[TritonSource]  # one file; for engines one per GPU compute capability
    max_batch: int
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    kind: str
    preferred_batch: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)


def _dims(spec: TensorRecord, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _onnx_io(path: Path) -> tuple[list[TensorRecord], list[TensorRecord]]:
    """The inputs and outputs the ONNX file itself declares (what Triton will check)."""
    from vggdeploy.inspection import inspect_onnx

    info = inspect_onnx(path)
    return (
        [TensorRecord.model_validate(t) for t in info["inputs"]],
        [TensorRecord.model_validate(t) for t in info["outputs"]],
    )


def _sources(bundle: Bundle, keys: list[str]) -> list[TritonSource]:
    return [
        TritonSource(
            key,
            bundle.artifacts[key],
            bundle.resolve(bundle.artifacts[key].path, f"artifacts.{key}.path"),
            bundle.root,
        )
        for key in keys
    ]


def plan_triton(
    bundle: Bundle, options: TritonOptions, engines_from: Sequence[Bundle] = ()
) -> list[TritonModel]:
    """Decide the models of the repository; raises `InputError` for impossible requests.

    `engines_from`: more bundles unpacked from the same export and built on other GPUs; their
    engines join this bundle's, one plan per compute capability.
    """
    source_sha = bundle.artifact(P.onnx_key("fp32")).sha256
    for other in engines_from:
        theirs = other.artifacts.get(P.onnx_key("fp32"))
        if theirs is None or theirs.sha256 != source_sha:
            raise InputError(
                f"{other.root} was not made from the same export as {bundle.root} (its "
                "model.onnx differs): engines of different models cannot share a Triton model"
            )
    base = options.name or bundle.manifest.model.name.replace(".", "_")
    wanted = set(options.precisions)
    io_ = bundle.manifest.io
    first = io_.inputs[0]
    batched = first.batched()
    for flag, asked in (
        ("--dynamic-batching", options.dynamic_batching),
        ("--max-batch", options.max_batch),
    ):
        if asked and not batched:
            raise InputError(
                f"the bundle was exported with a fixed batch of {first.shape[0]}: Triton cannot "
                f"batch it; re-export with --batch dynamic or drop {flag}"
            )
    models: list[TritonModel] = []
    if "onnx" in options.backends:
        models += _onnx_models(bundle, options, base, wanted, batched)
    if "trt" in options.backends:
        models += _engine_models(bundle, engines_from, options, base, wanted, batched)
    if not models:
        have = ", ".join(sorted(bundle.artifacts, key=P.artifact_order)) or "none"
        asked = f" for precision {', '.join(P.sort(wanted))}" if wanted else ""
        raise InputError(f"nothing to package{asked}: the bundle has {have}")
    for m in models:
        if not _valid_model_name(m.name):
            raise InputError(
                f"model name {m.name!r} has characters Triton model names cannot: give --name "
                "with letters, digits, '-' and '_' only"
            )
        too_big = [b for b in m.preferred_batch if m.max_batch and b > m.max_batch]
        if too_big:
            raise InputError(
                f"--preferred-batch {too_big} is above max_batch_size {m.max_batch} of {m.name}"
            )
    return models


def _onnx_models(
    bundle: Bundle, options: TritonOptions, base: str, wanted: set[str], batched: bool
) -> list[TritonModel]:
    models = []
    max_batch = options.max_batch if options.max_batch is not None else DEFAULT_MAX_BATCH
    for key in sorted(bundle.manifest.onnx_files(), key=P.artifact_order):
        precision = P.split_key(key)[1]
        if wanted and precision not in wanted:
            continue
        if batched and max_batch > ONNX_BATCH_LIMIT:
            raise InputError(
                f"--max-batch {max_batch} is above the ONNX model's dynamic batch limit "
                f"{ONNX_BATCH_LIMIT}"
            )
        record = bundle.artifacts[key]
        notes = []
        if isinstance(record, OnnxArtifact) and record.precision == "int8":
            # The integer form is made on load by vggdeploy's own ONNX Runtime runtime
            # (onnxutil.cpu_int8_form); Triton's onnxruntime backend loads the file as it is.
            notes.append(
                "int8 Q/DQ in NVIDIA's placement: Triton's onnxruntime backend runs it as "
                "written, with float convolutions on a CPU (no Q follows a Conv for ONNX "
                "Runtime to fuse); serve INT8 from a TensorRT plan on a GPU"
            )
        sources = _sources(bundle, [key])
        # as every reader does: sha256, no external data (Triton would read it anywhere), io
        bundle.artifact_path(key, verify=True)
        inputs, outputs = _onnx_io(sources[0].path)
        models.append(
            TritonModel(
                name=model_name(base, key),
                platform=PLATFORMS["onnx"],
                precision=precision,
                sources=sources,
                max_batch=max_batch if batched else 0,
                inputs=inputs,
                outputs=outputs,
                kind=KINDS[options.onnx_kind],
                preferred_batch=options.preferred_batch,
                notes=notes,
            )
        )
    return models


def _engine_models(
    bundle: Bundle,
    engines_from: Sequence[Bundle],
    options: TritonOptions,
    base: str,
    wanted: set[str],
    batched: bool,
) -> list[TritonModel]:
    groups: dict[str, list[TritonSource]] = {}
    for source in (bundle, *engines_from):
        for key in sorted(source.manifest.engines()):
            if wanted and P.split_key(key)[1] not in wanted:
                continue
            groups.setdefault(key, []).extend(_sources(source, [key]))
    models = []
    for key in sorted(groups, key=P.artifact_order):
        group = groups[key]
        precision = P.split_key(key)[1]
        engines = [s.record for s in group if isinstance(s.record, EngineRecord)]
        ccs = [e.compute_capability or "" for e in engines]
        if len(group) > 1 and (not all(ccs) or len(set(ccs)) != len(ccs)):
            raise InputError(
                f"the bundle has {len(group)} {precision} engines but not one per compute "
                f"capability ({', '.join(c or '?' for c in ccs)}): Triton picks a plan by "
                "compute capability only; remove the duplicates"
            )
        limits = [m for m in (e.max_batch() for e in engines) if m is not None]
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
            max_batch = min(DEFAULT_MAX_BATCH, limit) if limit is not None else DEFAULT_MAX_BATCH
        notes = []
        if limit is None and batched:
            notes.append(
                "the engine's optimization profile is not in the manifest: make sure it "
                f"accepts batch {max_batch}"
            )
        opts = sorted({r[1] for e in engines for r in e.batch_ranges()})
        preferred = options.preferred_batch or tuple(o for o in opts if o <= max_batch)
        models.append(
            TritonModel(
                name=model_name(base, key),
                platform=PLATFORMS["trt"],
                precision=precision,
                sources=group,
                max_batch=max_batch if batched else 0,
                inputs=list(bundle.manifest.io.inputs),
                outputs=list(bundle.manifest.io.outputs),
                kind="KIND_GPU",
                preferred_batch=preferred,
                notes=notes,
            )
        )
    return models


def _plan_filename(cc: str) -> str:
    return f"model.sm{cc.replace('.', '')}.plan"


def _source_filename(model: TritonModel, source: TritonSource) -> str:
    if model.platform == PLATFORMS["onnx"]:
        return "model.onnx"
    if len(model.sources) > 1 and isinstance(source.record, EngineRecord):
        return _plan_filename(source.record.compute_capability or "")
    return "model.plan"


def preprocessing_parameters(pre: Preprocessing, dtype: str = "float32") -> dict[str, str]:
    """How a client must turn an image into the input tensor, as `config.pbtxt` `parameters`.

    `parameters` is ModelConfig's `map<string, ModelParameter> parameters = 14`, each value a
    `ModelParameter { string string_value = 1; }` (triton-inference-server/common,
    protobuf/model_config.proto): free-form strings the server keeps with the model and returns
    in its model-config API; the onnxruntime and tensorrt backends look up only the parameter
    names they define, so these (all `preprocessing_*`) tell clients, not the server.
    """
    return {
        "preprocessing": (
            f"resize shorter side to {pre.resize} ({pre.interpolation}), center-crop "
            f"{pre.crop}x{pre.crop}, {pre.channel_order}, pixel*{pre.scale:.8g}, "
            f"(x - mean) / std per channel, {pre.layout} {dtype}"
        ),
        "preprocessing_resize": str(pre.resize),
        "preprocessing_crop": str(pre.crop),
        "preprocessing_interpolation": pre.interpolation,
        "preprocessing_channel_order": pre.channel_order,
        "preprocessing_scale": f"{pre.scale:.8g}",
        "preprocessing_mean": ",".join(f"{v:.8g}" for v in pre.mean),
        "preprocessing_std": ",".join(f"{v:.8g}" for v in pre.std),
        "preprocessing_layout": pre.layout,
    }


def config_pbtxt(
    model: TritonModel,
    options: TritonOptions,
    labels: bool,
    preprocessing: Preprocessing | None = None,
) -> str:
    """The text of `config.pbtxt` for one model (Triton's protobuf text format); with
    `preprocessing`, its `parameters` say how clients must prepare the input."""
    batched = model.max_batch > 0
    lines = [f'name: "{model.name}"', f'platform: "{model.platform}"']
    lines.append(f"max_batch_size: {model.max_batch}")
    if model.platform == PLATFORMS["trt"] and len(model.sources) > 1:
        entries = [
            f'  {{ key: "{s.record.compute_capability}" value: "{_source_filename(model, s)}" }}'
            for s in model.sources
            if isinstance(s.record, EngineRecord)
        ]
        lines += ["cc_model_filenames [", ",\n".join(entries), "]"]
    else:
        lines.append(f'default_model_filename: "{_source_filename(model, model.sources[0])}"')

    def tensor(spec: TensorRecord, label: bool) -> str:
        dtype = TRITON_DTYPES.get(spec.dtype)
        if dtype is None:
            raise InputError(f"tensor {spec.name!r} has dtype {spec.dtype} that Triton lacks")
        dims = ", ".join(str(d) for d in _dims(spec, batched))
        text = f'    name: "{spec.name}"\n    data_type: {dtype}\n    dims: [ {dims} ]'
        if label:
            text += f'\n    label_filename: "{LABELS_FILE}"'
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
    if preprocessing is not None:
        dtype = model.inputs[0].dtype if model.inputs else "float32"
        for key, value in preprocessing_parameters(preprocessing, dtype).items():
            lines.append(
                f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'
            )
    return "\n".join(lines) + "\n"


def readme_text(bundle: Bundle, model: TritonModel, labels: bool) -> str:
    """README.md of one model folder: what a client sends and gets back."""
    pre = bundle.preprocessing
    inp = model.inputs[0]
    out = model.outputs[0]
    mean = ", ".join(f"{v:.8g}" for v in pre.mean)
    std = ", ".join(f"{v:.8g}" for v in pre.std)
    dims = ", ".join(map(str, _dims(inp, model.max_batch > 0)))
    shape = f"[N, {dims}]" if model.max_batch > 0 else f"[{dims}]"
    lines = [
        f"# {model.name}",
        "",
        f"{bundle.model.name} ({model.precision}, Triton platform `{model.platform}`), made by "
        "vggdeploy. The server does no preprocessing: clients send normalized tensors.",
        "",
        f"Input `{inp.name}`: {inp.dtype} {shape}, made from each image as follows:",
        "",
        f"1. decode, convert to {pre.channel_order};",
        f"2. resize the shorter side to {pre.resize} pixels ({pre.interpolation});",
        f"3. center-crop {pre.crop}x{pre.crop};",
        f"4. multiply by {pre.scale:.8g} (0..255 -> 0..1), subtract mean [{mean}] and divide "
        f"by std [{std}], per channel;",
        f"5. lay out as {pre.layout} {inp.dtype}.",
        "",
        f"Output `{out.name}`: {out.dtype} [N, {bundle.model.num_classes}] logits (no softmax),"
        + (
            " one per class in the order of `labels.txt` (Triton's classification extension "
            "returns the names)."
            if labels
            else " by class index (the bundle has no class names)."
        ),
        "",
        "The same steps are in `config.pbtxt` under `parameters` (`preprocessing_*`), for "
        "clients that read the model configuration from the server.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class WrittenModel:
    """One model as written: what it is, which artifact (file) it came from, its files."""

    name: str
    platform: str
    precision: str
    max_batch_size: int
    artifacts: list[str]  # artifact keys, one per source file
    sources: list[str]  # `key (file)` for each source, as `TritonSource.describe` says
    files: list[str]  # inside the model folder
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TritonResult:
    repository: Path
    models: list[WrittenModel]
    schema_checked: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": str(self.repository),
            "models": [m.to_dict() for m in self.models],
            "schema_checked": self.schema_checked,
        }


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
        f"{s.describe(bundle.root)}: missing or does not match its sha256"
        for m in models
        for s in m.sources
        if not s.path.is_file() or sha256_file(s.path) != s.record.sha256
    ]
    if bad:
        raise BundleError(f"not packaging: {'; '.join(bad)} - re-create these artifacts")
    schema_checked = False
    written = []
    for model in models:
        text = config_pbtxt(model, options, labels is not None, bundle.preprocessing)
        schema_checked = parse_config_pbtxt(text) is not None
        readme = readme_text(bundle, model, labels is not None)
        written.append(_write_model(repo, model, text, labels, bundle.root, readme))
    return TritonResult(repository=repo, models=written, schema_checked=schema_checked)


def _write_model(
    repo: Path,
    model: TritonModel,
    config: str,
    labels: list[str] | None,
    main: Path,
    readme: str | None = None,
) -> WrittenModel:
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=repo))
    try:
        version = staging / "1"
        version.mkdir()
        files = []
        for source in model.sources:
            fname = _source_filename(model, source)
            _copy(source.path, version / fname, source.record.sha256)
            files.append(f"1/{fname}")
        atomic_write_text(staging / "config.pbtxt", config)
        if labels is not None:
            atomic_write_text(staging / LABELS_FILE, "\n".join(labels) + "\n")
        if readme is not None:
            atomic_write_text(staging / README_FILE, readme)
        target = repo / model.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WrittenModel(
        name=model.name,
        platform=model.platform,
        precision=model.precision,
        max_batch_size=model.max_batch,
        artifacts=[s.key for s in model.sources],
        sources=[s.describe(main) for s in model.sources],
        files=[
            "config.pbtxt",
            *files,
            *([LABELS_FILE] if labels is not None else []),
            *([README_FILE] if readme is not None else []),
        ],
        notes=model.notes,
    )


def _copy(src: Path, dest: Path, sha256: str) -> None:
    # A hard link would be cheaper, but a later rebuild of the bundle must not change a
    # repository that a server is serving. The copy itself is hashed: the bytes the repository
    # gets are the bytes checked, even if the bundle's file was swapped after the check.
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp, follow_symlinks=False)
        if tmp.is_symlink() or sha256_file(tmp) != sha256:
            raise BundleError(
                f"not packaging: {src} changed while it was copied - run the command again"
            )
