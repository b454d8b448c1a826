"""Typed records of `manifest.json`: validated when read, written as strict JSON.

Why pydantic rather than dataclasses: the manifest is untrusted input (a bundle travels), so
every field needs a type check, NaN/inf refusal and a message naming the field; pydantic does
that declaratively and its error locations name the field exactly (`artifacts.onnx.int8.sha256`).
The import (~0.15 s) happens only when a bundle is read, never for `--help`.

Records keep fields they do not know (`extra="allow"`): a stage adds its own facts (the FP16
report, the calibration summary) without a schema change, and a newer vggdeploy's additions
survive a round trip through an older one. What every reader relies on is typed here, and
this module is the one place that reads an engine's build facts.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vggdeploy import precision as P
from vggdeploy.errors import BundleError

SCHEMA_VERSION = 1
#: the largest image side (resize, crop, model input) a manifest may name: far above any VGG
#: input (224-512), far below sizes whose image buffers would exhaust memory before other checks
MAX_IMAGE_SIDE = 8192
#: how deeply JSON objects and lists may nest in a manifest (ours nest 5 deep); deeper input is
#: refused before Python's recursive parser and pydantic meet it
MAX_JSON_DEPTH = 32

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Dim = int | str


class Record(BaseModel):
    """Base of every manifest record: typed known fields, unknown ones kept, no NaN/inf."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, validate_assignment=True)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


def check_relative(value: str, field_name: str) -> str:
    """A path the manifest names must be relative, with no `..`, inside the bundle."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field_name} must be a non-empty relative path")
    if "\0" in value:
        # no file system names a file with a NUL byte; os.stat raises a bare ValueError on one
        raise ValueError(f"{field_name} {value!r} holds a NUL byte: give a plain relative path")
    text = value.replace("\\", "/")
    p = PurePosixPath(text)
    if p.is_absolute() or (len(text) > 1 and text[1] == ":") or ".." in p.parts:
        raise ValueError(
            f"{field_name} {value!r} leaves the bundle (absolute path or '..'); "
            "only paths inside the bundle are allowed"
        )
    return value


class TensorRecord(Record):
    name: str
    shape: list[Dim]
    dtype: str

    def batched(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)


class IoRecord(Record):
    inputs: list[TensorRecord] = Field(min_length=1)
    outputs: list[TensorRecord] = Field(min_length=1)


class ModelRecord(Record):
    name: str
    config: str
    batch_norm: bool
    num_classes: int = Field(ge=1)
    width_divisor: int = Field(default=1, ge=1)
    hidden: int = Field(default=4096, ge=1)
    dense: bool = False
    image_size: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    parameters: int | None = None
    flops_per_image: int | None = None
    weight_layers: int | None = None

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        # The name becomes file and Triton model names and a line of a DeepStream config file:
        # a newline in it would add a line of its own there.
        if not 1 <= len(value) <= 128 or not value.isprintable():
            raise ValueError(
                "must be 1 to 128 printable characters (no control characters or newlines)"
            )
        return value


class FileRecord(Record):
    """A file the bundle ships that is not an artifact (labels, weights): path, sha256, size."""

    path: str
    sha256: Sha256
    size: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        return check_relative(value, "path")


class WeightsRecord(Record):
    source: str
    seed: int | None = None
    sha256: Sha256 | None = None
    #: the weights file the bundle carries (source "file"), relative to it and listed in
    #: `files`; bundles of older versions named the exporting machine's file, which the torch
    #: runtime refuses through the containment rule (`Bundle.shipped_file`)
    path: str | None = None


class PreprocessingRecord(Record):
    resize: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    crop: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    interpolation: str = "bilinear"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = 1.0 / 255.0

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every std value must be > 0")
        return value


class ArtifactRecord(Record):
    """One file of the bundle: where it is, its checksum and size, what it is."""

    path: str
    sha256: Sha256
    size: int = Field(ge=0)
    kind: str
    precision: str

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        return check_relative(value, "path")


class OnnxArtifact(ArtifactRecord):
    kind: Literal["onnx"] = "onnx"
    #: for int8 files: "tensorrt" (int8 activations, zero point 0; NVIDIA's Q/DQ placement)
    target: str | None = None


class GpuRecord(Record):
    name: str | None = None
    compute_capability: str | None = None
    jetson: bool = False


class EngineFlags(Record):
    strongly_typed: bool = True
    hardware_compat: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    workspace_bytes: int | None = None
    builder_optimization_level: int | None = None
    #: whether fp32 layers may use TF32; None: built before vggdeploy cleared it (TensorRT's
    #: default, TF32 on)
    tf32: bool | None = None
    built_with: str | None = None  # e.g. "polygraphy 0.53.6"

    @property
    def tf32_allowed(self) -> bool:
        return self.tf32 is not False


class EngineRecord(ArtifactRecord):
    """A TensorRT engine and the facts of its build: the one reader of those facts."""

    kind: Literal["tensorrt-engine"] = "tensorrt-engine"
    tensorrt_version: str | None = None
    gpu: GpuRecord = Field(default_factory=GpuRecord)
    cuda_version: str | None = None
    flags: EngineFlags = Field(default_factory=EngineFlags)
    #: one dict per optimization profile: input name -> {"min": [...], "opt": [...], "max": [...]}
    profiles: list[dict[str, dict[str, list[int]]]] = Field(default_factory=list)

    @property
    def compute_capability(self) -> str | None:
        return self.gpu.compute_capability

    @property
    def hardware_compat(self) -> str:
        return self.flags.hardware_compat or "none"

    def batch_ranges(self) -> list[tuple[int, int, int]]:
        """(min, opt, max) of the batch axis of each profile's first input."""
        ranges = []
        for profile in self.profiles:
            for shape in profile.values():
                ranges.append((shape["min"][0], shape["opt"][0], shape["max"][0]))
                break
        return ranges

    def max_batch(self) -> int | None:
        ranges = self.batch_ranges()
        return max(r[2] for r in ranges) if ranges else None


AnyArtifact = Annotated[OnnxArtifact | EngineRecord, Field(discriminator="kind")]


class Manifest(Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_by: dict[str, str] = Field(default_factory=dict)
    model: ModelRecord
    weights: WeightsRecord
    preprocessing: PreprocessingRecord
    labels: str | None = None
    io: IoRecord
    export: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, AnyArtifact] = Field(default_factory=dict)
    #: every other file the bundle ships (labels, weights), keyed by its path
    files: dict[str, FileRecord] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _keyed_by_path(cls, value: dict[str, FileRecord]) -> dict[str, FileRecord]:
        for key, record in value.items():
            if key != record.path:
                raise ValueError(f"files key {key!r} differs from its path {record.path!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_inside(cls, value: str | None) -> str | None:
        return None if value is None else check_relative(value, "labels")

    @field_validator("artifacts")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            kind, name = P.split_key(key)
            if kind not in P.ARTIFACT_KINDS or not name:
                raise ValueError(
                    f"artifact key {key!r} is not KIND.PRECISION (onnx.fp16, engine.int8)"
                )
        return value

    # -- views ------------------------------------------------------------------------------

    @property
    def input(self) -> TensorRecord:
        return self.io.inputs[0]

    @property
    def output(self) -> TensorRecord:
        return self.io.outputs[0]

    def engines(self) -> dict[str, EngineRecord]:
        return {k: r for k, r in self.artifacts.items() if isinstance(r, EngineRecord)}

    def onnx_files(self) -> dict[str, OnnxArtifact]:
        return {k: r for k, r in self.artifacts.items() if isinstance(r, OnnxArtifact)}


# -- reading and writing ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json's default lets the last one win)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} appears twice in one object")
        data[key] = value
    return data


def json_depth(data: Any) -> int:
    """The deepest nesting of objects and lists in parsed JSON (iterative: no recursion)."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def parse_json(text: str, where: str) -> Any:
    """Strict JSON: NaN, Infinity and -Infinity are refused (Python's json accepts them), so are
    duplicate keys in one object and nesting deeper than `MAX_JSON_DEPTH`."""
    too_deep = BundleError(
        f"{where} nests objects or lists more than {MAX_JSON_DEPTH} deep: "
        "it is not a vggdeploy manifest - re-create it"
    )
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:  # deeper than Python's parser goes (it raises, it does not crash)
        raise too_deep from None
    except ValueError as exc:
        raise BundleError(f"{where} is not valid JSON ({exc})") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise too_deep
    return data


def dumps(data: Any) -> str:
    """Strict JSON text (NaN/inf raise `ValueError`), indented, ending in a newline."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def error_line(exc: ValidationError, where: str) -> str:
    """The first validation error as one line naming the field."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    # a discriminated union puts its tag after the artifact key: drop it so the field reads naturally
    if len(parts) > 2 and parts[0] == "artifacts" and parts[2] in ("onnx", "tensorrt-engine"):
        del parts[2]
    loc = ".".join(parts)
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: field {loc or '(root)'}: {msg}{more}"


def manifest_from_data(data: Any, where: str) -> Manifest:
    """Validate parsed JSON as a manifest; any problem is one `BundleError` line."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where} has schema version {version!r}, this vggdeploy reads {SCHEMA_VERSION}: "
            "re-export the bundle with this version"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(error_line(exc, where) + ": fix or re-create the bundle") from None
