"""INT8 post-training quantization of a bundle: calibrate, write Q/DQ ONNX, check held-out images.

`calibrate_bundle(bundle, images, CalibrationOptions(...))` is the whole stage:

1. draw `samples` calibration images (seeded) and a disjoint held-out set from `images`;
2. collect per-tensor histograms in one streaming pass of the fp32 model through ONNX Runtime,
   or reuse a matching calibration cache;
3. compute ranges (`entropy`, `minmax` or `percentile`) and write `model.int8.onnx`
   (`target="tensorrt"`) or `model.int8-u8.onnx` (`target="onnxruntime"`) in Q/DQ form;
4. check the file against its target's rules (`verify_qdq`) and compare int8 with fp32 on the
   held-out images (cosine, top-1 agreement, top-5 overlap), warning loudly below tolerance;
5. record the artifact, its calibration settings and the comparison in the manifest.
"""

from __future__ import annotations

from vggdeploy.calibration.calibrators import (
    METHODS,
    HistogramCollector,
    TensorRange,
    collect_statistics,
)
from vggdeploy.calibration.data import ImageBatchReader, split_images
from vggdeploy.calibration.qdq import TARGETS, verify_qdq
from vggdeploy.calibration.stage import (
    INT8_TOLERANCE,
    CalibrationOptions,
    calibrate_bundle,
    compare_on_images,
    int8_tolerance,
)

__all__ = [
    "INT8_TOLERANCE",
    "METHODS",
    "TARGETS",
    "CalibrationOptions",
    "HistogramCollector",
    "ImageBatchReader",
    "TensorRange",
    "calibrate_bundle",
    "collect_statistics",
    "compare_on_images",
    "int8_tolerance",
    "split_images",
    "verify_qdq",
]
