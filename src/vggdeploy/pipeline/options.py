"""What `vggdeploy pipeline` is asked for, and the images it calibrates and measures on."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vggdeploy import inputs
from vggdeploy import precision as P
from vggdeploy.errors import InputError

log = logging.getLogger(__name__)

#: The precisions the pipeline makes: every one a TensorRT engine is built in ("int8" makes the
#: one INT8 file, `model.int8.onnx`, for TensorRT and ONNX Runtime).
MADE_PRECISIONS: tuple[str, ...] = P.ENGINE_NAMES
DEFAULT_BENCH_RUNTIMES = ("onnxruntime", "tensorrt")
#: Upper bounds of the numeric options (as `vggdeploy bench` and the other commands): beyond
#: them a value is a typo that would allocate or run for ever, refused before any work.
MAX_BATCH = 4096
MAX_COUNT = 1_000_000
MAX_SEED = 2**32 - 1

# Fewer real photos than this in the package data: use generated images instead (and say so).
MIN_DEFAULT_IMAGES = 6
SYNTHETIC_DIR = "synthetic_images"
SYNTHETIC_WARNING = (
    "calibrating on SYNTHETIC images (no real photographs were found): INT8 scales and INT8 "
    "accuracy figures from them mean little - pass --images DIR with a few hundred real images"
)
DEFAULT_IMAGES_NOTE = (
    "the {n} photographs shipped with vggdeploy (public domain / CC0, far from ImageNet's "
    "distribution): enough for a working INT8 model and a smoke test, not a substitute for "
    "a few hundred images from your own data (--images DIR)"
)
RANDOM_WEIGHTS_WARNING = (
    "the weights are random (--weights random): every figure here is about numerical "
    "agreement between runtimes and precisions, not accuracy; use --weights imagenet "
    "or a checkpoint for real predictions"
)
RANDOM_INT8_WARNING = (
    "INT8 checks are informational with random weights: an untrained network has near-tied "
    "logits, so quantization noise flips its top-1 and lowers cosine far more than in a trained "
    "model; judge INT8 with --weights imagenet or your checkpoint, and real --images"
)


@dataclass
class PipelineOptions:
    """What `vggdeploy pipeline` was asked for."""

    weights: str = "random"
    seed: int = 0
    image_size: int = 224
    precisions: tuple[str, ...] = MADE_PRECISIONS
    images: str | None = None
    calib_samples: int | None = None  # None: 3/4 of the images, at most 64; the rest held out
    calib_method: str = "entropy"
    batches: tuple[int, ...] = (1, 8)
    bench_iterations: int = 10
    bench_runtimes: tuple[str, ...] = DEFAULT_BENCH_RUNTIMES
    #: None: what `vggdeploy validate` compares without --samples
    validate_samples: int | None = None
    force: bool = False
    # Model sizes, as `vggdeploy export` takes them; a checkpoint's shapes give those not set.
    num_classes: int | None = None
    width_divisor: int | None = None
    hidden: int | None = None
    # What the bundle records besides weights, as `vggdeploy export` takes them.
    labels: str | None = None  # a labels file, one class name a line
    #: `Preprocessing.to_dict()`; None: torchvision's ImageNet preprocessing for `image_size`
    preprocessing: dict[str, Any] | None = None
    opset: int = 18

    def __post_init__(self) -> None:
        from vggdeploy.runtimes.registry import parse_specs

        self.precisions = tuple(dict.fromkeys(self.precisions))
        P.check(self.precisions, MADE_PRECISIONS)
        if "fp32" not in self.precisions:
            # fp32 is the export itself and the reference every other precision is built from.
            raise InputError(
                "--precision must include fp32 (the exported model every other precision is made "
                "from), e.g. --precision fp32,int8"
            )
        from vggdeploy.models import check_image_size

        # Every number is checked here, before OUT is touched or anything is loaded.
        check_image_size(self.image_size)
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed {self.seed} must be between 0 and {MAX_SEED}")
        if not self.batches or any(not 1 <= b <= MAX_BATCH for b in self.batches):
            raise InputError(f"--batch must list batch sizes from 1 to {MAX_BATCH}, e.g. 1,8")
        if not 1 <= self.bench_iterations <= MAX_COUNT:
            raise InputError(
                f"--bench-iterations {self.bench_iterations} must be between 1 and {MAX_COUNT:,}"
            )
        for option, value in (
            ("--calib-samples", self.calib_samples),
            ("--validate-samples", self.validate_samples),
        ):
            if value is not None and not 1 <= value <= MAX_COUNT:
                raise InputError(f"{option} {value} must be between 1 and {MAX_COUNT:,}")
        self.bench_runtimes = tuple(s.text for s in parse_specs(self.bench_runtimes))
        if self.preprocessing is not None:
            from vggdeploy.preprocess import Preprocessing

            pre = Preprocessing.from_dict(self.preprocessing)
            if pre.crop != self.image_size:
                raise InputError(
                    f"preprocessing crops {pre.crop}x{pre.crop} but the image size is "
                    f"{self.image_size}: give the same size to both"
                )
            self.preprocessing = pre.to_dict()
        from vggdeploy.exporter.onnx_export import ExportOptions

        ExportOptions(image_size=self.image_size, opset=self.opset)  # checks the opset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- images -------------------------------------------------------------------------------------


@dataclass
class Images:
    """The image folder calibration and FP16 range measurement use, and how to describe it."""

    dir: Path
    kind: str  # "user" | "default" | "synthetic"
    count: int
    warning: str | None = None
    note: str | None = None
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "dir": str(self.dir), "count": self.count, "sha256": self.sha256}


def resolve_images(images: str | None, out: Path) -> Images:
    """`--images`, else the photographs shipped with vggdeploy, else generated synthetic ones."""
    from vggdeploy.calibration.data import fingerprint_images
    from vggdeploy.preprocess import find_images

    if images:
        paths = find_images(images)
        found = Images(Path(images), "user", len(paths))
    else:
        folder = inputs.default_images_dir()
        try:
            paths = find_images(folder)
        except InputError:
            paths = []
        if len(paths) >= MIN_DEFAULT_IMAGES:
            note = DEFAULT_IMAGES_NOTE.format(n=len(paths))
            found = Images(folder, "default", len(paths), note=f"no --images given: using {note}")
        else:
            dest = out / SYNTHETIC_DIR
            inputs.synthetic_images(dest)
            paths = find_images(dest)
            log.warning("warning: %s", SYNTHETIC_WARNING)
            found = Images(dest, "synthetic", len(paths), warning=SYNTHETIC_WARNING)
    found.sha256 = fingerprint_images(paths, found.dir)
    return found


def calibration_split(n_images: int, asked: int | None) -> int:
    """Calibration samples: `calibrate`'s rule (`calibration.data.split_counts`) with up to
    `asked` images, else up to `PIPELINE_CALIB_SAMPLES` (64): a quarter of the images (at most
    64) is held out first, so 11 images calibrate on 8 and hold out 3."""
    from vggdeploy.calibration.data import split_counts

    return split_counts(n_images, PIPELINE_CALIB_SAMPLES if asked is None else asked)[0]


#: calibration images the pipeline asks for when --calib-samples is not given
PIPELINE_CALIB_SAMPLES = 64
