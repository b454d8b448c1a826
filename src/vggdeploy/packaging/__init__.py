"""Ship a bundle: one checksummed archive for an edge device (`archive`), or a Triton
Inference Server model repository (`triton`)."""

from vggdeploy.packaging.archive import (
    SUMS_NAME,
    PackResult,
    ProgressFn,
    check_members,
    pack_bundle,
    portable_manifest,
    unpack_bundle,
    verify_unpacked,
)
from vggdeploy.packaging.triton import (
    TritonModel,
    TritonOptions,
    TritonResult,
    TritonSource,
    WrittenModel,
    config_pbtxt,
    model_name,
    package_triton,
    parse_config_pbtxt,
    plan_triton,
    triton_model_config_pb2,
)

__all__ = [
    "SUMS_NAME",
    "PackResult",
    "ProgressFn",
    "TritonModel",
    "TritonOptions",
    "TritonResult",
    "TritonSource",
    "WrittenModel",
    "check_members",
    "config_pbtxt",
    "model_name",
    "pack_bundle",
    "package_triton",
    "parse_config_pbtxt",
    "plan_triton",
    "portable_manifest",
    "triton_model_config_pb2",
    "unpack_bundle",
    "verify_unpacked",
]
