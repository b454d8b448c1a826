"""Ship a bundle: one checksummed archive for an edge device (`archive`), or a Triton
Inference Server model repository (`triton`), or a DeepStream nvinfer package (`deepstream`)."""

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
from vggdeploy.packaging.bake import BakedNormalization, bake_normalization, check_baked_parity
from vggdeploy.packaging.deepstream import (
    DeepStreamOptions,
    DeepStreamResult,
    closest_scale,
    package_deepstream,
)
from vggdeploy.packaging.kserve import KServeOptions, KServeResult, package_kserve
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
    "BakedNormalization",
    "DeepStreamOptions",
    "DeepStreamResult",
    "KServeOptions",
    "KServeResult",
    "PackResult",
    "ProgressFn",
    "TritonModel",
    "TritonOptions",
    "TritonResult",
    "TritonSource",
    "WrittenModel",
    "bake_normalization",
    "check_baked_parity",
    "check_members",
    "closest_scale",
    "config_pbtxt",
    "model_name",
    "pack_bundle",
    "package_deepstream",
    "package_kserve",
    "package_triton",
    "parse_config_pbtxt",
    "plan_triton",
    "portable_manifest",
    "triton_model_config_pb2",
    "unpack_bundle",
    "verify_unpacked",
]
