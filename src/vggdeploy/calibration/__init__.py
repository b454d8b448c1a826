"""INT8 post-training quantization: calibration data, streaming histograms and ranges
(`calibrators`), the calibration cache, the Q/DQ writer (`qdq`), and the stage that ties them
together (`stage.calibrate_bundle`, whose docstring walks through it)."""

from __future__ import annotations

from vggdeploy.calibration.calibrators import (
    METHODS,
    HistogramCollector,
    TensorRange,
    collect_statistics,
)
from vggdeploy.calibration.data import ImageBatchReader, split_counts, split_images
from vggdeploy.calibration.qdq import TARGETS, verify_qdq
from vggdeploy.calibration.stage import (
    CalibrationOptions,
    calibrate_bundle,
    compare_on_images,
    int8_tolerance,
)

__all__ = [
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
    "split_counts",
    "split_images",
    "verify_qdq",
]
